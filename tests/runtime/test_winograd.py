"""Winograd F(2×2, 3×3) (runtime/kernels/winograd.py): the same convolution as a float64 direct
reference, float32 error of the im2col conv's order, and only for weights that cannot change."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from cnnc.runtime.kernels import conv as conv_kernels
from cnnc.runtime.kernels import winograd
from cnnc.runtime.kernels._im2col import Window


def direct_conv(x: np.ndarray, w: np.ndarray, padding) -> np.ndarray:
    """Naive float64 cross-correlation, stride 1: [N, C, H, W] * [O, C, 3, 3] -> [N, O, oh, ow]."""
    (t, b), (l, r) = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (l, r)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j].astype(np.float64))
    return y


def plan_of(n, c, o, hw, padding) -> conv_kernels.ConvPlan:
    return conv_kernels.ConvPlan(Window.of(hw, (3, 3), (1, 1), padding), n, c, o, 1)


@pytest.mark.parametrize("n, c, o, hw, padding", [
    (2, 8, 5, (9, 7), ((1, 1), (1, 1))),      # odd output: the last tile row and column are cropped
    (3, 4, 6, (8, 8), ((0, 0), (0, 0))),      # valid
    (1, 3, 2, (6, 5), ((0, 2), (1, 0))),      # uneven padding
    (5, 16, 16, (4, 4), ((1, 1), (1, 1))),    # several chunks of samples
])
def test_forward_matches_float64_direct_conv(n, c, o, hw, padding, monkeypatch):
    # Transformed tiles per sample: 16 positions x tiles x C floats (4 bytes). Two samples of the
    # last case (2x2 tiles, 16 channels: 4 KiB each) per chunk, so its 5 samples take 3 chunks.
    monkeypatch.setattr(winograd, "_CHUNK_BYTES", 2 * 16 * 2 * 2 * 16 * 4)
    chunks = []
    real = winograd._tiles_view
    monkeypatch.setattr(winograd, "_tiles_view", lambda *a: chunks.append(1) or real(*a))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, *hw)).astype(np.float32)
    w = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    plan = plan_of(n, c, o, hw, padding)
    ref = direct_conv(x, w, padding) + bias.reshape(1, -1, 1, 1)
    y = winograd.forward(x, w, plan, bias)
    assert c != 16 or len(chunks) == 3
    assert y.shape == ref.shape == (n, o, *plan.win.out_hw) and y.dtype == np.float32
    scale = np.abs(ref).max()
    assert np.abs(y - ref).max() / scale < 2e-6
    # Its float32 error is of the order of the im2col conv's (both against float64).
    im2col = conv_kernels.chunked_forward(x, w, plan, bias)
    assert np.abs(y - ref).max() <= 3 * np.abs(im2col - ref).max() + 1e-7 * scale


def test_kernel_transform_is_g_g_gt():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 2, 3, 3))
    u = winograd.kernel_transform(w)
    g = winograd._G
    for o in range(3):
        for c in range(2):
            np.testing.assert_allclose(u[:, c, o].reshape(4, 4), g @ w[o, c] @ g.T, rtol=1e-12, atol=1e-12)


def test_only_immutable_weights_take_the_path():
    plan = plan_of(8, 128, 128, (16, 16), ((1, 1), (1, 1)))
    assert winograd.eligible(plan)
    w = np.zeros((128, 128, 3, 3), np.float32)
    assert not winograd.applies(plan, w)                 # a trainable weight changes in place
    view = w.transpose(0, 2, 3, 1).transpose(0, 3, 1, 2)
    view.flags.writeable = False
    assert not winograd.applies(plan, view)              # read-only view of a writable array
    w.flags.writeable = False
    assert winograd.applies(plan, w) and winograd.applies(plan, w[:])
    narrow = plan_of(8, 32, 32, (16, 16), ((1, 1), (1, 1)))
    strided = conv_kernels.ConvPlan(Window.of((16, 16), (3, 3), (2, 2), ((1, 1), (1, 1))), 8, 128, 128, 1)
    few_tiles = plan_of(1, 256, 256, (14, 14), ((1, 1), (1, 1)))
    assert not any(winograd.eligible(p) for p in (narrow, strided, few_tiles))


def test_kept_transform_lives_as_long_as_its_weights():
    w = np.random.default_rng(2).standard_normal((4, 4, 3, 3)).astype(np.float32)
    w.flags.writeable = False
    before = len(winograd._KEPT)
    u = winograd.kept_kernel_transform(w)
    assert winograd.kept_kernel_transform(w) is u and len(winograd._KEPT) == before + 1
    del w
    gc.collect()
    assert len(winograd._KEPT) == before


def test_conv_kernel_uses_it_for_folded_inference_weights(tmp_path):
    """The fused eval graph's folded weights are read-only, so a wide 3x3 conv runs Winograd there;
    its output equals the unfused plan's in eval mode."""
    from cnnc.compiler.driver import compile_file
    from cnnc.runtime.fused import FusedPlan
    from cnnc.runtime.plan import Plan
    src = tmp_path / "wide.cnn"
    src.write_text("network Wide {\n    input x: [128, 12, 12]\n"
                   "    x -> conv(128, 3, pad = 1, bias = false) -> batchnorm -> relu -> global_avgpool\n}\n")
    c = compile_file(src)
    plan = Plan(c.net, c.analysis.params, seed=0)
    rng = np.random.default_rng(3)
    for key, value in plan.params.items():
        if "running_var" in key:
            value[...] = rng.uniform(0.5, 2.0, value.shape)
        elif "running_mean" in key or key.endswith(".bias"):
            value[...] = rng.normal(0, 0.1, value.shape)
    fused = FusedPlan.from_plan(plan)
    conv_step = next(s for s in fused.steps if s.op == "fused_conv")
    weight = fused.params[dict(conv_step.params)["weight"]]
    assert winograd.immutable(weight)
    x = rng.standard_normal((4, 128, 12, 12)).astype(np.float32)
    calls = []
    real = winograd.forward
    try:
        winograd.forward = lambda *a, **kw: calls.append(1) or real(*a, **kw)
        ours = fused.forward(x)[0][fused.outputs[0]]
    finally:
        winograd.forward = real
    assert calls, "the folded wide conv did not take the Winograd path"
    expected = plan.forward(x)[0][plan.outputs[0]]
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw", [(8, 6), (7, 9)])
def test_forward_into_rows_equals_a_fresh_output(hw):
    """With `out` (the arena's rows) the result is written there, cropped when the output size is odd."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, *hw)).astype(np.float32)
    w = rng.standard_normal((5, 8, 3, 3)).astype(np.float32)
    plan = plan_of(2, 8, 5, hw, ((1, 1), (1, 1)))
    rows = np.full((2 * hw[0] * hw[1], 5), np.nan, np.float32)
    y = winograd.forward(x, w, plan, np.ones(5, np.float32), out=rows)
    assert np.shares_memory(y, rows) and not np.isnan(rows).any()
    np.testing.assert_array_equal(y, winograd.forward(x, w, plan, np.ones(5, np.float32)))
