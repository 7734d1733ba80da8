"""Stage 3 (runtime): Winograd F(2×2, 3×3) for wide 3×3 stride-1 convolutions.

Each 2×2 block of outputs is computed from the 4×4 input tile under it with
16 products per (input, output) channel pair instead of 36: the tile is
transformed (V = Bᵀ d B), multiplied channel-wise by the transformed kernel
(U = G g Gᵀ) as 16 independent GEMMs [tiles, C]·[C, O] batched in one
`np.matmul`, and transformed back (Y = Aᵀ M A). Each transform is itself one
GEMM on position-major tiles ((Bᵀ⊗Bᵀ) and (Aᵀ⊗Aᵀ) on the left): more
arithmetic than the additions it stands for, but one streaming BLAS call where
separate NumPy additions over strided views would pass over the tiles ~20
times. It pays where the channel products dominate the transforms, which are
linear in C + O while the products are linear in C·O: from 64 channels on,
with enough tiles (`eligible`; per-layer figures in bench/README.md). The
transforms use additions and halvings only, so the result is the im2col conv's
to float32 rounding (tests/runtime/test_winograd.py compares both against a
float64 direct convolution).

Only immutable weights take this path: the kernel transform costs 2.7 ms for
256×256 channels and 14 ms for 512×512, more than a call saves, so it is made
once per weight array and kept while the array lives. A weight that can change
in place (every trainable weight) could make a kept transform stale, so the
path is for read-only weights only: the folded weights of the fused inference
graph (`runtime/fused.py` `fold_parameters`), what `cnnc predict` runs.
"""
from __future__ import annotations

import weakref

import numpy as np
from numpy.lib.stride_tricks import as_strided

# Input and output channels from which the transforms cost less than the products they save
# (one thread, kept kernel transform, against the chunked im2col conv: 1.4x slower at 16 channels,
# 1.2x at 32; 0.92x at 64 channels (28², batch 32), 0.75x at 128 (14², batch 32), 0.90x at 256
# (7², batch 32)).
MIN_CHANNELS = 64
# 2x2 output tiles per call below which the products are too small to pay for reading the
# transformed kernel (16/9 the weight's size) and the transforms (256 channels at 14², batch 1:
# 49 tiles, 1.35x slower).
MIN_TILES = 128
# Bytes of transformed input per chunk of samples: the 16 GEMMs and both transforms stay in cache.
_CHUNK_BYTES = 4 << 20

# Bᵀ, G and Aᵀ of F(2×2, 3×3) (Lavin and Gray, 2016), as the linear maps on 4 / 3 / 4 taps.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_BT = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
_AT = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
# On row-major flattened tiles vec(M X Nᵀ) = (M ⊗ N) vec(X): each 2-D transform is one product.
_KRON_G = np.kron(_G, _G)                       # [16, 9]
_BT_KRON = np.kron(_BT, _BT)                    # [16, 16]
_AT_KRON = np.kron(_AT, _AT)                    # [4, 16]


def applies(plan, w: np.ndarray) -> bool:
    """Does this conv (a kernels.conv.ConvPlan) with weights w take the Winograd forward?"""
    return eligible(plan) and immutable(w)


def immutable(a: np.ndarray) -> bool:
    """Read-only, and so is every array it views: nothing can change its values in place."""
    while a is not None:
        if not isinstance(a, np.ndarray) or a.flags.writeable:
            return False
        a = a.base
    return True


def eligible(plan) -> bool:
    """Is the Winograd forward faster for this conv's shape?"""
    win = plan.win
    if plan.groups != 1 or win.kernel != (3, 3) or win.stride != (1, 1) or win.dilation != (1, 1):
        return False
    if min(plan.c_in, plan.c_out) < MIN_CHANNELS:
        return False
    return plan.n * _tiles(win.out_hw) >= MIN_TILES


