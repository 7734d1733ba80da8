"""Stage 2 (compiler): the value rules of the `.cnn` expression language.

What names mean (`lookup`: a bound value, a block, a layer, or an unknown name
with a did-you-mean hint), integer and size arithmetic with comparisons that
may depend on symbolic input sizes (`arith`, deciding `==` with the
elaborator's constraints), conditions, and the built-in functions
`min`/`max`, `round`/`ceil`/`floor`/`int`, `log`/`exp` (and the operator `**`, `power`) and
`channels`/`height`/`width`/`length`. The elaborator walks the syntax tree and calls these; nothing here
builds layers.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

from ..dsl import ast
from ..dsl.source import CnncError, Loc, did_you_mean
from .attrs import describe
from .naming import BlockRef, LayerRef, Tensor
from .ops import OPS, SURFACE, Word, fmt_shape
from .symbolic import Constraints, Dim, SymbolicComparison, equal_when

FUNCTIONS = {"channels", "height", "width", "length", "min", "max", "round", "ceil", "floor", "int", "log", "exp"}
SHAPE_QUERIES = {"channels", "height", "width", "length"}
ROUNDING = {"round": round, "ceil": math.ceil, "floor": math.floor, "int": int}  # number -> integer
NOT_LAYERS = {"input"}
MAX_INT = 1 << 62  # sizes and counts beyond this are mistakes (and would overflow NumPy's int64)


def is_builtin(name: str) -> bool:
    return name in OPS or name in SURFACE or name in FUNCTIONS


def lookup(name: str, env: dict[str, Any], blocks: dict[str, ast.Block], loc: Loc, quiet: bool = False,
           called: str | None = None, functions: Iterable[str] = ()) -> Any:
    """What `name` means: a bound value, a block, a layer; else a `Word` (quiet) or an error.
    `called` says how an unknown name was used, so the hint suggests only what fits there:
    "step" (after `->`: a layer or block), "call" (`f(...)`: also a function, built-in or the
    program's `def` (`functions`), named as one)."""
    if name in env:
        return env[name]
    if name in blocks:
        return BlockRef(blocks[name])
    if (name in OPS and name not in NOT_LAYERS) or name in SURFACE:
        return LayerRef(name)
    if quiet:
        return Word(name)
    if name == "in":
        raise CnncError("`in` exists only inside a block", loc, "in a network, name the input tensor")
    layers = list(blocks) + [n for n in OPS if n not in NOT_LAYERS] + list(SURFACE)
    if called is not None:  # a labelled layer may be applied again (shared weights): it is a candidate too
        shared = [n for n, v in env.items() if getattr(v, "labelled_layer", False)]
        callable_functions = set(FUNCTIONS) | set(functions) if called == "call" else set()
        raise CnncError(f"unknown name '{name}'", loc, _callable_hint(name, layers + shared, callable_functions))
    candidates = list(env) + layers + sorted(FUNCTIONS) + sorted(functions)
    raise CnncError(f"unknown name '{name}'", loc, did_you_mean(name, candidates))


def _callable_hint(name: str, layers: list[str], functions: set[str]) -> str | None:
    """The closest layer or block (and, for a call, function, said to be one)."""
    close = difflib.get_close_matches(name, sorted(set(layers) | functions), n=1)
    if not close:
        return None
    if close[0] in functions:
        kind = "shape query" if close[0] in SHAPE_QUERIES else "function"
        return f"did you mean '{close[0]}' (a {kind}, not a layer)?"
    return f"did you mean '{close[0]}'?"


def require_tensor(v: Any, where, blocks: dict[str, ast.Block]) -> Tensor:
    """`v` if it is a tensor; else an error at `where` (an expression or a Loc)."""
    if isinstance(v, Tensor):
        return v
    loc = where.loc if hasattr(where, "loc") else where
    if isinstance(v, tuple) and v and all(isinstance(t, Tensor) for t in v):
        names = ', '.join('abcdefgh'[:min(len(v), 8)])
        raise CnncError(f"expected a tensor, got {len(v)} tensors (the parts of a split, or a block's values)", loc,
                        f"bind them first: `{names} = x -> split({len(v)})` or `{names} = x -> block(...)`")
    if isinstance(v, Word):
        lookup(v.name, {}, blocks, loc)  # an undefined name: say so, with a suggestion
    raise CnncError(f"expected a tensor, got {describe(v)}", loc)


def require_number(v: Any, expr: ast.Expr, blocks: dict[str, ast.Block]) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, Dim)):
        if isinstance(v, Word):
            lookup(v.name, {}, blocks, expr.loc)  # raises "unknown name"
        raise CnncError(f"expected a number, got {describe(v)}", expr.loc)
    if isinstance(v, int) and abs(v) > MAX_INT:
        raise CnncError("number too large", expr.loc)


