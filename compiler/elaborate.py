"""Stage 2 (compiler): elaboration — from the AST to a checked `Network` graph.

Evaluates a network's body: integer arithmetic, conditionals, shape queries,
block calls (with `in` bound to the piped tensor), repetition and labels.
Every layer application becomes one node whose attributes are normalised and
whose output shape is inferred on the spot with the op-spec table (shape
queries like `channels(in)` need it). Errors carry the location of the
construct at fault and the chain of block calls that led there.

The parts live beside it: `loader` (files and imports -> `Definitions`),
`naming` (values, scopes and layer names), `expressions` (what names and
operators mean), `unify` (sizes that must agree at merge points); two parts of
the elaborator itself, `functions` (calls of `def` helpers and built-ins) and
`tensor_expressions` (arithmetic on tensors, channel slices, splits); this
module walks the syntax tree and builds the nodes. Elaboration is bounded (layers,
repeats, block depth, tensor sizes) and never ends in Python's RecursionError:
it makes room for `MAX_BLOCK_DEPTH` nested blocks while it runs, and a program
that still nests too deeply is a located error.
"""
from __future__ import annotations

import contextlib
import sys
from types import TracebackType
from typing import Any, Callable, Iterator, Mapping

from ..dsl import ast
from ..dsl.source import CnncError, Diagnostic, Loc, did_you_mean
from .attrs import PADDING_WORDS, convert, describe
from .expressions import FUNCTIONS, arith, is_builtin, lookup, require_tensor, truth
from .functions import FunctionCalls
from .graph import Network, build_graph
from .lints import warning
from .loader import Definitions, choose_network, load  # noqa: F401  (re-exported: the compiler's entry points)
from .naming import BlockRef, Frame, LayerRef, Pending, Scope, Segment, Tensor, final_names, outermost_in
from .ops import ALIASES, OPS, REQUIRED, SURFACE, OpError, OpSpec, Word, fmt_shape, normalised_name, numel
from .symbolic import Constraints, Dim, SymbolicComparison, is_symbolic
from .tensor_expressions import TensorExpressions
from .unify import ShapeUnifier

MAX_REPEAT = 10_000
MAX_NODES = 50_000  # ResNet-2000 has 6,669; more is a mistake, not a network
MAX_BLOCK_DEPTH = 200
MAX_TENSOR_ELEMENTS = 1 << 31
# Nested block calls recurse in Python (about ten frames a level): room for MAX_BLOCK_DEPTH of them.
RECURSION_LIMIT = 20 * MAX_BLOCK_DEPTH + 2000


@contextlib.contextmanager
def recursion_room(limit: int = RECURSION_LIMIT) -> Iterator[None]:
    """Python's recursion limit raised to at least `limit` for the duration, then restored.

    The limit is process-wide: the command line raises it once when it starts
    (app/cli.py); this makes library callers (tests, notebooks) behave the same
    without changing the interpreter for them on import.
    """
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def _innermost_loc(tb: TracebackType | None) -> Loc | None:
    """The location of the innermost construct being elaborated when `tb` was raised."""
    loc = None
    while tb is not None:
        for name in ("expr", "stmt"):
            node = tb.tb_frame.f_locals.get(name)
            if isinstance(getattr(node, "loc", None), Loc):
                loc = node.loc
        tb = tb.tb_next
    return loc


