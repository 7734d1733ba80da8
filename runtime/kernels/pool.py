"""Stage 3 (runtime): pooling and resampling kernels.

`maxpool`, `avgpool` and `lppool` reduce one strided slice of the padded
input per kernel offset (`np.maximum` / `+=` over k×k slices: tens of times
faster than reducing a reshaped window axis), and their backward passes
scatter with one slice-assign (non-overlapping windows) or slice-add per
offset, into a gradient laid out in memory like the input was (NCHW, or NHWC
behind a channels-first view when a channels-last conv produced it).
`maxpool` records the kernel offset of each window's first maximum
(PyTorch's tie-break) in a `MaxPoolIndices` it also leaves in
`ctx.saved[node]`, where `unpool` finds it; in inference that argmax is only
computed if an `unpool` asks for it. Adaptive average pooling, bilinear
upsampling and resizing to a size (`upsample(size = …)`, `upsample(like = t)`)
are separable linear maps, applied as two small matrix products.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors
from ._im2col import Window, crop, is_channels_last, pad_into, zeros
from .resample import resize_matrix, window_counts


def _views(buf: np.ndarray, win: Window) -> list[np.ndarray]:
    """The [N, C, oh, ow] slice of the padded buffer at every kernel offset."""
    return [buf[:, :, rows, cols] for _, _, rows, cols in win.offsets()]


def _spread(g: np.ndarray, win: Window, mask: list[np.ndarray] | None = None,
            channels_last: bool = False) -> np.ndarray:
    """Adjoint of taking the per-offset slices: scatter g (times mask[k]) onto the input.

    The gradient is laid out like the forward input was, so the element-wise
    backward passes before it and a channels-last conv after it see one layout.
    """
    buf = zeros((*g.shape[:2], *win.extent), g.dtype, channels_last)
    for k, v in enumerate(_views(buf, win)):
        if win.overlapping:
            v += g if mask is None else g * mask[k]
        elif mask is None:
            v[...] = g
        else:
            np.multiply(g, mask[k], out=v)
    return crop(buf, win)


def _sum_windows(buf: np.ndarray, win: Window) -> np.ndarray:
    views = _views(buf, win)
    acc = np.array(views[0], order="K")
    for v in views[1:]:
        acc += v
    return acc


# ------------------------------------------------------------------ maxpool

@dataclass
class MaxPoolIndices:
    """What `maxpool` leaves in ctx.saved for `unpool` (and its own backward).

    `argmax()` is the kernel offset `i·kw + j` of each window's first maximum,
    [N, C, oh, ow]; `in_shape` is the pool's input shape, i.e. unpool's output.
    """

    win: Window
    in_shape: tuple[int, ...]
    _buf: np.ndarray | None = None      # padded input, until the argmax is computed
    _idx: np.ndarray | None = None
    channels_last: bool = False         # memory layout of the pool's input

    def argmax(self) -> np.ndarray:
        if self._idx is None:
            _, self._idx = _max_argmax(self._buf, self.win)
            self._buf = None
        return self._idx

    def masks(self) -> list[np.ndarray]:
        idx = self.argmax()
        return [idx == k for k in range(self.win.kernel[0] * self.win.kernel[1])]


def _max(buf: np.ndarray, win: Window) -> np.ndarray:
    """The window maxima, separably: over the kernel's rows (operands are whole padded rows, long
    contiguous runs), then over its columns; kh + kw - 2 passes instead of kh·kw - 1."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out_hw
    rows = [buf[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, :] for i in range(kh)]
    r = np.array(rows[0], order="K")
    for v in rows[1:]:
        np.maximum(r, v, out=r)
    cols = [r[:, :, :, j * dw:j * dw + (ow - 1) * sw + 1:sw] for j in range(kw)]
    y = np.array(cols[0], order="K")
    for v in cols[1:]:
        np.maximum(y, v, out=y)
    return y


def _max_argmax(buf: np.ndarray, win: Window) -> tuple[np.ndarray, np.ndarray]:
    views = _views(buf, win)
    y = np.array(views[0], order="K")
    dtype = np.min_scalar_type(len(views) - 1)
    idx = np.zeros_like(y, dtype=dtype)
    gt, code = np.empty_like(y, dtype=bool), np.empty_like(idx)
    for k, v in enumerate(views[1:], 1):
        # Offsets come in increasing k, so "later strict winner" = max(idx, k·[v > y]):
        # plain ufuncs, no masked assignment; ties keep the first maximum.
        np.greater(v, y, out=gt)
        np.maximum(y, v, out=y)
        np.multiply(gt, dtype.type(k), out=code)
        np.maximum(idx, code, out=idx)
    return y, idx