def _tiles(out_hw: tuple[int, int]) -> int:
    return -(-out_hw[0] // 2) * -(-out_hw[1] // 2)


_KEPT: dict[int, np.ndarray] = {}


def kept_kernel_transform(w: np.ndarray) -> np.ndarray:
    """`kernel_transform(w)` for an immutable w, made on first use and dropped with w."""
    key = id(w)
    u = _KEPT.get(key)
    if u is None:
        u = _KEPT[key] = kernel_transform(w)
        weakref.finalize(w, _KEPT.pop, key, None)     # before the id can be reused
    return u


def kernel_transform(w: np.ndarray) -> np.ndarray:
    """U = G g Gᵀ of every [3, 3] kernel of w [O, C, 3, 3], as [16, C, O] (one GEMM)."""
    o, c = w.shape[:2]
    g = w.transpose(1, 0, 2, 3).reshape(c * o, 9)             # rows (c, o) in memory order of U
    u = g @ _KRON_G.T.astype(w.dtype)                          # [C·O, 16]
    return np.ascontiguousarray(u.T).reshape(16, c, o)


def _tiles_view(xp: np.ndarray, th: int, tw: int) -> np.ndarray:
    """The 4×4 tiles (stride 2) of the padded NHWC chunk xp as a view [4, 4, n, th, tw, C]."""
    n, _, _, c = xp.shape
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, (4, 4, n, th, tw, c), (s1, s2, s0, 2 * s1, 2 * s2, s3), writeable=False)


def forward(x: np.ndarray, w: np.ndarray, plan, bias: np.ndarray | None = None,
            out: np.ndarray | None = None) -> np.ndarray:
    """The conv output [N, O, oh, ow] (a channels-first view of NHWC memory), chunk by chunk of samples;
    written into `out` ([N·oh·ow, O] contiguous rows) when given.

    Both transforms are one GEMM each on position-major tiles ([16, tiles·C], (Bᵀ⊗Bᵀ) and (Aᵀ⊗Aᵀ)
    on the left): a dense 16×16 product does more arithmetic than the additions it replaces, but as
    one BLAS call it streams the tiles once, where separate NumPy additions pass over them ~20 times.
    """
    win, n, c, o = plan.win, plan.n, plan.c_in, plan.c_out
    (oh, ow), (h, wd), (top, left) = win.out_hw, win.in_hw, win.offset
    th, tw = -(-oh // 2), -(-ow // 2)
    dt = x.dtype
    u = kept_kernel_transform(w) if immutable(w) else kernel_transform(w)
    bt, at = _BT_KRON.astype(dt), _AT_KRON.astype(dt)
    xn = x.transpose(0, 2, 3, 1)                               # NHWC (a view when x is channels-last)
    chunk = max(1, min(n, _CHUNK_BYTES // (16 * th * tw * c * x.itemsize)))
    # The padded chunk: tiles reach rows -top .. 2·th + 1 - top of the input (columns likewise).
    xp = np.zeros((chunk, 2 * th + 2, 2 * tw + 2, c), dt)
    r0, r1 = max(0, -top), min(h, 2 * th + 2 - top)
    c0, c1 = max(0, -left), min(wd, 2 * tw + 2 - left)
    d = np.empty((16, chunk * th * tw * c), dt)
    v = np.empty_like(d)
    m = np.empty((16, chunk * th * tw, o), dt)
    t = np.empty((4, chunk * th * tw * o), dt)
    even = (2 * th, 2 * tw) == (oh, ow)
    y = out.reshape(n, th, 2, tw, 2, o) if out is not None and even else np.empty((n, th, 2, tw, 2, o), dt)
    for s0 in range(0, n, chunk):
        k = min(chunk, n - s0)
        xp[:k, top + r0:top + r1, left + c0:left + c1] = xn[s0:s0 + k, r0:r1, c0:c1]
        p = k * th * tw
        dk, vk, mk, tk = d[:, :p * c], v[:, :p * c], m[:, :p], t[:, :p * o]
        np.copyto(dk.reshape(4, 4, k, th, tw, c), _tiles_view(xp[:k], th, tw))
        np.matmul(bt, dk, out=vk)
        np.matmul(vk.reshape(16, p, c), u, out=mk)
        np.matmul(at, mk.reshape(16, p * o), out=tk)
        np.copyto(y[s0:s0 + k], tk.reshape(2, 2, k, th, tw, o).transpose(2, 3, 0, 4, 1, 5))
    y = y.reshape(n, 2 * th, 2 * tw, o)
    if not even:
        cropped = y[:, :oh, :ow]
        y = np.empty((n, oh, ow, o), dt) if out is None else out.reshape(n, oh, ow, o)
        np.copyto(y, cropped)
    if bias is not None:
        y += bias
    return y.transpose(0, 3, 1, 2)