class Elaborator(FunctionCalls, TensorExpressions):
    """Builds one network of a program; all of its state is set here, in `__init__`."""

    def __init__(self, defs: Definitions, bindings: dict[str, tuple] | None = None,
                 args: dict[str, Any] | None = None):
        self.defs = defs
        self.bindings = bindings or {}                      # --input NAME=CxHxW
        self.args = args or {}                              # --set NAME=VALUE
        self.nodes: list[Pending] = []                      # every layer so far, in order
        self.inputs: dict[str, int] = {}                    # input name -> node id
        self.constraints = Constraints()                    # what symbolic sizes must satisfy
        self.unifier = ShapeUnifier(self.constraints, self._producer)
        self.warnings: list[Diagnostic] = []
        self.call_chain: list[tuple[str, Loc | None]] = []  # the block calls being evaluated
        self.function_stack: list[str] = []                 # the `def` helpers being evaluated
        self.function_calls = 0                             # how many `def` calls so far

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
        if isinstance(stmt, ast.TupleAssign):
            return self._bind_parts(stmt, frame)
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
        if is_builtin(name) or name in self.defs.blocks:
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
        if not shape or len(shape) not in (1, 2, 3):
            raise CnncError(f"an input is [C, H, W], [C, L] or [F], got {fmt_shape(shape)}", stmt.loc,
                            "an image is [C, H, W], a 1-D signal [C, L], a feature vector [F]")
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
                self._refuse_layers_in_function(what, expr.loc)
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
            if isinstance(callee, LayerRef) and _is_variadic(callee.name):
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
            if isinstance(out, tuple):   # a block giving several tensors: the label names its instance
                frame.env[expr.label] = out
                frame.bound_at[expr.label] = expr.loc
                return out
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
            callee = self.lookup(expr.id, frame, expr.loc, called="step")
            if isinstance(callee, Tensor):
                frame.used.add(expr.id)
                return self._shared(callee, x, expr, frame, label)
            return self.apply(callee, (), (), x, expr.loc, expr.loc, frame, label)
        if isinstance(expr, ast.Call):
            if expr.func in self.defs.functions and expr.func not in frame.env:
                raise CnncError(f"'{expr.func}' is a numeric function: it cannot follow '->'", expr.func_loc,
                                "a `def` computes a number; use its value as an argument, e.g. `conv(f(32))`")
            callee = self.lookup(expr.func, frame, expr.func_loc, called="step")
            if isinstance(callee, LayerRef) and _is_variadic(callee.name):
                args = [x] + [self._tensor(self.ev(a, frame), a) for a in expr.args]
                return self._variadic(callee.name, args, expr.loc, frame, label)
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
            hint = "make it one with int(…), round(…), ceil(…) or floor(…)" if isinstance(count, float) \
                else None
            raise CnncError(f"a repeat count must be an integer, got {describe(count)}", expr.right.loc, hint)
        if not 0 <= count <= MAX_REPEAT:
            raise CnncError(f"repeat count {count} is out of range (0 to {MAX_REPEAT})", expr.right.loc,
                            "`* 0` passes the tensor on unchanged" if count < 0 else None)
        if label is not None:
            raise CnncError("a repeated block cannot carry a label: it stands for several layers", expr.loc,
                            "label a single application instead")
        group: list[Segment] = []
        for i in range(count):
            start = len(self.nodes)
            if isinstance(x, tuple):
                raise CnncError(f"a repeated block must give one tensor, but this one gives {len(x)}",
                                expr.loc, "the next repetition would take them all as its input: bind them "
                                          "(`a, b = x -> block(...)`) and chain the calls by hand")
            x = self.step(expr.left, x, frame)
            seg = self._instance_segment(start, frame.scope)
            if seg is not None:
                group.append(seg)
                seg.repeat = (group[0], i, count)
        return x

    def _instance_segment(self, start: int, scope: Scope) -> Segment | None:
        """The outermost segment created in `scope` (the caller's) since node `start`."""
        if start >= len(self.nodes):
            return None
        return outermost_in(self.nodes[start].segment, scope) or self.nodes[-1].segment

    # ---------------------------------------------------------- application
    def apply(self, callee: Any, args: tuple, kwargs: tuple, x: Tensor, loc: Loc, func_loc: Loc,
              frame: Frame, label: str | None) -> Tensor:
        if isinstance(callee, BlockRef):
            return self._apply_block(callee.block, args, kwargs, x, loc, frame, label)
        if isinstance(callee, LayerRef):
            return self._apply_layer(callee.name, args, kwargs, x, loc, frame, label)
        raise CnncError(f"{describe(callee)} cannot be applied to a tensor", func_loc)

    def _apply_layer(self, name: str, args: tuple, kwargs: tuple, x: Tensor, loc: Loc, frame: Frame,
                     label: str | None) -> Tensor:
        spec_attrs = SURFACE[name] if name in SURFACE else OPS[name].attrs
        raw = self._match_args(name, spec_attrs, args, kwargs, frame, loc)
        if name == "depthwise_conv":
            return self._depthwise(raw, x, loc, frame, label)
        if name == "separable_conv":
            return self._separable(raw, x, loc, frame, label)
        if name == "split":
            return self._split(raw, x, loc, frame, label)
        spec = OPS[ALIASES.get(name, name)]
        inputs = [x]
        attrs = {}
        for attr in spec.attrs:
            value, vloc = raw[attr.name]
            key = normalised_name(name, attr.name)
            if attr.kind == "tensor":
                inputs.append(self._tensor(value, vloc))
                continue
            if attr.kind == "opt_tensor":  # `upsample(like = t)`: t is a second input when given
                if value is not None and not (isinstance(value, Word) and value.name == "none"):
                    inputs.append(self._tensor(value, vloc))
                continue
            if attr.kind == "layer":
                attrs.update(self._pool_reference(value, vloc, x))
                continue
            try:
                attrs[key] = convert(attr.kind, value, attr.name, attr.choices)
            except OpError as err:
                if isinstance(value, Word) and attr.kind not in ("choice", "padding", "init"):
                    self.lookup(value.name, frame, vloc)  # an undefined name: say so, with a suggestion
                hint = err.hint
                if name == "upsample" and attr.name == "size" and "depends on" in err.message:
                    hint = "to follow a symbolic size, resize to a tensor: upsample(like = t)"
                if isinstance(value, Word) and attr.kind == "padding":
                    hint = did_you_mean(value.name, PADDING_WORDS, hint)
                raise CnncError(err.message, vloc, hint) from None
        arg_locs = {normalised_name(name, k): v[1] for k, v in raw.items()}
        return self._node(spec.name, inputs, attrs, loc, frame, label, arg_locs, layer=name)

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
                raise CnncError(f"'{name}' has no argument '{kw.name}'", kw.loc,
                                did_you_mean(kw.name, names, f"its arguments: {', '.join(names) or 'none'}"))
            if key in out:
                raise CnncError(f"argument '{kw.name}' of '{name}' is given twice", kw.loc)
            out[key] = (self.ev(kw.value, frame), kw.value.loc)
        for a in attrs:
            if a.name not in out:
                if a.default is REQUIRED:
                    raise CnncError(f"'{name}' needs its argument '{a.name}'" + (f" ({a.doc})" if a.doc else ""),
                                    loc, f"e.g. {name}({', '.join(n for n in names[:names.index(a.name) + 1])})")
                out[a.name] = (a.default, loc)
        return out

    def _depthwise(self, raw: dict, x: Tensor, loc: Loc, frame: Frame, label: str | None) -> Tensor:
        c = self._channels(x, loc)
        attrs = self._conv_attrs(raw, out=c * convert("pos_int", raw["multiplier"][0], "multiplier"), groups=c)
        arg_locs = {normalised_name("conv", k): v[1] for k, v in raw.items()}
        return self._node("conv", [x], attrs, loc, frame, label, arg_locs, layer="depthwise_conv")

    def _separable(self, raw: dict, x: Tensor, loc: Loc, frame: Frame, label: str | None) -> Tensor:
        c = self._channels(x, loc)
        seg = frame.scope.segment("separable_conv", label)
        inner = Frame(frame.env, Scope(seg), frame.is_network, frame.block_name)
        dw = self._conv_attrs(raw, out=c, groups=c)
        dw["bias"] = False
        y = self._node("conv", [x], dw, loc, inner, "depthwise", {}, layer="separable_conv")
        pw = {"out_channels": convert("pos_int", raw["out"][0], "out"), "kernel": (1, 1), "stride": (1, 1),
              "padding": ((0, 0), (0, 0)), "dilation": (1, 1), "groups": 1,
              "bias": convert("bool", raw["bias"][0], "bias"), "trainable": True, "weights": None}
        return self._node("conv", [y], pw, loc, inner, "pointwise", {}, layer="separable_conv")

    def _conv_attrs(self, raw: dict, out: int, groups: int) -> dict:
        """A surface layer's conv attributes; the fixed-weight ones (`trainable`, `weights`, `init`) when it
        takes them (depthwise_conv does, as conv)."""
        attrs = {"out_channels": out, "groups": groups, "trainable": True, "weights": None}
        for name, kind in (("k", "pair"), ("stride", "pair"), ("pad", "padding"), ("dilation", "pair"),
                           ("bias", "bool"), ("trainable", "bool"), ("weights", "weights"), ("init", "init")):
            if name not in raw:
                continue
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
        if len(self.call_chain) >= MAX_BLOCK_DEPTH:
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
                raise CnncError(f"block '{block.name}' has no parameter '{kw.name}'", kw.loc,
                                did_you_mean(kw.name, names, f"its parameters: {', '.join(names)}"))
            if kw.name in values:
                raise CnncError(f"parameter '{kw.name}' of block '{block.name}' is given twice", kw.loc)
            values[kw.name] = (self.ev(kw.value, frame), kw.value.loc)
        inner.env["in"] = x
        given = {k: v for k, (v, _) in values.items()}
        for p in block.params:
            inner.env[p.name] = self._param_value(
                p, given, inner,
                lambda p: CnncError(f"block '{block.name}' needs its parameter '{p.name}'", loc,
                                    f"'{block.name}' is defined at {block.loc}"))
            inner.bound_at[p.name] = p.loc
            inner.used.add(p.name)
            if is_builtin(p.name):
                self.warn("shadowing", f"parameter '{p.name}' shadows the built-in of the same name "
                          f"inside block '{block.name}'", p.loc)
        self.call_chain.append((block.name, loc))
        try:
            value = None
            for stmt in block.body:
                value = self.statement(stmt, inner)
            if not _tensors(value):
                raise CnncError(f"block '{block.name}' must end with a tensor (or a tuple of tensors), but its "
                                f"last statement gives {describe(value)}",
                                block.body[-1].loc if block.body else block.loc,
                                "a block gives several tensors as a tuple: end it with `(a, b)`")
            self._lint_unused(inner)
        except CnncError as err:
            if len(err.diagnostic.notes) < 12:
                err.add_note(f"in block '{block.name}', applied here", loc)
            raise
        finally:
            self.call_chain.pop()
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
        return self._node(node.op, [x, *(self._as_tensor(i) for i in node.inputs[1:])], dict(node.attrs),
                          expr.loc, frame, label, {}, layer=node.layer, shares=owner, base=expr.id)

    def _as_tensor(self, node_id: int) -> Tensor:
        return Tensor(node_id, self.nodes[node_id].shape)

    def _variadic(self, op: str, tensors: list, loc: Loc, frame: Frame, label: str | None) -> Tensor:
        return self._node(op, tensors, {}, loc, frame, label, {})

    # --------------------------------------------------------------- nodes
    def _node(self, op: str, inputs: list, attrs: dict, loc: Loc, frame: Frame, label: str | None,
              arg_locs: dict, layer: str | None = None, shares: int | None = None,
              base: str | None = None) -> Tensor:
        spec = OPS[op]
        ins = [t.shape for t in inputs]
        if spec.variadic:
            ins = self.unifier.merge(op, inputs, loc)
        elif op == "unpool":
            ins = [self.unifier.match(ins[0], attrs["of_shape"], loc, f"unpool's input and {op}'s source")]
        try:
            attrs = spec.resolve(dict(attrs), ins)
            shape = tuple(spec.shape(attrs, ins))
        except OpError as err:
            where = arg_locs.get(normalised_name(op, err.attr)) if err.attr else None
            raise self._op_error(err, where or loc, layer or op, inputs) from None
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
            out.add_note(f"input {fmt_shape(t.shape)} comes from {producer.display()}", producer.loc)
        return out

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

    def _producer(self, node: int) -> tuple[str, Loc | None]:
        p = self.nodes[node]
        return p.display(), p.loc

    # ------------------------------------------------------------ evaluation
    def lookup(self, name: str, frame: Frame, loc: Loc, quiet: bool = False, called: str | None = None) -> Any:
        return lookup(name, frame.env, self.defs.blocks, loc, quiet, called, self.defs.functions)

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
                return not truth(v, expr.operand)
            if isinstance(v, Tensor):
                return self._affine(v, -1.0, 0.0, expr.loc, frame)
            return arith("-", 0, v, expr, self.constraints, self.defs.blocks)
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
        if isinstance(expr, ast.Subscript):
            return self._channel_slice(expr, frame)
        if isinstance(expr, ast.IfExpr):
            branch = expr.then if self._condition(expr.cond, frame) else expr.orelse
            value = None
            for stmt in branch:
                value = self.statement(stmt, frame)
            return value
        raise AssertionError(expr)

    def _call(self, expr: ast.Call, frame: Frame) -> Any:
        if expr.func in self.defs.functions and expr.func not in frame.env:
            return self._user_function(self.defs.functions[expr.func], expr, frame)
        if expr.func in FUNCTIONS and expr.func not in frame.env:
            return self._function(expr, frame)
        callee = self.lookup(expr.func, frame, expr.func_loc, called="call")
        source = self._functional_input(expr, frame) if isinstance(callee, LayerRef) else None
        if source is not None and not _is_variadic(callee.name):
            frame.used.add(expr.args[0].id)
            call = ast.Call(expr.loc, expr.func, expr.args[1:], expr.kwargs, expr.func_loc)
            return self.step(call, source, frame)
        if isinstance(callee, LayerRef) and _is_variadic(callee.name) and expr.args:
            if expr.kwargs:
                raise CnncError(f"'{callee.name}' takes no keyword arguments", expr.kwargs[0].loc)
            tensors = [self._tensor(self.ev(a, frame), a) for a in expr.args]
            return self._variadic(callee.name, tensors, expr.loc, frame, None)
        if isinstance(callee, (LayerRef, BlockRef)):
            if "in" not in frame.env:
                raise CnncError(f"nothing is piped into '{expr.func}' here", expr.loc,
                                f"apply it to a tensor: `x -> {expr.func}(...)`")
            frame.used.add("in")
            return self.step(expr, frame.env["in"], frame)
        raise CnncError(f"'{expr.func}' is {describe(callee)}, not something that can be called", expr.func_loc)

    def _condition(self, expr: ast.Expr, frame: Frame) -> bool:
        return truth(self.ev(expr, frame), expr)

    def _tensor(self, v: Any, where) -> Tensor:
        return require_tensor(v, where, self.defs.blocks)

    def _param_value(self, p, given: Mapping[str, Any], frame: Frame, missing: Callable[[Any], CnncError]) -> Any:
        """A parameter's value: the one given, else its default evaluated in the callee's frame (so it
        can use the parameters before it), else the caller's error `missing(p)`."""
        if p.name in given:
            return given[p.name]
        if p.default is not None:
            return self.ev(p.default, frame)
        raise missing(p)

    def _bind_params(self, params: tuple, given: dict, frame: Frame, loc: Loc, what: str, cli: bool) -> None:
        names = {p.name for p in params}
        for key in given:
            if key not in names:
                raise CnncError(f"{what} has no parameter '{key}'",
                                hint=f"its parameters: {', '.join(sorted(names)) or 'none'}")
        for p in params:
            frame.env[p.name] = self._param_value(
                p, given, frame, lambda p: CnncError(f"{what} needs a value for its parameter '{p.name}'", p.loc,
                                                     f"give it with --set {p.name}=VALUE"))
            frame.bound_at[p.name] = p.loc
            frame.used.add(p.name)

    # ----------------------------------------------------------------- lints
    def warn(self, code: str, message: str, loc: Loc | None, hint: str | None = None) -> None:
        self.warnings.append(warning(code, message, loc, hint))

    def _lint_unused(self, frame: Frame) -> None:
        for name, loc in frame.bound_at.items():
            if name not in frame.used and isinstance(frame.env.get(name), Tensor) \
                    and name not in frame.scope.labels:
                self.warn("unused", f"'{name}' is bound but never used", loc,
                          "remove it, or use it (its layers are computed for nothing)")

    # ---------------------------------------------------------------- finish
    def _finish(self, name: str, outputs: list[Tensor]) -> Network:
        names = final_names(self.nodes)
        nodes = [p.finished(names) for p in self.nodes]
        net = Network(name, build_graph(nodes), {n: self.nodes[i].shape for n, i in
                                                 ((names[i], i) for i in self.inputs.values())},
                      tuple(dict.fromkeys(names[t.node] for t in outputs)))
        net.shapes = {names[p.id]: p.shape for p in self.nodes}
        net.source = self.defs.main
        net.warnings = list(self.warnings)
        net.symbols = self.unifier.report(p.shape for p in self.nodes)
        net.constraints = [s["constraint"] for s in net.symbols.values() if s.get("constraint")]
        return net


def _tensors(value: Any) -> bool:
    """A block's value: one tensor, or a tuple of tensors (a block giving several)."""
    return isinstance(value, Tensor) or (isinstance(value, tuple) and len(value) > 1
                                         and all(isinstance(v, Tensor) for v in value))


def _is_variadic(op: str) -> bool:
    """An op whose inputs are any number of tensors (`concat(a, b, c)`, `a + b`)."""
    return op in OPS and OPS[op].variadic


def elaborate(defs: Definitions, network: str | None = None, bindings: dict[str, tuple] | None = None,
              args: dict[str, Any] | None = None) -> Network:
    """Build the checked graph of one network of a loaded program."""
    name = choose_network(defs, network)
    with recursion_room():
        try:
            return Elaborator(defs, bindings, args).network(name)
        except RecursionError as err:
            loc = _innermost_loc(err.__traceback__)
            raise CnncError("the program nests too deeply to elaborate", loc,
                            "nest fewer blocks or expressions inside each other") from None