def _maxpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, MaxPoolIndices]:
    x = xs[0]
    win = Window.of(x.shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                    attrs.get("dilation", (1, 1)), attrs.get("ceil_mode", False))
    cl = is_channels_last(x)
    # Padded in the input's own layout: a channels-last input padded channels-first would be
    # transposed on the way (5 ms of ResNet-18's 50 ms at batch 1) and leave an NCHW output.
    buf = pad_into(x, win, -np.inf, channels_last=cl)
    if cl:
        buf = buf.transpose(0, 3, 1, 2)
    if ctx.training:
        y, idx = _max_argmax(buf, win)
        rec = MaxPoolIndices(win, x.shape, None, idx, cl)
    else:
        y, rec = _max(buf, win), MaxPoolIndices(win, x.shape, buf, None, cl)
    ctx.saved[ctx.node] = rec
    return y, rec


def _maxpool_backward(dy: np.ndarray, rec: MaxPoolIndices) -> Grads:
    return (_spread(dy, rec.win, rec.masks(), rec.channels_last),), {}


# ------------------------------------------------------------------- unpool

def _unpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, MaxPoolIndices]:
    rec: MaxPoolIndices = ctx.saved[attrs["of"]]
    x, idx = xs[0], rec.argmax()
    if x.shape != idx.shape:
        raise ValueError(f"unpool input {x.shape} does not match the output {idx.shape} of {attrs['of']!r}")
    # Scatter-add: with overlapping windows a position that is the maximum of
    # several windows receives their sum, so the gather below is the exact adjoint.
    return _spread(x, rec.win, rec.masks()), rec


def _unpool_backward(dy: np.ndarray, rec: MaxPoolIndices) -> Grads:
    views = _views(pad_into(dy, rec.win, 0.0), rec.win)
    dx = np.zeros(rec.argmax().shape, dy.dtype)
    for v, m in zip(views, rec.masks()):
        dx += v * m
    return (dx,), {}


# ------------------------------------------------------------------ avgpool

@lru_cache(maxsize=256)
def avg_scale(win: Window, padding, include_pad: bool, dtype) -> np.ndarray | float:
    """1 / the divisor of each output position (a float where all are equal), cached."""
    counts = [window_counts(win.in_hw[a], win.out_hw[a], win.kernel[a], win.stride[a], padding[a], include_pad)
              for a in (0, 1)]
    inv = 1.0 / np.maximum(np.outer(*counts), 1)
    if np.all(inv == inv.flat[0]):
        return float(inv.flat[0])       # a scalar multiply is cheaper than a broadcast one
    inv = inv.astype(dtype)
    inv.flags.writeable = False         # cached and shared between calls
    return inv


@dataclass(frozen=True)
class _AvgCache:
    win: Window
    scale: np.ndarray | float
    channels_last: bool


def _avgpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _AvgCache]:
    x = xs[0]
    win = Window.of(x.shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                    ceil_mode=attrs.get("ceil_mode", False))
    padding = tuple(tuple(p) for p in attrs["padding"])
    scale = avg_scale(win, padding, attrs.get("count_include_pad", True), x.dtype)
    y = _sum_windows(pad_into(x, win, 0.0), win)
    y *= scale
    return y, _AvgCache(win, scale, is_channels_last(x))


def _avgpool_backward(dy: np.ndarray, cache: _AvgCache) -> Grads:
    return (_spread(dy * cache.scale, cache.win, channels_last=cache.channels_last),), {}


# ------------------------------------------------------------------- lppool

@dataclass(frozen=True)
class _LpCache:
    win: Window
    p: float
    x: np.ndarray
    s: np.ndarray
    y: np.ndarray


def _pow(x: np.ndarray, p: float) -> np.ndarray:
    return x if p == 1 else x * x if p == 2 else np.power(x, p)


