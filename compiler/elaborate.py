"""Stage 2 (compiler): elaboration — from the AST to a checked `Network` graph.

Evaluates a network's body: integer arithmetic, conditionals, shape queries,
block calls (with `in` bound to the piped tensor), repetition, labels and
imports. Every layer application becomes one node whose attributes are
normalised and whose output shape is inferred on the spot with the op-spec
table (shape queries like `channels(in)` need it). Names follow the block
path (`basic_3.conv_bn_relu.conv`), numbered only where a scope holds more
than one layer of that name. Errors carry the location of the construct at
fault and the chain of block calls that led there.
"""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dsl import ast
from ..dsl.parser import parse_file
from ..dsl.source import CnncError, Diagnostic, Loc
from .attrs import convert, describe
from .graph import Network, Node, build_graph
from .ops import OPS, SURFACE, OpError, OpSpec, Word, fmt_shape, normalised_name, numel
from .symbolic import Constraints, Dim, SymbolicComparison, equal_when, is_symbolic

MAX_REPEAT = 10_000
MAX_NODES = 50_000  # ResNet-2000 has 6,669; more is a mistake, not a network
MAX_BLOCK_DEPTH = 200
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_IMPORT_DEPTH = 50
VARIADIC = {"concat", "add", "mul"}

# Nested block calls recurse in Python (about ten frames a level): make room for MAX_BLOCK_DEPTH.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * MAX_BLOCK_DEPTH + 2000))
FUNCTIONS = {"channels", "height", "width", "min", "max"}
NOT_LAYERS = {"input"}


# ------------------------------------------------------------------ program
@dataclass
class Definitions:
    """Everything a file and its imports define."""

    main: str
    blocks: dict[str, ast.Block] = field(default_factory=dict)
    networks: dict[str, ast.Network] = field(default_factory=dict)
    trains: dict[str, ast.Train] = field(default_factory=dict)
    main_networks: list[str] = field(default_factory=list)


def load(path: str | Path) -> Definitions:
    """Parse a file and, recursively, the files it imports."""
    defs = Definitions(str(path))
    _load_into(defs, Path(path), stack=(), import_loc=None)
    return defs


def _load_into(defs: Definitions, path: Path, stack: tuple, import_loc: Loc | None) -> None:
    resolved = path.resolve()
    if resolved in stack:
        cycle = " -> ".join(p.name for p in (*stack[stack.index(resolved):], resolved))
        raise CnncError(f"import cycle: {cycle}", import_loc, "a file cannot import itself, directly or not")
    if len(stack) > MAX_IMPORT_DEPTH:
        raise CnncError(f"imports nested more than {MAX_IMPORT_DEPTH} deep", import_loc)
    if import_loc is not None and not path.exists():
        raise CnncError(f"cannot import \"{path}\": no such file", import_loc,
                        "imports are relative to the importing file")
    program = parse_file(path)
    for item in program.items:
        if isinstance(item, ast.Import):
            _load_into(defs, path.parent / item.path, (*stack, resolved), item.loc)
            continue
        table = {ast.Block: defs.blocks, ast.Network: defs.networks, ast.Train: defs.trains}[type(item)]
        if item.__class__ is ast.Train:
            key = item.network
        else:
            key = item.name
        if key in table and table[key].loc != item.loc:
            what = {ast.Block: "block", ast.Network: "network", ast.Train: "train section for"}[type(item)]
            raise CnncError(f"{what} '{key}' is defined twice", item.loc,
                            notes=None).add_note("first defined here", table[key].loc)
        table[key] = item
        if isinstance(item, ast.Network) and not stack:
            defs.main_networks.append(item.name)


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class Tensor:
    node: int                    # pending node id
    shape: tuple
    labelled_layer: bool = False  # a labelled single layer: reusable with shared weights
    kind_name = "a tensor"


@dataclass(frozen=True)
class LayerRef:
    name: str
    kind_name = "a layer"


@dataclass(frozen=True)
class BlockRef:
    block: ast.Block
    kind_name = "a block"


# ------------------------------------------------------------------ naming
class Scope:
    """A block instance (or the network body): counts the names it hands out."""

    def __init__(self, parent_segment: "Segment | None"):
        self.parent_segment = parent_segment
        self.counts: dict[str, int] = {}
        self.labels: set[str] = set()

    def segment(self, base: str, label: str | None) -> "Segment":
        if label is not None:
            return Segment(self, base, 0, label)
        self.counts[base] = self.counts.get(base, 0) + 1
        return Segment(self, base, self.counts[base], None)


@dataclass(eq=False)
class Segment:
    scope: Scope
    base: str
    index: int
    label: str | None
    repeat: tuple | None = None  # (group, index, count); group is the first instance's Segment

    def text(self) -> str:
        if self.label:
            return self.label
        return self.base if self.scope.counts.get(self.base, 0) == 1 else f"{self.base}_{self.index}"

    def path(self) -> str:
        parts = []
        seg: Segment | None = self
        while seg is not None:
            parts.append(seg.text())
            seg = seg.scope.parent_segment
        return ".".join(reversed(parts))


@dataclass
class Pending:
    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict
    loc: Loc | None
    segment: Segment
    layer: str
    shape: tuple
    shares: int | None = None
    call_chain: tuple = ()


# ------------------------------------------------------------------ context
@dataclass
class Frame:
    """The evaluation state of one body (network or block instance)."""

    env: dict[str, Any]
    scope: Scope
    is_network: bool
    block_name: str = ""
    bound_at: dict[str, Loc] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)


