"""Stage 3 (runtime): kernels that reshape, join and combine tensors.

`flatten`, `concat`, `identity`, `pad` and `crop` move data without
arithmetic; their gradients are the inverse moves (`crop` sends no gradient to
its `like` input, whose only role is its size). `add` and `mul` combine any
number of same-rank inputs whose size-1 axes broadcast, and reduce each
input's gradient back to its own shape by summing over the broadcast axes;
`maximum` and `minimum` do too, sending each gradient to the larger (smaller)
input (half to each on a tie, as PyTorch). `affine` is `scale·x + shift` with
constant numbers; `layer_scale` multiplies each channel by its learned factor.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from ...compiler.ops import crop_start, register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


def _flatten_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    return x.reshape(x.shape[0], -1), x.shape


def _flatten_backward(dy: np.ndarray, shape: tuple[int, ...]) -> Grads:
    return (dy.reshape(shape),), {}


def _identity_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    return xs[0], None


def _identity_backward(dy: np.ndarray, cache: None) -> Grads:
    return (dy,), {}


def _concat_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    return np.concatenate(xs, axis=1), np.cumsum([x.shape[1] for x in xs[:-1]])


def _concat_backward(dy: np.ndarray, splits: np.ndarray) -> Grads:
    return tuple(np.split(dy, splits, axis=1)), {}


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum g over the axes an input of `shape` was broadcast along."""
    axes = tuple(a for a, (gs, s) in enumerate(zip(g.shape, shape)) if s == 1 and gs != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _check_rank(xs: Tensors) -> None:
    if len({x.ndim for x in xs}) > 1:
        raise ValueError(f"add/mul inputs must have the same rank, got {[x.shape for x in xs]}")


def _add_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    _check_rank(xs)
    shape = np.broadcast_shapes(*(x.shape for x in xs))
    y = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
    for x in xs[2:]:
        if y.shape == shape:
            y += x              # our own buffer, already full size: no new allocation
        else:
            y = y + x
    return y, [x.shape for x in xs]


def _add_backward(dy: np.ndarray, shapes: list[tuple[int, ...]]) -> Grads:
    return tuple(_sum_to(dy, s) for s in shapes), {}


def _mul_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    _check_rank(xs)
    return reduce(np.multiply, xs), xs


def _mul_backward(dy: np.ndarray, xs: Tensors) -> Grads:
    # d/dx_i = dy · Π_{j≠i} x_j from prefix and suffix products (no division, so zeros are fine).
    n = len(xs)
    prefix = [None] * n
    for i in range(1, n):
        prefix[i] = xs[0] if i == 1 else prefix[i - 1] * xs[i - 1]
    grads, suffix = [None] * n, None
    for i in range(n - 1, -1, -1):
        g = dy
        if prefix[i] is not None:
            g = g * prefix[i]
        if suffix is not None:
            g = g * suffix
        grads[i] = _sum_to(g, xs[i].shape)
        suffix = xs[i] if suffix is None else suffix * xs[i]
    return tuple(grads), {}


def _pad_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    (t, b), (l, r) = attrs["padding"]
    n, c, h, w = x.shape
    y = np.full((n, c, h + t + b, w + l + r), attrs.get("value", 0.0), x.dtype)
    y[:, :, t:t + h, l:l + w] = x
    return y, (t, l, h, w)


def _pad_backward(dy: np.ndarray, cache: tuple) -> Grads:
    t, l, h, w = cache
    return (dy[:, :, t:t + h, l:l + w],), {}


def _crop_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x, like = xs
    (hh, ww), (h, w) = x.shape[2:], like.shape[2:]
    top, left = crop_start(attrs.get("offset"), (hh, ww), (h, w))
    if top + h > hh or left + w > ww:
        raise ValueError(f"crop: {x.shape} is smaller than {like.shape} at ({top}, {left})")
    return x[:, :, top:top + h, left:left + w], (x.shape, top, left)


def _crop_backward(dy: np.ndarray, cache: tuple) -> Grads:
    shape, top, left = cache
    dx = np.zeros(shape, dy.dtype)
    dx[:, :, top:top + dy.shape[2], left:left + dy.shape[3]] = dy
    return (dx, None), {}


def _affine_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    t = x.dtype.type                   # numbers of the tensor's own dtype: float32 stays float32
    scale, shift = attrs.get("scale", 1.0), attrs.get("shift", 0.0)
    y = x * t(scale) if scale != 1.0 else x.copy()
    if shift != 0.0:
        y += t(shift)
    return y, t(scale)


def _affine_backward(dy: np.ndarray, scale) -> Grads:
    return (dy * scale if scale != 1.0 else dy,), {}


def _layer_scale_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x, w = xs[0], params["weight"]            # w: [C, 1, ...], one factor per channel
    factors = w.reshape((1, -1) + (1,) * (x.ndim - 2))   # against [N, C, ...] (a signal's unit height too)
    return x * factors, (x, factors, w.shape)


def _layer_scale_backward(dy: np.ndarray, cache: tuple) -> Grads:
    x, factors, shape = cache
    axes = (0,) + tuple(range(2, dy.ndim))
    return (dy * factors,), {"weight": np.sum(dy * x, axis=axes).reshape(shape)}


def _extremum_forward(larger: bool):
    """`maximum` (larger) or `minimum`: pairwise from the left; each step's gradient goes to the
    winning input, split evenly on ties (PyTorch's torch.maximum / torch.minimum)."""
    wins, pick = (np.greater, np.maximum) if larger else (np.less, np.minimum)

    def forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
        _check_rank(xs)
        steps, y = [], xs[0]
        for x in xs[1:]:
            steps.append((wins(y, x), y == x, y.shape, x.shape))
            y = pick(y, x)
        return y, steps
    return forward


def _extremum_backward(dy: np.ndarray, steps: list) -> Grads:
    grads = []
    for left_wins, tie, left_shape, right_shape in reversed(steps):
        share = left_wins.astype(dy.dtype)
        share += tie.astype(dy.dtype) * dy.dtype.type(0.5)
        grads.append(_sum_to(dy * (1 - share), right_shape))
        dy = _sum_to(dy * share, left_shape)
    return (dy, *reversed(grads)), {}


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "flatten")(Kernel(_flatten_forward, _flatten_backward))
register("kernel", "identity")(Kernel(_identity_forward, _identity_backward))
register("kernel", "concat")(Kernel(_concat_forward, _concat_backward))
register("kernel", "add")(Kernel(_add_forward, _add_backward))
register("kernel", "mul")(Kernel(_mul_forward, _mul_backward))
register("kernel", "pad")(Kernel(_pad_forward, _pad_backward))
register("kernel", "crop")(Kernel(_crop_forward, _crop_backward))
register("kernel", "affine")(Kernel(_affine_forward, _affine_backward))
register("kernel", "maximum")(Kernel(_extremum_forward(True), _extremum_backward))
register("kernel", "minimum")(Kernel(_extremum_forward(False), _extremum_backward))
register("kernel", "layer_scale")(Kernel(_layer_scale_forward, _layer_scale_backward))
