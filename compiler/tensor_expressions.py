"""Stage 2 (compiler): elaboration of tensors in expressions — arithmetic, `max`, channel slices, splits.

`a + b` and `a * b` of tensors become `add` and `mul` layers (`a - b` adds
`-1·b`); a tensor with a known number (`x * 0.5 + 1`, `-x`, `x / 2`) becomes
one `affine` layer; `max(a, b, …)` / `min(a, b, …)` of tensors a pairwise `maximum` / `minimum`; `x[a:b]` a
`slice` of channels, and `x -> split(n)` n equal slices, bound by `a, b = ...`.
`TensorExpressions` is a part of the `Elaborator` (elaborate.py): `self` is
the elaborator, which builds the nodes.
"""
from __future__ import annotations

from typing import Any

from ..dsl import ast
from ..dsl.source import CnncError, Loc
from .attrs import convert, describe
from .expressions import arith, lookup, truth
from .naming import Frame, Tensor
from .ops import OpError, Word
from .symbolic import Dim


class TensorExpressions:
    """The elaborator's arithmetic on tensors, channel slices and splits."""

    def _binop(self, expr: ast.BinOp, frame: Frame) -> Any:
        if expr.op in ("and", "or"):
            left = truth(self.ev(expr.left, frame), expr.left)
            if (expr.op == "and") != left:
                return left
            return truth(self.ev(expr.right, frame), expr.right)
        if expr.op == "*" and self._is_application(expr.left, frame):
            if "in" not in frame.env:
                raise CnncError("nothing is piped into this repeated block", expr.loc,
                                "apply it to a tensor: `x -> block(...) * N`")
            frame.used.add("in")
            return self.step(expr, frame.env["in"], frame)
        left, right = self.ev(expr.left, frame), self.ev(expr.right, frame)
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            return self._tensor_binop(expr, left, right, frame)
        return arith(expr.op, left, right, expr, self.constraints, self.defs.blocks)

    def _tensor_binop(self, expr: ast.BinOp, left: Any, right: Any, frame: Frame) -> Tensor:
        if expr.op not in ("+", "-", "*", "/"):
            hint = "'**' raises numbers to a power; a tensor squared is `x * x`" if expr.op == "**" else None
            raise CnncError(f"tensors support '+', '-', '*' and '/', not '{expr.op}'", expr.loc, hint)
        if isinstance(left, Tensor) and isinstance(right, Tensor):
            if expr.op == "/":
                raise CnncError("'/' divides a tensor by a number, not by a tensor", expr.loc)
            if expr.op == "-":   # a - b = a + (-1·b)
                right = self._affine(right, -1.0, 0.0, expr.loc, frame)
            return self._variadic("mul" if expr.op == "*" else "add", [left, right], expr.loc, frame, None)
        if isinstance(right, Tensor):   # number (op) tensor
            if expr.op == "/":
                raise CnncError("'/' divides a tensor by a number, not a number by a tensor", expr.loc)
            n = self._scalar(left, expr.left)
            scale, shift = {"+": (1.0, n), "-": (-1.0, n), "*": (n, 0.0)}[expr.op]
            return self._affine(right, scale, shift, expr.loc, frame)
        n = self._scalar(right, expr.right)
        if expr.op == "/" and n == 0:
            raise CnncError("division by zero", expr.right.loc)
        scale, shift = {"+": (1.0, n), "-": (1.0, -n), "*": (n, 0.0), "/": (1.0 / n, 0.0)}[expr.op]
        return self._affine(left, scale, shift, expr.loc, frame)

    def _scalar(self, v: Any, where: ast.Expr) -> float:
        """A number combined with a tensor (`x + 3`): known and finite."""
        try:
            return convert("float", v, "a number combined with a tensor")
        except OpError as err:
            if isinstance(v, Dim):
                raise CnncError(f"a number combined with a tensor must be known, but it depends on "
                                f"{', '.join(sorted(v.symbols()))}", where.loc,
                                "bind the input size with --input NAME=CxHxW") from None
            if isinstance(v, Word):
                lookup(v.name, {}, self.defs.blocks, where.loc, functions=self.defs.functions)  # say so
            raise CnncError(err.message, where.loc, err.hint) from None

    def _affine(self, t: Tensor, scale: float, shift: float, loc: Loc, frame: Frame) -> Tensor:
        return self._node("affine", [t], {"scale": scale, "shift": shift}, loc, frame, None, {})

    def _tensor_extremum(self, expr: ast.Call, args: list, frame: Frame) -> Tensor:
        """`max(a, b, …)` / `min(a, b, …)` of tensors: element-wise maximum / minimum, pairwise from the
        left (PyTorch's torch.maximum / torch.minimum, whose gradients split ties evenly)."""
        if len(args) < 2:
            raise CnncError(f"'{expr.func}' needs at least two values", expr.loc)
        for a, e in zip(args, expr.args):
            if not isinstance(a, Tensor):
                hint = "max(x, 0) of a tensor is `x -> relu`" if expr.func == "max" else \
                    "min(x, 6) of a tensor is `x -> relu6` after a relu, or min(x, c) with c a tensor"
                raise CnncError(f"{expr.func} takes tensors or numbers, not both: got {describe(a)} with a tensor",
                                e.loc, hint)
        op = "maximum" if expr.func == "max" else "minimum"
        tensors = list(args)
        out = tensors[0]
        for t in tensors[1:]:
            out = self._variadic(op, [out, t], expr.loc, frame, None)
        return out

    def _channel_slice(self, expr: ast.Subscript, frame: Frame) -> Tensor:
        """`x[start:stop]`: a `slice` layer on the channels of x."""
        x = self._tensor(self.ev(expr.value, frame), expr.value)
        attrs: dict[str, Any] = {"start": 0, "stop": None}
        locs: dict[str, Loc] = {}
        for key, bound in (("start", expr.start), ("stop", expr.stop)):
            if bound is None:
                continue
            try:
                attrs[key] = convert("int", self.ev(bound, frame), f"a channel slice's {key}")
            except OpError as err:
                raise CnncError(err.message, bound.loc, "slice bounds are channel numbers: x[0:c // 2]") from None
            locs[key] = bound.loc
        return self._node("slice", [x], attrs, expr.loc, frame, None, locs)

    def _split(self, raw: dict, x: Tensor, loc: Loc, frame: Frame, label: str | None) -> tuple:
        """`x -> split(n)`: n equal channel slices (a tuple of tensors, for `a, b = ...`)."""
        parts, where = raw["parts"]
        try:
            n = convert("pos_int", parts, "parts")
        except OpError as err:
            raise CnncError(err.message, where) from None
        if label is not None:
            raise CnncError("a split cannot carry a label: it makes several layers", loc,
                            "label the layers that use its parts")
        c = self._channels(x, loc)
        if c % n:
            raise CnncError(f"split: {n} parts do not divide the {c} channels", where,
                            f"use a divisor of {c}, or slices of different sizes: x[0:a], x[a:]")
        size = c // n
        return tuple(self._node("slice", [x], {"start": i * size, "stop": (i + 1) * size}, loc, frame, None, {},
                                layer="split") for i in range(n))

    def _bind_parts(self, stmt: ast.TupleAssign, frame: Frame) -> tuple:
        value = self.head(stmt.value, frame)
        if not isinstance(value, tuple) or not value or not all(isinstance(v, Tensor) for v in value):
            what = "a tensor" if isinstance(value, Tensor) else describe(value)
            raise CnncError(f"{len(stmt.names)} names need {len(stmt.names)} tensors (a split, or a block "
                            f"giving several), got {what}", stmt.value.loc, f"write `{', '.join(stmt.names)} = x -> "
                            f"split({len(stmt.names)})`, or end a block with `({', '.join(stmt.names)})`")
        if len(value) != len(stmt.names):
            raise CnncError(f"{len(stmt.names)} names for {len(value)} tensors", stmt.loc,
                            f"name every tensor (a split gives its parts, a block the tensors its last statement "
                            f"lists), or split({len(stmt.names)})")
        for name, part in zip(stmt.names, value):
            self._bind(frame, name, part, stmt.loc)
        return value
