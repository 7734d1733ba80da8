"""Stage 3 (runtime): the convolution kernels `conv`, `deconv` and `local`.

All three are BLAS matrix products on im2col matrices built from one
`as_strided` view of the padded input (`_im2col`). With few channels per
group the matrix is channels-first ([K, P] per sample, so each row copies a
contiguous run of output columns); from `_CHANNELS_LAST_MIN` channels on, and
for a wide stem (`ConvPlan.wide_stem`: 3 -> 64 channels, 7x7), it is
channels-last ([N·P, K], each row copies contiguous channels, one large GEMM)
and the result is returned as a channels-first *view* of NHWC memory, which
the next channels-last conv reads without a transposing copy. Groups are a
batch axis of `np.matmul`, never a Python loop; depthwise convolutions (one
input channel per group) skip the matmul: forward, weight and data gradient
are each one `einsum` over a window view. An ungrouped channels-last `conv`
runs chunk by chunk of samples (`chunked_forward`/`chunked_backward`: every
chunk's im2col matrix stays in cache, and the backward pass rebuilds it
instead of keeping it); otherwise the forward keeps its im2col matrix for the
weight gradient. The data gradient is computed offset-major (one
small product per kernel offset, batched in one matmul) and scattered back
(col2im) with one contiguous slice-add per offset, never `np.add.at`; a
chunked stride-1 conv with a same-size sweep and 16 or more input channels
instead takes it as the forward conv of dy with the flipped kernel (no
scatter), and its weight gradient from that same im2col of dy (no second
im2col of the input). A channels-first conv without groups also returns NHWC
memory, so a stem with few input channels does not start an NCHW stream. A
1x1 stride-1 conv is one GEMM on its NHWC input (`pointwise`). A wide 3×3
stride-1 conv whose weights are read-only (the folded weights of the fused
inference graph) takes the Winograd forward instead (`winograd`). A
transposed convolution (`deconv`) is exactly the data-gradient pass of the
conv it transposes, and its backward is that conv's forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Callable

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors
from . import winograd
from .norm import channel_sums
from ._im2col import Window, _region, crop, is_channels_last, pad_into, window_view

# Channels per group from which the channels-last im2col wins (measured at
# batch 64: channels-first is 1.3-5x faster for 1-4 channels, channels-last
# 1.4x faster at 6, even at 8; bench/bench_kernels.py).
_CHANNELS_LAST_MIN = 6

# Bytes of im2col matrix per chunk of samples in the chunked convolution: a
# chunk's matrix, its GEMMs and its scatter stay in the core's L2 (2 MiB here).
# Measured by alternating whole training steps against 1.5 MiB: 768 KiB makes
# a CIFAR ResNet-20 step 9% faster on one thread, 4% on two (the saved
# activations compete for the cache) and costs LeNet-5 3% on two threads (more
# chunks, each a turn of the GIL); 384 KiB gains 2-3% more on ResNet-20 but
# costs LeNet-5 9%. Fused inference (`conv_into`) keeps 1.5 MiB: 2.5% faster
# for ResNet-18 at batch 32.
_CHUNK_BYTES = 3 << 18
_INFERENCE_CHUNK_BYTES = 3 << 19


@dataclass(frozen=True)
class ConvPlan:
    """A grouped convolution from `c_in` to `c_out` channels over the sweep `win`."""

    win: Window
    n: int
    c_in: int
    c_out: int
    groups: int

    @property
    def cg(self) -> int:
        return self.c_in // self.groups

    @property
    def og(self) -> int:
        return self.c_out // self.groups

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.cg == 1

    @property
    def channels_last(self) -> bool:
        return self.depthwise or self.cg >= _CHANNELS_LAST_MIN or self.wide_stem

    @property
    def wide_stem(self) -> bool:
        """A few-channel conv with a large patch and many outputs (ImageNet stems: 3 -> 64, 7x7):
        the channels-last im2col copies runs of kw·cg values where the channels-first one copies
        stride-2 rows, and one GEMM replaces a product per sample (measured at batch 8-32: 1.3-1.9x
        faster forward, the weight gradient even; below 75 patch values or 64 outputs it is slower)."""
        kh, kw = self.win.kernel
        return self.groups == 1 and self.cg >= 3 and kh * kw * self.cg >= 75 and self.c_out >= 64

    @property
    def rows(self) -> int:
        """Output positions over the batch (M of the channels-last GEMM)."""
        return self.n * self.win.out_hw[0] * self.win.out_hw[1]


# --------------------------------------------------------------------- core

def prepare(x: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """What the forward product and the weight gradient read: im2col or padded input.

    Channels-last: [g, N·P, kh·kw·cg]; channels-first: [N, g, cg·kh·kw, P];
    depthwise: the padded channels-last input [N, eh, ew, C].
    """
    win, g = plan.win, plan.groups
    if plan.depthwise:
        return pad_into(x, win, 0.0, channels_last=True)
    (kh, kw), (oh, ow) = win.kernel, win.out_hw
    k = kh * kw * plan.cg
    if plan.channels_last:
        v = window_view(pad_into(x, win, 0.0, channels_last=True), win, channels_last=True)
        if g > 1:
            v = v.reshape(plan.n, oh, ow, kh, kw, g, plan.cg).transpose(5, 0, 1, 2, 3, 4, 6)
        return v.reshape(g, plan.rows, k)
    v = window_view(pad_into(x, win, 0.0), win)
    return v.reshape(plan.n, g, k, oh * ow)


def _weight_cl(w: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """[O, cg, kh, kw] -> [g, kh·kw·cg, og], matching the channels-last im2col columns."""
    kh, kw = plan.win.kernel
    return w.reshape(plan.groups, plan.og, plan.cg, kh, kw).transpose(0, 3, 4, 2, 1) \
            .reshape(plan.groups, kh * kw * plan.cg, plan.og)


def _weight_cf(w: np.ndarray, plan: ConvPlan) -> np.ndarray:
    return w.reshape(plan.groups, plan.og, -1)


def _to_rows(dy: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """[N, O, oh, ow] -> [g, N·P, og] (free when dy is already NHWC in memory)."""
    rows = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(plan.rows, plan.groups, plan.og)
    return rows.transpose(1, 0, 2)


def _from_rows(y: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """[g, N·P, og] -> channels-first view [N, O, oh, ow] of NHWC memory."""
    oh, ow = plan.win.out_hw
    y = y[0] if plan.groups == 1 else y.transpose(1, 0, 2)
    return y.reshape(plan.n, oh, ow, plan.c_out).transpose(0, 3, 1, 2)


def apply(saved: np.ndarray, w: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """The convolution output [N, c_out, oh, ow] from `prepare`'s result."""
    if plan.depthwise:
        return _depthwise_apply(saved, w, plan)
    if plan.channels_last:
        return _from_rows(np.matmul(saved, _weight_cl(w, plan)), plan)
    oh, ow = plan.win.out_hw
    if plan.groups == 1:
        # [N, P, O]: NHWC memory, as the channels-last layers after it read it (a stem with few
        # input channels would otherwise start an NCHW stream that every later layer copies).
        y = np.matmul(saved[:, 0].transpose(0, 2, 1), _weight_cf(w, plan)[0].T)
        return y.reshape(plan.n, oh, ow, plan.c_out).transpose(0, 3, 1, 2)
    return np.matmul(_weight_cf(w, plan), saved).reshape(plan.n, plan.c_out, oh, ow)


