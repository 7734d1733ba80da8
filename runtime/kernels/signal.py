"""Stage 3 (runtime): 1-D signals ([N, C, L]) through the 2-D kernels.

The compiler describes a layer on a [C, L] signal with unit-height attributes
(kernel (1, k), stride (1, s), padding ((0, 0), (left, right)), compiler/ops.py
"1-D signals"), so a signal is an image of height 1: `lift` wraps any kernel to
view its [N, C, L] inputs and 3-D weights ([O, C/groups, k], PyTorch's Conv1d
layout) with a unit height axis, run the 2-D kernel, and give the result and
the gradients back in the caller's shapes. The views cost no copy; no kernel
module changes. `runtime/plan.py` lifts the steps whose inputs are signals.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._core import Attrs, Context, Grads, Kernel, Params, Tensors


def _unit_height(a: np.ndarray) -> np.ndarray:
    """[N, C, L] -> [N, C, 1, L] (and a conv weight [O, C/g, k] -> [O, C/g, 1, k]): a view."""
    return a[:, :, None, :] if a.ndim == 3 else a


def lift(kernel: Kernel, out_shape: tuple[int, ...]) -> Kernel:
    """`kernel` on inputs with signals among them; `out_shape` is the per-sample output shape."""
    def forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, Any]:
        y, cache = kernel.forward(tuple(_unit_height(x) for x in xs),
                                  {k: _unit_height(v) for k, v in params.items()}, attrs, ctx)
        shapes = (y.shape, tuple(x.shape for x in xs), {k: v.shape for k, v in params.items()})
        return y.reshape(len(y), *out_shape), (cache, shapes)

    def backward(dy: np.ndarray, lifted: tuple) -> Grads:
        cache, (y_shape, x_shapes, p_shapes) = lifted
        dxs, dparams = kernel.backward(dy.reshape(y_shape), cache)
        dxs = tuple(None if dx is None else dx.reshape(shape) for dx, shape in zip(dxs, x_shapes))
        return dxs, {k: g.reshape(p_shapes[k]) for k, g in dparams.items()}

    return Kernel(forward, backward)
