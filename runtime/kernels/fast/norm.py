"""Stage 3 (runtime): compiled batch normalisation, alone and with its activation (`fast` kernels).

Forward in two passes over the input: the per-channel sums of x and x² in one
read (float64 accumulators, so the one-pass variance E[x²] − E[x]² keeps
float32's precision), then the normalisation, affine and activation written
in one pass. Backward in two: the per-channel sums of g and g·(x − μ) in one
read of dy and x (g = dy through the activation's derivative, recomputed
from x), then dx in one pass. What the kernel keeps for its backward is its
input (alive anyway as the previous layer's output) and two C-vectors; the
NumPy kernel keeps x − μ, and an unfused relu its output besides.

`batchnorm` and `fused_bn` (batchnorm + activation, compiler/fusion.py; the
fast kernel set's plans run every batchnorm→activation pair as one, see
kernels/sets.py `lowered`) are the same kernel. In a lockstep batch
(kernels/shards.py) the shards exchange their sums (and counts) exactly as
the NumPy kernels do, so the statistics are the whole batch's on every shard.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ....compiler.fusion import FUSED_OPS
from ....compiler.ops import register
from .. import shards
from .._core import Attrs, Context, Grads, Kernel, Params, Tensors
from ..norm import update_running
from ._jit import jit
from ._layout import like, rows, unrows
from .activation import ACTIVATIONS, act, act_grad


# ------------------------------------------------------------------ loops
# `a` is the input as [N, P, C] (`last`) or [N, C, P]; per-channel vectors have its dtype.

@jit
def _sums(a, last, out):
    """out[:C] += Σ x, out[C:2C] += Σ x² per channel, in float64."""
    n, d1, d2 = a.shape
    c = d2 if last else d1
    s1, s2 = np.zeros(c), np.zeros(c)
    for i in range(n):
        if last:
            for p in range(d1):
                for k in range(c):
                    v = np.float64(a[i, p, k])
                    s1[k] += v
                    s2[k] += v * v
        else:
            for k in range(c):
                t1, t2 = 0.0, 0.0
                for p in range(d2):
                    v = np.float64(a[i, k, p])
                    t1 += v
                    t2 += v * v
                s1[k] += t1
                s2[k] += t2
    out[:c] += s1
    out[c:2 * c] += s2


@jit
def _normalise(a, last, mean, scale, shift, code, slope, y):
    """y = act((x − mean)·scale + shift)."""
    n, d1, d2 = a.shape
    zero, six = a.dtype.type(0), a.dtype.type(6)
    for i in range(n):
        if last:
            for p in range(d1):
                for k in range(d2):
                    y[i, p, k] = act((a[i, p, k] - mean[k]) * scale[k] + shift[k], code, slope, zero, six)
        else:
            for k in range(d1):
                m, s, b = mean[k], scale[k], shift[k]
                for p in range(d2):
                    y[i, k, p] = act((a[i, k, p] - m) * s + b, code, slope, zero, six)


@jit
def _grad_sums(g, a, last, mean, scale, shift, code, slope, out):
    """out[:C] = Σ g', out[C:2C] = Σ g'·(x − mean), g' = dL/d(pre-activation), in float64."""
    n, d1, d2 = a.shape
    c = d2 if last else d1
    zero, six = a.dtype.type(0), a.dtype.type(6)
    s1, s2 = np.zeros(c), np.zeros(c)
    for i in range(n):
        if last:
            for p in range(d1):
                for k in range(c):
                    xc = a[i, p, k] - mean[k]
                    gz = np.float64(act_grad(g[i, p, k], xc * scale[k] + shift[k], code, slope, zero, six))
                    s1[k] += gz
                    s2[k] += gz * xc
        else:
            for k in range(c):
                m, s, b = mean[k], scale[k], shift[k]
                t1, t2 = 0.0, 0.0
                for p in range(d2):
                    xc = a[i, k, p] - m
                    gz = np.float64(act_grad(g[i, k, p], xc * s + b, code, slope, zero, six))
                    t1 += gz
                    t2 += gz * xc
                s1[k] += t1
                s2[k] += t2
    out[:c] = s1
    out[c:2 * c] = s2


