"""Stage 3 (runtime): kernels for fused graphs, batchnorm folding, and the plan that runs them.

The kernels of the compiler's fused ops (compiler/fusion.py `FUSED_OPS`)
register into those ops' entries, with the `Kernel` protocol: `fused_conv` is
the conv kernel's convolution (used through its protocol only) followed by a
per-channel epilogue — batchnorm,
residual add, activation — in place on the conv's own output; `fused_linear`
and `fused_bn` likewise. In inference a folded batchnorm is just the conv's
bias. In training the same kernels are the recompute steps: the forward keeps
only its inputs (the conv input, the residual operand) and the per-channel
batch statistics, and the backward reruns the conv forward and rebuilds the
normalised tensor and the activation's mask from them before taking the
gradients — one extra convolution per step instead of keeping the conv
kernel's cache, batchnorm's normalised tensor and the activation's output.
`fold_parameters` turns an unfused parameter store into a fused eval graph's
store (w' = w·γ/√(σ²+ε), b' = (b−μ)·γ/√(σ²+ε)+β, and a folded affine's
w'' = s·w', b'' = s·b' + t); `map_parameters` gives a
train graph's store that shares the unfused arrays. `FusedPlan` is a `Plan`
over a fused graph (it takes its parameters instead of drawing them), and the
`*_into` functions write an inference step's output into a given buffer (for
the memory planner's executor).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..compiler.fusion import ALL_OPS, FUSED_OPS, fuse, parameters
from ..compiler.graph import Network
from ..compiler.ops import implementation, register
from .kernels import Context, Kernel, shards
from .kernels.conv import conv_into
from .kernels.norm import update_running
from .kernels._core import Attrs, Grads, Params, Tensors
from .kernels._im2col import is_channels_last
from .plan import Plan


# ------------------------------------------------------- epilogue pieces
def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast against [N, C, ...]."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def activate(y: np.ndarray, attrs: Attrs) -> np.ndarray:
    """The fused activation, in place."""
    act = attrs.get("activation")
    if act == "relu":
        np.maximum(y, 0, out=y)
    elif act == "relu6":
        np.clip(y, 0, 6, out=y)
    elif act == "leaky_relu":
        np.multiply(y, y.dtype.type(attrs.get("slope", 0.01)), out=y, where=y < 0)
    return y


def activation_grad(g: np.ndarray, z: np.ndarray, attrs: Attrs) -> np.ndarray:
    """dL/dz from dL/dy and the pre-activation z (the unfused kernels' derivative at the kinks)."""
    act = attrs.get("activation")
    if act == "relu":
        return g * (z > 0)
    if act == "relu6":
        return g * ((z > 0) & (z < 6))
    if act == "leaky_relu":
        return np.where(z > 0, g, g * z.dtype.type(attrs.get("slope", 0.01)))
    return g


@dataclass(frozen=True)
class BatchStats:
    """Per-channel statistics a batchnorm used: what the recompute backward needs."""

    mean: np.ndarray
    inv_std: np.ndarray
    batch: bool                 # from the batch (training): the gradient flows through them
    count: int = 0              # values per channel over the whole batch (every shard)
    shard: tuple | None = None  # (ShardGroup, index) when the batch runs as lockstep shards


def batchnorm_(y: np.ndarray, params: Params, prefix: str, attrs: Attrs, training: bool) -> BatchStats:
    """Normalise y in place: batch statistics in training (over every shard of a lockstep batch,
    updating the running ones with PyTorch's momentum rule as the batchnorm kernel does), the
    running ones otherwise."""
    eps, m = attrs.get("eps", 1e-5), attrs.get("momentum", 0.1)
    gamma, beta = params[prefix + "weight"], params[prefix + "bias"]
    if not training:
        mean, var = params[prefix + "running_mean"], params[prefix + "running_var"]
        y -= _channel(mean, y.ndim)
        stats = BatchStats(mean, 1.0 / np.sqrt(var + eps), False)
    else:
        shard = shards.current()
        sums, count = _channel_sum(y), y.size // y.shape[1]
        if shard is not None:     # the count travels with the sums: shards may differ in size
            total = shards.total(shard, np.append(sums.astype(np.float64), count))
            sums, count = total[:-1].astype(y.dtype), int(total[-1])
        if count < 2:
            raise ValueError(f"batchnorm needs more than one value per channel in training, got {y.shape}")
        mean = sums / count
        y -= _channel(mean, y.ndim)
        var = shards.total(shard, _channel_dot(y, y)) / count     # centred in place: no full-size temporary
        update_running(params, prefix, mean, var, count, m, shard)
        stats = BatchStats(mean, 1.0 / np.sqrt(var + eps), True, count, shard)
    y *= _channel(stats.inv_std * gamma, y.ndim)
    y += _channel(beta, y.ndim)
    return stats


def _bn_input_grad(g: np.ndarray, xhat: np.ndarray, gamma: np.ndarray, stats: BatchStats,
                   dgamma: np.ndarray, dbeta: np.ndarray) -> np.ndarray:
    """dL/dx of a batchnorm from dL/dy (the closed form of the batchnorm kernel); `dgamma`,
    `dbeta` are this shard's parts, summed over the batch here."""
    scale = _channel(gamma * stats.inv_std, g.ndim)
    if not stats.batch:
        return g * scale
    if stats.shard is not None:
        total = shards.total(stats.shard, np.concatenate([dbeta, dgamma]))
        dbeta, dgamma = total[:len(dbeta)], total[len(dbeta):]
    dx = xhat * _channel(dgamma / stats.count, g.ndim)
    dx += _channel(dbeta / stats.count, g.ndim)
    np.subtract(g, dx, out=dx)
    dx *= scale
    return dx


def _channel_sum(g: np.ndarray) -> np.ndarray:
    return g.sum(axis=_axes(g.ndim))


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    spec = "nchw,nchw->c" if a.ndim == 4 else "nc,nc->c"
    return np.einsum(spec, a, b)


# ---------------------------------------------------------------- fused_conv
# The convolution itself is the conv kernel's (through its Kernel protocol only,
# so any im2col or chunking strategy it uses is the fused step's too).
CONV = implementation("conv", "kernel")


def _conv_params(params: Params, attrs: Attrs) -> Params:
    """The conv's own tensors among the fused step's (which also holds batchnorm's)."""
    return {"weight": params["weight"], **({"bias": params["bias"]} if attrs["bias"] else {})}


def _conv(x: np.ndarray, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, object]:
    """The conv kernel's output (bias included) and its cache."""
    return CONV.forward((x,), _conv_params(params, attrs), attrs, ctx)


def _unfolded_bn(attrs: Attrs) -> bool:
    return bool(attrs.get("bn")) and not attrs.get("folded")


def _conv_epilogue(y: np.ndarray, xs: Tensors, params: Params, attrs: Attrs, training: bool) -> BatchStats | None:
    """Batchnorm, residual add and activation, all in place on the conv output."""
    stats = None
    if _unfolded_bn(attrs):
        stats = batchnorm_(y, params, "bn_", attrs, training)
    if attrs.get("residual"):
        y += xs[1]
    activate(y, attrs)
    return stats


@dataclass(frozen=True)
class _ConvCache:
    """Only the inputs and the batch statistics: everything else is recomputed."""

    x: np.ndarray
    skip: np.ndarray | None
    stats: BatchStats | None
    params: dict
    attrs: Attrs
    need_dx: bool


def _fused_conv_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _ConvCache]:
    y, _ = _conv(xs[0], params, attrs, ctx)               # the conv kernel's own cache is dropped here
    stats = _conv_epilogue(y, xs, params, attrs, ctx.training)
    skip = xs[1] if attrs.get("residual") else None
    return y, _ConvCache(xs[0], skip, stats, dict(params), attrs, ctx.need_input_grad)


