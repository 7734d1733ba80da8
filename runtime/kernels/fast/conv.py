"""Stage 3 (runtime): the convolution's copy loops, compiled (the `fast` kernel set).

The fast `conv` is the NumPy conv kernel (kernels/conv.py: its plans, its
chunking, its BLAS products, the flipped-kernel data gradient) running these
two loops on its chunked channels-last path (`Loops`):

- `im2col`: each chunk's im2col rows straight from the unpadded NHWC input,
  zeros where a window overhangs the border. The NumPy loops first pad each
  chunk into a buffer, then copy strided views of it: two passes, this is one.
- `col2im`: the input gradient of a chunk from the per-offset products, added
  offset by offset as the NumPy scatter adds them (the same sums in the same
  order), in one compiled loop instead of a strided slice-add per offset.

Indices are unsigned where the loops copy: Numba then emits no negative-index
wrap-around test per element, and the copies vectorise (measured: 3-4x
faster than with signed indices, 1.3-2x faster than NumPy's pad and copy).
"""
from __future__ import annotations

import numpy as np

from ....compiler.ops import register
from .._im2col import Window
from ..conv import Loops, conv_kernel
from ._jit import jit


@jit
def _im2col(xf, h, w, c, s0, s1, kh, kw, sh, sw, dh, dw, top, left, oh, ow, cols):
    """cols[((n − s0)·oh + y)·ow + x, (i·kw + j)·c + ch] = x[n, y·sh − top + i·dh, x·sw − left + j·dw, ch]
    (0 outside the input), over flat arrays."""
    k = kh * kw * c
    run, cu = np.uint64(kw * c), np.uint64(c)
    zero = xf.dtype.type(0)
    for n in range(s0, s1):
        for y in range(oh):
            r0 = ((n - s0) * oh + y) * ow
            for i in range(kh):
                yy = y * sh - top + i * dh
                inside = 0 <= yy < h
                row = (n * h + yy) * w
                for x in range(ow):
                    d = np.uint64((r0 + x) * k + i * kw * c)
                    x0 = x * sw - left
                    if inside and dw == 1 and x0 >= 0 and x0 + kw <= w:      # one contiguous run
                        src = np.uint64((row + x0) * c)
                        for q in range(run):
                            cols[d + q] = xf[src + q]
                        continue
                    for j in range(kw):
                        xx = x0 + j * dw
                        dj = d + np.uint64(j * c)
                        if inside and 0 <= xx < w:
                            src = np.uint64((row + xx) * c)
                            for q in range(cu):
                                cols[dj + q] = xf[src + q]
                        else:
                            for q in range(cu):
                                cols[dj + q] = zero


@jit
def _col2im(dk, s, h, w, c, kh, kw, sh, sw, dh, dw, top, left, oh, ow, g):
    """g[n, y·sh − top + i·dh, x·sw − left + j·dw, :] += dk[i·kw + j, (n·oh + y)·ow + x, :] over the
    offsets in order, after zeroing g (flat arrays; dk: [kh·kw, s·oh·ow, c], g: [s, h, w, c])."""
    m = s * oh * ow
    cu = np.uint64(c)
    g[:] = 0
    for i in range(kh):
        for j in range(kw):
            tap = (i * kw + j) * m
            for n in range(s):
                for y in range(oh):
                    yy = y * sh - top + i * dh
                    if yy < 0 or yy >= h:
                        continue
                    for x in range(ow):
                        xx = x * sw - left + j * dw
                        if xx < 0 or xx >= w:
                            continue
                        d = np.uint64(((n * h + yy) * w + xx) * c)
                        src = np.uint64((tap + (n * oh + y) * ow + x) * c)
                        for q in range(cu):
                            g[d + q] += dk[src + q]


def _geometry(win: Window) -> tuple[int, ...]:
    (kh, kw), (sh, sw), (dh, dw), (top, left), (oh, ow) = win.kernel, win.stride, win.dilation, win.offset, win.out_hw
    return kh, kw, sh, sw, dh, dw, top, left, oh, ow


def _windows(xn: np.ndarray, win: Window, chunk: int):
    n, h, w, c = xn.shape
    xf, geometry = xn.reshape(-1), _geometry(win)

    def fill(s0: int, s1: int, cols: np.ndarray) -> None:
        _im2col(xf, h, w, c, s0, s1, *geometry, cols.reshape(-1))
    return fill


def _scatter(dk: np.ndarray, win: Window, g: np.ndarray) -> None:
    s, h, w, c = g.shape
    _col2im(dk.reshape(-1), s, h, w, c, *_geometry(win), g.reshape(-1))


FAST = Loops(_windows, _scatter)
register("fast", "conv")(conv_kernel(FAST))