class Elaborator:
    def __init__(self, defs: Definitions, bindings: dict[str, tuple] | None = None,
                 args: dict[str, Any] | None = None):
        self.defs = defs
        self.bindings = bindings or {}
        self.args = args or {}
        self.nodes: list[Pending] = []
        self.constraints = Constraints()
        self.constraint_sources: list[tuple[str, Loc | None]] = []
        self.warnings: list[Diagnostic] = []
        self.call_chain: list[tuple[str, Loc | None]] = []
        self.depth = 0
        self.inputs: dict[str, int] = {}

    # ----------------------------------------------------------- entry point
    def network(self, name: str) -> Network:
        net = self.defs.networks[name]
        frame = Frame({}, Scope(None), True, name)
        self._bind_params(net.params, self.args, frame, net.loc, f"network '{name}'", cli=True)
        outputs, value = [], None
        for stmt in net.body:
            if isinstance(stmt, ast.Output):
                outputs += [(self._tensor(self.ev(e, frame), e), e.loc) for e in stmt.values]
                continue
            value = self.statement(stmt, frame)
        if not self.inputs:
            raise CnncError(f"network '{name}' declares no input", net.loc,
                            "declare one: `input x: [3, 224, 224]`")
        if not outputs:
            if not isinstance(value, Tensor):
                raise CnncError(f"network '{name}' has no output: its last statement is not a tensor", net.loc,
                                "end the network with a chain, or name outputs with `output a, b`")
            outputs = [(value, None)]
        self._lint_unused(frame)
        for b, loc in self.bindings.items():
            if b not in self.inputs:
                raise CnncError(f"--input names '{b}', but network '{name}' has no such input",
                                hint=f"its inputs: {', '.join(self.inputs)}")
        return self._finish(name, [t for t, _ in outputs])

    # ------------------------------------------------------------ statements
    def statement(self, stmt: ast.Stmt, frame: Frame) -> Any:
        if isinstance(stmt, ast.InputDecl):
            return self._input(stmt, frame)
        if isinstance(stmt, ast.Assign):
            value = self.head(stmt.value, frame)
            self._bind(frame, stmt.name, value, stmt.loc)
            return value
        if isinstance(stmt, ast.ExprStmt):
            return self.head(stmt.expr, frame)
        if isinstance(stmt, ast.Output):
            raise CnncError("`output` is only allowed in a network body", stmt.loc,
                            "a block's value is its last statement")
        raise AssertionError(stmt)

    def _bind(self, frame: Frame, name: str, value: Any, loc: Loc) -> None:
        if name in frame.scope.labels:
            raise CnncError(f"'{name}' is already a label in this scope", loc,
                            "labels and tensor names share one namespace")
        self._warn_shadow(name, loc)
        frame.env[name] = value
        frame.bound_at[name] = loc

    def _warn_shadow(self, name: str, loc: Loc) -> None:
        if name in OPS or name in SURFACE or name in FUNCTIONS or name in self.defs.blocks:
            what = "block" if name in self.defs.blocks else "built-in"
            self.warn("shadowing", f"'{name}' shadows the {what} of the same name in this scope", loc)

    def _input(self, stmt: ast.InputDecl, frame: Frame) -> Tensor:
        if not frame.is_network:
            raise CnncError("inputs are declared in a network, not in a block", stmt.loc,
                            "inside a block the piped-in tensor is `in`")
        if stmt.name in self.inputs:
            raise CnncError(f"input '{stmt.name}' is declared twice", stmt.loc)
        dims = []
        for e in stmt.dims:
            if isinstance(e, ast.Name) and e.id not in frame.env:
                dims.append(Dim.symbol(e.id))
                continue
            v = self.ev(e, frame)
            if isinstance(v, bool) or not isinstance(v, (int, Dim)) or (isinstance(v, int) and v < 1):
                raise CnncError(f"an input dimension must be a positive integer or a symbol, got {describe(v)}",
                                e.loc)
            dims.append(v)
        shape = tuple(dims)
        if stmt.name in self.bindings:
            shape = self._bind_input(stmt, shape, self.bindings[stmt.name])
        if not shape or len(shape) not in (1, 3):
            raise CnncError(f"an input is [C, H, W] or [F], got {fmt_shape(shape)}", stmt.loc)
        self._check_size(shape, stmt.loc)
        t = self._new_node("input", (), {"shape": shape}, stmt.loc, frame, label=stmt.name, shape=shape)
        self.inputs[stmt.name] = t.node
        self._bind(frame, stmt.name, t, stmt.loc)
        frame.used.add(stmt.name)
        return t

    def _bind_input(self, stmt, declared: tuple, given: tuple) -> tuple:
        """Bind --input sizes: symbols take their value; a concrete size may be overridden."""
        text = "x".join(map(str, given))
        if len(given) != len(declared):
            raise CnncError(f"--input {stmt.name}={text} has {len(given)} dimensions, but "
                            f"'{stmt.name}' is declared {fmt_shape(declared)}", stmt.loc)
        env: dict[str, int] = {}
        for d, g in zip(declared, given):
            if isinstance(d, Dim) and d == Dim.symbol(next(iter(d.symbols()))):
                env.setdefault(next(iter(d.symbols())), g)
        for d, g in zip(declared, given):
            if isinstance(d, Dim) and d.symbols() <= set(env) and d.evaluate(env) != g:
                raise CnncError(f"--input {stmt.name}={text} does not match the declared shape "
                                f"{fmt_shape(declared)}", stmt.loc,
                                "the same symbol must take the same value everywhere")
        if any(not isinstance(d, Dim) and d != g for d, g in zip(declared, given)):
            self.warn("input-override", f"--input {stmt.name}={text} overrides the declared shape "
                      f"{fmt_shape(declared)}", stmt.loc)
        return tuple(given)

    # ------------------------------------------------------------ expressions
    def head(self, expr: ast.Expr, frame: Frame) -> Any:
        """A statement-level expression: a leading layer or block applies to `in`."""
        if isinstance(expr, ast.Chain):
            value = self.head(expr.head, frame)
            for step in expr.steps:
                value = self.step(step, self._tensor(value, expr.head), frame)
            return value
        if self._is_application(expr, frame):
            if "in" not in frame.env:
                what = self._callee_name(expr)
                raise CnncError(f"nothing is piped into '{what}' here", expr.loc,
                                "in a network, start the chain with a tensor: `x -> " + what + "(...)`")
            frame.used.add("in")
            return self.step(expr, frame.env["in"], frame)
        return self.ev(expr, frame)

    def _callee_name(self, expr: ast.Expr) -> str:
        while isinstance(expr, (ast.Labeled, ast.BinOp)):
            expr = expr.expr if isinstance(expr, ast.Labeled) else expr.left
        return expr.func if isinstance(expr, ast.Call) else getattr(expr, "id", "?")

    def _is_application(self, expr: ast.Expr, frame: Frame) -> bool:
        if isinstance(expr, ast.Labeled):
            return self._is_application(expr.expr, frame)
        if isinstance(expr, ast.Chain):  # `(conv(c, 3) -> relu) * n`
            return self._is_application(expr.head, frame)
        if isinstance(expr, ast.BinOp) and expr.op == "*":
            return self._is_application(expr.left, frame) and not isinstance(expr.right, ast.Chain)
        if isinstance(expr, ast.Call):
            callee = self.lookup(expr.func, frame, expr.func_loc, quiet=True)
            if isinstance(callee, LayerRef) and callee.name in VARIADIC:
                return not expr.args  # concat(a, b) produces; a bare concat() would be odd
            return isinstance(callee, (LayerRef, BlockRef)) and self._functional_input(expr, frame) is None
        if isinstance(expr, ast.Name):
            return isinstance(self.lookup(expr.id, frame, expr.loc, quiet=True), (LayerRef, BlockRef))
        return False

    def _functional_input(self, expr: ast.Call, frame: Frame) -> Tensor | None:
        """`relu(x)`, `crop(skip, like = u)`: a layer (not a block) whose first argument
        names a tensor is applied to that tensor, as in PyTorch's functional style."""
        if not expr.args or not isinstance(expr.args[0], ast.Name) or expr.func in self.defs.blocks \
                or expr.func in frame.env:
            return None
        value = frame.env.get(expr.args[0].id)
        if not isinstance(value, Tensor):
            return None
        attrs = SURFACE.get(expr.func) or (OPS[expr.func].attrs if expr.func in OPS else ())
        first = attrs[0] if attrs else None
        if first is not None and first.kind in ("tensor", "layer") and \
                not any(k.name in (first.name, "like", "of") for k in expr.kwargs):
            return None  # `unpool(p1)`, `crop(u)`: the tensor is the attribute, not the input
        return value

    def step(self, expr: ast.Expr, x: Tensor, frame: Frame, label: str | None = None) -> Tensor:
        """Apply the layer/block/repeat that `expr` denotes to the tensor x."""
        if isinstance(expr, ast.Labeled):
            if label is not None:
                raise CnncError("a layer can have only one label", expr.loc)
            self._claim_label(expr.label, expr.loc, frame)
            out = self.step(expr.expr, x, frame, expr.label)
            is_layer = self.nodes[out.node].segment.label == expr.label
            out = Tensor(out.node, out.shape, labelled_layer=is_layer)
            frame.env[expr.label] = out
            frame.bound_at[expr.label] = expr.loc
            return out
        if isinstance(expr, ast.BinOp) and expr.op == "*":
            return self._repeat(expr, x, frame, label)
        if isinstance(expr, ast.IfExpr):
            branch = expr.then if self._condition(expr.cond, frame) else expr.orelse
            return self._tensor(self._inline_body(branch, x, frame), expr)
        if isinstance(expr, ast.Chain) and self._is_application(expr.head, frame):
            for part in (expr.head, *expr.steps):
                x = self.step(part, x, frame)
            return x
        if isinstance(expr, ast.Name):
            callee = self.lookup(expr.id, frame, expr.loc)
            if isinstance(callee, Tensor):
                frame.used.add(expr.id)
                return self._shared(callee, x, expr, frame, label)
            return self.apply(callee, (), (), x, expr.loc, expr.loc, frame, label)
        if isinstance(expr, ast.Call):
            callee = self.lookup(expr.func, frame, expr.func_loc)
            if isinstance(callee, LayerRef) and callee.name in VARIADIC:
                args = [x] + [self._tensor(self.ev(a, frame), a) for a in expr.args]
                return self._variadic(callee.name, args, expr.loc, frame, label, [None] + list(expr.args))
            return self.apply(callee, expr.args, expr.kwargs, x, expr.loc, expr.func_loc, frame, label)
        what = describe(self.ev(expr, frame)) if not isinstance(expr, ast.Chain) else "a chain"
        raise CnncError(f"only a layer or a block can follow '->', not {what}", expr.loc,
                        "to combine tensors use `a + b`, `a * b` or `concat(a, b)`")

    def _claim_label(self, label: str, loc: Loc, frame: Frame) -> None:
        if label in frame.scope.labels or label in frame.env and label != "in":
            where = frame.bound_at.get(label)
            err = CnncError(f"'{label}' is already defined in this scope", loc,
                            "labels and tensor names share one namespace")
            raise err.add_note("defined here", where) if where else err
        frame.scope.labels.add(label)

    def _inline_body(self, body: tuple, x: Tensor, frame: Frame) -> Any:
        saved = frame.env.get("in")
        frame.env["in"] = x
        value = None
        try:
            for stmt in body:
                value = self.statement(stmt, frame)
        finally:
            if saved is None:
                frame.env.pop("in", None)
            else:
                frame.env["in"] = saved
        return value

    def _repeat(self, expr: ast.BinOp, x: Tensor, frame: Frame, label: str | None) -> Tensor:
        count = self.ev(expr.right, frame)
        if isinstance(count, bool) or not isinstance(count, int):
            raise CnncError(f"a repeat count must be an integer, got {describe(count)}", expr.right.loc)
        if not 1 <= count <= MAX_REPEAT:
            raise CnncError(f"repeat count {count} is out of range (1 to {MAX_REPEAT})", expr.right.loc)
        if label is not None:
            raise CnncError("a repeated block cannot carry a label: it stands for several layers", expr.loc,
                            "label a single application instead")
        group: list[Segment] = []
        for i in range(count):
            start = len(self.nodes)
            x = self.step(expr.left, x, frame)
            seg = self._instance_segment(start)
            if seg is not None:
                group.append(seg)
                seg.repeat = (group[0], i, count)
        return x

    def _instance_segment(self, start: int) -> Segment | None:
        """The outermost segment created in the current scope since node `start`."""
        if start >= len(self.nodes):
            return None
        seg = self.nodes[start].segment
        last_scope = self.nodes[-1].segment
        # Climb from the first new node to the segment that lives in the caller's scope.
        target_scope = self._scope_of_creation
        while seg.scope is not target_scope and seg.scope.parent_segment is not None:
            seg = seg.scope.parent_segment
        return seg if seg.scope is target_scope else last_scope

    # ---------------------------------------------------------- application
    def apply(self, callee: Any, args: tuple, kwargs: tuple, x: Tensor, loc: Loc, func_loc: Loc,
              frame: Frame, label: str | None) -> Tensor:
        self._scope_of_creation = frame.scope
        if isinstance(callee, BlockRef):
            return self._apply_block(callee.block, args, kwargs, x, loc, frame, label)
        if isinstance(callee, LayerRef):
            return self._apply_layer(callee.name, args, kwargs, x, loc, frame, label)
        raise CnncError(f"{describe(callee)} cannot be applied to a tensor", func_loc)

    def _apply_layer(self, name: str, args: tuple, kwargs: tuple, x: Tensor, loc: Loc, frame: Frame,
                     label: str | None) -> Tensor:
        spec_attrs = SURFACE.get(name) or OPS[name].attrs
        raw = self._match_args(name, spec_attrs, args, kwargs, frame, loc)
        if name == "depthwise_conv":
            return self._depthwise(raw, x, loc, frame, label)
        if name == "separable_conv":
            return self._separable(raw, x, loc, frame, label)
        spec = OPS[name]
        inputs = [x]
        attrs = {}
        for attr in spec.attrs:
            value, vloc = raw[attr.name]
            key = normalised_name(name, attr.name)
            if attr.kind == "tensor":
                inputs.append(self._tensor(value, vloc))
                continue
            if attr.kind == "layer":
                attrs.update(self._pool_reference(value, vloc, x))
                continue
            try:
                attrs[key] = convert(attr.kind, value, attr.name, attr.choices)
            except OpError as err:
                if isinstance(value, Word) and attr.kind not in ("choice", "padding"):
                    self.lookup(value.name, frame, vloc)  # an undefined name: say so, with a suggestion
                hint = err.hint
                if isinstance(value, Word) and attr.kind == "padding":
                    close = difflib.get_close_matches(value.name, ["same", "valid", "full"], n=1)
                    hint = f"did you mean '{close[0]}'?" if close else hint
                raise CnncError(err.message, vloc, hint) from None
        arg_locs = {normalised_name(name, k): v[1] for k, v in raw.items()}
        return self._node(name, inputs, attrs, loc, frame, label, arg_locs)

    def _pool_reference(self, value: Any, loc: Loc, x: Tensor) -> dict:
        if not isinstance(value, Tensor) or self.nodes[value.node].op != "maxpool":
            raise CnncError(f"unpool needs the label of a maxpool layer, got {describe(value)}", loc,
                            "label the pooling layer: `p1: maxpool(2)` … `unpool(p1)`")
        pool = self.nodes[value.node]
        return {"of": value.node, "of_name": pool.segment.path(), "of_shape": pool.shape,
                "of_input_shape": self.nodes[pool.inputs[0]].shape, "of_stride": pool.attrs["stride"]}

    def _match_args(self, name: str, attrs: tuple, args: tuple, kwargs: tuple, frame: Frame,
                    loc: Loc) -> dict[str, tuple[Any, Loc]]:
        """Positional and keyword arguments -> {attr: (value, loc)}, defaults filled in."""
        names = [a.name for a in attrs]
        if len(args) > len(attrs):
            raise CnncError(f"'{name}' takes at most {len(attrs)} positional arguments, got {len(args)}",
                            args[len(attrs)].loc, f"its arguments: {', '.join(names) or 'none'}")
        out = {a.name: (self.ev(e, frame), e.loc) for a, e in zip(attrs, args)}
        for kw in kwargs:
            key = {"kernel": "k", "padding": "pad"}.get(kw.name, kw.name) if name != "pad" else kw.name
            if key not in names:
                close = difflib.get_close_matches(kw.name, names, n=1)
                raise CnncError(f"'{name}' has no argument '{kw.name}'", kw.loc,
                                f"did you mean '{close[0]}'?" if close else
                                f"its arguments: {', '.join(names) or 'none'}")
            if key in out:
                raise CnncError(f"argument '{kw.name}' of '{name}' is given twice", kw.loc)
            out[key] = (self.ev(kw.value, frame), kw.value.loc)
        for a in attrs:
            if a.name not in out:
                if a.default is OpSpec and False:
                    pass
                from .ops import REQUIRED
                if a.default is REQUIRED:
                    raise CnncError(f"'{name}' needs its argument '{a.name}'" + (f" ({a.doc})" if a.doc else ""),
                                    loc, f"e.g. {name}({', '.join(n for n in names[:names.index(a.name) + 1])})")
                out[a.name] = (a.default, loc)
        return out

    def _depthwise(self, raw: dict, x: Tensor, loc: Loc, frame: Frame, label: str | None) -> Tensor:
        c = self._channels(x, loc)
        attrs = self._conv_attrs(raw, out=c * convert("pos_int", raw["multiplier"][0], "multiplier"), groups=c)
        return self._node("conv", [x], attrs, loc, frame, label, {}, layer="depthwise_conv")

    def _separable(self, raw: dict, x: Tensor, loc: Loc, frame: Frame, label: str | None) -> Tensor:
        c = self._channels(x, loc)
        seg = frame.scope.segment("separable_conv", label)
        inner = Frame(frame.env, Scope(seg), frame.is_network, frame.block_name)
        self._scope_of_creation = inner.scope
        dw = self._conv_attrs(raw, out=c, groups=c)
        dw["bias"] = False
        y = self._node("conv", [x], dw, loc, inner, "depthwise", {}, layer="separable_conv")
        pw = {"out_channels": convert("pos_int", raw["out"][0], "out"), "kernel": (1, 1), "stride": (1, 1),
              "padding": ((0, 0), (0, 0)), "dilation": (1, 1), "groups": 1,
              "bias": convert("bool", raw["bias"][0], "bias"), "trainable": True, "weights": None}
        out = self._node("conv", [y], pw, loc, inner, "pointwise", {}, layer="separable_conv")
        self._scope_of_creation = frame.scope
        return out

    def _conv_attrs(self, raw: dict, out: int, groups: int) -> dict:
        attrs = {"out_channels": out, "groups": groups, "trainable": True, "weights": None}
        for name, kind in (("k", "pair"), ("stride", "pair"), ("pad", "padding"), ("dilation", "pair"),
                           ("bias", "bool")):
            value, vloc = raw[name]
            try:
                attrs[normalised_name("conv", name)] = convert(kind, value, name)
            except OpError as err:
                raise CnncError(err.message, vloc, err.hint) from None
        return attrs

    def _channels(self, x: Tensor, loc: Loc) -> int:
        c = x.shape[0]
        if is_symbolic(c):
            raise CnncError(f"this layer needs a known channel count, got {c}", loc,
                            "bind the input with --input NAME=CxHxW")
        return c

    def _apply_block(self, block: ast.Block, args: tuple, kwargs: tuple, x: Tensor, loc: Loc,
                     frame: Frame, label: str | None) -> Tensor:
        if self.depth >= MAX_BLOCK_DEPTH:
            raise CnncError(f"blocks nested more than {MAX_BLOCK_DEPTH} deep (is '{block.name}' recursive "
                            "without an end?)", loc, "a recursive block needs an `if` that stops it")
        seg = frame.scope.segment(block.name, label)
        inner = Frame({}, Scope(seg), False, block.name)
        values = {}
        positional = [(p, (self.ev(e, frame), e.loc)) for p, e in zip(block.params, args)]
        if len(args) > len(block.params):
            raise CnncError(f"block '{block.name}' takes {len(block.params)} arguments, got {len(args)}",
                            args[len(block.params)].loc, f"defined at {block.loc}")
        for p, v in positional:
            values[p.name] = v
        names = [p.name for p in block.params]
        for kw in kwargs:
            if kw.name not in names:
                close = difflib.get_close_matches(kw.name, names, n=1)
                raise CnncError(f"block '{block.name}' has no parameter '{kw.name}'", kw.loc,
                                f"did you mean '{close[0]}'?" if close else f"its parameters: {', '.join(names)}")
            if kw.name in values:
                raise CnncError(f"parameter '{kw.name}' of block '{block.name}' is given twice", kw.loc)
            values[kw.name] = (self.ev(kw.value, frame), kw.value.loc)
        inner.env["in"] = x
        for p in block.params:
            if p.name in values:
                inner.env[p.name] = values[p.name][0]
            elif p.default is not None:
                inner.env[p.name] = self.ev(p.default, inner)
            else:
                raise CnncError(f"block '{block.name}' needs its parameter '{p.name}'", loc,
                                f"'{block.name}' is defined at {block.loc}")
            inner.bound_at[p.name] = p.loc
            inner.used.add(p.name)
            if p.name in OPS or p.name in FUNCTIONS or p.name in SURFACE:
                self.warn("shadowing", f"parameter '{p.name}' shadows the built-in of the same name "
                          f"inside block '{block.name}'", p.loc)
        self.depth += 1
        self.call_chain.append((block.name, loc))
        try:
            value = None
            for stmt in block.body:
                value = self.statement(stmt, inner)
            if not isinstance(value, Tensor):
                raise CnncError(f"block '{block.name}' must end with a tensor, but its last statement gives "
                                f"{describe(value)}", block.body[-1].loc if block.body else block.loc)
            self._lint_unused(inner)
        except CnncError as err:
            if len(err.diagnostic.notes) < 12:
                err.add_note(f"in block '{block.name}', applied here", loc)
            raise
        finally:
            self.depth -= 1
            self.call_chain.pop()
        self._scope_of_creation = frame.scope
        if label is not None:
            seg.label = label
        return value

    def _shared(self, source: Tensor, x: Tensor, expr: ast.Name, frame: Frame, label: str | None) -> Tensor:
        if not source.labelled_layer:
            raise CnncError(f"'{expr.id}' is a tensor, not a layer: it cannot follow '->'", expr.loc,
                            "to reuse a layer's weights, label it (`enc: conv(64, 3)`) and write `-> enc`; "
                            "to combine tensors use `+`, `*` or concat")
        node = self.nodes[source.node]
        owner = node.shares if node.shares is not None else node.id
        self._scope_of_creation = frame.scope
        return self._node(node.op, [x, *(self._as_tensor(i) for i in node.inputs[1:])], dict(node.attrs),
                          expr.loc, frame, label, {}, layer=node.layer, shares=owner, base=expr.id)

    def _as_tensor(self, node_id: int) -> Tensor:
        return Tensor(node_id, self.nodes[node_id].shape)

    def _variadic(self, op: str, tensors: list, loc: Loc, frame: Frame, label: str | None,
                  sources: list) -> Tensor:
        self._scope_of_creation = frame.scope
        return self._node(op, tensors, {}, loc, frame, label, {}, sources=sources)

    # --------------------------------------------------------------- nodes
    def _node(self, op: str, inputs: list, attrs: dict, loc: Loc, frame: Frame, label: str | None,
              arg_locs: dict, layer: str | None = None, shares: int | None = None, base: str | None = None,
              sources: list | None = None) -> Tensor:
        spec = OPS[op]
        ins = [t.shape for t in inputs]
        if spec.inputs is None or op in VARIADIC:
            ins = self._unify(op, inputs, loc, sources or [])
        elif op == "unpool":
            ins = [self._unify_one(ins[0], attrs["of_shape"], loc, f"unpool's input and {op}'s source")]
        try:
            attrs = spec.resolve(dict(attrs), ins)
            shape = tuple(spec.shape(attrs, ins))
        except OpError as err:
            where = arg_locs.get(normalised_name(op, err.attr)) if err.attr else None
            raise self._op_error(err, where or loc, op, inputs) from None
        except SymbolicComparison as err:
            raise CnncError(f"{op}: cannot decide a size that depends on "
                            f"{', '.join(sorted(err.expr.symbols()))} ({err.expr})", loc,
                            "bind the input size with --input NAME=CxHxW") from None
        self._check_size(shape, loc, op)
        self._check_params(spec, attrs, ins, loc)
        return self._new_node(op, inputs, attrs, loc, frame, label, shape, layer, shares, base)

    def _check_params(self, spec: OpSpec, attrs: dict, ins: list, loc: Loc) -> None:
        try:
            n = sum(p.size for p in spec.params(attrs, ins).values())
        except OpError as err:
            raise CnncError(f"{spec.name}: {err.message}", loc, err.hint) from None
        if n > MAX_TENSOR_ELEMENTS:
            raise CnncError(f"{spec.name}: {n:,} parameters in one layer is too many "
                            f"(the limit is {MAX_TENSOR_ELEMENTS:,})", loc)

    def _new_node(self, op, inputs, attrs, loc, frame, label, shape, layer=None, shares=None, base=None):
        if len(self.nodes) >= MAX_NODES:
            raise CnncError(f"the network has more than {MAX_NODES} layers", loc)
        seg = frame.scope.segment(base or layer or op, label)
        pending = Pending(len(self.nodes), op, tuple(t.node for t in inputs) if inputs else (), attrs, loc, seg,
                          layer or op, shape, shares, tuple(self.call_chain))
        self.nodes.append(pending)
        return Tensor(pending.id, shape)

    def _op_error(self, err: OpError, loc: Loc, op: str, inputs: list) -> CnncError:
        out = CnncError(f"{op}: {err.message}", loc, err.hint)
        for t in inputs:
            producer = self.nodes[t.node]
            out.add_note(f"input {fmt_shape(t.shape)} comes from {self._display(producer)}", producer.loc)
        return out

    def _display(self, p: Pending) -> str:
        return f"'{p.segment.path()}' ({p.layer})" if p.op != "input" else f"input '{p.segment.path()}'"

    def _check_size(self, shape: tuple, loc: Loc, op: str = "input") -> None:
        for d in shape:
            if is_symbolic(d):
                self.constraints.positive.append((d, loc))
            elif d < 1:
                raise CnncError(f"{op}: output would be empty, shape {fmt_shape(shape)}", loc,
                                "the input is too small for the layers before this one")
        n = numel(shape)
        if not is_symbolic(n) and n > MAX_TENSOR_ELEMENTS:
            raise CnncError(f"{op}: a tensor of {n:,} elements per sample is too large "
                            f"(the limit is {MAX_TENSOR_ELEMENTS:,})", loc)

    def _unify(self, op: str, inputs: list, loc: Loc, sources: list) -> list:
        """Merge points: make symbolic sizes agree, deriving constraints where they can."""
        shapes = [list(t.shape) for t in inputs]
        first = shapes[0]
        start = 1 if op == "concat" else 0
        for other in shapes[1:]:
            if len(other) != len(first):
                continue  # the shape rule reports rank mismatches
            for i in range(start, len(first)):
                if op != "concat" and (first[i] == 1 or other[i] == 1):
                    continue
                if is_symbolic(first[i]) or is_symbolic(other[i]):
                    other[i] = self._agree(first[i], other[i], loc, op, inputs)
        return [tuple(s) for s in shapes]

    def _unify_one(self, a: tuple, b: tuple, loc: Loc, what: str) -> tuple:
        if len(a) != len(b):
            return a
        return tuple(self._agree(y, x, loc, what, []) if is_symbolic(x) or is_symbolic(y) else x
                     for x, y in zip(a, b))

    def _agree(self, a, b, loc: Loc, op: str, inputs: list):
        verdict, detail = equal_when(a, b, self.constraints)
        if verdict == "yes":
            return a
        if verdict == "when":
            name, L, residues = detail
            if not self.constraints.restrict(name, L, residues):
                raise self._mismatch(op, inputs, loc, f"no value of {name} makes {a} and {b} agree "
                                                      "together with the other constraints")
            self.constraint_sources.append((name, loc))
            return a
        reason = f"{a} and {b} never agree" if verdict == "no" else f"cannot prove that {a} equals {b}"
        raise self._mismatch(op, inputs, loc, reason)

    def _mismatch(self, op: str, inputs: list, loc: Loc, reason: str) -> CnncError:
        shapes = " and ".join(fmt_shape(t.shape) for t in inputs)
        err = CnncError(f"{op}: shapes {shapes} do not line up: {reason}", loc,
                        "bind the input size with --input NAME=CxHxW to see concrete shapes")
        for t in inputs:
            p = self.nodes[t.node]
            err.add_note(f"{fmt_shape(t.shape)} comes from {self._display(p)}", p.loc)
        return err

    # ------------------------------------------------------------ evaluation
    def lookup(self, name: str, frame: Frame, loc: Loc, quiet: bool = False) -> Any:
        if name in frame.env:
            return frame.env[name]
        if name in self.defs.blocks:
            return BlockRef(self.defs.blocks[name])
        if (name in OPS and name not in NOT_LAYERS) or name in SURFACE:
            return LayerRef(name)
        if quiet:
            return Word(name)
        if name == "in":
            raise CnncError("`in` exists only inside a block", loc, "in a network, name the input tensor")
        candidates = list(frame.env) + list(self.defs.blocks) + [n for n in OPS if n not in NOT_LAYERS] \
            + list(SURFACE) + sorted(FUNCTIONS)
        close = difflib.get_close_matches(name, candidates, n=1)
        raise CnncError(f"unknown name '{name}'", loc, f"did you mean '{close[0]}'?" if close else None)

    def ev(self, expr: ast.Expr, frame: Frame) -> Any:
        """The value of an expression in value position."""
        if isinstance(expr, (ast.Int, ast.Float, ast.Str, ast.Bool)):
            return expr.value
        if isinstance(expr, ast.Name):
            if expr.id in frame.env:
                frame.used.add(expr.id)
                return frame.env[expr.id]
            callee = self.lookup(expr.id, frame, expr.loc, quiet=True)
            if isinstance(callee, (LayerRef, BlockRef)) and "in" in frame.env:
                return self.head(expr, frame)
            return Word(expr.id) if isinstance(callee, Word) else callee
        if isinstance(expr, ast.TupleExpr):
            return tuple(self.ev(e, frame) for e in expr.items)
        if isinstance(expr, ast.ListExpr):
            return [self.ev(e, frame) for e in expr.items]
        if isinstance(expr, ast.UnaryOp):
            v = self.ev(expr.operand, frame)
            if expr.op == "not":
                return not self._truth(v, expr.operand)
            return self._arith("-", 0, v, expr)
        if isinstance(expr, ast.BinOp):
            return self._binop(expr, frame)
        if isinstance(expr, ast.Call):
            return self._call(expr, frame)
        if isinstance(expr, ast.Labeled) and not self._is_application(expr, frame):
            raise CnncError(f"the label '{expr.label}' must name a layer or a block, not "
                            f"{describe(self.ev(expr.expr, frame))}", expr.loc,
                            f"write `{expr.label}: conv(...)`, or bind a value with `{expr.label} = ...`")
        if isinstance(expr, ast.Chain) or isinstance(expr, ast.Labeled):
            return self.head(expr, frame)
        if isinstance(expr, ast.IfExpr):
            branch = expr.then if self._condition(expr.cond, frame) else expr.orelse
            value = None
            for stmt in branch:
                value = self.statement(stmt, frame)
            return value
        raise AssertionError(expr)

    def _call(self, expr: ast.Call, frame: Frame) -> Any:
        if expr.func in FUNCTIONS and expr.func not in frame.env:
            return self._function(expr, frame)
        callee = self.lookup(expr.func, frame, expr.func_loc)
        source = self._functional_input(expr, frame) if isinstance(callee, LayerRef) else None
        if source is not None and callee.name not in VARIADIC:
            frame.used.add(expr.args[0].id)
            call = ast.Call(expr.loc, expr.func, expr.args[1:], expr.kwargs, expr.func_loc)
            return self.step(call, source, frame)
        if isinstance(callee, LayerRef) and callee.name in VARIADIC and expr.args:
            if expr.kwargs:
                raise CnncError(f"'{callee.name}' takes no keyword arguments", expr.kwargs[0].loc)
            tensors = [self._tensor(self.ev(a, frame), a) for a in expr.args]
            return self._variadic(callee.name, tensors, expr.loc, frame, None, list(expr.args))
        if isinstance(callee, (LayerRef, BlockRef)):
            if "in" not in frame.env:
                raise CnncError(f"nothing is piped into '{expr.func}' here", expr.loc,
                                f"apply it to a tensor: `x -> {expr.func}(...)`")
            frame.used.add("in")
            return self.step(expr, frame.env["in"], frame)
        raise CnncError(f"'{expr.func}' is {describe(callee)}, not something that can be called", expr.func_loc)

    def _function(self, expr: ast.Call, frame: Frame) -> Any:
        args = [self.ev(a, frame) for a in expr.args]
        if expr.kwargs:
            raise CnncError(f"'{expr.func}' takes no keyword arguments", expr.kwargs[0].loc)
        if expr.func in ("min", "max"):
            if len(args) < 2:
                raise CnncError(f"'{expr.func}' needs at least two values", expr.loc)
            for a, e in zip(args, expr.args):
                self._number(a, e)
            try:
                return (min if expr.func == "min" else max)(args)
            except SymbolicComparison as err:
                raise CnncError(f"cannot decide {expr.func} of sizes that depend on "
                                f"{', '.join(sorted(err.expr.symbols()))}", expr.loc,
                                "bind the input size with --input NAME=CxHxW") from None
        if len(args) != 1:
            raise CnncError(f"'{expr.func}' takes one tensor, got {len(args)} arguments", expr.loc)
        t = self._tensor(args[0], expr.args[0])
        axis = {"channels": 0, "height": 1, "width": 2}[expr.func]
        if axis >= len(t.shape):
            raise CnncError(f"{expr.func}() needs a [C, H, W] tensor, got {fmt_shape(t.shape)}", expr.args[0].loc)
        return t.shape[axis]

    def _binop(self, expr: ast.BinOp, frame: Frame) -> Any:
        if expr.op in ("and", "or"):
            left = self._truth(self.ev(expr.left, frame), expr.left)
            if (expr.op == "and") != left:
                return left
            return self._truth(self.ev(expr.right, frame), expr.right)
        if expr.op == "*" and self._is_application(expr.left, frame):
            if "in" not in frame.env:
                raise CnncError("nothing is piped into this repeated block", expr.loc,
                                "apply it to a tensor: `x -> block(...) * N`")
            frame.used.add("in")
            return self.step(expr, frame.env["in"], frame)
        left, right = self.ev(expr.left, frame), self.ev(expr.right, frame)
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            return self._tensor_binop(expr, left, right, frame)
        return self._arith(expr.op, left, right, expr)

    def _tensor_binop(self, expr: ast.BinOp, left: Any, right: Any, frame: Frame) -> Tensor:
        if expr.op not in ("+", "*"):
            raise CnncError(f"tensors support '+' and '*', not '{expr.op}'", expr.loc)
        a = self._tensor(left, expr.left)
        b = self._tensor(right, expr.right)
        return self._variadic("add" if expr.op == "+" else "mul", [a, b], expr.loc, frame, None,
                              [expr.left, expr.right])

    def _arith(self, op: str, a: Any, b: Any, expr: ast.Expr) -> Any:
        if op in ("==", "!="):
            if isinstance(a, (int, Dim)) and isinstance(b, (int, Dim)) and not isinstance(a, bool):
                verdict, _ = equal_when(a, b, self.constraints)
                if verdict == "yes":
                    return op == "=="
                if verdict == "no":
                    return op == "!="
                raise CnncError(f"cannot decide whether {a} {op} {b}: it depends on the input size", expr.loc,
                                "bind the input size with --input NAME=CxHxW")
            equal = (a.name if isinstance(a, Word) else a) == (b.name if isinstance(b, Word) else b)
            return equal if op == "==" else not equal
        left_expr = getattr(expr, "left", expr)
        right_expr = getattr(expr, "right", getattr(expr, "operand", expr))
        self._number(a, left_expr)
        self._number(b, right_expr)
        try:
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
        except SymbolicComparison as err:
            raise CnncError(f"cannot decide '{op}' on a size that depends on "
                            f"{', '.join(sorted(err.expr.symbols()))}", expr.loc,
                            "bind the input size with --input NAME=CxHxW") from None
        except OverflowError:
            raise CnncError("number too large", expr.loc) from None
        raise AssertionError(op)

    def _number(self, v: Any, expr: ast.Expr) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float, Dim)):
            if isinstance(v, Word):
                self.lookup(v.name, Frame({}, Scope(None), True), expr.loc)  # raises "unknown name"
            raise CnncError(f"expected a number, got {describe(v)}", expr.loc)
        if isinstance(v, int) and abs(v) > 1 << 62:
            raise CnncError("number too large", expr.loc)

    def _truth(self, v: Any, expr: ast.Expr) -> bool:
        if isinstance(v, bool):
            return v
        raise CnncError(f"a condition must be true or false, got {describe(v)}", expr.loc)

    def _condition(self, expr: ast.Expr, frame: Frame) -> bool:
        return self._truth(self.ev(expr, frame), expr)

    def _tensor(self, v: Any, where) -> Tensor:
        if isinstance(v, Tensor):
            return v
        loc = where.loc if hasattr(where, "loc") else where
        if isinstance(v, Word):
            self.lookup(v.name, Frame({}, Scope(None), True), loc)
        raise CnncError(f"expected a tensor, got {describe(v)}", loc)

    def _bind_params(self, params: tuple, given: dict, frame: Frame, loc: Loc, what: str, cli: bool) -> None:
        names = {p.name for p in params}
        for key in given:
            if key not in names:
                raise CnncError(f"{what} has no parameter '{key}'",
                                hint=f"its parameters: {', '.join(sorted(names)) or 'none'}")
        for p in params:
            if p.name in given:
                frame.env[p.name] = given[p.name]
            elif p.default is not None:
                frame.env[p.name] = self.ev(p.default, frame)
            else:
                raise CnncError(f"{what} needs a value for its parameter '{p.name}'", p.loc,
                                f"give it with --set {p.name}=VALUE")
            frame.bound_at[p.name] = p.loc
            frame.used.add(p.name)

    # ----------------------------------------------------------------- lints
    def warn(self, code: str, message: str, loc: Loc | None, hint: str | None = None) -> None:
        self.warnings.append(Diagnostic("warning", message, loc, hint, code=code))

    def _lint_unused(self, frame: Frame) -> None:
        for name, loc in frame.bound_at.items():
            if name not in frame.used and isinstance(frame.env.get(name), Tensor) \
                    and name not in frame.scope.labels:
                self.warn("unused", f"'{name}' is bound but never used", loc,
                          "remove it, or use it (its layers are computed for nothing)")

    # ---------------------------------------------------------------- finish
    def _finish(self, name: str, outputs: list[Tensor]) -> Network:
        names = self._final_names()
        nodes = []
        for p in self.nodes:
            attrs = dict(p.attrs)
            if p.op == "unpool":
                attrs["of"] = names[attrs["of"]]
                attrs.pop("of_name", None)  # only for messages during elaboration
            repeat = None
            seg: Segment | None = p.segment
            while seg is not None:
                if seg.repeat is not None:
                    group, i, n = seg.repeat
                    repeat = (group.path(), i, n)
                seg = seg.scope.parent_segment
            nodes.append(Node(names[p.id], p.op, tuple(names[i] for i in p.inputs), attrs, p.loc,
                              tuple(s.text() for s in _scope_segments(p.segment)), p.layer,
                              names[p.shares] if p.shares is not None else None, repeat,
                              p.call_chain, tuple(s.base for s in _scope_segments(p.segment))))
        net = Network(name, build_graph(nodes), {n: self.nodes[i].shape for n, i in
                                                 ((names[i], i) for i in self.inputs.values())},
                      tuple(dict.fromkeys(names[t.node] for t in outputs)))
        net.shapes = {names[p.id]: p.shape for p in self.nodes}
        net.source = self.defs.main
        net.warnings = list(self.warnings)
        net.symbols = self._symbol_report()
        net.constraints = [s["constraint"] for s in net.symbols.values() if s.get("constraint")]
        return net

    def _final_names(self) -> dict[int, str]:
        names = {p.id: p.segment.path() for p in self.nodes}
        seen: dict[str, int] = {}
        for p in self.nodes:  # a label equal to an automatic name: keep the label, renumber the other
            n = names[p.id]
            if n in seen:
                k = 2
                while f"{n}_{k}" in seen or f"{n}_{k}" in names.values():
                    k += 1
                names[p.id] = f"{n}_{k}"
            seen[names[p.id]] = p.id
        return names

    def _symbol_report(self) -> dict[str, dict]:
        symbols: set[str] = set()
        for p in self.nodes:
            for d in p.shape:
                if isinstance(d, Dim):
                    symbols |= d.symbols()
        out = {}
        for s in sorted(symbols):
            sources = [loc for n, loc in self.constraint_sources if n == s]
            modulus, residues = self.constraints.residues.get(s, (1, frozenset({0})))
            out[s] = {"constraint": self.constraints.describe(s), "smallest": self.constraints.smallest(s),
                      "modulus": modulus, "residues": sorted(residues), "sources": sources}
        return out


