"""Kernel tests for the activations and softmax: per-element formulas, finite differences, PyTorch."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cnnc.runtime.kernels import KERNELS
from cnnc.runtime.kernels._erf import erf


import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)


def _sig(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _softplus(v):
    return max(v, 0) + math.log1p(math.exp(-abs(v)))


# op -> (scalar definition(v, attrs), kinks to keep finite differences away from, attrs sets)
SCALAR = {
    "relu": (lambda v, a: max(v, 0.0), [0.0], [{}]),
    "relu6": (lambda v, a: min(max(v, 0.0), 6.0), [0.0, 6.0], [{}]),
    "hardswish": (lambda v, a: v * min(max(v + 3, 0.0), 6.0) / 6, [-3.0, 3.0], [{}]),
    "hardsigmoid": (lambda v, a: min(max(v + 3, 0.0), 6.0) / 6, [-3.0, 3.0], [{}]),
    "sigmoid": (lambda v, a: _sig(v), [], [{}]),
    "tanh": (lambda v, a: math.tanh(v), [], [{}]),
    "swish": (lambda v, a: v * _sig(v), [], [{}]),
    "mish": (lambda v, a: v * math.tanh(_softplus(v)), [], [{}]),
    "gelu": (lambda v, a: 0.5 * v * (1 + math.erf(v / math.sqrt(2))), [], [{}]),
    "leaky_relu": (lambda v, a: v if v > 0 else a.get("slope", 0.01) * v, [0.0], [{}, {"slope": 0.2}]),
    "elu": (lambda v, a: v if v > 0 else a.get("alpha", 1.0) * math.expm1(v), [0.0], [{}, {"alpha": 0.5}]),
}

CASES = [(op, i) for op, (_, _, attr_sets) in SCALAR.items() for i in range(len(attr_sets))]


def _input(op, seed=0, shape=(2, 3, 4, 5), scale=3.0):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    return H.away_from(x, SCALAR[op][1], 0.05)


@pytest.mark.parametrize("op,i", CASES)
def test_activation_forward_matches_scalar_definition(op, i):
    f, _, attr_sets = SCALAR[op]
    attrs = attr_sets[i]
    x = _input(op)
    x[0, 0, 0, :3] = [-40.0, 40.0, 0.0]                     # saturation must not overflow or NaN
    y, _ = H.run(op, [x], {}, attrs)
    ref = np.vectorize(lambda v: f(v, attrs))(x)
    H.assert_close(y, ref, 1e-13, op, atol_rel=1e-14)


@pytest.mark.parametrize("op,i", CASES)
def test_activation_gradients_match_finite_differences(op, i):
    attrs = SCALAR[op][2][i]
    H.check_grads(op, [_input(op, seed=1, shape=(2, 3, 3, 2))], {}, attrs)
    H.check_grads(op, [_input(op, seed=2, shape=(3, 5))], {}, attrs)      # [N, F] input


@pytest.mark.torch
@pytest.mark.parametrize("op", ["relu", "relu6", "hardswish", "hardsigmoid", "leaky_relu", "elu"])
def test_kink_derivatives_match_torch(op):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
          "leaky_relu": F.leaky_relu, "elu": F.elu}[op]
    x = np.array([[0.0, 6.0, -3.0, 3.0]])
    t = torch.tensor(x, requires_grad=True)
    fn(t).sum().backward()
    y, cache = H.run(op, [x])
    (dx,), _ = KERNELS[op].backward(np.ones_like(y), cache)
    # PyTorch's hardsigmoid backward multiplies by a float32 1/6 even in float64 (exact 1/6: see below).
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-7 if op == "hardsigmoid" else 1e-15)


def test_hardsigmoid_hand_computed_values_and_boundary_gradients():
    x = np.array([[-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0]])
    y, cache = H.run("hardsigmoid", [x])
    np.testing.assert_allclose(y, [[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]], rtol=1e-15)
    (dx,), _ = KERNELS["hardsigmoid"].backward(np.ones_like(y), cache)
    np.testing.assert_allclose(dx, [[0.0, 0.0, 1 / 6, 1 / 6, 1 / 6, 0.0, 0.0]], rtol=1e-15)


def test_erf_accuracy_both_precisions():
    v = np.linspace(-7, 7, 20001)
    ref = np.array([math.erf(t) for t in v])
    assert np.max(np.abs(erf(v) - ref)) < 1e-13
    assert np.max(np.abs(erf(v.astype(np.float32)).astype(np.float64) - ref)) < 5e-7
    assert erf(v.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("shape", [(2, 4, 3, 3), (3, 6)])
def test_softmax_forward_and_gradients(shape):
    x = np.random.default_rng(4).standard_normal(shape) * 3
    x.flat[0] = 800.0                                        # stability: no overflow
    y, _ = H.run("softmax", [x])
    ref = np.zeros(shape)
    for idx in np.ndindex(shape[:1] + shape[2:]):
        sl = (idx[0], slice(None)) + idx[1:]
        col = x[sl]
        m = max(col)
        e = [math.exp(v - m) for v in col]
        ref[sl] = [v / sum(e) for v in e]
    H.assert_close(y, ref, 1e-13, "softmax", atol_rel=1e-15)
    H.check_grads("softmax", [np.random.default_rng(5).standard_normal(shape)])


@pytest.mark.torch
@pytest.mark.parametrize("op,i", CASES + [("softmax", 0)])
def test_activation_matches_torch(op, i):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    attrs = SCALAR[op][2][i] if op in SCALAR else {}
    fns = {
        "relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh, "swish": F.silu, "mish": F.mish, "gelu": lambda t: F.gelu(t, approximate="none"),
        "leaky_relu": lambda t: F.leaky_relu(t, attrs.get("slope", 0.01)),
        "elu": lambda t: F.elu(t, attrs.get("alpha", 1.0)), "softmax": lambda t: F.softmax(t, dim=1),
    }
    for seed, shape in enumerate([(4, 3, 5, 5), (8, 10)]):
        x = np.random.default_rng(seed + 10).standard_normal(shape) * 4
        if op in SCALAR:
            x = H.away_from(x, SCALAR[op][1], 1e-3)
        H.torch_compare(op, [x], {}, attrs, fns[op], seed=seed)
