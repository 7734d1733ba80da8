"""Stage 3 (runtime): compiled max and average pooling (the `fast` kernel set).

Each pass is one loop over the windows, reading the input where they cover it
(the padding and a ceil-mode overhang are never materialised: the NumPy
kernels pad a copy of the input first), in the input's own layout: NHWC
memory (after a channels-last conv) or NCHW, the loops seeing both as
[N, H, W, C]. `maxpool` finds each window's first maximum and its kernel
offset in the same pass (training or not) and leaves the NumPy kernel's
`MaxPoolIndices` for `unpool` and its own backward, which adds dy at each
window's maximum. `avgpool` sums the window in kernel-offset order, as the
NumPy kernel does, and divides as it does (kernels/pool.py `avg_scale`); its
backward spreads dy·scale offset by offset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ....compiler.ops import register
from .._core import Attrs, Context, Grads, Kernel, Params, Tensors
from .._im2col import Window, is_channels_last, zeros
from ..pool import MaxPoolIndices, avg_scale
from ._jit import jit


@jit
def _max(a, kh, kw, sh, sw, dh, dw, top, left, y, idx):
    """y = the window maxima (NaN propagates, as np.maximum), idx = each first maximum's offset; the
    channels innermost, so each offset updates a run of channels."""
    n, h, w, c = a.shape
    _, oh, ow, _ = y.shape
    lowest = a.dtype.type(-np.inf)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                best, at = y[b, oy, ox], idx[b, oy, ox]
                best[:] = lowest
                at[:] = 0
                for i in range(kh):
                    yy = oy * sh - top + i * dh
                    if yy < 0 or yy >= h:
                        continue
                    for j in range(kw):
                        xx = ox * sw - left + j * dw
                        if xx < 0 or xx >= w:
                            continue
                        src, k = a[b, yy, xx], i * kw + j
                        for ch in range(c):
                            v = src[ch]
                            if v > best[ch]:
                                at[ch] = k
                            if v > best[ch] or v != v:
                                best[ch] = v


@jit
def _max_grad(g, idx, kw, sh, sw, dh, dw, top, left, dx):
    """dx = Σ of dy at each window's maximum (dx zeroed here)."""
    n, oh, ow, c = g.shape
    h, w = dx.shape[1], dx.shape[2]
    dx[:] = 0
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    k = idx[b, oy, ox, ch]
                    yy = oy * sh - top + (k // kw) * dh
                    xx = ox * sw - left + (k % kw) * dw
                    if 0 <= yy < h and 0 <= xx < w:
                        dx[b, yy, xx, ch] += g[b, oy, ox, ch]


@jit
def _sum(a, kh, kw, sh, sw, top, left, scale, y):
    """y = the window sums (offsets in order, zeros outside the input) times scale[oy, ox]."""
    n, h, w, c = a.shape
    _, oh, ow, _ = y.shape
    y[:] = 0
    for i in range(kh):
        for j in range(kw):
            for b in range(n):
                for oy in range(oh):
                    yy = oy * sh - top + i
                    if yy < 0 or yy >= h:
                        continue
                    for ox in range(ow):
                        xx = ox * sw - left + j
                        if xx < 0 or xx >= w:
                            continue
                        for ch in range(c):
                            y[b, oy, ox, ch] += a[b, yy, xx, ch]
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    y[b, oy, ox, ch] *= scale[oy, ox]


@jit
def _spread(g, kh, kw, sh, sw, top, left, scale, dx):
    """dx = Σ over offsets of dy·scale at every input position a window covers (dx zeroed here)."""
    n, oh, ow, c = g.shape
    h, w = dx.shape[1], dx.shape[2]
    dx[:] = 0
    for i in range(kh):
        for j in range(kw):
            for b in range(n):
                for oy in range(oh):
                    yy = oy * sh - top + i
                    if yy < 0 or yy >= h:
                        continue
                    for ox in range(ow):
                        xx = ox * sw - left + j
                        if xx < 0 or xx >= w:
                            continue
                        s = scale[oy, ox]
                        for ch in range(c):
                            dx[b, yy, xx, ch] += g[b, oy, ox, ch] * s


def _nhwc(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] as an [N, H, W, C] view (contiguous for channels-last memory)."""
    return x.transpose(0, 2, 3, 1)


def _window(x: np.ndarray, attrs: Attrs, dilation: bool) -> Window:
    return Window.of(x.shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                     attrs.get("dilation", (1, 1)) if dilation else (1, 1), attrs.get("ceil_mode", False))


def _geometry(win: Window) -> tuple[int, ...]:
    (kh, kw), (sh, sw), (dh, dw), (top, left) = win.kernel, win.stride, win.dilation, win.offset
    return kh, kw, sh, sw, dh, dw, top, left


def _out(x: np.ndarray, win: Window, dtype) -> np.ndarray:
    """A new [N, C, oh, ow] array laid out in memory as x is (NHWC or NCHW)."""
    return zeros((*x.shape[:2], *win.out_hw), dtype, is_channels_last(x))


def _maxpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, MaxPoolIndices]:
    x = xs[0]
    win = _window(x, attrs, dilation=True)
    y = _out(x, win, x.dtype)
    idx = _out(x, win, np.min_scalar_type(win.kernel[0] * win.kernel[1] - 1))
    _max(_nhwc(x), *_geometry(win), _nhwc(y), _nhwc(idx))
    rec = MaxPoolIndices(win, x.shape, None, idx, is_channels_last(x))
    ctx.saved[ctx.node] = rec
    return y, rec


def _maxpool_backward(dy: np.ndarray, rec: MaxPoolIndices) -> Grads:
    win = rec.win
    dx = zeros(rec.in_shape, dy.dtype, rec.channels_last)
    kh, kw, sh, sw, dh, dw, top, left = _geometry(win)
    _max_grad(_nhwc(dy), _nhwc(rec.argmax()), kw, sh, sw, dh, dw, top, left, _nhwc(dx))
    return (dx,), {}


@dataclass(frozen=True)
class _AvgCache:
    win: Window
    scale: np.ndarray       # [oh, ow]: 1 / each window's divisor
    in_shape: tuple[int, ...]
    channels_last: bool


def _avgpool_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _AvgCache]:
    x = xs[0]
    win = _window(x, attrs, dilation=False)
    padding = tuple(tuple(p) for p in attrs["padding"])
    scale = np.broadcast_to(np.asarray(avg_scale(win, padding, attrs.get("count_include_pad", True), x.dtype),
                                       x.dtype), win.out_hw)
    kh, kw, sh, sw, _, _, top, left = _geometry(win)
    y = _out(x, win, x.dtype)
    _sum(_nhwc(x), kh, kw, sh, sw, top, left, scale, _nhwc(y))
    return y, _AvgCache(win, scale, x.shape, is_channels_last(x))


def _avgpool_backward(dy: np.ndarray, cache: _AvgCache) -> Grads:
    kh, kw, sh, sw, _, _, top, left = _geometry(cache.win)
    dx = zeros(cache.in_shape, dy.dtype, cache.channels_last)
    _spread(_nhwc(dy), kh, kw, sh, sw, top, left, cache.scale, _nhwc(dx))
    return (dx,), {}


register("fast", "maxpool")(Kernel(_maxpool_forward, _maxpool_backward))
register("fast", "avgpool")(Kernel(_avgpool_forward, _avgpool_backward))