def truth(v: Any, expr: ast.Expr) -> bool:
    if isinstance(v, bool):
        return v
    raise CnncError(f"a condition must be true or false, got {describe(v)}", expr.loc)


def _undecidable(what: str, err: SymbolicComparison, loc: Loc) -> CnncError:
    return CnncError(f"{what} {', '.join(sorted(err.expr.symbols()))}", loc,
                     "bind the input size with --input NAME=CxHxW")


def arith(op: str, a: Any, b: Any, expr: ast.Expr, constraints: Constraints,
          blocks: dict[str, ast.Block]) -> Any:
    """`a op b` for numbers and sizes (`-x` is `0 - x`), errors located at `expr`."""
    if op in ("==", "!="):
        return _equality(op, a, b, expr, constraints)
    require_number(a, getattr(expr, "left", expr), blocks)
    require_number(b, getattr(expr, "right", getattr(expr, "operand", expr)), blocks)
    try:
        return _arith(op, a, b, expr)
    except SymbolicComparison as err:
        raise _undecidable(f"cannot decide '{op}' on a size that depends on", err, expr.loc) from None
    except OverflowError:
        raise CnncError("number too large", expr.loc) from None


def _equality(op: str, a: Any, b: Any, expr: ast.Expr, constraints: Constraints) -> bool:
    if isinstance(a, (int, Dim)) and isinstance(b, (int, Dim)) and not isinstance(a, bool):
        verdict, _ = equal_when(a, b, constraints)
        if verdict == "yes":
            return op == "=="
        if verdict == "no":
            return op == "!="
        raise CnncError(f"cannot decide whether {a} {op} {b}: it depends on the input size", expr.loc,
                        "bind the input size with --input NAME=CxHxW")
    equal = (a.name if isinstance(a, Word) else a) == (b.name if isinstance(b, Word) else b)
    return equal if op == "==" else not equal


def _arith(op: str, a: Any, b: Any, expr: ast.Expr) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("//", "%"):
        if isinstance(b, int) and b == 0:
            raise CnncError("division by zero", expr.loc)
        if isinstance(b, float) or isinstance(a, float):
            raise CnncError(f"'{op}' is for integers", expr.loc)
        return a // b if op == "//" else a % b
    if op == "/":
        if b == 0:
            raise CnncError("division by zero", expr.loc)
        if isinstance(a, Dim) or isinstance(b, Dim):
            raise CnncError("'/' on a size; use '//' for integer division", expr.loc)
        return a / b
    if op in ("<", "<=", ">", ">="):
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op == "**":
        if isinstance(a, Dim) or isinstance(b, Dim):
            raise CnncError("'**' on a size: powers are for numbers", expr.loc,
                            "a size that depends on the input is no constant to raise")
        return power(a, b, expr.loc)
    raise AssertionError(op)


def power(a: int | float, b: int | float, loc: Loc | None) -> int | float:
    """`a ** b` as Python computes it (an integer for integers and b >= 0), refusing what Python
    would not answer with a finite real number or would take long to compute (a huge integer)."""
    if a == 0 and b < 0:
        raise CnncError("'**': zero cannot be raised to a negative power", loc)
    if a < 0 and isinstance(b, float) and not b.is_integer():
        raise CnncError(f"'**': a negative number to the power {b} is not a real number", loc)
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if abs(a) > 1 and b * math.log2(abs(a)) > 62:
            raise CnncError("number too large", loc)
        return a ** b
    try:
        out = float(a) ** float(b)
    except OverflowError:
        raise CnncError("number too large", loc) from None
    if not math.isfinite(out):
        raise CnncError("number too large", loc)
    return out


