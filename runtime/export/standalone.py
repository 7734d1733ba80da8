"""Stage 3 (runtime): the ops in plain NumPy, inference only — the source of `--emit numpy` modules.

Each function here is one op's forward pass on batched channels-first arrays
(`[N, C, H, W]` or `[N, F]`), written in the plainest NumPy and depending on
nothing but NumPy and the helpers it calls. They are real, imported code:
the tests compare each with the runtime kernel of its op, and the code
generator (codegen.py) copies the ones a network uses into the
generated module with `inspect.getsource`, together with every helper they
call (found by reading their code). Helpers shared with other stages are
imported, not restated: the window-count rule is the compiler's
`window_out`, the error function is the gelu kernel's `erf`, the average-pool
divisor (`window_counts`) and the resizing matrix (`resize_matrix`) are the pool
kernel's, from kernels/resample.py. Write a function here only
with what a copy can carry: module-level functions, NumPy as `np`, and
constants that are plain literals (numbers, strings, tuples, lists, dicts).
`load` reads a generated module's weights file; every module carries it.
"""
from __future__ import annotations

import numpy as np

from ...compiler.ops import window_out
from ..kernels._erf import erf
from ..kernels.resample import resize_matrix, window_counts


# ------------------------------------------------------------------ weights
def load(path):
    """The weights file of a generated module as a dict of float32 arrays (never unpickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------ convolutions
def _windows(x, kernel, stride, padding, dilation=(1, 1), ceil_mode=False, value=0.0):
    """Every kernel window of x [N, C, H, W], padded with `value`: a view [N, C, oh, ow, kh, kw]."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    (pt, pb), (pl, pr) = padding
    n, c, h, w = x.shape
    oh = window_out(h, kh, sh, (pt, pb), dh, ceil_mode)
    ow = window_out(w, kw, sw, (pl, pr), dw, ceil_mode)
    eh, ew = (oh - 1) * sh + dh * (kh - 1) + 1, (ow - 1) * sw + dw * (kw - 1) + 1
    # Pad to exactly the rows/columns the windows touch (a ceil-mode overhang gets `value` too).
    x = x[:, :, :max(eh - pt, 0), :max(ew - pl, 0)]
    x = np.pad(x, ((0, 0), (0, 0), (pt, eh - pt - x.shape[2]), (pl, ew - pl - x.shape[3])),
               constant_values=value)
    v = np.lib.stride_tricks.sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]


def conv2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Cross-correlation of x [N, C, H, W] with w [O, C/groups, kh, kw]: an im2col matrix product."""
    o, cg, kh, kw = w.shape
    win = _windows(x, (kh, kw), stride, padding, dilation)               # [N, C, oh, ow, kh, kw]
    n, _, oh, ow = win.shape[:4]
    cols = win.reshape(n, groups, cg, oh, ow, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6)
    cols = cols.reshape(n, groups, oh * ow, cg * kh * kw)
    y = cols @ w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)   # [N, g, oh*ow, O/g]
    y = y.transpose(0, 1, 3, 2).reshape(n, o, oh, ow)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def conv_transpose2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), output_padding=(0, 0),
                     dilation=(1, 1), groups=1):
    """Transposed convolution (PyTorch ConvTranspose2d), w [C, O/groups, kh, kw]: each input pixel
    scatters its kernel-weighted values; `padding` is removed from the full output."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (dh, dw), ((pt, pb), (pl, pr)), (oph, opw) = stride, dilation, padding, output_padding
    full_h, full_w = (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1
    out_h, out_w = full_h - pt - pb + oph, full_w - pl - pr + opw
    xg = x.reshape(n, groups, c // groups, h, wd)
    wg = w.reshape(groups, c // groups, og, kh, kw)
    full = np.zeros((n, groups, og, max(full_h, pt + out_h), max(full_w, pl + out_w)), x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])
            full[:, :, :, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (wd - 1) * sw + 1:sw] += tap
    y = full[:, :, :, pt:pt + out_h, pl:pl + out_w].reshape(n, groups * og, out_h, out_w)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def local2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0))):
    """Locally connected layer, w [O, th, tw, C, kh, kw]: output (i, j) uses the weights of tile
    (i mod th, j mod tw) (unshared when the tile is the whole output); b [O, th, tw]."""
    o, th, tw = w.shape[:3]
    win = _windows(x, w.shape[4:], stride, padding)                     # [N, C, oh, ow, kh, kw]
    oh, ow = win.shape[2:4]
    rows, cols = np.arange(oh) % th, np.arange(ow) % tw
    y = np.einsum("ncijab,oijcab->noij", win, w[:, rows][:, :, cols], optimize=True)
    return y if b is None else y + b[:, rows][:, :, cols]


def linear(x, w, b=None):
    """x·wᵀ + b with w [O, F]; a [N, C, H, W] input is read flattened."""
    y = x.reshape(len(x), -1) @ w.T
    return y if b is None else y + b


