"""Stage 3 (runtime): element-wise activation kernels and the channel softmax.

Each activation is a pair of array expressions: the forward returns y and
caches the cheapest thing its derivative needs (y itself for relu, sigmoid and
tanh; x or a precomputed factor otherwise), and the backward multiplies dy by
that derivative. Everything keeps the input's dtype (Python-float constants
do not promote float32), is stable for large |x| (sigmoid as 1/(1+e^−x),
whose overflow is its limit; softplus as max(x, 0) + log1p(e^−|x|)), blends
piecewise branches with arithmetic on masks instead of np.where (which is
~10x slower on random masks), and matches PyTorch's derivative at the kinks
(relu'(0) = 0, relu6'(0) = relu6'(6) = 0, hardswish'(−3) = 0, hardswish'(3) = 1,
hardsigmoid'(±3) = 0, elu'(0) = α).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ...compiler.ops import register
from ._core import Attrs, Context, Grads, Kernel, Params, Tensors
from ._erf import erf


def _unary(forward: Callable[[np.ndarray, Attrs], tuple[np.ndarray, Any]],
           backward: Callable[[np.ndarray, Any], np.ndarray]) -> Kernel:
    """A Kernel from a one-input forward `(x, attrs) -> (y, cache)` and `(dy, cache) -> dx`."""
    def fwd(xs: Tensors, params: Params, attrs: Attrs, ctx: Context) -> tuple[np.ndarray, Any]:
        return forward(xs[0], attrs)

    def bwd(dy: np.ndarray, cache: Any) -> Grads:
        return (backward(dy, cache),), {}
    return Kernel(fwd, bwd)


def _clip(x: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None) -> np.ndarray:
    """np.clip with bounds of x's own dtype: NumPy's SIMD path (3x faster than
    np.maximum(x, 0), whose Python-scalar operand takes a slow broadcast loop)."""
    t = x.dtype.type
    return np.clip(x, t(lo), t(hi), out=out)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1/(1+e^−x) in four in-place passes.

    e^−x overflows to inf below x ≈ −88 (float32), and 1/(1+inf) = 0 is the
    right limit, so the overflow is silenced rather than avoided; elsewhere
    every step is accurate to rounding (no 1 − (1 − e) cancellation for x < 0).
    """
    e = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    e += 1
    return np.reciprocal(e, out=e)


def _relu(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    y = _clip(x, 0, np.inf)
    return y, y


def _relu_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dy * (y > 0)


def _relu6(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    return _clip(x, 0, 6), x


def _relu6_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    return dy * ((x > 0) & (x < 6))


def _hardswish(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    r = x + 3
    _clip(r, 0, 6, out=r)
    r *= x
    r *= 1.0 / 6.0
    return r, x


def _hardswish_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    g = x * (1.0 / 3.0) + 0.5          # inside (−3, 3); 0 at and below −3; 1 from 3 on
    g *= x > -3
    g *= x < 3
    g += x >= 3
    g *= dy
    return g


def _hardsigmoid(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    y = x + 3                          # relu6(x + 3) / 6, in PyTorch's order of operations
    _clip(y, 0, 6, out=y)
    y *= 1.0 / 6.0
    return y, x


def _hardsigmoid_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    return dy * ((x > -3) & (x < 3)) * (1.0 / 6.0)      # 1/6 strictly inside (−3, 3), as PyTorch


def _sigmoid(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    y = sigmoid(x)
    return y, y


def _sigmoid_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dy * y * (1 - y)


def _tanh(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    y = np.tanh(x)
    return y, y


def _tanh_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dy * (1 - y * y)


def _swish(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, tuple]:
    s = sigmoid(x)
    return x * s, (x, s)


def _swish_grad(dy: np.ndarray, cache: tuple) -> np.ndarray:
    x, s = cache
    return dy * (s * (1 + x * (1 - s)))


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x) = max(x, 0) + log1p(e^−|x|): stable, and 20x faster than np.logaddexp."""
    sp = np.log1p(np.exp(-np.abs(x)))
    sp += _clip(x, 0, np.inf)
    return sp


def _mish(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, tuple]:
    t = np.tanh(_softplus(x))
    return x * t, (x, t)


def _mish_grad(dy: np.ndarray, cache: tuple) -> np.ndarray:
    x, t = cache
    return dy * (t + x * (1 - t * t) * sigmoid(x))


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, tuple]:
    cdf = erf(x * _INV_SQRT2)
    cdf += 1
    cdf *= 0.5
    return x * cdf, (x, cdf)


def _gelu_grad(dy: np.ndarray, cache: tuple) -> np.ndarray:
    x, cdf = cache
    return dy * (cdf + x * np.exp(x * x * -0.5) * _INV_SQRT_2PI)


def _leaky_relu(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    slope = attrs.get("slope", 0.01)
    factor = np.multiply(x > 0, 1.0 - slope, dtype=x.dtype)      # 1 where x > 0, slope elsewhere
    factor += slope
    return x * factor, factor


def _leaky_relu_grad(dy: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return dy * factor


def _elu(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    alpha = attrs.get("alpha", 1.0)
    # max(x, 0) + α·(e^min(x, 0) − 1): both parts vanish where the other applies,
    # and the clipped exponent cannot overflow.
    e = np.expm1(_clip(x, -np.inf, 0))
    y = _clip(x, 0, np.inf)
    y += alpha * e
    grad = alpha * (e + 1)                       # α·e^x for x ≤ 0 (PyTorch: α at 0) ...
    grad += (x > 0) * (1 - grad)                 # ... and 1 for x > 0
    return y, grad


def _elu_grad(dy: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return dy * grad


def _softmax(x: np.ndarray, attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e, e


def _softmax_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


# Each kernel registers into its op's entry (compiler/ops.py); Plan asks `implementation(op, "kernel")`.
register("kernel", "relu")(_unary(_relu, _relu_grad))
register("kernel", "relu6")(_unary(_relu6, _relu6_grad))
register("kernel", "hardswish")(_unary(_hardswish, _hardswish_grad))
register("kernel", "sigmoid")(_unary(_sigmoid, _sigmoid_grad))
register("kernel", "hardsigmoid")(_unary(_hardsigmoid, _hardsigmoid_grad))
register("kernel", "tanh")(_unary(_tanh, _tanh_grad))
register("kernel", "swish")(_unary(_swish, _swish_grad))
register("kernel", "mish")(_unary(_mish, _mish_grad))
register("kernel", "gelu")(_unary(_gelu, _gelu_grad))
register("kernel", "leaky_relu")(_unary(_leaky_relu, _leaky_relu_grad))
register("kernel", "elu")(_unary(_elu, _elu_grad))
register("kernel", "softmax")(_unary(_softmax, _softmax_grad))