def _fused_conv_backward(dy: np.ndarray, cache: _ConvCache) -> Grads:
    p, a = cache.params, cache.attrs
    # Recompute the conv output (and the conv kernel's cache for its own backward).
    z, conv_cache = _conv(cache.x, p, a, Context(training=True, need_input_grad=cache.need_dx))
    grads: dict[str, np.ndarray] = {}
    xhat = None
    if cache.stats is not None:
        xhat = z
        xhat -= _channel(cache.stats.mean, 4)
        xhat *= _channel(cache.stats.inv_std, 4)
        z = xhat * _channel(p["bn_weight"], 4)
        z += _channel(p["bn_bias"], 4)
    if cache.skip is not None:
        z += cache.skip
    g = activation_grad(dy, z, a)
    del z
    dskip = g if cache.skip is not None else None
    if xhat is not None:
        grads["bn_bias"] = _channel_sum(g)
        grads["bn_weight"] = _channel_dot(g, xhat)
        g = _bn_input_grad(g, xhat, p["bn_weight"], cache.stats, grads["bn_weight"], grads["bn_bias"])
        del xhat
    (dx,), conv_grads = CONV.backward(g, conv_cache)
    grads.update(conv_grads)
    return ((dx, dskip) if cache.skip is not None else (dx,)), grads