def builtin_function(expr: ast.Call, args: list, blocks: dict[str, ast.Block]) -> Any:
    """`min`/`max` of numbers, `round`/`ceil`/`floor`/`int` of a number, `log`/`exp` of numbers, or
    `channels`/`height`/`width`/`length` of a tensor."""
    if expr.kwargs:
        raise CnncError(f"'{expr.func}' takes no keyword arguments", expr.kwargs[0].loc)
    if expr.func in ROUNDING:
        return _rounded(expr, args, blocks)
    if expr.func in ("log", "exp"):
        return _log_exp(expr, args, blocks)
    if expr.func in ("min", "max"):
        if len(args) < 2:
            raise CnncError(f"'{expr.func}' needs at least two values", expr.loc)
        for a, e in zip(args, expr.args):
            require_number(a, e, blocks)
        try:
            return (min if expr.func == "min" else max)(args)
        except SymbolicComparison as err:
            raise _undecidable(f"cannot decide {expr.func} of sizes that depend on", err, expr.loc) from None
    if len(args) != 1:
        raise CnncError(f"'{expr.func}' takes one tensor, got {len(args)} arguments", expr.loc)
    t = require_tensor(args[0], expr.args[0], blocks)
    if expr.func == "length":
        if len(t.shape) != 2:
            raise CnncError(f"length() needs a [C, L] signal, got {fmt_shape(t.shape)}", expr.args[0].loc,
                            "height() and width() read a [C, H, W] tensor")
        return t.shape[1]
    axis = {"channels": 0, "height": 1, "width": 2}[expr.func]
    if axis >= len(t.shape) or (axis and len(t.shape) == 2):
        raise CnncError(f"{expr.func}() needs a [C, H, W] tensor, got {fmt_shape(t.shape)}", expr.args[0].loc,
                        "length() reads a [C, L] signal" if len(t.shape) == 2 else None)
    return t.shape[axis]


def _log_exp(expr: ast.Call, args: list, blocks: dict[str, ast.Block]) -> float:
    """`log(x)` (natural), `log(x, base)` and `exp(x)` of numbers, as Python's math computes them."""
    most = 2 if expr.func == "log" else 1
    if not 1 <= len(args) <= most:
        usage = "log(x) or log(x, base)" if expr.func == "log" else "exp(x)"
        raise CnncError(f"'{expr.func}' takes {'one or two numbers' if most == 2 else 'one number'}, "
                        f"got {len(args)} arguments", expr.loc, f"write {usage}")
    for a, e in zip(args, expr.args):
        require_number(a, e, blocks)
        if isinstance(a, Dim):
            raise CnncError(f"'{expr.func}' of a size that depends on {', '.join(sorted(a.symbols()))}", e.loc,
                            "bind the input size with --input NAME=CxHxW")
    if expr.func == "exp":
        try:
            return math.exp(args[0])
        except OverflowError:
            raise CnncError("number too large", expr.loc) from None
    for a, e in zip(args, expr.args):
        if a <= 0:
            raise CnncError(f"'log' needs a positive number, got {describe(a)}", e.loc)
    if len(args) == 2 and args[1] == 1:
        raise CnncError("'log' to the base 1 is undefined", expr.args[1].loc, "a base is positive and not 1")
    return math.log(*args)


def _rounded(expr: ast.Call, args: list, blocks: dict[str, ast.Block]) -> Any:
    """`round(x)` (halves to even, as Python), `ceil(x)`, `floor(x)`, `int(x)` (towards zero): an integer.
    A size is already an integer and stays as it is (symbolic or not)."""
    if len(args) != 1:
        raise CnncError(f"'{expr.func}' takes one number, got {len(args)} arguments", expr.loc)
    require_number(args[0], expr.args[0], blocks)
    v = args[0]
    if isinstance(v, (int, Dim)):
        return v
    if not math.isfinite(v):
        raise CnncError(f"'{expr.func}' needs a finite number, got {describe(v)}", expr.args[0].loc)
    out = ROUNDING[expr.func](v)
    if abs(out) > MAX_INT:
        raise CnncError("number too large", expr.loc)
    return out