def backward(dy: np.ndarray, w: np.ndarray, saved: np.ndarray | None, plan: ConvPlan,
             need_dx: bool, need_dw: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dx [N, c_in, H, W], dw [c_out, cg, kh, kw]), each None when not asked for."""
    if plan.depthwise:
        return _depthwise_backward(dy, w, saved, plan, need_dx, need_dw)
    if plan.channels_last:
        rows = _to_rows(dy, plan)
        dw = _weight_grad_cl(rows, saved, plan) if need_dw else None
        dx = _col2im_cl(np.matmul(rows[:, None], _weight_by_offset(w, plan)), plan) if need_dx else None
        return dx, dw
    oh, ow = plan.win.out_hw
    if plan.groups == 1 and is_channels_last(dy):
        return _backward_cf_rows(dy, w, saved, plan, need_dx, need_dw)
    dy4 = dy.reshape(plan.n, plan.groups, plan.og, oh * ow)
    dw = None
    if need_dw:
        # One small GEMM per sample, summed: avoids transposing the big im2col matrix.
        dw = np.matmul(dy4, saved.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
    dx = _col2im_cf(np.matmul(_weight_cf(w, plan).transpose(0, 2, 1), dy4), plan) if need_dx else None
    return dx, dw


def _backward_cf_rows(dy: np.ndarray, w: np.ndarray, saved: np.ndarray, plan: ConvPlan, need_dx: bool,
                      need_dw: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The channels-first backward for an NHWC dy, read as [N, P, O] rows without a copy."""
    oh, ow = plan.win.out_hw
    rows = dy.transpose(0, 2, 3, 1).reshape(plan.n, oh * ow, plan.c_out)
    wm = _weight_cf(w, plan)[0]                                     # [O, K]
    # dy as [N, O, P] is a transposed view of the rows: BLAS takes it with a flag, no copy.
    dw = np.matmul(rows.transpose(0, 2, 1), saved[:, 0].transpose(0, 2, 1)).sum(axis=0).reshape(w.shape) \
        if need_dw else None
    dx = _col2im_cf(np.matmul(wm.T, rows.transpose(0, 2, 1))[:, None], plan) if need_dx else None
    return dx, dw