# -------------------------------------------------------------- fused_linear
@dataclass(frozen=True)
class _LinearCache:
    x: np.ndarray           # [N, F]
    shape: tuple[int, ...]
    params: dict
    attrs: Attrs
    need_dx: bool


def _linear(x2: np.ndarray, params: Params, attrs: Attrs, out: np.ndarray | None = None) -> np.ndarray:
    y = np.matmul(x2, params["weight"].T, out=out)
    if attrs["bias"]:
        y += params["bias"]
    return y


def _fused_linear_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _LinearCache]:
    x = xs[0]
    x2 = x.reshape(x.shape[0], -1)
    y = activate(_linear(x2, params, attrs), attrs)
    return y, _LinearCache(x2, x.shape, dict(params), attrs, ctx.need_input_grad)


def _fused_linear_backward(dy: np.ndarray, cache: _LinearCache) -> Grads:
    g = activation_grad(dy, _linear(cache.x, cache.params, cache.attrs), cache.attrs)
    grads = {}
    if cache.attrs.get("trainable", True):
        grads["weight"] = g.T @ cache.x
        if cache.attrs["bias"]:
            grads["bias"] = g.sum(axis=0)
    dx = (g @ cache.params["weight"]).reshape(cache.shape) if cache.need_dx else None
    return (dx,), grads


# ------------------------------------------------------------------ fused_bn
@dataclass(frozen=True)
class _BnCache:
    x: np.ndarray
    stats: BatchStats
    params: dict
    attrs: Attrs


def _fused_bn_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _BnCache]:
    x = xs[0]
    y = x.copy()
    stats = batchnorm_(y, params, "", attrs, ctx.training)
    return activate(y, attrs), _BnCache(x, stats, dict(params), attrs)


def _fused_bn_backward(dy: np.ndarray, cache: _BnCache) -> Grads:
    p, nd = cache.params, dy.ndim
    xhat = (cache.x - _channel(cache.stats.mean, nd)) * _channel(cache.stats.inv_std, nd)
    z = xhat * _channel(p["weight"], nd)
    z += _channel(p["bias"], nd)
    g = activation_grad(dy, z, cache.attrs)
    grads = {"bias": _channel_sum(g), "weight": _channel_dot(g, xhat)}
    return (_bn_input_grad(g, xhat, p["weight"], cache.stats, grads["weight"], grads["bias"]),), grads


