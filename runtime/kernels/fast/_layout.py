"""Stage 3 (runtime): how the fast kernels see a tensor's memory.

Kernels receive [N, C, H, W] tensors laid out as NCHW, or as NHWC behind a
channels-first view (what the channels-last convolutions return), and give
their results in the layout they were given, so the next op reads what it
would have read from the NumPy kernel. The compiled loops see either layout
as a 3-D array: `rows` gives [N, P, C] (channels innermost) or [N, C, P]
(positions innermost), P = H·W (1 for [N, F]); anything else is copied to
NCHW first.
"""
from __future__ import annotations

import numpy as np

from .._im2col import is_channels_last


def rows(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """(x as [N, P, C], True) for channels-last memory or [N, F]; else (x as [N, C, P], False)."""
    n, c = x.shape[:2]
    if x.ndim == 2:
        return np.ascontiguousarray(x).reshape(n, 1, c), True
    if is_channels_last(x):
        return x.transpose(0, 2, 3, 1).reshape(n, -1, c), True
    return np.ascontiguousarray(x).reshape(n, c, -1), False


def unrows(a: np.ndarray, last: bool, shape: tuple[int, ...]) -> np.ndarray:
    """The [N, C, ...] view of a `rows` array (inverse of `rows`)."""
    if not last or len(shape) == 2:
        return a.reshape(shape)
    n, c, h, w = shape
    return a.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def dense(x: np.ndarray) -> np.ndarray | None:
    """x's memory as a 1-D array, when x covers it densely (NCHW or NHWC); else None."""
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if is_channels_last(x):
        return x.transpose(0, 2, 3, 1).reshape(-1)
    return None


def like(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`a` laid out in memory as `ref` is (itself when it already is), for element-wise loops over both."""
    if a.strides == ref.strides and dense(a) is not None:
        return a
    out = np.empty_like(ref)
    np.copyto(out, a)
    return out
