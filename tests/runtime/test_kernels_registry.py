"""The kernel table against the contract, and properties every kernel must have."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.ops import OPS
from cnnc.runtime.kernels import KERNELS, Context, Kernel

DOC = Path(__file__).resolve().parents[2] / "docs" / "internals.md"


def contract_ops() -> set[str]:
    """Op names in the first column of docs/internals.md's op table."""
    names = set()
    in_table = False
    for line in DOC.read_text().splitlines():
        if line.startswith("| op |"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            first = line.split("|")[1]
            if set(first.strip()) <= set("-: "):
                continue            # the header separator row
            names.update(re.findall(r"`([a-z0-9_]+)`", first))
    return names


def test_contract_table_parses():
    ops = contract_ops()
    assert {"input", "conv", "relu", "gelu", "add", "mul", "crop"} <= ops
    assert len(ops) > 30


def test_kernels_cover_exactly_the_contract_ops():
    assert set(KERNELS) == contract_ops() - {"input"}
    for name, kernel in KERNELS.items():
        assert isinstance(kernel, Kernel) and callable(kernel.forward) and callable(kernel.backward), name


# One small float32 example per op: (inputs, params, attrs).
def _samples(rng):
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    f = rng.standard_normal((2, 5)).astype(np.float32)
    p = lambda *s: rng.standard_normal(s).astype(np.float32)     # noqa: E731
    pad1, pad0 = ((1, 1), (1, 0)), ((0, 0), (0, 0))
    conv = dict(out_channels=6, kernel=(3, 3), stride=(1, 1), padding=pad1, dilation=(1, 1), groups=2,
                bias=True, trainable=True, weights=None)
    norm = {"weight": p(4), "bias": p(4)}
    return {
        "conv": ([x], {"weight": p(6, 2, 3, 3), "bias": p(6)}, conv),
        "deconv": ([x], {"weight": p(4, 3, 3, 3), "bias": p(6)},
                   {**conv, "output_padding": (1, 0), "stride": (2, 1)}),
        "local": ([x], {"weight": p(3, 2, 2, 4, 3, 3), "bias": p(3, 2, 2)},
                  dict(out_channels=3, kernel=(3, 3), stride=(1, 1), padding=pad0, tile=(2, 2), bias=True)),
        "linear": ([f], {"weight": p(3, 5), "bias": p(3)}, dict(out_features=3, bias=True, trainable=True, weights=None)),
        "maxpool": ([x], {}, dict(kernel=(2, 2), stride=(2, 2), padding=pad0, dilation=(1, 1), ceil_mode=False)),
        "avgpool": ([x], {}, dict(kernel=(3, 3), stride=(2, 2), padding=pad1, ceil_mode=True, count_include_pad=False)),
        "lppool": ([x], {}, dict(p=2.0, kernel=(2, 2), stride=(2, 2), ceil_mode=False)),
        "global_avgpool": ([x], {}, {}),
        "global_maxpool": ([x], {}, {}),
        "adaptive_avgpool": ([x], {}, {"output": (4, 3)}),
        "adaptive_maxpool": ([x], {}, {"output": (4, 3)}),
        "unpool": ([p(2, 4, 3, 3)], {}, {"of": "pool"}),
        "upsample": ([x], {}, {"scale": (2, 2), "mode": "bilinear"}),
        # ops without attributes, parameters or a second input: x alone (e.g. relu, flatten)
        **{op: ([x], {}, {}) for op, spec in OPS.items() if op != "input" and not spec.attrs and spec.inputs == 1
           and not spec.params({}, [x.shape[1:]])},
        "leaky_relu": ([x], {}, {"slope": 0.1}),
        "elu": ([x], {}, {"alpha": 1.0}),
        "batchnorm": ([x], {**norm, "running_mean": np.zeros(4, np.float32), "running_var": np.ones(4, np.float32)},
                      {"eps": 1e-5, "momentum": 0.1}),
        "layernorm": ([x], norm, {"eps": 1e-5}),
        "instancenorm": ([x], norm, {"eps": 1e-5}),
        "groupnorm": ([x], norm, {"groups": 2, "eps": 1e-5}),
        "lrn": ([x], {}, {"size": 3}),
        "dropout": ([x], {}, {"p": 0.5, "mode": "upscale_in_train"}),
        "spatial_dropout": ([x], {}, {"p": 0.5}),
        "concat": ([x, x[:, :2]], {}, {}),
        "add": ([x, x[:, :, :1, :1], x], {}, {}),
        "mul": ([x, x[:1]], {}, {}),
        "pad": ([x], {}, {"padding": ((1, 2), (0, 1)), "value": 0.5}),
        "crop": ([x, x[:, :, :3, :4]], {}, {}),
        "slice": ([x], {}, {"start": 1, "stop": 3}),
        "channel_shuffle": ([x], {}, {"groups": 2}),
        "affine": ([x], {}, {"scale": 0.5, "shift": 3.0}),
        "maximum": ([x, x[:, :, :1, :1], x[::-1]], {}, {}),
        "minimum": ([x, x[:, :, :1, :1], x[::-1]], {}, {}),
        "layer_scale": ([x], {"weight": p(4, 1, 1)}, {"value": 1e-6}),
        "stochastic_depth": ([x], {}, {"p": 0.5, "mode": "row"}),
    }


def _saved_pool(rng) -> dict:
    ctx = Context(node="pool")
    KERNELS["maxpool"].forward((rng.standard_normal((2, 4, 6, 6)).astype(np.float32),), {},
                               dict(kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1),
                                    ceil_mode=False), ctx)
    return ctx.saved


