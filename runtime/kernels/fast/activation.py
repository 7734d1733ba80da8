"""Stage 3 (runtime): compiled element-wise activations (the `fast` kernel set).

Each is one pass forward and one pass backward over the tensor's own memory
(NCHW or NHWC), where the NumPy kernels take two or three: relu's backward
`dy * (y > 0)` writes a mask and a product, sigmoid's `dy * y * (1 - y)`
three products. They cache what the NumPy kernels cache (relu and sigmoid their
output, relu6 and leaky_relu their input) and give the same values: the
activations and their derivatives at the kinks are those of
kernels/activation.py. `ACTIVATIONS` codes the fusable activations for the
fused batchnorm epilogue (kernels/fast/norm.py).
"""
from __future__ import annotations

import numpy as np

from ....compiler.ops import implementation, register
from .._core import Attrs, Context, Grads, Kernel, Params, Tensors
from ._jit import jit
from ._layout import dense, like

# The fusable activations (compiler/ops.py property `fusable_activation`) as codes for compiled loops.
NONE, RELU, RELU6, LEAKY_RELU = 0, 1, 2, 3
ACTIVATIONS = {None: NONE, "relu": RELU, "relu6": RELU6, "leaky_relu": LEAKY_RELU}


@jit
def act(z, code, slope, zero, six):
    """The activation `code` of z (NaN stays NaN, as np.clip keeps it); `zero`, `six` and `slope`
    have z's dtype, so float32 stays float32."""
    if code == RELU:
        return zero if z < zero else z
    if code == RELU6:
        return zero if z < zero else (six if z > six else z)
    if code == LEAKY_RELU:
        return z * slope if z < zero else z
    return z


@jit
def act_grad(g, z, code, slope, zero, six):
    """dL/dz from dL/dy = g at the pre-activation z (relu'(0) = relu6'(0) = relu6'(6) = 0)."""
    if code == RELU:
        return g if z > zero else zero
    if code == RELU6:
        return g if z > zero and z < six else zero
    if code == LEAKY_RELU:
        return g if z > zero else g * slope
    return g


@jit
def _act_loop(x, y, code, slope):
    zero, six = x.dtype.type(0), x.dtype.type(6)
    for i in range(x.size):
        y[i] = act(x[i], code, slope, zero, six)


@jit
def _act_grad_loop(dy, z, dx, code, slope):
    zero, six = z.dtype.type(0), z.dtype.type(6)
    for i in range(dy.size):
        dx[i] = act_grad(dy[i], z[i], code, slope, zero, six)


@jit
def _sigmoid_grad_loop(dy, y, dx):
    for i in range(dy.size):
        dx[i] = dy[i] * (y[i] * (y.dtype.type(1) - y[i]))


def _dense(x: np.ndarray) -> np.ndarray:
    """x itself when its memory is dense (NCHW or NHWC), else a contiguous copy."""
    return x if dense(x) is not None else np.ascontiguousarray(x)


def _piecewise(code: int, caches_output: bool) -> Kernel:
    """A fusable activation as a kernel: its derivative is read at its input (or output, for relu,
    whose output is positive exactly where its input is)."""
    def forward(xs: Tensors, params: Params, attrs: Attrs, ctx: Context):
        x = _dense(xs[0])
        slope = x.dtype.type(attrs.get("slope", 0.01))
        y = np.empty_like(x)
        _act_loop(dense(x), dense(y), code, slope)
        return y, (y if caches_output else x, slope)

    def backward(dy: np.ndarray, cache) -> Grads:
        z, slope = cache
        dx = np.empty_like(z)
        _act_grad_loop(dense(like(dy, z)), dense(z), dense(dx), code, slope)
        return (dx,), {}
    return Kernel(forward, backward)


def _sigmoid_backward(dy: np.ndarray, y: np.ndarray) -> Grads:
    y = _dense(y)
    dx = np.empty_like(y)
    _sigmoid_grad_loop(dense(like(dy, y)), dense(y), dense(dx))
    return (dx,), {}


register("fast", "relu")(_piecewise(RELU, caches_output=True))
register("fast", "relu6")(_piecewise(RELU6, caches_output=False))
register("fast", "leaky_relu")(_piecewise(LEAKY_RELU, caches_output=False))
# sigmoid's forward stays NumPy's: its SIMD exp is faster than the scalar one a compiled loop calls
# (1.36 against 0.51 ms for LeNet-5's two sigmoids at batch 64); its backward is one pass, not three.
register("fast", "sigmoid")(Kernel(implementation("sigmoid", "kernel").forward, _sigmoid_backward))