# The fused kernels register into the fused ops' entries (compiler/fusion.py FUSED_OPS).
register("kernel", "fused_conv", table=FUSED_OPS)(Kernel(_fused_conv_forward, _fused_conv_backward))
register("kernel", "fused_linear", table=FUSED_OPS)(Kernel(_fused_linear_forward, _fused_linear_backward))
register("kernel", "fused_bn", table=FUSED_OPS)(Kernel(_fused_bn_forward, _fused_bn_backward))


# ---------------------------------------------------- inference into a buffer
def _view(buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return buf[:n].reshape(shape)


def like(buf: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A view of `buf` with y's shape and y's memory order (NCHW, or NHWC seen as NCHW), so the
    ops after it read the layout they would have read from the kernel's own array."""
    if y.ndim == 4 and is_channels_last(y):
        n, c, h, w = y.shape
        return buf[:y.size].reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return buf[:y.size].reshape(y.shape)


def fused_conv_into(xs: Tensors, params: Params, attrs: Attrs, buf: np.ndarray) -> np.ndarray:
    """Inference `fused_conv` into `buf`: the conv kernel writes there itself where its path can
    (`conv_into`), else its output is copied in; the epilogue runs in place."""
    y = conv_into(xs[0], _conv_params(params, attrs), attrs, buf.reshape(-1, attrs["out_channels"]))
    if y is None:
        y, _ = _conv(xs[0], params, attrs, Context(training=False))
        out = like(buf, y)
        np.copyto(out, y)
        y = out
    _conv_epilogue(y, xs, params, attrs, training=False)
    return y


def fused_linear_into(xs: Tensors, params: Params, attrs: Attrs, buf: np.ndarray) -> np.ndarray:
    x2 = xs[0].reshape(xs[0].shape[0], -1)
    out = _view(buf, (x2.shape[0], params["weight"].shape[0]))
    return activate(_linear(x2, params, attrs, out=out), attrs)


def fused_bn_into(xs: Tensors, params: Params, attrs: Attrs, buf: np.ndarray) -> np.ndarray:
    out = like(buf, xs[0])
    np.copyto(out, xs[0])
    batchnorm_(out, params, "", attrs, training=False)
    return activate(out, attrs)


INTO = {"fused_conv": fused_conv_into, "fused_linear": fused_linear_into, "fused_bn": fused_bn_into}


# ------------------------------------------------------------ parameter stores
def fold_parameters(net: Network, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The store of a fused eval graph from the unfused store: folded convs (batchnorm, affine), folded
    linear and batchnorm steps (affine), shared arrays elsewhere."""
    out: dict[str, np.ndarray] = {}
    for owner, specs in parameters(net).items():
        node = net.node(owner)
        if node.op == "fused_conv" and (node.attrs["folded"] or node.attrs.get("affine")):
            out.update(_fold(node, params))
        elif node.attrs.get("affine"):
            out.update(_fold_affine(node, params))
        else:
            out.update({f"{owner}.{p}": params[f"{owner}.{p}"] for p in specs})
    return out


def _fold(node, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β (a folded batchnorm), then w'' = s·w', b'' = s·b' + t
    (a folded affine), computed in float64."""
    members = {op: name for name, op, _ in node.attrs["fused_from"]}
    conv = members["conv"]
    w = params[f"{conv}.weight"]
    b = params[f"{conv}.bias"].astype(np.float64) if f"{conv}.bias" in params else np.zeros(w.shape[0])
    scale = np.ones(w.shape[0])
    if node.attrs["folded"]:
        bn = members["batchnorm"]
        gamma, beta = params[f"{bn}.weight"].astype(np.float64), params[f"{bn}.bias"].astype(np.float64)
        mean, var = params[f"{bn}.running_mean"].astype(np.float64), params[f"{bn}.running_var"].astype(np.float64)
        scale = gamma / np.sqrt(var + node.attrs["eps"])
        b = (b - mean) * scale + beta
    s, t = node.attrs.get("affine") or (1.0, 0.0)
    scale, b = scale * s, b * s + t
    return {f"{node.name}.weight": _read_only(gemm_layout((w * scale.reshape((-1,) + (1,) * (w.ndim - 1)))
                                                          .astype(w.dtype))),
            f"{node.name}.bias": _read_only(b.astype(w.dtype))}


def _fold_affine(node, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A fused linear's w' = s·w, b' = s·b + t; a fused batchnorm's γ' = s·γ, β' = s·β + t."""
    s, t = node.attrs["affine"]
    owner = node.name
    out = {f"{owner}.{k}": params[f"{owner}.{k}"] for k in ("running_mean", "running_var") if f"{owner}.{k}" in params}
    w = params[f"{owner}.weight"]
    b = params[f"{owner}.bias"].astype(np.float64) if f"{owner}.bias" in params else np.zeros(w.shape[0])
    out[f"{owner}.weight"] = _read_only((w.astype(np.float64) * s).astype(w.dtype))
    out[f"{owner}.bias"] = _read_only((b * s + t).astype(w.dtype))
    return out


def _read_only(a: np.ndarray) -> np.ndarray:
    """A folded tensor is computed once and never updated: read-only, it lets kernels keep what they
    derive from it (kernels/winograd.py keeps its transformed kernel)."""
    base = a
    while isinstance(base, np.ndarray):
        base.flags.writeable = False
        base = base.base
    return a


def gemm_layout(w: np.ndarray) -> np.ndarray:
    """The same [O, C/g, kh, kw] weights, stored O-kh-kw-C in memory when the conv takes the
    channels-last GEMM (C/g >= 4): its [kh·kw·C/g, O] matrix is then a view, not a copy per call."""
    if w.ndim != 4 or w.shape[1] < 4:  # a 1-D conv's [O, C/g, k] weight is lifted per call (kernels/signal.py)
        return w
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def source_keys(net: Network) -> dict[str, str]:
    """For a fused *train* graph: its store key -> the unfused store key holding the same tensor."""
    out = {}
    for owner, specs in parameters(net).items():
        node = net.node(owner)
        bn = next((name for name, op, _ in node.attrs.get("fused_from", ()) if op == "batchnorm"), None)
        for pname in specs:
            if pname.startswith("bn_") and node.op == "fused_conv":
                out[f"{owner}.{pname}"] = f"{bn}.{pname[3:]}"
            else:
                out[f"{owner}.{pname}"] = f"{owner}.{pname}"
    return out


def map_parameters(net: Network, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The store of a fused train graph, sharing the unfused arrays (updates reach both)."""
    return {k: params[src] for k, src in source_keys(net).items()}


# ---------------------------------------------------------------------- plan
class FusedPlan(Plan):
    """A `Plan` over a fused graph: its op table adds the fused ops (whose entries hold the fused
    kernels), parameters are given, not drawn."""

    ops = ALL_OPS

    def __init__(self, net: Network, params: Mapping[str, np.ndarray], dtype: type = np.float32,
                 kernels=None):
        # The store comes from fold_parameters / map_parameters: nothing is drawn (seconds for VGG).
        super().__init__(net, parameters(net), dtype=dtype, params=params, kernels=kernels)

    def couples_batch(self, step) -> bool:
        """In training an unfolded batchnorm couples the samples of a batch, fused into a conv or not."""
        return super().couples_batch(step) or (step.op == "fused_conv" and _unfolded_bn(step.attrs))

    @classmethod
    def from_plan(cls, plan: Plan, mode: str = "eval") -> "FusedPlan":
        """Fuse `plan`'s network; eval folds batchnorm into copies, train shares `plan`'s arrays.
        The fused plan runs on `plan`'s kernel set."""
        net = fuse(plan.net, mode).net
        store = fold_parameters(net, plan.params) if mode == "eval" else map_parameters(net, plan.params)
        return cls(net, store, plan.dtype, plan.kernel_set)


__all__ = ["FusedPlan", "INTO", "fold_parameters", "map_parameters", "source_keys",
           "activate", "activation_grad"]