def test_every_kernel_has_a_sample():
    assert set(_samples(np.random.default_rng(0))) == set(KERNELS)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("op", sorted(KERNELS))
def test_float32_in_float32_out_shapes_and_inputs_untouched(op, training):
    rng = np.random.default_rng(0)
    xs, params, attrs = _samples(rng)[op]
    ctx = Context(training=training, node=op, saved=_saved_pool(rng))
    before = [x.copy() for x in xs]
    frozen = {k: v.copy() for k, v in params.items() if not k.startswith("running_")}
    y, cache = KERNELS[op].forward(tuple(xs), params, attrs, ctx)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dxs, grads = KERNELS[op].backward(dy, cache)
    assert len(dxs) == len(xs)
    for x, dx in zip(xs, dxs):
        if dx is not None:
            assert dx.shape == x.shape and dx.dtype == np.float32
    for name, g in grads.items():
        assert g.shape == params[name].shape and g.dtype == np.float32, name
    assert set(grads) == set(frozen), "gradients for exactly the trainable parameters"
    for x, b in zip(xs, before):
        np.testing.assert_array_equal(x, b)
    for k, v in frozen.items():
        np.testing.assert_array_equal(params[k], v)


def _nhwc(a: np.ndarray) -> np.ndarray:
    """The same values as a channels-first view of NHWC memory (what channels-last convs return)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if a.ndim == 4 else a


@pytest.mark.parametrize("op", sorted(KERNELS))
def test_memory_layout_of_inputs_and_gradients_does_not_change_results(op):
    rng = np.random.default_rng(1)
    xs, params, attrs = _samples(rng)[op]
    saved = _saved_pool(rng)
    results = []
    for convert in (np.ascontiguousarray, _nhwc):
        ctx = Context(training=True, node=op, saved=saved, rng=np.random.default_rng(2))
        p = {k: v.copy() for k, v in params.items()}
        y, cache = KERNELS[op].forward(tuple(convert(x) for x in xs), p, attrs, ctx)
        dy = convert(np.random.default_rng(3).standard_normal(y.shape).astype(np.float32))
        results.append((y, *KERNELS[op].backward(dy, cache)))
    (y0, dx0, g0), (y1, dx1, g1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(dx1, dx0):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-5, atol=1e-4)
