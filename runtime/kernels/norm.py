"""Stage 3 (runtime): normalisation kernels (batch, layer, instance, group, LRN).

`batchnorm` normalises each channel over the batch and spatial axes with the
biased batch variance while training, updating `running_mean`/`running_var`
in place with PyTorch's momentum rule (unbiased variance for the running
estimate), and with the running statistics in inference. `layernorm`,
`instancenorm` and `groupnorm` are one kernel: per sample, channels split into
`groups` groups (1 for layernorm, C for instancenorm), each normalised over
its channels and spatial positions, then a per-channel affine. `lrn` is
PyTorch's LocalResponseNorm: x / (k + α/size · Σ_window x²)^β over a window
of neighbouring channels. All backward passes use the closed forms
dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)) (means over what was normalised).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against x ([N, C, ...])."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _reduce_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the channel axis."""
    return (0,) + tuple(range(2, x.ndim))


# ---------------------------------------------------------------- batchnorm

@dataclass(frozen=True)
class _BatchNormCache:
    xhat: np.ndarray
    inv_std: np.ndarray     # [C]
    weight: np.ndarray
    batch_stats: bool       # statistics came from the batch (training): they depend on x


def _batchnorm_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _BatchNormCache]:
    x, w, b = xs[0], params["weight"], params["bias"]
    eps, m = attrs.get("eps", 1e-5), attrs.get("momentum", 0.1)
    shape, axes = _channel_shape(x), _reduce_axes(x)
    if ctx.training:
        count = x.size // x.shape[1]
        if count < 2:
            raise ValueError(f"batchnorm needs more than one value per channel in training, got {x.shape}")
        mean = x.mean(axis=axes)
        xc = x - mean.reshape(shape)
        var = np.mean(xc * xc, axis=axes)
        rm, rv = params["running_mean"], params["running_var"]
        rm *= 1 - m
        rm += m * mean
        rv *= 1 - m
        rv += (m * count / (count - 1)) * var
    else:
        mean, var = params["running_mean"], params["running_var"]
        xc = x - mean.reshape(shape)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = xc
    xhat *= inv_std.reshape(shape)
    y = xhat * w.reshape(shape)
    y += b.reshape(shape)
    return y, _BatchNormCache(xhat, inv_std, w, ctx.training)


def _batchnorm_backward(dy: np.ndarray, cache: _BatchNormCache) -> Grads:
    xhat, shape, axes = cache.xhat, _channel_shape(dy), _reduce_axes(dy)
    db = dy.sum(axis=axes)
    dw = np.sum(dy * xhat, axis=axes)
    scale = (cache.weight * cache.inv_std).reshape(shape)
    if not cache.batch_stats:
        return (dy * scale,), {"weight": dw, "bias": db}
    count = dy.size // dy.shape[1]
    dx = xhat * (dw / count).reshape(shape)
    dx += (db / count).reshape(shape)
    np.subtract(dy, dx, out=dx)
    dx *= scale
    return (dx,), {"weight": dw, "bias": db}


# ------------------------------------------- layer / instance / group norm

@dataclass(frozen=True)
class _GroupNormCache:
    xhat: np.ndarray        # [N, G, M]
    inv_std: np.ndarray     # [N, G, 1]
    weight: np.ndarray
    shape: tuple[int, ...]


def _group_norm(x: np.ndarray, params: Params, groups: int, eps: float) -> tuple[np.ndarray, _GroupNormCache]:
    w, b = params["weight"], params["bias"]
    xg = x.reshape(x.shape[0], groups, -1)
    xc = xg - xg.mean(axis=2, keepdims=True)
    inv_std = 1.0 / np.sqrt(np.mean(xc * xc, axis=2, keepdims=True) + eps)
    xhat = xc
    xhat *= inv_std
    shape = _channel_shape(x)
    y = xhat.reshape(x.shape) * w.reshape(shape)
    y += b.reshape(shape)
    return y, _GroupNormCache(xhat, inv_std, w, x.shape)


def _group_norm_backward(dy: np.ndarray, cache: _GroupNormCache) -> Grads:
    xhat, shape, axes = cache.xhat.reshape(cache.shape), _channel_shape(dy), _reduce_axes(dy)
    db = dy.sum(axis=axes)
    dw = np.sum(dy * xhat, axis=axes)
    g = (dy * cache.weight.reshape(shape)).reshape(cache.xhat.shape)     # dL/dx̂ per group
    dx = cache.xhat * np.mean(g * cache.xhat, axis=2, keepdims=True)
    dx += g.mean(axis=2, keepdims=True)
    np.subtract(g, dx, out=dx)
    dx *= cache.inv_std
    return (dx.reshape(cache.shape),), {"weight": dw, "bias": db}


def _groupnorm_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _GroupNormCache]:
    return _group_norm(xs[0], params, attrs["groups"], attrs.get("eps", 1e-5))


def _layernorm_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _GroupNormCache]:
    return _group_norm(xs[0], params, 1, attrs.get("eps", 1e-5))


def _instancenorm_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _GroupNormCache]:
    return _group_norm(xs[0], params, xs[0].shape[1], attrs.get("eps", 1e-5))


# ---------------------------------------------------------------------- lrn

def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """out[:, c] = Σ a[:, c−before .. c+after] (zeros outside), one slice-add per offset."""
    c = a.shape[1]
    out = np.zeros_like(a)
    for d in range(-before, after + 1):
        lo, hi = max(0, -d), min(c, c - d)       # out[:, lo:hi] += a[:, lo+d:hi+d]
        if lo < hi:
            out[:, lo:hi] += a[:, lo + d:hi + d]
    return out


@dataclass(frozen=True)
class _LrnCache:
    x: np.ndarray
    y: np.ndarray
    den: np.ndarray         # k + α/size · Σ x²
    size: int
    alpha: float
    beta: float


def _lrn_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _LrnCache]:
    x = xs[0]
    size, alpha = attrs.get("size", 5), attrs.get("alpha", 1e-4)
    beta, k = attrs.get("beta", 0.75), attrs.get("k", 2.0)
    # PyTorch's window for channel c: c − size//2 .. c + (size−1)//2.
    den = _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    den *= alpha / size
    den += k
    y = x * np.power(den, -beta)
    return y, _LrnCache(x, y, den, size, alpha, beta)


def _lrn_backward(dy: np.ndarray, cache: _LrnCache) -> Grads:
    c = cache
    # dx_j = dy_j·den_j^−β − (2αβ/size)·x_j·Σ_{i: j ∈ window(i)} dy_i·y_i/den_i;
    # the channels i whose window holds j are j − (size−1)//2 .. j + size//2.
    t = _channel_window_sum(dy * c.y / c.den, (c.size - 1) // 2, c.size // 2)
    t *= c.x
    t *= -2.0 * c.alpha * c.beta / c.size
    t += dy * np.power(c.den, -c.beta)
    return (t,), {}


KERNELS: dict[str, Kernel] = {
    "batchnorm": Kernel(_batchnorm_forward, _batchnorm_backward),
    "layernorm": Kernel(_layernorm_forward, _group_norm_backward),
    "instancenorm": Kernel(_instancenorm_forward, _group_norm_backward),
    "groupnorm": Kernel(_groupnorm_forward, _group_norm_backward),
    "lrn": Kernel(_lrn_forward, _lrn_backward),
}
