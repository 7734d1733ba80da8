"""Stage 3 (runtime): sliding-window geometry shared by convolution and pooling.

A `Window` records where every k×k window of a strided, dilated, padded
sweep lands, in the coordinates of a buffer that holds the padded input. The
buffer covers exactly the rows and columns the windows touch (its `extent`):
padding the windows never reach is not allocated, input rows they never reach
are dropped, and a ceil-mode overhang past the bottom padding is filled with
the pad value. Every kernel then works by strided slices of that buffer, one
slice per kernel offset (`Window.offsets`), or by an `as_strided` view of all
windows at once (`window_view`, the im2col used by the matmul convolutions);
gradients are accumulated into a buffer of the same extent, one slice-add per
offset (never `np.add.at`), and cropped back (`crop`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...compiler.ops import window_out

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]


def out_size(size: int, kernel: int, stride: int, dilation: int = 1,
             pad: Pair = (0, 0), ceil_mode: bool = False) -> int:
    """Number of window positions along one axis: the compiler's rule (`window_out`), for a window that fits."""
    span = dilation * (kernel - 1) + 1
    if size + pad[0] + pad[1] < span:
        raise ValueError(f"window of span {span} does not fit in {size} + padding {pad}")
    return window_out(size, kernel, stride, pad, dilation, ceil_mode)


@dataclass(frozen=True)
class Window:
    """A 2-D sweep of a (dilated) kernel over a padded input."""

    kernel: Pair
    stride: Pair
    dilation: Pair
    offset: Pair        # (top, left) padding: where input row/column 0 sits in the buffer
    in_hw: Pair
    out_hw: Pair

    @classmethod
    def of(cls, in_hw: Pair, kernel: Pair, stride: Pair, padding: Padding,
           dilation: Pair = (1, 1), ceil_mode: bool = False) -> "Window":
        out = tuple(out_size(in_hw[a], kernel[a], stride[a], dilation[a], padding[a], ceil_mode)
                    for a in (0, 1))
        return cls(tuple(kernel), tuple(stride), tuple(dilation),
                   (padding[0][0], padding[1][0]), tuple(in_hw), out)

    @property
    def extent(self) -> Pair:
        """Rows and columns of the padded input that some window touches."""
        return tuple((self.out_hw[a] - 1) * self.stride[a] + self.dilation[a] * (self.kernel[a] - 1) + 1
                     for a in (0, 1))

    @property
    def overlapping(self) -> bool:
        """True when an input element can fall in two windows (then scatters must add)."""
        return any(self.stride[a] < self.dilation[a] * (self.kernel[a] - 1) + 1 for a in (0, 1))

    @property
    def trivial(self) -> bool:
        """True when the buffer is the input itself (no padding, nothing dropped)."""
        return self.offset == (0, 0) and self.extent == self.in_hw

    def offsets(self) -> Iterator[tuple[int, int, slice, slice]]:
        """(i, j, rows, cols): the slice of the buffer seen at kernel offset (i, j) by all windows."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel, self.stride, self.dilation, self.out_hw
        for i in range(kh):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            for j in range(kw):
                yield i, j, rows, slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)


def is_channels_last(x: np.ndarray) -> bool:
    """True for a channels-first view of NHWC memory (what channels-last convs return)."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def zeros(shape: tuple[int, ...], dtype, channels_last: bool = False) -> np.ndarray:
    """A zero [N, C, H, W] array, laid out in memory as NHWC if asked (to match an input)."""
    if not channels_last:
        return np.zeros(shape, dtype)
    n, c, h, w = shape
    return np.zeros((n, h, w, c), dtype).transpose(0, 3, 1, 2)


def _region(win: Window) -> tuple[slice, slice, slice, slice]:
    """Matching (buffer rows, buffer cols, input rows, input cols) of input and buffer."""
    (top, left), (h, w), (eh, ew) = win.offset, win.in_hw, win.extent
    hh, ww = max(0, min(h, eh - top)), max(0, min(w, ew - left))
    return slice(top, top + hh), slice(left, left + ww), slice(0, hh), slice(0, ww)


def pad_into(x: np.ndarray, win: Window, value: float = 0.0, channels_last: bool = False) -> np.ndarray:
    """The padded buffer of `x` ([N, C, H, W]) over `win.extent`.

    Channels-first returns `x` itself when no padding is needed; channels-last
    always returns a fresh contiguous [N, eh, ew, C] array (the im2col source).
    """
    if not channels_last and win.trivial:
        return x
    if channels_last:
        x = x.transpose(0, 2, 3, 1)
        if win.trivial:
            return np.ascontiguousarray(x)
        shape = (x.shape[0], *win.extent, x.shape[3])
        rb, cb, ri, ci = _region(win)
        buf = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
        buf[:, rb, cb, :] = x[:, ri, ci, :]
        return buf
    shape = (*x.shape[:2], *win.extent)
    rb, cb, ri, ci = _region(win)
    buf = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
    buf[:, :, rb, cb] = x[:, :, ri, ci]
    return buf


def crop(buf: np.ndarray, win: Window, channels_last: bool = False) -> np.ndarray:
    """The input-aligned [N, C, H, W] part of a gradient buffer (inverse of `pad_into`)."""
    if channels_last:
        buf = buf.transpose(0, 3, 1, 2)
    if win.trivial:
        return buf
    rb, cb, ri, ci = _region(win)
    h, w = win.in_hw
    if ri.stop == h and ci.stop == w:
        return buf[:, :, rb, cb]
    # Input rows/columns no window reaches get a zero gradient.
    out = np.zeros((*buf.shape[:2], h, w), buf.dtype)
    out[:, :, ri, ci] = buf[:, :, rb, cb]
    return out


def window_view(buf: np.ndarray, win: Window, channels_last: bool = False) -> np.ndarray:
    """All windows of a padded buffer as a read-only strided view (no copy).

    Channels-first [N, C, eh, ew] -> [N, C, kh, kw, oh, ow];
    channels-last [N, eh, ew, C] -> [N, oh, ow, kh, kw, C].
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = win.kernel, win.stride, win.dilation, win.out_hw
    if channels_last:
        n, _, _, c = buf.shape
        s0, s1, s2, s3 = buf.strides
        return as_strided(buf, (n, oh, ow, kh, kw, c),
                          (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False)
    n, c = buf.shape[:2]
    s0, s1, s2, s3 = buf.strides
    return as_strided(buf, (n, c, kh, kw, oh, ow),
                      (s0, s1, s2 * dh, s3 * dw, s2 * sh, s3 * sw), writeable=False)
