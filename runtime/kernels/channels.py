"""Stage 3 (runtime): kernels that split and shuffle channels (ShuffleNet).

`slice` keeps channels start to stop-1 (`x[start:stop]` in a `.cnn` file); its
gradient is zero outside them. `channel_shuffle` views the C channels as
`groups` rows of C/groups and transposes them (PyTorch's
`nn.ChannelShuffle`); its gradient is the inverse permutation, a shuffle with
C/groups groups. Both move data only, for any rank ([N, C, ...]).
"""
from __future__ import annotations

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


def _slice_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    x = xs[0]
    return x[:, attrs["start"]:attrs["stop"]], (x.shape, attrs["start"], attrs["stop"])


def _slice_backward(dy: np.ndarray, cache: tuple) -> Grads:
    shape, start, stop = cache
    dx = np.zeros(shape, dy.dtype)
    dx[:, start:stop] = dy
    return (dx,), {}


def shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """Channel g*(C/groups) + i moves to i*groups + g."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return np.ascontiguousarray(x.reshape(n, groups, c // groups, *rest).swapaxes(1, 2)).reshape(x.shape)


def _shuffle_forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
    return shuffle(xs[0], attrs["groups"]), attrs["groups"]


def _shuffle_backward(dy: np.ndarray, groups: int) -> Grads:
    return (shuffle(dy, dy.shape[1] // groups),), {}


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "slice")(Kernel(_slice_forward, _slice_backward))
register("kernel", "channel_shuffle")(Kernel(_shuffle_forward, _shuffle_backward))
