"""Stage 3 (runtime): normalisation kernels (batch, layer, instance, group, LRN).

`batchnorm` normalises each channel over the batch and spatial axes with the
biased batch variance while training, updating `running_mean`/`running_var`
in place with PyTorch's momentum rule (unbiased variance for the running
estimate), and with the running statistics in inference. `layernorm`,
`instancenorm` and `groupnorm` are one kernel: per sample, channels split into
`groups` groups (1 for layernorm, C for instancenorm), each normalised over
its channels and spatial positions, then a per-channel affine; `layernorm`
with `over = channels` normalises each position's channel vector instead. `lrn` is
PyTorch's LocalResponseNorm: x / (k + α/size · Σ_window x²)^β over a window
of neighbouring channels. All backward passes use the closed forms
dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)) (means over what was normalised).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import shards
from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against x ([N, C, ...])."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _reduce_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the channel axis."""
    return (0,) + tuple(range(2, x.ndim))


# ---------------------------------------------------------------- batchnorm
#
# Per-channel work on channels-last memory would broadcast a C-vector over an
# inner loop of only C elements (slow in NumPy: ~5x a plain pass at C = 16).
# `_Layout` instead sees the tensor as [rows, C·k] with the channel vectors
# tiled k times (inner loops of ~1000), and takes per-channel sums as one
# BLAS product with a ones vector (~20x faster than `sum(axis=0)` there).

_WIDE = 1024        # target inner length for per-channel broadcasts


