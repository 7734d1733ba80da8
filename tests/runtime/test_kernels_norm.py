"""Kernel tests for batch/layer/instance/group norm and LRN: naive loops, finite differences, PyTorch."""
from __future__ import annotations


import numpy as np
import pytest

from cnnc.runtime.kernels import Context


import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)


def _affine_params(rng, c):
    return {"weight": 1 + 0.5 * rng.standard_normal(c), "bias": rng.standard_normal(c)}


# ---------------------------------------------------------------- batchnorm

def bn_case(seed):
    rng = np.random.default_rng(seed)
    shape = [(3, 4, 3, 2), (5, 3), (2, 2, 1, 3), (4, 5, 2, 2)][seed % 4]
    c = shape[1]
    params = _affine_params(rng, c)
    params["running_mean"] = rng.standard_normal(c)
    params["running_var"] = 0.5 + rng.random(c)
    attrs = {"eps": [1e-5, 1e-3][seed % 2], "momentum": [0.1, 0.3][seed // 2 % 2]}
    return rng.standard_normal(shape) * 2 + 1, params, attrs


def naive_batchnorm(x, params, attrs, training):
    y = np.zeros_like(x)
    rm, rv = params["running_mean"].copy(), params["running_var"].copy()
    m = attrs["momentum"]
    for c in range(x.shape[1]):
        vals = x[:, c].ravel()
        if training:
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / len(vals)
            rm[c] = (1 - m) * rm[c] + m * mean
            rv[c] = (1 - m) * rv[c] + m * var * len(vals) / (len(vals) - 1)
        else:
            mean, var = params["running_mean"][c], params["running_var"][c]
        y[:, c] = (x[:, c] - mean) / np.sqrt(var + attrs["eps"]) * params["weight"][c] + params["bias"][c]
    return y, rm, rv


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_batchnorm_forward_and_running_statistics_match_naive(seed, training):
    x, params, attrs = bn_case(seed)
    ref, rm, rv = naive_batchnorm(x, params, attrs, training)
    live = {k: v.copy() for k, v in params.items()}
    y, _ = H.run("batchnorm", [x], live, attrs, Context(training=training))
    H.assert_close(y, ref, 1e-12, "batchnorm")
    H.assert_close(live["running_mean"], rm, 1e-14, "running_mean")
    H.assert_close(live["running_var"], rv, 1e-14, "running_var")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_batchnorm_gradients_match_finite_differences(seed, training):
    x, params, attrs = bn_case(seed)
    H.check_grads("batchnorm", [x], params, attrs, make_ctx=H.ctx_factory(training=training),
                  wrt_params=["weight", "bias"], seed=seed)


def test_batchnorm_running_buffers_are_updated_in_place_and_float32_kept():
    x, params, attrs = bn_case(0)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    rm, rv = p32["running_mean"], p32["running_var"]
    before = rm.copy()
    y, _ = H.run("batchnorm", [x.astype(np.float32)], p32, attrs, Context(training=True))
    assert p32["running_mean"] is rm and p32["running_var"] is rv
    assert not np.array_equal(rm, before)
    assert y.dtype == rm.dtype == rv.dtype == np.float32


def test_batchnorm_rejects_a_single_value_per_channel_in_training():
    with pytest.raises(ValueError):
        H.run("batchnorm", [np.ones((1, 2))], bn_case(1)[1] | {"weight": np.ones(2), "bias": np.zeros(2),
              "running_mean": np.zeros(2), "running_var": np.ones(2)}, {}, Context(training=True))


# ------------------------------------------- layer / instance / group norm

def group_case(op, seed, shapes=((2, 4, 3, 3), (3, 6, 2, 1), (2, 6, 1, 4))):
    rng = np.random.default_rng(seed + 20)
    shape = shapes[seed % len(shapes)]
    if op == "layernorm" and seed % 4 == 3:
        shape = (3, 5)
    attrs = {"eps": [1e-5, 1e-2][seed % 2]}
    if op == "groupnorm":
        attrs["groups"] = [2, 1, 3][seed % 3]
    return rng.standard_normal(shape) * 3 - 1, _affine_params(rng, shape[1]), attrs


def naive_group_norm(x, params, groups, eps):
    n, c = x.shape[:2]
    y = np.zeros_like(x)
    per = c // groups
    for b in range(n):
        for g in range(groups):
            block = x[b, g * per:(g + 1) * per]
            vals = block.ravel()
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / len(vals)
            for ch in range(g * per, (g + 1) * per):
                y[b, ch] = (x[b, ch] - mean) / np.sqrt(var + eps) * params["weight"][ch] + params["bias"][ch]
    return y


def _groups(op, x, attrs):
    return {"layernorm": 1, "instancenorm": x.shape[1], "groupnorm": attrs.get("groups")}[op]


@pytest.mark.parametrize("op", ["layernorm", "instancenorm", "groupnorm"])
@pytest.mark.parametrize("seed", range(4))
def test_group_norms_forward_and_gradients(op, seed):
    x, params, attrs = group_case(op, seed)
    y, _ = H.run(op, [x], params, attrs)
    H.assert_close(y, naive_group_norm(x, params, _groups(op, x, attrs), attrs["eps"]), 1e-12, op)
    H.check_grads(op, [x], params, attrs, wrt_params=["weight", "bias"], seed=seed)


# ---------------------------------------------------------------------- lrn

def lrn_case(seed):
    rng = np.random.default_rng(seed + 40)
    attrs = [{}, {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}, {"size": 2, "alpha": 1.0, "beta": 1.5, "k": 2.0},
             {"size": 7, "alpha": 0.1, "beta": 0.5, "k": 0.5}][seed % 4]
    shape = [(2, 6, 2, 3), (2, 4, 3, 2), (3, 5), (1, 3, 2, 2)][seed % 4]
    return rng.standard_normal(shape) * 2, attrs


def naive_lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    y = np.zeros_like(x)
    c = x.shape[1]
    for ch in range(c):
        s = sum(x[:, j] ** 2 for j in range(ch - size // 2, ch + (size - 1) // 2 + 1) if 0 <= j < c)
        y[:, ch] = x[:, ch] / (k + alpha / size * s) ** beta
    return y


@pytest.mark.parametrize("seed", range(4))
def test_lrn_forward_and_gradients(seed):
    x, attrs = lrn_case(seed)
    y, _ = H.run("lrn", [x], {}, attrs)
    H.assert_close(y, naive_lrn(x, **attrs), 1e-12, "lrn")
    H.check_grads("lrn", [x], {}, attrs, seed=seed)


# ---------------------------------------------------------------- torch oracle

@pytest.mark.torch
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_batchnorm_matches_torch(seed, training):
    torch = pytest.importorskip("torch")
    x, params, attrs = bn_case(seed + 4)
    rm, rv = (torch.tensor(params[k], dtype=torch.float32) for k in ("running_mean", "running_var"))

    def fn(x, weight, bias, running_mean, running_var):    # called once per kernel set: fresh statistics
        return torch.nn.functional.batch_norm(x, rm.clone(), rv.clone(), weight, bias, training, attrs["momentum"],
                                              attrs["eps"])
    H.torch_compare("batchnorm", [x], params, attrs, fn, make_ctx=H.ctx_factory(training=training),
                    wrt_params=["weight", "bias"], seed=seed)
    torch.nn.functional.batch_norm(torch.tensor(x, dtype=torch.float32), rm, rv, None, None, training,
                                   attrs["momentum"], attrs["eps"])     # torch's update of the statistics
    live = {k: v.astype(np.float32) for k, v in params.items()}
    H.run("batchnorm", [x.astype(np.float32)], live, attrs, Context(training=training))
    H.assert_close(live["running_mean"], rm.numpy(), 1e-6, "running_mean")
    H.assert_close(live["running_var"], rv.numpy(), 1e-6, "running_var")


@pytest.mark.torch
@pytest.mark.parametrize("op", ["layernorm", "instancenorm", "groupnorm"])
@pytest.mark.parametrize("seed", range(4))
def test_group_norms_match_torch(op, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    # Groups of a few elements are ill-conditioned in float32 (x̂ = ±1): use larger ones here.
    x, params, attrs = group_case(op, seed + 1, shapes=((2, 4, 3, 3), (3, 6, 2, 3), (2, 6, 3, 4)))

    def fn(x, weight, bias):
        if op == "instancenorm":
            return F.instance_norm(x, weight=weight, bias=bias, eps=attrs["eps"])
        return F.group_norm(x, _groups(op, x, attrs), weight, bias, attrs["eps"])
    H.torch_compare(op, [x], params, attrs, fn, wrt_params=["weight", "bias"], seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(4))
def test_lrn_matches_torch(seed):
    torch = pytest.importorskip("torch")
    x, attrs = lrn_case(seed)
    kw = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0} | attrs

    def fn(t):
        if t.ndim == 2:                                  # torch wants a spatial axis: [N, F, 1]
            return torch.nn.functional.local_response_norm(t[..., None], **kw)[..., 0]
        return torch.nn.functional.local_response_norm(t, **kw)
    H.torch_compare("lrn", [x], {}, attrs, fn, seed=seed)
