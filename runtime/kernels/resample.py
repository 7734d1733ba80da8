"""Stage 3 (runtime): the index arithmetic of pooling and resizing, shared by kernels and generated code.

Pure functions of sizes, in plain NumPy (module-level, `np` only, no cache):
the pool kernels (pool.py) use them, and so do the plain-NumPy forms of
runtime/export/standalone.py, which `--emit numpy` copies into generated
modules with every helper they call. This module imports nothing of cnnc,
so neither side imports the other.
"""
from __future__ import annotations

import numpy as np


def window_counts(size: int, out: int, kernel: int, stride: int, pad: tuple[int, int],
                   include_pad: bool) -> np.ndarray:
    """Elements per window along one axis, as PyTorch's avg_pool2d divides."""
    start = np.arange(out) * stride - pad[0]
    end = np.minimum(start + kernel, size + pad[1])     # the ceil-mode overhang never counts
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def resize_matrix(size, out, mode, align_corners, dtype):
    """[out, size]: PyTorch's interpolate to a size (nearest: floor(d*size/out) in float32;
    bilinear: half-pixel centres clamped at 0, or aligned corners)."""
    m = np.zeros((out, size))
    ratio = np.float32(size) / np.float32(out)
    for d in range(out):
        if mode == "nearest":
            m[d, min(int(np.floor(np.float32(d) * ratio)), size - 1)] = 1.0
            continue
        if align_corners:
            src = d * (size - 1) / (out - 1) if out > 1 else 0.0
        else:
            src = max((d + 0.5) * size / out - 0.5, 0.0)
        i0 = min(int(src), size - 1)
        i1 = min(i0 + 1, size - 1)
        m[d, i0] += 1.0 - (src - i0)
        m[d, i1] += src - i0
    return m.astype(dtype)