class _Layout:
    """How a [N, C, ...] tensor lies in memory, for per-channel sums and affines."""

    def __init__(self, x: np.ndarray):
        self.shape, c = x.shape, x.shape[1]
        self.c = c
        n = x.shape[0]
        p = x.size // (n * c) if x.size else 0
        self.count = n * p
        if x.ndim > 2 and not x.flags.c_contiguous and x.transpose(0, *range(2, x.ndim), 1).flags.c_contiguous:
            self.last = True            # channels-last memory (a channels-last conv's output)
        elif x.ndim == 2 or p == 1:
            self.last = True            # [N, C]: channels are the inner axis already
        else:
            self.last = False
        if self.last:
            k = 1
            while k * 2 * c <= _WIDE and self.count % (k * 2) == 0:
                k *= 2
            self.k = k
            self.flat_shape = (self.count // k, c * k)
        else:
            self.k = 1
            self.flat_shape = (n, c, p)

    def flat(self, a: np.ndarray) -> np.ndarray:
        """a (shaped like x) as the flat view of this layout, copied if laid out otherwise."""
        if self.last:
            if a.ndim > 2:
                a = a.transpose(0, *range(2, a.ndim), 1)
            return np.ascontiguousarray(a).reshape(self.flat_shape)
        return np.ascontiguousarray(a).reshape(self.flat_shape)

    def unflat(self, f: np.ndarray) -> np.ndarray:
        """Inverse of `flat`: the [N, C, ...] view of a flat array."""
        if self.last:
            if len(self.shape) == 2:
                return f.reshape(self.shape)
            nhwc = (self.shape[0], *self.shape[2:], self.c)
            return f.reshape(nhwc).transpose(0, len(nhwc) - 1, *range(1, len(nhwc) - 1))
        return f.reshape(self.shape)

    def vec(self, v: np.ndarray) -> np.ndarray:
        """A per-channel vector, broadcastable against `flat` arrays."""
        if self.last:
            return np.tile(v, self.k)
        return v.reshape(1, self.c, 1)

    def sums(self, f: np.ndarray) -> np.ndarray:
        """Per-channel sums of a flat array."""
        if self.last:
            s = np.ones(f.shape[0], f.dtype) @ f
            return self._fold(s)
        return (f @ np.ones(f.shape[2], f.dtype)).sum(axis=0)

    def dot_sums(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-channel sums of a·b of two flat arrays, in one read of each (einsum's sum of products:
        2-3x faster than writing the product and summing it)."""
        if self.last:
            return self._fold(np.einsum("ij,ij->j", a, b))
        return np.einsum("ncp,ncp->c", a, b)

    def _fold(self, s: np.ndarray) -> np.ndarray:
        return s.reshape(self.k, self.c).sum(axis=0) if self.k > 1 else s


def channel_sums(x: np.ndarray) -> np.ndarray:
    """Per-channel sums of [N, C, ...] in either layout: one BLAS product (NumPy's own reduction
    over axes (0, 2, 3) of channels-last memory is ~10x slower at C = 6-16)."""
    lay = _Layout(x)
    return lay.sums(lay.flat(x))


@dataclass(frozen=True)
class _BatchNormCache:
    xc: np.ndarray          # flat (see `_Layout`): x minus the mean (batch or running)
    inv_std: np.ndarray     # [C]
    weight: np.ndarray
    layout: _Layout
    count: int              # values per channel over the whole batch (all shards)
    batch_stats: bool       # statistics came from the batch (training): they depend on x
    shard: tuple | None     # (ShardGroup, index) when the batch runs as lockstep shards


def update_running(params: Params, prefix: str, mean: np.ndarray, var: np.ndarray, count: int,
                   momentum: float, shard: tuple | None) -> None:
    """PyTorch's momentum rule for the running statistics (unbiased variance), done by one shard of a
    lockstep batch (shard 0, with the whole batch's statistics) or by the unsharded batch."""
    if shard is None or shard[1] == 0:
        rm, rv = params[prefix + "running_mean"], params[prefix + "running_var"]
        rm *= 1 - momentum
        rm += momentum * mean
        rv *= 1 - momentum
        rv += (momentum * count / (count - 1)) * var


def _batchnorm_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _BatchNormCache]:
    x, w, b = xs[0], params["weight"], params["bias"]
    eps, m = attrs.get("eps", 1e-5), attrs.get("momentum", 0.1)
    lay = _Layout(x)
    xf = lay.flat(x)
    shard = shards.current() if ctx.training else None
    count = lay.count
    if ctx.training:
        sums = lay.sums(xf)
        if shard is not None:   # the count travels with the sums (shards may differ in size)
            s = shards.total(shard, np.append(sums.astype(np.float64), count))
            sums, count = s[:-1].astype(xf.dtype), int(s[-1])
        if count < 2:
            raise ValueError(f"batchnorm needs more than one value per channel in training, got {x.shape}")
        mean = sums / count
        xc = xf - lay.vec(mean)
        var = shards.total(shard, lay.dot_sums(xc, xc)) / count
        update_running(params, "", mean, var, count, m, shard)
    else:
        mean, var = params["running_mean"], params["running_var"]
        xc = xf - lay.vec(mean)
    inv_std = 1.0 / np.sqrt(var + eps)
    y = np.multiply(xc, lay.vec(w * inv_std))
    y += lay.vec(b)
    return lay.unflat(y), _BatchNormCache(xc, inv_std, w, lay, count, ctx.training, shard)


def _batchnorm_backward(dy: np.ndarray, cache: _BatchNormCache) -> Grads:
    lay, xc, inv_std = cache.layout, cache.xc, cache.inv_std
    g = lay.flat(dy)
    scale = cache.weight * inv_std
    db, dw = lay.sums(g), lay.dot_sums(g, xc) * inv_std   # this shard's part of each
    if not cache.batch_stats:
        return (lay.unflat(np.multiply(g, lay.vec(scale))),), {"weight": dw, "bias": db}
    c, n = len(db), cache.count
    if cache.shard is None:
        db_all, dw_all = db, dw
    else:
        tot = shards.total(cache.shard, np.concatenate([db, dw]))
        db_all, dw_all = tot[:c], tot[c:]
    # dx = γ/σ·(dy − Σdy/n − x̂·Σ(dy·x̂)/n) with x̂ = xc/σ: three per-channel factors.
    t = np.multiply(xc, lay.vec(-scale * inv_std * dw_all / n))
    dx = np.multiply(g, lay.vec(scale))
    dx += t
    dx += lay.vec(-scale * db_all / n)
    return (lay.unflat(dx),), {"weight": dw, "bias": db}


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


@dataclass(frozen=True)
class _ChannelNormCache:
    xhat: np.ndarray        # [N, C, ...]
    inv_std: np.ndarray     # [N, 1, ...]
    weight: np.ndarray


def _channel_norm(x: np.ndarray, params: Params, eps: float) -> tuple[np.ndarray, _ChannelNormCache]:
    """Each position's channel vector normalised on its own (PyTorch's LayerNorm on channels-last)."""
    shape = _channel_shape(x)
    xc = x - x.mean(axis=1, keepdims=True)
    inv_std = 1.0 / np.sqrt(np.mean(xc * xc, axis=1, keepdims=True) + eps)
    xhat = xc
    xhat *= inv_std
    y = xhat * params["weight"].reshape(shape)
    y += params["bias"].reshape(shape)
    return y, _ChannelNormCache(xhat, inv_std, params["weight"])


def _channel_norm_backward(dy: np.ndarray, cache: _ChannelNormCache) -> Grads:
    shape, axes = _channel_shape(dy), _reduce_axes(dy)
    db = dy.sum(axis=axes)
    dw = np.sum(dy * cache.xhat, axis=axes)
    g = dy * cache.weight.reshape(shape)
    dx = cache.xhat * np.mean(g * cache.xhat, axis=1, keepdims=True)
    dx += g.mean(axis=1, keepdims=True)
    np.subtract(g, dx, out=dx)
    dx *= cache.inv_std
    return (dx,), {"weight": dw, "bias": db}


def _layernorm_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    if attrs.get("over") == "channels":
        return _channel_norm(xs[0], params, attrs.get("eps", 1e-5))
    return _group_norm(xs[0], params, 1, attrs.get("eps", 1e-5))


def _layernorm_backward(dy: np.ndarray, cache) -> Grads:
    if isinstance(cache, _ChannelNormCache):
        return _channel_norm_backward(dy, cache)
    return _group_norm_backward(dy, cache)


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


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "batchnorm")(Kernel(_batchnorm_forward, _batchnorm_backward))
register("kernel", "layernorm")(Kernel(_layernorm_forward, _layernorm_backward))
register("kernel", "instancenorm")(Kernel(_instancenorm_forward, _group_norm_backward))
register("kernel", "groupnorm")(Kernel(_groupnorm_forward, _group_norm_backward))
register("kernel", "lrn")(Kernel(_lrn_forward, _lrn_backward))
