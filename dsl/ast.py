"""Stage 1 (dsl): the abstract syntax tree of a `.cnn` program.

Frozen dataclasses, each with the `Loc` of the text it came from, so every
later error can point at the user's source. The parser builds these; the
compiler's elaboration reads them and never sees a Lark tree.
"""
from __future__ import annotations

from dataclasses import dataclass

from .source import Loc


# ----------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Expr:
    loc: Loc


@dataclass(frozen=True)
class Int(Expr):
    value: int


@dataclass(frozen=True)
class Float(Expr):
    value: float


@dataclass(frozen=True)
class Str(Expr):
    value: str


@dataclass(frozen=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True)
class Name(Expr):
    id: str


@dataclass(frozen=True)
class TupleExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # + - * / // % == != < <= > >= and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Expr):
    op: str  # - not
    operand: Expr


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Call(Expr):
    func: str
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    func_loc: Loc


@dataclass(frozen=True)
class Labeled(Expr):
    """`label: layer(...)` — names the layer (or block instance) it wraps."""

    label: str
    expr: Expr


@dataclass(frozen=True)
class Chain(Expr):
    """`head -> step -> step`; each step is applied to the tensor before it."""

    head: Expr
    steps: tuple[Expr, ...]


@dataclass(frozen=True)
class Subscript(Expr):
    """`x[start:stop]`: the channels start to stop-1 of a tensor (None: from the first / to the last)."""

    value: Expr
    start: Expr | None
    stop: Expr | None


@dataclass(frozen=True)
class IfExpr(Expr):
    cond: Expr
    then: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...]


# ------------------------------------------------------------------ statements
@dataclass(frozen=True)
class Stmt:
    loc: Loc


@dataclass(frozen=True)
class InputDecl(Stmt):
    name: str
    dims: tuple[Expr, ...]


@dataclass(frozen=True)
class Assign(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True)
class TupleAssign(Stmt):
    """`a, b = expr`: binds each part of a split (`x -> split(2)`) to a name."""

    names: tuple[str, ...]
    value: Expr


@dataclass(frozen=True)
class Output(Stmt):
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class ExprStmt(Stmt):
    expr: Expr


# ------------------------------------------------------------------ top level
@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    loc: Loc


@dataclass(frozen=True)
class Block:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class Function:
    """`def name(params) = expr` or `def name(params) { ... }`: a numeric helper (no layers)."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class Network:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class TrainEntry:
    key: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Train:
    network: str
    entries: tuple[TrainEntry, ...]
    loc: Loc


@dataclass(frozen=True)
class Import:
    path: str
    loc: Loc


@dataclass(frozen=True)
class Program:
    path: str
    items: tuple[Import | Block | Function | Network | Train, ...]
