"""Stage 3 (runtime): the fully connected `linear` kernel.

y = x·Wᵀ + b with W stored [O, F] as PyTorch does; the transposes are BLAS
flags, not copies. An input with spatial axes is read as its row-major
flattening (what `flatten` would produce) and its gradient comes back in the
input's shape. With `trainable` false the weight gradient is not computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


@dataclass(frozen=True)
class _LinearCache:
    x: np.ndarray           # [N, F]
    shape: tuple[int, ...]
    weight: np.ndarray
    bias: bool
    trainable: bool
    need_dx: bool


def _linear_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _LinearCache]:
    x, w = xs[0], params["weight"]
    x2 = x.reshape(x.shape[0], -1)
    y = x2 @ w.T
    if attrs["bias"]:
        y += params["bias"]
    trainable = attrs.get("trainable", True)
    return y, _LinearCache(x2, x.shape, w, attrs["bias"], trainable, ctx.need_input_grad)


def _linear_backward(dy: np.ndarray, cache: _LinearCache) -> Grads:
    dx = (dy @ cache.weight).reshape(cache.shape) if cache.need_dx else None
    grads = {}
    if cache.trainable:
        grads["weight"] = dy.T @ cache.x
        if cache.bias:
            grads["bias"] = dy.sum(axis=0)
    return (dx,), grads


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "linear")(Kernel(_linear_forward, _linear_backward))
