"""Stage 3 (runtime), import: what an ONNX tensor is while the model is read — a value of three kinds.

`Const` is known now (an initializer, a `Constant`, or computed from them:
constant folding); `Sizes` is an integer vector known up to the model's
symbolic sizes (what `Shape` gives and the arithmetic exporters do on it: the
`Shape → Gather → Unsqueeze → Concat → Reshape` chains that compute a flatten,
the bounds of a centre crop); `Tensor` is data, the output of a cnnc layer,
with its shape in cnnc's axis order (batch first) and `perm`, how the ONNX
tensor's axes lie against it (channels-last after a `Transpose`). `fold` runs
the ONNX operators an exporter applies to constants and sizes, with NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...compiler.symbolic import Dim, is_symbolic

# The batch axis in a size vector: a symbol no .cnn name can be (no "·" in a name).
BATCH = Dim.symbol("N·")


@dataclass(frozen=True)
class Const:
    value: np.ndarray
    param: str | None = None        # the initializer's name when the value is a model weight


@dataclass(frozen=True)
class Sizes:
    values: tuple                   # int | Dim (BATCH for the batch axis)
    scalar: bool = False            # a rank-0 value (one size)
    origins: tuple = ()             # per value: (layer id, cnnc axis) when it is a tensor's size as read, else None

    def origin(self, i: int):
        return self.origins[i] if i < len(self.origins) else None

    def known(self) -> bool:
        return not any(is_symbolic(v) for v in self.values)

    def array(self) -> np.ndarray:
        arr = np.array([int(v) for v in self.values], np.int64)
        return arr.reshape(()) if self.scalar else arr


@dataclass(frozen=True)
class Tensor:
    layer: int                      # the producing layer's id
    shape: tuple                    # in cnnc's order: batch, channels, then H, W or L (int | Dim)
    perm: tuple | None = None       # ONNX axis i is cnnc axis perm[i]; None: the same order

    @property
    def onnx_shape(self) -> tuple:
        return self.shape if self.perm is None else tuple(self.shape[p] for p in self.perm)

    @property
    def rank(self) -> int:
        return len(self.shape)


Value = Const | Sizes | Tensor


class NotFoldable(Exception):
    """The operator has no rule for these constant inputs: the caller decides what that means."""


def as_sizes(v: Value) -> Sizes | None:
    """An integer constant or a size vector, as sizes; None for anything else."""
    if isinstance(v, Sizes):
        return v
    if isinstance(v, Const) and v.value.dtype.kind in "iu" and v.value.ndim <= 1:
        return Sizes(tuple(int(x) for x in v.value.reshape(-1)), v.value.ndim == 0)
    return None


def _out(values: list, scalar: bool = False, origins: list | None = None) -> Value:
    """A size vector (kept when an element is symbolic or read from a tensor), else a constant."""
    origins = tuple(origins or ())
    s = Sizes(tuple(values), scalar, origins)
    return Const(s.array()) if s.known() and not any(origins) else s


def _size_binary(fn: Callable[[Any, Any], Any]) -> Callable:
    def rule(a: Sizes, b: Sizes, node_attrs: dict) -> Value:
        left, right = list(a.values), list(b.values)
        if len(left) == 1 and len(right) > 1:
            left = left * len(right)
        if len(right) == 1 and len(left) > 1:
            right = right * len(left)
        if len(left) != len(right):
            raise NotFoldable
        return _out([fn(x, y) for x, y in zip(left, right)], a.scalar and b.scalar)
    return rule


def _floordiv(x, y):
    if is_symbolic(y) or y == 0:
        raise NotFoldable
    return x // y


SIZE_RULES: dict[str, Callable] = {
    "Add": _size_binary(lambda x, y: x + y),
    "Sub": _size_binary(lambda x, y: x - y),
    "Mul": _size_binary(lambda x, y: x * y),
    "Div": _size_binary(_floordiv),     # ONNX integer Div truncates; sizes are never negative
}


def fold_sizes(op: str, inputs: list[Value], attrs: dict) -> Value:
    """An operator on size vectors (at least one symbolic): the arithmetic of shape computations."""
    sizes = [as_sizes(v) if v is not None else None for v in inputs]
    if op in ("Identity", "Cast") and sizes[0] is not None:
        return sizes[0]
    if op in SIZE_RULES and len(sizes) == 2 and None not in sizes:
        return SIZE_RULES[op](sizes[0], sizes[1], attrs)
    if op == "Gather" and sizes[0] is not None and sizes[1] is not None and attrs.get("axis", 0) == 0:
        idx = sizes[1]
        if not idx.known():
            raise NotFoldable
        picked = [int(i) for i in np.asarray(idx.array()).reshape(-1)]
        return _out([sizes[0].values[i] for i in picked], idx.scalar, [sizes[0].origin(i) for i in picked])
    if op == "Unsqueeze" and sizes[0] is not None and sizes[0].scalar:
        return _out(list(sizes[0].values), False, list(sizes[0].origins))
    if op == "Squeeze" and sizes[0] is not None and len(sizes[0].values) == 1:
        return _out(list(sizes[0].values), True, list(sizes[0].origins))
    if op == "Concat" and all(s is not None for s in sizes):
        return _out([v for s in sizes for v in s.values],
                    origins=[s.origin(i) for s in sizes for i in range(len(s.values))])
    if op == "Slice" and all(s is not None for s in sizes[:3]) and all(s.known() for s in sizes[1:] if s):
        n = len(sizes[0].values)
        starts, ends = int(sizes[1].values[0]), int(sizes[2].values[0])
        steps = int(sizes[4].values[0]) if len(sizes) > 4 and sizes[4] is not None else 1
        picked = list(range(n))[slice(starts, max(min(ends, n), -n - 1), steps)]
        return _out([sizes[0].values[i] for i in picked], origins=[sizes[0].origin(i) for i in picked])
    raise NotFoldable


# ------------------------------------------------------------ constants
def _axes(attrs: dict, inputs: list, index: int) -> list[int] | None:
    """Axes given as an attribute (older opsets) or as the input at `index` (newer)."""
    if len(inputs) > index and inputs[index] is not None:
        return [int(a) for a in np.asarray(inputs[index]).reshape(-1)]
    axes = attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _reshape(x, shape, attrs):
    target = [int(s) for s in shape]
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _slice(x, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(int(s), int(max(min(e, 1 << 62), -(1 << 62))), st)
    return x[tuple(index)]


def _reduce(fn):
    def rule(x, *rest, **attrs):
        axes = _axes(attrs, [x, *rest], 1)
        keep = bool(attrs.get("keepdims", 1))
        return fn(x, axis=None if axes is None else tuple(axes), keepdims=keep)
    return rule


CONST_RULES: dict[str, Callable[..., np.ndarray]] = {
    "Identity": lambda x, **a: x,
    "Cast": lambda x, **a: x.astype(_cast_type(a["to"])),
    "Add": lambda a, b, **k: a + b,
    "Sub": lambda a, b, **k: a - b,
    "Mul": lambda a, b, **k: a * b,
    "Div": lambda a, b, **k: (a // b if a.dtype.kind in "iu" else a / b),
    "Neg": lambda x, **a: -x,
    "Sqrt": lambda x, **a: np.sqrt(x),
    "Pow": lambda a, b, **k: np.power(a, b).astype(a.dtype),
    "Reciprocal": lambda x, **a: 1 / x,
    "Floor": lambda x, **a: np.floor(x),
    "Ceil": lambda x, **a: np.ceil(x),
    "Transpose": lambda x, **a: np.transpose(x, a.get("perm")),
    "Reshape": lambda x, s, **a: _reshape(x, s, a),
    "Flatten": lambda x, **a: x.reshape(int(np.prod(x.shape[:a.get("axis", 1)])), -1),
    "Unsqueeze": lambda x, *r, **a: np.expand_dims(x, tuple(_axes(a, [x, *r], 1))),
    "Squeeze": lambda x, *r, **a: np.squeeze(x, None if _axes(a, [x, *r], 1) is None else tuple(_axes(a, [x, *r], 1))),
    "Concat": lambda *xs, **a: np.concatenate(xs, axis=a["axis"]),
    "Gather": lambda x, i, **a: np.take(x, i, axis=a.get("axis", 0)),
    "Slice": lambda x, s, e, *r, **a: _slice(x, s, e, *r),
    "Shape": lambda x, **a: np.array(x.shape[a.get("start", 0):a.get("end", None)], np.int64),
    "ConstantOfShape": lambda s, **a: np.full([int(v) for v in s], a["value"].reshape(-1)[0] if "value" in a
                                              else 0.0, a["value"].dtype if "value" in a else np.float32),
    "Range": lambda s, e, d, **a: np.arange(s, e, d).astype(np.asarray(s).dtype),
    "Equal": lambda a, b, **k: a == b,
    "Where": lambda c, a, b, **k: np.where(c, a, b),
    "Expand": lambda x, s, **a: x * np.ones([int(v) for v in s], x.dtype),
    "ReduceProd": _reduce(np.prod),
    "ReduceSum": _reduce(np.sum),
    "Min": lambda *xs, **a: np.minimum.reduce(xs),
    "Max": lambda *xs, **a: np.maximum.reduce(xs),
    "Abs": lambda x, **a: np.abs(x),
}


def _cast_type(to: int) -> np.dtype:
    from onnx import helper
    return helper.tensor_dtype_to_np_dtype(to)


def fold_const(op: str, inputs: list[Value | None], attrs: dict) -> Const:
    """An operator on constants only: its value, computed now."""
    rule = CONST_RULES.get(op)
    if rule is None:
        raise NotFoldable
    args = [None if v is None else v.value for v in inputs]
    while args and args[-1] is None:
        args.pop()
    try:
        out = rule(*args, **attrs)
    except (ValueError, TypeError, IndexError, KeyError):
        raise NotFoldable from None
    return Const(np.asarray(out))