def _scope_segments(seg: Segment) -> list[Segment]:
    """The block-instance segments enclosing `seg`, outermost first."""
    parts = []
    s = seg.scope.parent_segment
    while s is not None:
        parts.append(s)
        s = s.scope.parent_segment
    return list(reversed(parts))


def choose_network(defs: Definitions, name: str | None) -> str:
    if name is not None:
        if name not in defs.networks:
            close = difflib.get_close_matches(name, list(defs.networks), n=1)
            raise CnncError(f"--network {name}: no network of that name in {defs.main}",
                            hint=f"did you mean '{close[0]}'?" if close else
                            f"networks: {', '.join(defs.networks) or 'none'}")
        return name
    candidates = defs.main_networks or list(defs.networks)
    if not candidates:
        raise CnncError(f"{defs.main} defines no network", hint="a network starts with `network Name { ... }`")
    if len(candidates) > 1:
        trained = [n for n in candidates if n in defs.trains]
        if len(trained) == 1:
            return trained[0]
        raise CnncError(f"{defs.main} defines several networks: {', '.join(candidates)}",
                        hint="choose one with --network NAME")
    return candidates[0]


def elaborate(defs: Definitions, network: str | None = None, bindings: dict[str, tuple] | None = None,
              args: dict[str, Any] | None = None) -> Network:
    """Build the checked graph of one network of a loaded program."""
    name = choose_network(defs, network)
    return Elaborator(defs, bindings, args).network(name)