@jit
def _input_grad(g, a, last, mean, scale, shift, code, slope, k0, k1, dx):
    """dx = g'·scale + (x − mean)·k1 + k0 (the closed form of the batchnorm gradient)."""
    n, d1, d2 = a.shape
    zero, six = a.dtype.type(0), a.dtype.type(6)
    for i in range(n):
        if last:
            for p in range(d1):
                for k in range(d2):
                    xc = a[i, p, k] - mean[k]
                    gz = act_grad(g[i, p, k], xc * scale[k] + shift[k], code, slope, zero, six)
                    dx[i, p, k] = gz * scale[k] + xc * k1[k] + k0[k]
        else:
            for k in range(d1):
                m, s, b, c0, c1 = mean[k], scale[k], shift[k], k0[k], k1[k]
                for p in range(d2):
                    xc = a[i, k, p] - m
                    gz = act_grad(g[i, k, p], xc * s + b, code, slope, zero, six)
                    dx[i, k, p] = gz * s + xc * c1 + c0


# ----------------------------------------------------------------- kernel
@dataclass(frozen=True)
class _Cache:
    x: np.ndarray           # the input (its `rows` view is recomputed: free)
    mean: np.ndarray        # [C], x's dtype
    inv_std: np.ndarray     # [C], float64
    weight: np.ndarray
    bias: np.ndarray
    count: int              # values per channel over the whole batch (every shard)
    batch_stats: bool       # statistics from the batch (training): the gradient flows through them
    shard: tuple | None
    code: int
    slope: np.generic


def _forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _Cache]:
    x, w, b = xs[0], params["weight"], params["bias"]
    eps, momentum = attrs.get("eps", 1e-5), attrs.get("momentum", 0.1)
    a, last = rows(x)
    c, t = x.shape[1], x.dtype.type
    shard = shards.current() if ctx.training else None
    count = a.size // c
    if ctx.training:
        sums = np.zeros(2 * c + 1)
        _sums(a, last, sums)
        sums[-1] = count            # the count travels with the sums: shards may differ in size
        sums = shards.total(shard, sums)
        count = int(sums[-1])
        if count < 2:
            raise ValueError(f"batchnorm needs more than one value per channel in training, got {x.shape}")
        mean = sums[:c] / count
        var = np.maximum(sums[c:2 * c] / count - mean * mean, 0.0)
        update_running(params, "", mean.astype(x.dtype), var.astype(x.dtype), count, momentum, shard)
    else:
        mean, var = params["running_mean"].astype(np.float64), params["running_var"].astype(np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    code, slope = ACTIVATIONS[attrs.get("activation")], t(attrs.get("slope", 0.01))
    mean_t, scale = mean.astype(x.dtype), (w * inv_std).astype(x.dtype)
    y = np.empty_like(a)
    _normalise(a, last, mean_t, scale, b.astype(x.dtype, copy=False), code, slope, y)
    cache = _Cache(x, mean_t, inv_std, w, b, count, ctx.training, shard, code, slope)
    return unrows(y, last, x.shape), cache


def _backward(dy: np.ndarray, cache: _Cache) -> Grads:
    x, dtype = cache.x, cache.x.dtype
    a, last = rows(x)
    g, _ = rows(like(dy, x))
    c = x.shape[1]
    scale = (cache.weight * cache.inv_std).astype(dtype)
    shift = cache.bias.astype(dtype, copy=False)
    sums = np.zeros(2 * c)
    _grad_sums(g, a, last, cache.mean, scale, shift, cache.code, cache.slope, sums)
    db, dw = sums[:c], sums[c:] * cache.inv_std          # this shard's part of each
    grads = {"weight": dw.astype(dtype), "bias": db.astype(dtype)}
    zeros = np.zeros(c, dtype)
    if cache.batch_stats:
        tot = shards.total(cache.shard, np.concatenate([db, dw]))
        n, gamma = cache.count, cache.weight.astype(np.float64)
        # dx = γ/σ·(g' − Σg'/n − x̂·Σ(g'·x̂)/n), x̂ = (x − μ)/σ: per-channel factors of g', x − μ and 1.
        k0 = (-gamma * cache.inv_std * tot[:c] / n).astype(dtype)
        k1 = (-gamma * cache.inv_std ** 2 * tot[c:] / n).astype(dtype)
    else:
        k0 = k1 = zeros
    dx = np.empty_like(a)
    _input_grad(g, a, last, cache.mean, scale, shift, cache.code, cache.slope, k0, k1, dx)
    return (unrows(dx, last, x.shape),), grads


BATCHNORM = Kernel(_forward, _backward)
register("fast", "batchnorm")(BATCHNORM)
register("fast", "fused_bn", table=FUSED_OPS)(BATCHNORM)