def _lppool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _LpCache]:
    x, p = xs[0], float(attrs["p"])
    win = Window.of(x.shape[2:], attrs["kernel"], attrs["stride"], ((0, 0), (0, 0)),
                    ceil_mode=attrs.get("ceil_mode", False))
    # (Σ x^p)^(1/p) over the elements present: a ceil-mode overhang adds zeros.
    s = _sum_windows(pad_into(_pow(x, p), win, 0.0), win)
    y = np.sqrt(s) if p == 2 else s if p == 1 else np.power(s, 1.0 / p)
    return y, _LpCache(win, p, x, s, y)


def _lppool_backward(dy: np.ndarray, cache: _LpCache) -> Grads:
    # d(S^(1/p))/dS = y / (p·S) and dS/dx = p·x^(p-1): dx = spread(dy·y/S)·x^(p-1).
    ratio = np.divide(cache.y, cache.s, out=np.zeros_like(cache.y), where=cache.s != 0)
    dx = _spread(dy * ratio, cache.win, channels_last=is_channels_last(cache.x))
    if cache.p != 1:
        dx = dx * _pow(cache.x, cache.p - 1)
    return (dx,), {}


# -------------------------------------------------------------- global pools

def _global_avgpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, tuple]:
    x = xs[0]
    return x.mean(axis=(2, 3), keepdims=True), (x.shape, is_channels_last(x))


def _global_avgpool_backward(dy: np.ndarray, cache: tuple) -> Grads:
    shape, channels_last = cache
    # Laid out like the input was, so the backward passes before it keep one layout.
    dx = zeros(shape, dy.dtype, channels_last)
    dx[...] = dy * (1.0 / (shape[2] * shape[3]))
    return (dx,), {}


def _global_maxpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, tuple]:
    x = xs[0]
    flat = x.reshape(*x.shape[:2], -1)
    idx = flat.argmax(axis=2)[..., None]                  # first maximum, as PyTorch
    return np.take_along_axis(flat, idx, axis=2)[..., None], (idx, x.shape)


def _global_maxpool_backward(dy: np.ndarray, cache: tuple) -> Grads:
    idx, shape = cache
    dx = np.zeros((*shape[:2], shape[2] * shape[3]), dy.dtype)
    np.put_along_axis(dx, idx, dy.reshape(*shape[:2], 1), axis=2)
    return (dx.reshape(shape),), {}


# --------------------------------------------------- adaptive pool, upsample

@lru_cache(maxsize=256)
def _adaptive_matrix(size: int, out: int, dtype: str) -> np.ndarray:
    """[out, size]: row i averages PyTorch's bin floor(i·size/out) .. ceil((i+1)·size/out)."""
    m = np.zeros((out, size))
    for i in range(out):
        lo, hi = (i * size) // out, -(-(i + 1) * size // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    m = m.astype(dtype)
    m.flags.writeable = False
    return m


@lru_cache(maxsize=256)
def _bilinear_matrix(size: int, scale: int, dtype: str) -> np.ndarray:
    """[size·scale, size]: PyTorch bilinear, align_corners=False, source index clamped at 0."""
    m = np.zeros((size * scale, size))
    for d in range(size * scale):
        src = max((d + 0.5) / scale - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + 1 if i0 < size - 1 else i0
        lam = src - i0
        m[d, i0] += 1.0 - lam
        m[d, i1] += lam
    m = m.astype(dtype)
    m.flags.writeable = False
    return m


def _separable(x: np.ndarray, mh: np.ndarray, mw: np.ndarray) -> np.ndarray:
    """mh @ x @ mwᵀ over every (sample, channel) plane."""
    return np.matmul(np.matmul(mh, x), mw.T)


def _adaptive_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, tuple]:
    x = xs[0]
    (h, w), (oh, ow) = x.shape[2:], attrs["output"]
    mh, mw = _adaptive_matrix(h, oh, x.dtype.str), _adaptive_matrix(w, ow, x.dtype.str)
    return _separable(x, mh, mw), (mh, mw)


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive bins along one axis: floor(i·size/out) .. ceil((i+1)·size/out)."""
    return [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_max_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, tuple]:
    """The maximum of each bin, and where it is (the first maximum of the bin, as PyTorch picks)."""
    x = xs[0]
    (n, c, h, w), (oh, ow) = x.shape, attrs["output"]
    y = np.empty((n, c, oh, ow), x.dtype)
    where = np.empty((n, c, oh, ow), np.intp)
    for i, (r0, r1) in enumerate(_bins(h, oh)):
        for j, (c0, c1) in enumerate(_bins(w, ow)):
            window = x[:, :, r0:r1, c0:c1].reshape(n, c, -1)
            k = window.argmax(axis=2)
            y[:, :, i, j] = np.take_along_axis(window, k[..., None], axis=2)[..., 0]
            where[:, :, i, j] = (r0 + k // (c1 - c0)) * w + c0 + k % (c1 - c0)
    return y, (x.shape, where)


def _adaptive_max_backward(dy: np.ndarray, cache: tuple) -> Grads:
    """Each bin's gradient to its maximum; bins overlap when the sizes do not divide, so bin by bin."""
    shape, where = cache
    n, c = shape[:2]
    dx = np.zeros((n, c, shape[2] * shape[3]), dy.dtype)
    rows, chans = np.arange(n)[:, None], np.arange(c)[None, :]
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            dx[rows, chans, where[:, :, i, j]] += dy[:, :, i, j]   # one index per (sample, channel): no clash
    return (dx.reshape(shape),), {}


