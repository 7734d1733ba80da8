"""Stage 3 (runtime): the `dropout`, `spatial_dropout` and `stochastic_depth` kernels.

In training a keep-mask is drawn from `ctx.rng` (each unit, each whole
channel of each sample for `spatial_dropout`, each whole sample for
`stochastic_depth` in mode row or the whole batch in mode batch, as
torchvision's StochasticDepth, is kept with probability 1 − p)
and folded with the mode's scale into one multiplier array, which the
backward reuses. `upscale_in_train` scales kept units by 1/(1 − p) in training
and is the identity in inference; `downgrade_in_infer` does not scale in
training and multiplies by (1 − p) in inference. p = 1 drops everything.
"""
from __future__ import annotations

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors

UPSCALE, DOWNGRADE = "upscale_in_train", "downgrade_in_infer"


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    # Drawing in float32 when the data is float32 halves the cost of the mask.
    return rng.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)


def _dropout(x: np.ndarray, p: float, mode: str, ctx: Context, mask_shape: tuple[int, ...]):
    if mode not in (UPSCALE, DOWNGRADE):
        raise ValueError(f"unknown dropout mode {mode!r}")
    if not ctx.training:
        scale = 1.0 if mode == UPSCALE else 1.0 - p
        return (x if scale == 1.0 else x * scale), scale
    keep_scale = 0.0 if p >= 1 else (1.0 / (1.0 - p) if mode == UPSCALE else 1.0)
    mult = np.multiply(_uniform(ctx.rng, mask_shape, x.dtype) >= p, keep_scale, dtype=x.dtype)
    return x * mult, mult


def _backward(dy: np.ndarray, mult) -> Grads:
    if isinstance(mult, float):
        return ((dy if mult == 1.0 else dy * mult),), {}
    return (dy * mult,), {}


def _dropout_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    return _dropout(x, attrs["p"], attrs.get("mode", UPSCALE), ctx, x.shape)


def _spatial_dropout_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    return _dropout(x, attrs["p"], UPSCALE, ctx, x.shape[:2] + (1,) * (x.ndim - 2))


def _stochastic_depth_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    rows = x.shape[0] if attrs.get("mode", "row") == "row" else 1
    return _dropout(x, attrs["p"], UPSCALE, ctx, (rows,) + (1,) * (x.ndim - 1))


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "dropout")(Kernel(_dropout_forward, _backward))
register("kernel", "spatial_dropout")(Kernel(_spatial_dropout_forward, _backward))
register("kernel", "stochastic_depth")(Kernel(_stochastic_depth_forward, _backward))