def linear_channels(x, w, b=None):
    """The same x·wᵀ + b at every position of [N, C, ...]: each position's channel vector mapped."""
    y = np.moveaxis(np.moveaxis(x, 1, -1) @ w.T, -1, 1)
    return y if b is None else y + _channel(b, x.ndim)


# ------------------------------------------------------------ normalisation
def _channel(v, ndim):
    """A per-channel vector shaped to broadcast against [N, C, ...]."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm(x, mean, var, gamma, beta, eps=1e-5):
    """Inference batch normalisation with the running statistics."""
    xhat = (x - _channel(mean, x.ndim)) * _channel(1.0 / np.sqrt(var + eps), x.ndim)
    return xhat * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def group_norm(x, groups, gamma, beta, eps=1e-5):
    """Normalise each sample's channel groups over their channels and positions, then scale and shift."""
    g = x.reshape(len(x), groups, -1)
    g = g - g.mean(axis=2, keepdims=True)
    g = g / np.sqrt((g * g).mean(axis=2, keepdims=True) + eps)
    return g.reshape(x.shape) * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def channel_norm(x, gamma, beta, eps=1e-5):
    """Normalise each position's channel vector (PyTorch's LayerNorm on channels-last), then scale and shift."""
    c = x - x.mean(axis=1, keepdims=True)
    c = c / np.sqrt((c * c).mean(axis=1, keepdims=True) + eps)
    return c * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def layer_scale(x, w):
    """Each channel times its factor (w holds one per channel, [C, 1, 1] for an image)."""
    return x * _channel(w.reshape(-1), x.ndim)


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """Local response normalisation across channels (PyTorch LocalResponseNorm)."""
    c, sq = x.shape[1], x * x
    den = np.zeros_like(x)
    for d in range(-(size // 2), (size - 1) // 2 + 1):   # channel c sums c - size//2 .. c + (size-1)//2
        lo, hi = max(0, -d), min(c, c - d)
        if lo < hi:
            den[:, lo:hi] += sq[:, lo + d:hi + d]
    return x * np.power(den * (alpha / size) + k, -beta)


# -------------------------------------------------------------- activations
def relu(x):
    return np.maximum(x, 0)


def relu6(x):
    return np.minimum(np.maximum(x, 0), 6)


def leaky_relu(x, slope=0.01):
    return np.where(x > 0, x, x * slope)


def elu(x, alpha=1.0):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * alpha)


def sigmoid(x):
    """1/(1+e^-x) without overflow."""
    e = np.exp(-np.abs(x))
    r = 1.0 / (1.0 + e)
    return np.where(x >= 0, r, e * r)


def tanh(x):
    return np.tanh(x)


def swish(x):
    return x * sigmoid(x)


def hardswish(x):
    return x * np.clip(x + 3, 0, 6) * (1.0 / 6.0)


def hardsigmoid(x):
    return np.clip(x + 3, 0, 6) * (1.0 / 6.0)


def mish(x):
    return x * np.tanh(np.logaddexp(x, 0))


def gelu(x):
    """x·Φ(x) = x·(1 + erf(x/√2))/2, the exact (erf) form."""
    return x * ((erf(x * 0.7071067811865476) + 1) * 0.5)


def softmax(x):
    """Softmax over the channel axis."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ pooling
def max_pool2d(x, kernel, stride, padding=((0, 0), (0, 0)), dilation=(1, 1), ceil_mode=False):
    """Maximum over each window; padding is -inf."""
    return _windows(x, kernel, stride, padding, dilation, ceil_mode, -np.inf).max(axis=(4, 5))


def max_pool2d_with_indices(x, kernel, stride, padding=((0, 0), (0, 0)), dilation=(1, 1), ceil_mode=False):
    """max_pool2d, and the kernel offset i*kw + j of each window's first maximum (for unpooling)."""
    win = _windows(x, kernel, stride, padding, dilation, ceil_mode, -np.inf)
    flat = win.reshape(*win.shape[:4], -1)
    idx = flat.argmax(axis=4)
    return np.take_along_axis(flat, idx[..., None], axis=4)[..., 0], idx


def max_unpool2d(x, idx, shape, kernel, stride, padding=((0, 0), (0, 0)), dilation=(1, 1)):
    """Each value back where its window's maximum was, in zeros of the pool's input shape [C, H, W]
    (summed where overlapping windows chose the same element)."""
    (kh, kw), (sh, sw), (dh, dw), ((pt, _), (pl, _)) = kernel, stride, dilation, padding
    n, c, oh, ow = x.shape
    h, w = shape[1:]
    buf = np.zeros((n, c, max((oh - 1) * sh + dh * (kh - 1) + 1, pt + h),
                    max((ow - 1) * sw + dw * (kw - 1) + 1, pl + w)), x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            buf[:, :, rows, cols] += np.where(idx == i * kw + j, x, 0)
    return buf[:, :, pt:pt + h, pl:pl + w]


def avg_pool2d(x, kernel, stride, padding=((0, 0), (0, 0)), ceil_mode=False, count_include_pad=True):
    """Mean over each window (PyTorch's divisor: padding counts unless told, a ceil-mode overhang never)."""
    win = _windows(x, kernel, stride, padding, (1, 1), ceil_mode)
    counts = [window_counts(x.shape[2 + a], win.shape[2 + a], kernel[a], stride[a], padding[a], count_include_pad)
              for a in (0, 1)]
    return win.sum(axis=(4, 5)) / np.maximum(np.outer(*counts), 1).astype(x.dtype)


def lp_pool2d(x, kernel, stride, p=2.0, ceil_mode=False):
    """(Σ x^p)^(1/p) over each window (PyTorch LPPool2d; a ceil-mode overhang adds zeros)."""
    s = _windows(np.power(x, p), kernel, stride, ((0, 0), (0, 0)), (1, 1), ceil_mode).sum(axis=(4, 5))
    return np.sqrt(s) if p == 2 else np.power(s, 1.0 / p)


def global_avg_pool(x):
    return x.mean(axis=(2, 3), keepdims=True)


def global_max_pool(x):
    return x.max(axis=(2, 3), keepdims=True)


def _bin_matrix(size, out, dtype):
    """[out, size]: row i averages PyTorch's adaptive bin floor(i*size/out) .. ceil((i+1)*size/out)."""
    m = np.zeros((out, size), dtype)
    for i in range(out):
        lo, hi = (i * size) // out, -(-(i + 1) * size // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x, output):
    h, w = x.shape[2:]
    return _bin_matrix(h, output[0], x.dtype) @ x @ _bin_matrix(w, output[1], x.dtype).T


def adaptive_max_pool(x, output):
    """The maximum of each of PyTorch's adaptive bins, floor(i*size/out) .. ceil((i+1)*size/out) per axis."""
    h, w = x.shape[2:]
    rows = [((i * h) // output[0], -(-(i + 1) * h // output[0])) for i in range(output[0])]
    cols = [((j * w) // output[1], -(-(j + 1) * w // output[1])) for j in range(output[1])]
    return np.stack([np.stack([x[:, :, r0:r1, c0:c1].max(axis=(2, 3)) for c0, c1 in cols], axis=-1)
                     for r0, r1 in rows], axis=-2)


def _bilinear_matrix(size, scale, dtype):
    """[size*scale, size]: bilinear weights, align_corners=False, source index clamped at 0."""
    m = np.zeros((size * scale, size))
    for d in range(size * scale):
        src = max((d + 0.5) / scale - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + 1 if i0 < size - 1 else i0
        m[d, i0] += 1.0 - (src - i0)
        m[d, i1] += src - i0
    return m.astype(dtype)


def upsample(x, scale=(2, 2), mode="nearest"):
    if mode == "bilinear":
        h, w = x.shape[2:]
        return _bilinear_matrix(h, scale[0], x.dtype) @ x @ _bilinear_matrix(w, scale[1], x.dtype).T
    return x.repeat(scale[0], axis=2).repeat(scale[1], axis=3)


def resize(x, size, mode="nearest", align_corners=False):
    """x resized to size = (h, w) (upsample(size = ...), upsample(like = t))."""
    h, w = x.shape[2:]
    return (resize_matrix(h, size[0], mode, align_corners, x.dtype) @ x
            @ resize_matrix(w, size[1], mode, align_corners, x.dtype).T)


def channel_affine(x, scale, shift):
    """x * scale + shift per channel (axis 1), computed in float64 and returned as float32: the
    training's preprocessing as one map (runtime/preprocess.py `affine`)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * np.reshape(scale, shape) + np.reshape(shift, shape)).astype(np.float32)


def affine(x, scale=1.0, shift=0.0):
    return x * x.dtype.type(scale) + x.dtype.type(shift)


# ---------------------------------------------------------------- structure
def flatten(x):
    return x.reshape(len(x), -1)


def pad2d(x, padding, value=0.0):
    return np.pad(x, ((0, 0), (0, 0)) + tuple(padding), constant_values=value)


def crop(x, like, offset=None):
    """Crop of x to like's height and width at (top, left) = offset, else at the centre (an odd
    difference drops the bottom/right line)."""
    (hh, ww), (h, w) = x.shape[2:], like.shape[2:]
    top, left = offset if offset is not None else ((hh - h) // 2, (ww - w) // 2)
    return x[:, :, top:top + h, left:left + w]


def channel_slice(x, start, stop):
    return x[:, start:stop]


def channel_shuffle(x, groups):
    """Channel g*(C/groups) + i moves to i*groups + g (ShuffleNet)."""
    n, c = x.shape[:2]
    return x.reshape((n, groups, c // groups) + x.shape[2:]).swapaxes(1, 2).reshape(x.shape)