def _separable_backward(dy: np.ndarray, cache: tuple) -> Grads:
    mh, mw = cache
    return (_separable(dy, mh.T, mw.T),), {}


@lru_cache(maxsize=256)
def _resize_matrix(size: int, out: int, mode: str, align_corners: bool, dtype: str) -> np.ndarray:
    """[out, size]: PyTorch's interpolate to a size (the matrix generated modules copy), cached and read-only."""
    m = resize_matrix(size, out, mode, align_corners, dtype)
    m.flags.writeable = False
    return m


def _upsample_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, tuple]:
    x = xs[0]
    (n, c, h, w), scale = x.shape, attrs.get("scale")
    mode, corners = attrs.get("mode", "nearest"), bool(attrs.get("align_corners"))
    if scale is None or corners:      # to a size, to another tensor's size, or bilinear with aligned corners
        oh, ow = (h * scale[0], w * scale[1]) if scale is not None else \
            tuple(attrs["size"]) if attrs.get("size") is not None else xs[1].shape[2:]
        mh = _resize_matrix(h, int(oh), mode, corners, x.dtype.str)
        mw = _resize_matrix(w, int(ow), mode, corners, x.dtype.str)
        return _separable(x, mh, mw), ("matrix", mh, mw, len(xs))
    sh, sw = scale
    if mode == "bilinear":
        mh, mw = _bilinear_matrix(h, sh, x.dtype.str), _bilinear_matrix(w, sw, x.dtype.str)
        return _separable(x, mh, mw), ("bilinear", mh, mw)
    y = np.empty((n, c, h, sh, w, sw), x.dtype)
    y[...] = x[:, :, :, None, :, None]
    return y.reshape(n, c, h * sh, w * sw), ("nearest", sh, sw)


def _upsample_backward(dy: np.ndarray, cache: tuple) -> Grads:
    if cache[0] == "matrix":          # `like` gives only its size: no gradient
        _, mh, mw, inputs = cache
        return (_separable(dy, mh.T, mw.T), *([None] * (inputs - 1))), {}
    if cache[0] == "bilinear":
        return _separable_backward(dy, cache[1:])
    _, sh, sw = cache
    # Sum of sh·sw strided slices: much faster than reducing a reshaped 6-D view.
    dx = np.array(dy[:, :, 0::sh, 0::sw], order="K")
    for a in range(sh):
        for b in range(sw):
            if a or b:
                dx += dy[:, :, a::sh, b::sw]
    return (dx,), {}


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "maxpool")(Kernel(_maxpool_forward, _maxpool_backward))
register("kernel", "avgpool")(Kernel(_avgpool_forward, _avgpool_backward))
register("kernel", "lppool")(Kernel(_lppool_forward, _lppool_backward))
register("kernel", "global_avgpool")(Kernel(_global_avgpool_forward, _global_avgpool_backward))
register("kernel", "global_maxpool")(Kernel(_global_maxpool_forward, _global_maxpool_backward))
register("kernel", "adaptive_avgpool")(Kernel(_adaptive_forward, _separable_backward))
register("kernel", "adaptive_maxpool")(Kernel(_adaptive_max_forward, _adaptive_max_backward))
register("kernel", "unpool")(Kernel(_unpool_forward, _unpool_backward))
register("kernel", "upsample")(Kernel(_upsample_forward, _upsample_backward))
