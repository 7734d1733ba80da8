"""Stage 3 (runtime): the fully connected `linear` kernel.

y = x·Wᵀ + b with W stored [O, F] as PyTorch does; the transposes are BLAS
flags, not copies. An input with spatial axes is read as its row-major
flattening (what `flatten` would produce) and its gradient comes back in the
input's shape; with `over = channels` each position's channel vector is a row
instead (the channels moved last, PyTorch's nn.Linear on channels-last), and
the output has the input's positions. With `trainable` false the weight
gradient is not computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


@dataclass(frozen=True)
class _LinearCache:
    x: np.ndarray           # [rows, F]
    shape: tuple[int, ...]
    weight: np.ndarray
    bias: bool
    trainable: bool
    need_dx: bool
    channels: bool          # over = channels: rows are positions, the output keeps them


def _rows(x: np.ndarray, channels: bool) -> np.ndarray:
    """The rows the weight maps: a sample's flattening, or every position's channels."""
    if channels and x.ndim > 2:
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    return x.reshape(x.shape[0], -1)


def _unrows(y: np.ndarray, shape: tuple[int, ...], channels: bool) -> np.ndarray:
    """Rows back as [N, O, ...] (positions as in `shape`)."""
    if channels and len(shape) > 2:
        return np.moveaxis(y.reshape(shape[0], *shape[2:], y.shape[1]), -1, 1)
    return y


def _linear_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _LinearCache]:
    x, w = xs[0], params["weight"]
    channels = attrs.get("over") == "channels"
    x2 = _rows(x, channels)
    y = x2 @ w.T
    if attrs["bias"]:
        y += params["bias"]
    trainable = attrs.get("trainable", True)
    cache = _LinearCache(x2, x.shape, w, attrs["bias"], trainable, ctx.need_input_grad, channels)
    return _unrows(y, x.shape, channels), cache


def _linear_backward(dy: np.ndarray, cache: _LinearCache) -> Grads:
    g = _rows(dy, cache.channels)
    dx = None
    if cache.need_dx:
        dx = g @ cache.weight
        dx = _unrows(dx, cache.shape, cache.channels) if cache.channels else dx.reshape(cache.shape)
    grads = {}
    if cache.trainable:
        grads["weight"] = g.T @ cache.x
        if cache.bias:
            grads["bias"] = g.sum(axis=0)
    return (dx,), grads


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "linear")(Kernel(_linear_forward, _linear_backward))
