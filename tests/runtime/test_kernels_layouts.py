"""The speed paths of the conv and pool kernels: same numbers as the paths they replace, in the
layout the layers after them read.

A stride-1 chunked conv takes its data gradient as the forward conv of dy with the flipped kernel
(instead of per-offset products scattered back), and its weight gradient from the same im2col of dy
(instead of rebuilding the input's); a channels-first conv (few input channels: a stem,
LeNet's first layer) writes NHWC memory and reads an NHWC dy without a copy; global average pooling
hands back its gradient in its input's layout; so a ResNet's training step stays channels-last from
the stem to the classifier and back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.runtime.kernels import KERNELS, Context, conv as conv_module
from cnnc.runtime.kernels._im2col import Window, is_channels_last
from cnnc.runtime.train.losses import make_loss
from cnnc.runtime.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def nhwc(a: np.ndarray) -> np.ndarray:
    """The same values, stored NHWC (a channels-first view of NHWC memory)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def conv_attrs(c_out, kernel, padding, dilation=(1, 1), stride=(1, 1)):
    return {"out_channels": c_out, "kernel": kernel, "stride": stride, "padding": padding,
            "dilation": dilation, "groups": 1, "bias": True}


def conv_grads(x, w, b, attrs, dy):
    params = {"weight": w, "bias": b}
    y, cache = KERNELS["conv"].forward((x,), params, attrs, Context(training=True))
    (dx,), grads = KERNELS["conv"].backward(dy, cache)
    return y, dx, grads


SHAPES = [  # (kernel, padding, dilation): same-size sweeps, symmetric, asymmetric, wider than 3, dilated
    ((3, 3), ((1, 1), (1, 1)), (1, 1)),
    ((3, 3), ((0, 2), (2, 0)), (1, 1)),
    ((5, 3), ((2, 2), (1, 1)), (1, 1)),
    ((3, 3), ((2, 2), (1, 1)), (2, 1)),
]


@pytest.mark.parametrize("kernel, padding, dilation", SHAPES)
def test_stride1_data_gradient_by_flipped_kernel_matches_the_scatter(kernel, padding, dilation, monkeypatch):
    rng = np.random.default_rng(0)
    x = nhwc(rng.standard_normal((3, 16, 9, 10)))
    w, b = rng.standard_normal((7, 16, *kernel)), rng.standard_normal(7)
    attrs = conv_attrs(7, kernel, padding, dilation)
    win = Window.of((9, 10), kernel, (1, 1), padding, dilation)
    assert conv_module._transposed_plan(conv_module.ConvPlan(win, 3, 16, 7, 1)) is not None
    dy = nhwc(rng.standard_normal((3, 7, *win.out_hw)))
    _, dx, grads = conv_grads(x, w, b, attrs, dy)
    monkeypatch.setattr(conv_module, "_transposed_plan", lambda plan: None)
    _, dx_ref, grads_ref = conv_grads(x, w, b, attrs, dy)
    assert dx.shape == x.shape and is_channels_last(dx)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], grads_ref["weight"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, c_in", [
    (((3, 3), ((1, 1), (1, 1)), (2, 2)), 16),       # strided
    (((5, 5), ((0, 0), (0, 0)), (1, 1)), 16),       # valid: the transposed sweep would be larger
    (((3, 3), ((1, 1), (1, 1)), (1, 1)), 6),        # few input channels: a thin GEMM
])
def test_data_gradient_keeps_the_scatter_where_the_flip_does_not_pay(shape, c_in):
    kernel, padding, stride = shape
    win = Window.of((9, 9), kernel, stride, padding)
    assert conv_module._transposed_plan(conv_module.ConvPlan(win, 2, c_in, 8, 1)) is None


def test_channels_first_conv_writes_nhwc_and_reads_either_dy_layout():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 9, 9))                     # 3 channels: the channels-first im2col
    w, b = rng.standard_normal((6, 3, 3, 3)), rng.standard_normal(6)
    attrs = conv_attrs(6, (3, 3), ((1, 1), (1, 1)))
    y, cache = KERNELS["conv"].forward((x,), {"weight": w, "bias": b}, attrs, Context(training=True))
    assert not cache.plan.channels_last and is_channels_last(y)
    dy = rng.standard_normal(y.shape)
    (dx_last,), g_last = KERNELS["conv"].backward(nhwc(dy), cache)
    (dx_first,), g_first = KERNELS["conv"].backward(np.ascontiguousarray(dy), cache)
    np.testing.assert_allclose(dx_last, dx_first, rtol=1e-12, atol=1e-12)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(g_last[k], g_first[k], rtol=1e-12, atol=1e-12)


def test_global_avgpool_gradient_keeps_the_input_layout():
    x = nhwc(np.random.default_rng(2).standard_normal((2, 5, 3, 4)))
    y, cache = KERNELS["global_avgpool"].forward((x,), {}, {}, Context(training=True))
    dy = np.arange(10, dtype=np.float64).reshape(2, 5, 1, 1)
    (dx,), _ = KERNELS["global_avgpool"].backward(dy, cache)
    assert is_channels_last(dx)
    np.testing.assert_array_equal(dx, np.broadcast_to(dy * (1.0 / 12), x.shape))


def test_resnet20_training_step_stays_channels_last():
    """Every 4-D tensor after the input, forward and backward, is NHWC memory: no layer copies
    between layouts."""
    c = compile_file(EXAMPLES / "cifar_resnet20.cnn")
    plan = Plan(c.net, c.analysis.params, seed=0)
    seen: list[tuple[str, str]] = []

    def nchw(a) -> bool:        # [N, C, 1, 1] is both layouts at once
        return a is not None and a.ndim == 4 and a.shape[2] * a.shape[3] > 1 and not is_channels_last(a)

    class Watch:
        def __init__(self, step):
            self.step, self.kernel = step, step.kernel

        def forward(self, xs, params, attrs, ctx):
            y, cache = self.kernel.forward(xs, params, attrs, ctx)
            if nchw(y):
                seen.append((self.step.name, "forward"))
            return y, cache

        def backward(self, dy, cache):
            dxs, grads = self.kernel.backward(dy, cache)
            if any(nchw(d) for d in dxs):
                seen.append((self.step.name, "backward"))
            return dxs, grads

    from dataclasses import replace
    plan.steps = [replace(s, kernel=Watch(s)) for s in plan.steps]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out, tape = plan.forward({plan.inputs[0]: x}, training=True)
    _, d = make_loss("cross_entropy")(out[plan.outputs[0]], np.array([1, 2]))
    plan.backward(tape, {plan.outputs[0]: d})
    assert seen == []


def test_fused_predict_matches_the_unfused_plan():
    """`cnnc predict`'s path (fused, batchnorm folded, planned arena) gives the plan's outputs."""
    from cnnc.runtime.predict import fused_predict
    c = compile_file(EXAMPLES / "cifar_resnet20.cnn")
    plan = Plan(c.net, c.analysis.params, seed=0)
    rng = np.random.default_rng(3)
    for key, v in plan.params.items():             # statistics away from 0/1, so that folding matters
        if key.endswith(("running_mean", "bias")):
            v[...] = rng.normal(0, 0.1, v.shape)
        elif key.endswith("running_var"):
            v[...] = rng.uniform(0.5, 2.0, v.shape)
    x = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)
    ref = plan.predict(x)
    got = fused_predict(plan, x, batch=2)          # batches of 2, 2, 1: the arena is re-sized
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert fused_predict(plan, x[:0]).shape == (0, 10)