def _weight_grad_cl(rows: np.ndarray, cols: np.ndarray, plan: ConvPlan) -> np.ndarray:
    kh, kw = plan.win.kernel
    dw = np.matmul(cols.transpose(0, 2, 1), rows)                  # [g, kh·kw·cg, og]
    dw = dw.reshape(plan.groups, kh, kw, plan.cg, plan.og).transpose(0, 4, 3, 1, 2)
    return np.ascontiguousarray(dw).reshape(plan.c_out, plan.cg, kh, kw)


def _weight_by_offset(w: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """[O, cg, kh, kw] -> [g, kh·kw, og, cg]: one small matrix per kernel offset."""
    kh, kw = plan.win.kernel
    wk = w.reshape(plan.groups, plan.og, plan.cg, kh * kw).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(wk)


def _col2im_cl(dk: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """Scatter-add the per-offset input gradients [g, kh·kw, N·P, cg] onto the
    channels-last padded input, then crop. Offset-major columns make every
    slice-add read one contiguous block (2-3x faster than slicing [N·P, K])."""
    win, g, cg = plan.win, plan.groups, plan.cg
    (kh, kw), (oh, ow), (eh, ew) = win.kernel, win.out_hw, win.extent
    d = dk.reshape(g, kh, kw, plan.n, oh, ow, cg)
    buf = np.zeros((plan.n, eh, ew, g, cg), dk.dtype)
    for i, j, rows, cols in win.offsets():
        buf[:, rows, cols] += d[:, i, j].transpose(1, 2, 3, 0, 4)
    return crop(buf.reshape(plan.n, eh, ew, plan.c_in), win, channels_last=True)


def _col2im_cf(dcols: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """Scatter-add [N, g, cg·kh·kw, P] back onto the channels-first padded input, then crop."""
    win, g, cg = plan.win, plan.groups, plan.cg
    (kh, kw), (oh, ow), (eh, ew) = win.kernel, win.out_hw, win.extent
    d = dcols.reshape(plan.n, g, cg, kh, kw, oh, ow)
    buf = np.zeros((plan.n, g, cg, eh, ew), dcols.dtype)
    for i, j, rows, cols in win.offsets():
        buf[:, :, :, rows, cols] += d[:, :, :, i, j]
    return crop(buf.reshape(plan.n, plan.c_in, eh, ew), win)


def _depthwise_weight(w: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """[C·m, 1, kh, kw] -> [kh, kw, C, m] (output channel c·m + j reads input channel c)."""
    return np.ascontiguousarray(w.reshape(plan.c_in, plan.og, *plan.win.kernel).transpose(2, 3, 0, 1))


def _depthwise_apply(buf: np.ndarray, w: np.ndarray, plan: ConvPlan) -> np.ndarray:
    """One input channel per group: a single einsum over the window view.

    Summing the kh·kw products inside einsum's loop makes one pass over the
    output instead of two per kernel offset (memory-bound: ~2.5x faster).
    """
    win, (oh, ow) = plan.win, plan.win.out_hw
    view, wk = window_view(buf, win, channels_last=True), _depthwise_weight(w, plan)
    if plan.og == 1:        # a trailing length-1 axis would become einsum's inner loop
        y = np.einsum("nyxijc,ijc->nyxc", view, np.ascontiguousarray(wk[..., 0]))
    else:
        y = np.einsum("nyxijc,ijcm->nyxcm", view, wk)
    return y.reshape(plan.n, oh, ow, plan.c_out).transpose(0, 3, 1, 2)


def _depthwise_backward(dy: np.ndarray, w: np.ndarray, buf: np.ndarray, plan: ConvPlan,
                        need_dx: bool, need_dw: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    win, c, og = plan.win, plan.c_in, plan.og
    (oh, ow), (kh, kw), (sh, sw), (dh, dw_) = win.out_hw, win.kernel, win.stride, win.dilation
    g = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))                  # [N, oh, ow, C·m]
    dw = None
    if need_dw:
        view = window_view(buf, win, channels_last=True)
        if og == 1:
            dw = np.einsum("nyxijc,nyxc->cij", view, g).reshape(w.shape)
        else:
            dw = np.einsum("nyxijc,nyxcm->cmij", view, g.reshape(plan.n, oh, ow, c, og)).reshape(w.shape)
    if not need_dx:
        return None, dw
    # The data gradient is a correlation of the (stride-dilated, fully padded)
    # output gradient with the flipped kernel: again one einsum, no scatter.
    fh, fw = dh * (kh - 1), dw_ * (kw - 1)
    gp = np.zeros((plan.n, (oh - 1) * sh + 1 + 2 * fh, (ow - 1) * sw + 1 + 2 * fw, c * og), dy.dtype)
    gp[:, fh:fh + (oh - 1) * sh + 1:sh, fw:fw + (ow - 1) * sw + 1:sw] = g
    full = Window(win.kernel, (1, 1), win.dilation, (0, 0), gp.shape[1:3], win.extent)
    view = window_view(gp, full, channels_last=True)
    flipped = np.ascontiguousarray(_depthwise_weight(w, plan)[::-1, ::-1])
    if og == 1:
        dbuf = np.einsum("nyxijc,ijc->nyxc", view, np.ascontiguousarray(flipped[..., 0]))
    else:
        dbuf = np.einsum("nyxijcm,ijcm->nyxc", view.reshape(*view.shape[:5], c, og), flipped)
    return crop(dbuf, win, channels_last=True), dw


# ------------------------------------------------------------- chunked conv
#
# An ungrouped channels-last conv runs chunk by chunk of samples: pad the
# chunk into a small workspace, im2col it into another, one GEMM into the
# chunk's rows of the output. Nothing of size kh·kw × the input is kept: the
# cache holds the input itself (already alive as the previous layer's
# output), and the backward pass rebuilds each chunk's im2col matrix (cheap:
# it stays in cache) for the weight-gradient GEMM, then computes the chunk's
# per-offset data gradients and scatters them straight into the unpadded,
# channels-last input gradient. Chunks are fixed by the shapes, and the
# per-chunk weight gradients are summed in chunk order: deterministic.

# Input channels from which a stride-1 conv's data gradient is the flipped-kernel conv (see
# `_transposed_plan`): 5-15% faster from 16 channels on, slower below 12 (bench at batch 32).
_FLIP_MIN_CHANNELS = 16

CHUNKED = True      # False: every conv keeps its whole im2col matrix (the pre-chunking path)


def chunked(plan: ConvPlan) -> bool:
    """Does this conv take the chunked path (`chunked_forward`/`chunked_backward`)?"""
    return CHUNKED and plan.groups == 1 and plan.channels_last


def _chunk(plan: ConvPlan, budget: int | None = None) -> int:
    """Samples per chunk: about `budget` (_CHUNK_BYTES) of im2col each, in chunks of equal size."""
    (kh, kw), (oh, ow) = plan.win.kernel, plan.win.out_hw
    total = plan.n * oh * ow * kh * kw * plan.cg * 4
    chunks = min(plan.n, max(1, round(total / (budget or _CHUNK_BYTES))))
    return -(-plan.n // chunks)


def _nhwc(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> contiguous [N, H, W, C] (free for a channels-last view)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


class _Padder:
    """Pads chunks of a contiguous NHWC input into one reused zero-bordered workspace, and gives
    each chunk's windows as a slice of one window view made once (`as_strided` costs ~20 us a call)."""

    def __init__(self, xn: np.ndarray, win: Window, chunk: int):
        self.xn, self.win = xn, win
        self.trivial = win.trivial
        if self.trivial:
            self.view = window_view(xn, win, channels_last=True)
        else:
            self.region = _region(win)
            self.buf = np.zeros((chunk, *win.extent, xn.shape[3]), xn.dtype)
            self.view = window_view(self.buf, win, channels_last=True)

    def windows(self, s0: int, s1: int) -> np.ndarray:
        """[s1 - s0, oh, ow, kh, kw, C]: the windows of samples s0..s1 (a view)."""
        if self.trivial:
            return self.view[s0:s1]
        rb, cb, ri, ci = self.region
        self.buf[:s1 - s0, rb, cb] = self.xn[s0:s1, ri, ci]     # the borders stay zero
        return self.view[:s1 - s0]

    def fill(self, s0: int, s1: int, cols: np.ndarray) -> None:
        """cols ([(s1 - s0)·oh·ow, kh·kw·C] rows) = the im2col of samples s0..s1."""
        windows = self.windows(s0, s1)
        np.copyto(cols.reshape(windows.shape), windows)


def _numpy_scatter(dk: np.ndarray, win: Window, g: np.ndarray) -> None:
    """g ([s, H, W, C], the chunk's input gradient) = the col2im of dk ([kh·kw, s·oh·ow, C], the
    chunk's per-offset gradients): one contiguous slice-add per kernel offset."""
    (kh, kw), (oh, ow) = win.kernel, win.out_hw
    d = dk.reshape(kh, kw, len(g), oh, ow, g.shape[3])
    g.fill(0)
    for i, j, (yo, xo), (yi, xi) in _scatter_slices(win):
        g[:, yi, xi] += d[i, j, :, yo, xo]


@dataclass(frozen=True)
class Loops:
    """The two copy loops of the chunked convolution, as one kernel set runs them: `windows(xn, win,
    chunk)` gives `fill(s0, s1, cols)` writing the im2col rows of samples s0..s1 of the contiguous
    NHWC input `xn` (its padding included); `scatter(dk, win, g)` is its adjoint for one chunk. NUMPY
    pads into a reused buffer and copies strided views; kernels/fast/conv.py compiles both."""

    windows: Callable[[np.ndarray, Window, int], Callable[[int, int, np.ndarray], None]]
    scatter: Callable[[np.ndarray, Window, np.ndarray], None]


NUMPY = Loops(lambda xn, win, chunk: _Padder(xn, win, chunk).fill, _numpy_scatter)


@lru_cache(maxsize=256)
def _scatter_slices(win: Window) -> tuple[tuple[int, int, tuple, tuple], ...]:
    """Per kernel offset (i, j): the output window positions whose tap lands inside
    the unpadded input, and the input positions they land on, as (out, in) slices."""
    out = []
    for i, j, _, _ in win.offsets():
        sl = []
        for a, k in ((0, i), (1, j)):
            s, d, top, n, o = win.stride[a], win.dilation[a], win.offset[a], win.in_hw[a], win.out_hw[a]
            first = max(0, -(-(top - k * d) // s))                  # ceil
            last = min(o - 1, (n - 1 + top - k * d) // s)
            if last < first:
                break
            start = k * d + first * s - top
            sl.append((slice(first, last + 1), slice(start, start + (last - first) * s + 1, s)))
        if len(sl) == 2:
            out.append((i, j, (sl[0][0], sl[1][0]), (sl[0][1], sl[1][1])))
    return tuple(out)


def pointwise(plan: ConvPlan) -> bool:
    """A 1x1 conv that reads every input position once (stride 1, no padding): one GEMM on the
    NHWC input itself, no im2col copy."""
    return plan.win.kernel == (1, 1) and plan.win.stride == (1, 1) and plan.win.trivial


def chunked_forward(x: np.ndarray, w: np.ndarray, plan: ConvPlan, bias: np.ndarray | None = None,
                    out: np.ndarray | None = None, budget: int | None = None, loops: Loops = NUMPY) -> np.ndarray:
    """The conv output [N, c_out, oh, ow] (a view of NHWC memory), chunk by chunk; written into
    `out` ([N·oh·ow, c_out] contiguous rows) when given."""
    win, n = plan.win, plan.n
    (kh, kw), (oh, ow) = win.kernel, win.out_hw
    p, k, s = oh * ow, kh * kw * plan.cg, _chunk(plan, budget)
    xn = _nhwc(x)
    wm = _weight_cl(w, plan)[0]                                     # [K, O]
    y = np.empty((n * p, plan.c_out), x.dtype) if out is None else out
    if pointwise(plan):
        np.matmul(xn.reshape(n * p, plan.c_in), wm, out=y)
        if bias is not None:
            y += bias
        return y.reshape(n, oh, ow, plan.c_out).transpose(0, 3, 1, 2)
    fill = loops.windows(xn, win, s)
    cols_ws = np.empty((s * p, k), x.dtype)
    for s0 in range(0, n, s):
        s1 = min(n, s0 + s)
        cols = cols_ws[:(s1 - s0) * p]
        fill(s0, s1, cols)
        rows = y[s0 * p:s1 * p]
        np.matmul(cols, wm, out=rows)
        if bias is not None:
            rows += bias
    return y.reshape(n, oh, ow, plan.c_out).transpose(0, 3, 1, 2)


def chunked_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, plan: ConvPlan, need_dx: bool,
                     need_dw: bool, loops: Loops = NUMPY) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dx [N, c_in, H, W] as a view of NHWC memory, dw [c_out, cg, kh, kw]), None where not asked."""
    win, n, c = plan.win, plan.n, plan.c_in
    (kh, kw), (oh, ow), (h, wd) = win.kernel, win.out_hw, win.in_hw
    p, k, s = oh * ow, kh * kw * c, _chunk(plan)
    rows = _nhwc(dy).reshape(n * p, plan.c_out)
    if pointwise(plan):        # dw = Xᵀ·dY and dx = dY·W: two GEMMs, no im2col, no scatter
        dw = np.ascontiguousarray(np.matmul(_nhwc(x).reshape(n * p, c).T, rows).T).reshape(w.shape) \
            if need_dw else None
        dx = np.matmul(rows, w.reshape(plan.c_out, c)).reshape(n, h, wd, c).transpose(0, 3, 1, 2) \
            if need_dx else None
        return dx, dw
    transposed = _transposed_plan(plan) if need_dx else None
    if transposed is not None:
        # A stride-1 conv's data gradient is the forward conv of dy with the flipped kernel:
        # one im2col GEMM per chunk, no per-offset scatter (5-15% faster at ResNet-20's shapes);
        # the same im2col of dy gives the weight gradient too (`_transposed_backward`).
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        if need_dw:
            return _transposed_backward(rows, x, flipped, plan, transposed, loops)
        dx = chunked_forward(rows.reshape(n, oh, ow, plan.c_out).transpose(0, 3, 1, 2), flipped, transposed,
                             loops=loops)
        need_dx = False
    chunks = range(0, n, s)
    if need_dw:
        fill = loops.windows(_nhwc(x), win, s)
        cols_ws = np.empty((s * p, k), dy.dtype)
        dw_parts = np.empty((len(chunks), k, plan.c_out), dy.dtype)
    if need_dx:
        wo = _weight_by_offset(w, plan)[0]                          # [kh·kw, O, C]
        dk_ws = np.empty((kh * kw, s * p, c), dy.dtype)
        dx = np.empty((n, h, wd, c), dy.dtype)
    for ci, s0 in enumerate(chunks):
        s1 = min(n, s0 + s)
        m = (s1 - s0) * p
        r = rows[s0 * p:s1 * p]
        if need_dw:
            cols = cols_ws[:m]
            fill(s0, s1, cols)
            np.matmul(cols.T, r, out=dw_parts[ci])
        if need_dx:
            dk = dk_ws if m == s * p else np.empty((kh * kw, m, c), dy.dtype)
            np.matmul(r, wo, out=dk)
            loops.scatter(dk, win, dx[s0:s1])
    dw = None
    if need_dw:
        dwm = dw_parts[0] if len(chunks) == 1 else dw_parts.sum(axis=0)
        dw = np.ascontiguousarray(dwm.reshape(kh, kw, c, plan.c_out).transpose(3, 2, 0, 1))
    if transposed is not None:
        return dx, dw
    return (dx.transpose(0, 3, 1, 2) if need_dx else None), dw


def _transposed_backward(rows: np.ndarray, x: np.ndarray, flipped: np.ndarray, plan: ConvPlan,
                         back: ConvPlan, loops: Loops) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dw) of a stride-1 conv from one im2col of dy per chunk (`back`, the transposed conv):
    dx = cols·W_flipped as in `chunked_forward`, and dw from the same columns, dW[o, c, i, j] =
    Σ x[·, c]·cols[·, (kh−1−i, kw−1−j, o)] (re-indexing the weight gradient's sum over the input
    positions, where the padded dy window holds dy[y − i·d + p]): no im2col of x is rebuilt."""
    win, n, c, o = back.win, plan.n, plan.c_in, plan.c_out
    (kh, kw), (h, wd) = win.kernel, win.out_hw
    p, k, s = h * wd, kh * kw * o, _chunk(back)
    fill = loops.windows(rows.reshape(n, *plan.win.out_hw, o), win, s)
    wm = _weight_cl(flipped, back)[0]                               # [kh·kw·O, C]
    xr = _nhwc(x).reshape(n * p, c)
    dx = np.empty((n * p, c), rows.dtype)
    cols_ws = np.empty((s * p, k), rows.dtype)
    chunks = range(0, n, s)
    parts = np.empty((len(chunks), c, k), rows.dtype)
    for ci, s0 in enumerate(chunks):
        s1 = min(n, s0 + s)
        cols = cols_ws[:(s1 - s0) * p]
        fill(s0, s1, cols)
        np.matmul(cols, wm, out=dx[s0 * p:s1 * p])
        np.matmul(xr[s0 * p:s1 * p].T, cols, out=parts[ci])
    g = parts[0] if len(chunks) == 1 else parts.sum(axis=0)        # [C, (i', j', O)], i' = kh-1-i
    dw = np.ascontiguousarray(g.reshape(c, kh, kw, o)[:, ::-1, ::-1].transpose(3, 0, 1, 2))
    return dx.reshape(n, h, wd, c).transpose(0, 3, 1, 2), dw


def _transposed_plan(plan: ConvPlan) -> ConvPlan | None:
    """For a stride-1 conv: the conv from its output back to its input size with the flipped kernel
    (padding d(k-1) - p on each side), whose forward is the data gradient; None where that does not
    exist (strided, or padded wider than the kernel reaches)."""
    win = plan.win
    # Only where it pays (measured at batch 32): same-size output (a `valid` 5x5 conv's transposed
    # conv would sweep a padded dy larger than the input) and at least _FLIP_MIN_CHANNELS input
    # channels (the transposed GEMM has that many columns: 6 made it 3x slower than the scatter).
    if win.stride != (1, 1) or win.out_hw != win.in_hw or plan.c_in < _FLIP_MIN_CHANNELS:
        return None
    pads = []
    for a in (0, 1):
        reach = win.dilation[a] * (win.kernel[a] - 1)
        top = reach - win.offset[a]
        bottom = win.in_hw[a] - win.out_hw[a] + reach - top
        if top < 0 or bottom < 0:
            return None
        pads.append((top, bottom))
    back = Window.of(win.out_hw, win.kernel, (1, 1), tuple(pads), win.dilation)
    if back.out_hw != win.in_hw:
        return None
    return ConvPlan(back, plan.n, plan.c_out, plan.c_in, 1)


# --------------------------------------------------------------------- conv

@dataclass(frozen=True)
class _ConvCache:
    plan: ConvPlan
    saved: Any              # `prepare` result (conv), the input x (chunked conv, deconv)
    weight: np.ndarray
    bias: bool
    trainable: bool
    need_dx: bool
    chunked: bool = False   # saved is the NHWC input of `chunked_forward`
    loops: Loops = NUMPY    # the chunked path's copy loops (the kernel set's)


def _bias_grad(dy: np.ndarray) -> np.ndarray:
    return channel_sums(dy)


def _conv_plan(x: np.ndarray, attrs: Attrs) -> ConvPlan:
    n, c, h, wd = x.shape
    win = Window.of((h, wd), attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"])
    return ConvPlan(win, n, c, attrs["out_channels"], attrs["groups"])


def _channels_last_forward(x: np.ndarray, params: Params, attrs: Attrs, plan: ConvPlan,
                           out: np.ndarray | None = None, budget: int | None = None,
                           loops: Loops = NUMPY) -> np.ndarray:
    """A chunked conv's output: Winograd where it applies (read-only weights), else the im2col."""
    w, bias = params["weight"], params["bias"] if attrs["bias"] else None
    if winograd.applies(plan, w):
        return winograd.forward(x, w, plan, bias, out=out)
    return chunked_forward(x, w, plan, bias, out=out, budget=budget, loops=loops)


def _conv_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context,
                  loops: Loops = NUMPY) -> tuple[np.ndarray, _ConvCache]:
    x, w = xs[0], params["weight"]
    plan = _conv_plan(x, attrs)
    trainable = attrs.get("trainable", True)
    if chunked(plan):
        x = _nhwc(x).transpose(0, 3, 1, 2)       # once: the backward pass reads the same layout
        y = _channels_last_forward(x, params, attrs, plan, loops=loops)
        return y, _ConvCache(plan, x if trainable else None, w, attrs["bias"], trainable, ctx.need_input_grad,
                             chunked=True, loops=loops)
    saved = prepare(x, plan)
    y = apply(saved, w, plan)
    if attrs["bias"]:
        y += params["bias"].reshape(-1, 1, 1)
    return y, _ConvCache(plan, saved if trainable else None, w, attrs["bias"], trainable, ctx.need_input_grad)


def conv_into(x: np.ndarray, params: Params, attrs: Attrs, rows: np.ndarray,
              loops: Loops = NUMPY) -> np.ndarray | None:
    """Inference: the conv output written into `rows` ([N·oh·ow, c_out] contiguous), returned as
    its [N, c_out, oh, ow] view, when the conv takes a channels-last path that can (the chunked
    im2col, the 1x1 GEMM, Winograd); None otherwise."""
    plan = _conv_plan(x, attrs)
    if not chunked(plan):
        return None
    return _channels_last_forward(x, params, attrs, plan, out=rows, budget=_INFERENCE_CHUNK_BYTES, loops=loops)


def _conv_backward(dy: np.ndarray, cache: _ConvCache) -> Grads:
    plan = cache.plan
    if cache.chunked:
        dx, dw = chunked_backward(dy, cache.saved, cache.weight, plan, cache.need_dx, cache.trainable,
                                  cache.loops)
    else:
        dx, dw = backward(dy, cache.weight, cache.saved, plan, cache.need_dx, cache.trainable)
    grads = {}
    if cache.trainable:
        grads["weight"] = dw
        if cache.bias:
            grads["bias"] = _bias_grad(dy)
    return (dx,), grads


# ------------------------------------------------------------------- deconv

def _deconv_plan(shape: tuple[int, ...], attrs: Attrs) -> ConvPlan:
    """The conv whose data gradient this transposed conv is: from O channels at the
    output size back to the C input channels, weight [C, O/g, kh, kw] as is."""
    n, c, h, w = shape
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
    (pt, pb), (pl, pr) = attrs["padding"]
    oph, opw = attrs["output_padding"]
    out_h = (h - 1) * sh + dh * (kh - 1) + 1 + oph - pt - pb
    out_w = (w - 1) * sw + dw * (kw - 1) + 1 + opw - pl - pr
    if out_h < 1 or out_w < 1:
        raise ValueError(f"deconv output {out_h}x{out_w} is empty")
    # Output rows past the full scatter (output_padding > bottom padding) get no
    # contribution; `pad_into`/`crop` zero-fill them.
    win = Window((kh, kw), (sh, sw), (dh, dw), (pt, pl), (out_h, out_w), (h, w))
    return ConvPlan(win, n, attrs["out_channels"], c, attrs["groups"])


def _deconv_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _ConvCache]:
    x, w = xs[0], params["weight"]
    plan = _deconv_plan(x.shape, attrs)
    y, _ = backward(x, w, None, plan, need_dx=True, need_dw=False)
    if attrs["bias"]:
        y += params["bias"].reshape(-1, 1, 1)
    return y, _ConvCache(plan, x, w, attrs["bias"], attrs.get("trainable", True), ctx.need_input_grad)


def _deconv_backward(dy: np.ndarray, cache: _ConvCache) -> Grads:
    plan = cache.plan
    saved = prepare(dy, plan)
    dx = apply(saved, cache.weight, plan) if cache.need_dx else None
    grads = {}
    if cache.trainable:
        _, grads["weight"] = backward(cache.saved, cache.weight, saved, plan, need_dx=False, need_dw=True)
        if cache.bias:
            grads["bias"] = _bias_grad(dy)
    return (dx,), grads


# -------------------------------------------------------------------- local

@dataclass(frozen=True)
class _LocalCache:
    win: Window
    tile: tuple[int, int]
    cols: np.ndarray        # [th·tw, N·qh·qw, kh·kw·C]
    weight: np.ndarray
    x_shape: tuple[int, ...]
    bias: bool
    need_dx: bool


def _local_window(x_shape: tuple[int, ...], attrs: Attrs) -> tuple[Window, Window]:
    """The layer's sweep, and the same sweep extended to whole tiles (extra outputs dropped)."""
    win = Window.of(x_shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"])
    (th, tw), (oh, ow) = attrs["tile"], win.out_hw
    full = (-(-oh // th) * th, -(-ow // tw) * tw)
    return win, Window(win.kernel, win.stride, win.dilation, win.offset, win.in_hw, full)


def _local_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, _LocalCache]:
    x, w = xs[0], params["weight"]                      # w: [O, th, tw, C, kh, kw]
    n, c = x.shape[:2]
    win, full = _local_window(x.shape, attrs)
    (th, tw), (kh, kw), (fh, fw) = attrs["tile"], win.kernel, full.out_hw
    qh, qw = fh // th, fw // tw
    # Output (q·th + a, r·tw + b) uses tile (a, b): the tile is a batch axis of one matmul.
    v = window_view(pad_into(x, full, 0.0, channels_last=True), full, channels_last=True)
    v = v.reshape(n, qh, th, qw, tw, kh, kw, c).transpose(2, 4, 0, 1, 3, 5, 6, 7)
    cols = v.reshape(th * tw, n * qh * qw, kh * kw * c)
    wm = w.transpose(1, 2, 4, 5, 3, 0).reshape(th * tw, kh * kw * c, -1)
    y = np.matmul(cols, wm).reshape(th, tw, n, qh, qw, -1)
    if attrs["bias"]:
        y += params["bias"].transpose(1, 2, 0)[:, :, None, None, None, :]
    oh, ow = win.out_hw
    y = y.transpose(2, 5, 3, 0, 4, 1).reshape(n, -1, fh, fw)[:, :, :oh, :ow]
    return y, _LocalCache(win, (th, tw), cols, w, x.shape, attrs["bias"], ctx.need_input_grad)


def _local_backward(dy: np.ndarray, cache: _LocalCache) -> Grads:
    win, (th, tw), w = cache.win, cache.tile, cache.weight
    n, c = cache.x_shape[:2]
    o, (kh, kw), (oh, ow) = w.shape[0], win.kernel, win.out_hw
    qh, qw = -(-oh // th), -(-ow // tw)
    g = np.zeros((n, o, qh * th, qw * tw), dy.dtype)
    g[:, :, :oh, :ow] = dy
    g = g.reshape(n, o, qh, th, qw, tw).transpose(3, 5, 0, 2, 4, 1).reshape(th * tw, -1, o)
    dw = np.matmul(cache.cols.transpose(0, 2, 1), g)            # [th·tw, kh·kw·C, O]
    grads = {"weight": np.ascontiguousarray(
        dw.reshape(th, tw, kh, kw, c, o).transpose(5, 0, 1, 4, 2, 3))}
    if cache.bias:
        grads["bias"] = np.ascontiguousarray(g.sum(axis=1).reshape(th, tw, o).transpose(2, 0, 1))
    dx = None
    if cache.need_dx:
        wm = w.transpose(1, 2, 4, 5, 3, 0).reshape(th * tw, kh * kw * c, o)
        d = np.matmul(g, wm.transpose(0, 2, 1)).reshape(th, tw, n, qh, qw, kh, kw, c)
        full = Window(win.kernel, win.stride, win.dilation, win.offset, win.in_hw, (qh * th, qw * tw))
        eh, ew = full.extent
        buf = np.zeros((n, eh, ew, c), dy.dtype)
        for i, j, rows, cols in full.offsets():
            # The strided slice splits into (q, a) x (r, b) as a view: no transposing copy.
            buf[:, rows, cols].reshape(n, qh, th, qw, tw, c)[...] += \
                d[:, :, :, :, :, i, j].transpose(2, 3, 0, 4, 1, 5)
        dx = crop(buf, full, channels_last=True)
    return (dx,), grads


def conv_kernel(loops: Loops) -> Kernel:
    """The conv kernel whose chunked path runs `loops` (NUMPY here; kernels/fast/conv.py compiles them)."""
    return Kernel(partial(_conv_forward, loops=loops), _conv_backward)


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "conv")(conv_kernel(NUMPY))
register("kernel", "deconv")(Kernel(_deconv_forward, _deconv_backward))
register("kernel", "local")(Kernel(_local_forward, _local_backward))
