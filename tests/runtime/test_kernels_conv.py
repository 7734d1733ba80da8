"""Kernel tests for conv, deconv, local and linear: naive loops, finite differences, PyTorch."""
from __future__ import annotations


import numpy as np
import pytest

from cnnc.runtime.kernels import KERNELS, Context, conv as conv_module
from cnnc.runtime.kernels._im2col import Window


import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)


@pytest.fixture(params=["channels_first", "channels_last"])
def layout(request, monkeypatch):
    """Run a test under both im2col layouts (the threshold decides which one a shape takes)."""
    monkeypatch.setattr(conv_module, "_CHANNELS_LAST_MIN", 10**9 if request.param == "channels_first" else 1)
    return request.param


# ---------------------------------------------------------------- references

def naive_conv(x, w, b, stride, padding, dilation, groups):
    """Direct definition: one output element at a time, zero padding by bounds checks."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = stride, padding, dilation
    oh = H.ref_out_size(h, kh, sh, dh, pt, pb)
    ow = H.ref_out_size(wd, kw, sw, dw, pl, pr)
    y = np.zeros((n, o, oh, ow))
    for b_ in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else b[oc]
                    for ki in range(kh):
                        for kj in range(kw):
                            r, col = i * sh - pt + ki * dh, j * sw - pl + kj * dw
                            if 0 <= r < h and 0 <= col < wd:
                                acc += x[b_, g * cg:(g + 1) * cg, r, col] @ w[oc, :, ki, kj]
                    y[b_, oc, i, j] = acc
    return y


def naive_deconv(x, w, b, stride, padding, output_padding, dilation, groups):
    """Direct definition: scatter every input element times the kernel, then cut the padding."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // groups
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw), (oph, opw) = stride, padding, dilation, output_padding
    fh, fw = (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, og * groups, fh, fw))
    for b_ in range(n):
        for ci in range(c):
            g = ci // cg
            for i in range(h):
                for j in range(wd):
                    for ki in range(kh):
                        for kj in range(kw):
                            full[b_, g * og:(g + 1) * og, i * sh + ki * dh, j * sw + kj * dw] += \
                                x[b_, ci, i, j] * w[ci, :, ki, kj]
    y = full[:, :, pt:fh - pb, pl:fw - pr]
    return y if b is None else y + b[:, None, None]


def naive_local(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    o, th, tw, _, kh, kw = w.shape
    (sh, sw), ((pt, pb), (pl, pr)) = stride, padding
    oh, ow = H.ref_out_size(h, kh, sh, 1, pt, pb), H.ref_out_size(wd, kw, sw, 1, pl, pr)
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            wt = w[:, i % th, j % tw]                       # [O, C, kh, kw]
            for b_ in range(n):
                acc = np.zeros(o) if b is None else b[:, i % th, j % tw].copy()
                for ki in range(kh):
                    for kj in range(kw):
                        r, col = i * sh - pt + ki, j * sw - pl + kj
                        if 0 <= r < h and 0 <= col < wd:
                            acc += wt[:, :, ki, kj] @ x[b_, :, r, col]
                y[b_, :, i, j] = acc
    return y


# ---------------------------------------------------------------- attributes

# (groups, channels per group, outputs per group): plain, wide, grouped, depthwise (incl. multiplier).
_GROUPINGS = [(1, 1, 3), (1, 5, 2), (2, 4, 3), (2, 2, 2), (3, 1, 1), (4, 1, 2), (1, 3, 4), (3, 4, 1)]


def conv_case(seed: int):
    rng = np.random.default_rng(seed)
    groups, cg, og = _GROUPINGS[seed % len(_GROUPINGS)]
    kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
    padding = tuple(tuple(int(p) for p in rng.integers(0, 3, 2)) for _ in range(2))
    span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    hw = [max(1, span[a] - sum(padding[a]) + int(rng.integers(0, 4))) for a in (0, 1)]
    attrs = dict(out_channels=groups * og, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation, groups=groups, bias=bool(seed % 3), trainable=True, weights=None)
    x = rng.standard_normal((2, groups * cg, *hw))
    params = {"weight": rng.standard_normal((groups * og, cg, *kernel))}
    if attrs["bias"]:
        params["bias"] = rng.standard_normal(groups * og)
    return x, params, attrs


def deconv_case(seed: int):
    rng = np.random.default_rng(seed + 100)
    groups, cg, og = _GROUPINGS[seed % len(_GROUPINGS)]
    kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
    hw = tuple(int(v) for v in rng.integers(2, 5, 2))
    full = [(hw[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    padding = tuple(tuple(int(p) for p in rng.integers(0, max(1, (full[a] - 1) // 2), 2)) for a in (0, 1))
    output_padding = tuple(int(rng.integers(0, max(stride[a], dilation[a]))) for a in (0, 1))
    attrs = dict(out_channels=groups * og, kernel=kernel, stride=stride, padding=padding,
                 output_padding=output_padding, dilation=dilation, groups=groups,
                 bias=bool(seed % 2), trainable=True)
    x = rng.standard_normal((2, groups * cg, *hw))
    params = {"weight": rng.standard_normal((groups * cg, og, *kernel))}
    if attrs["bias"]:
        params["bias"] = rng.standard_normal(groups * og)
    return x, params, attrs


def local_case(seed: int, unshared: bool):
    rng = np.random.default_rng(seed + 200)
    c, o = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    padding = tuple(tuple(int(p) for p in rng.integers(0, 2, 2)) for _ in range(2))
    hw = tuple(int(kernel[a] + rng.integers(0, 4)) for a in (0, 1))
    out = [H.ref_out_size(hw[a], kernel[a], stride[a], 1, *padding[a]) for a in (0, 1)]
    tile = tuple(out) if unshared else tuple(int(rng.integers(1, out[a] + 1)) for a in (0, 1))
    attrs = dict(out_channels=o, kernel=kernel, stride=stride, padding=padding, tile=tile, bias=bool(seed % 2))
    x = rng.standard_normal((2, c, *hw))
    params = {"weight": rng.standard_normal((o, *tile, c, *kernel))}
    if attrs["bias"]:
        params["bias"] = rng.standard_normal((o, *tile))
    return x, params, attrs


def _wrt(params):
    return sorted(params)


# ---------------------------------------------------------------- conv

@pytest.mark.parametrize("seed", range(10))
def test_conv_forward_matches_naive(seed, layout):
    x, params, attrs = conv_case(seed)
    y, _ = H.run("conv", [x], params, attrs)
    ref = naive_conv(x, params["weight"], params.get("bias"), attrs["stride"], attrs["padding"],
                     attrs["dilation"], attrs["groups"])
    H.assert_close(y, ref, 1e-12, "conv")


@pytest.mark.parametrize("seed", range(10))
def test_conv_gradients_match_finite_differences(seed, layout):
    x, params, attrs = conv_case(seed)
    H.check_grads("conv", [x], params, attrs, wrt_params=_wrt(params), seed=seed)


def test_conv_first_layer_skips_input_gradient_and_frozen_skips_weight():
    x, params, attrs = conv_case(1)
    y, cache = H.run("conv", [x], params, attrs, Context(need_input_grad=False))
    (dx,), grads = KERNELS["conv"].backward(np.ones_like(y), cache)
    assert dx is None and set(grads) == set(params)
    y, cache = H.run("conv", [x], params, {**attrs, "trainable": False})
    (dx,), grads = KERNELS["conv"].backward(np.ones_like(y), cache)
    assert dx.shape == x.shape and grads == {}


def test_conv_preserves_float32_and_never_writes_its_inputs(layout):
    x, params, attrs = conv_case(2)
    x32, w32 = x.astype(np.float32), {k: v.astype(np.float32) for k, v in params.items()}
    before = (x32.copy(), {k: v.copy() for k, v in w32.items()})
    y, cache = H.run("conv", [x32], w32, attrs)
    (dx,), grads = KERNELS["conv"].backward(np.ones_like(y), cache)
    assert y.dtype == dx.dtype == grads["weight"].dtype == np.float32
    np.testing.assert_array_equal(x32, before[0])
    for k in w32:
        np.testing.assert_array_equal(w32[k], before[1][k])


# ---------------------------------------------------------------- deconv

@pytest.mark.parametrize("seed", range(10))
def test_deconv_forward_matches_naive(seed, layout):
    x, params, attrs = deconv_case(seed)
    y, _ = H.run("deconv", [x], params, attrs)
    ref = naive_deconv(x, params["weight"], params.get("bias"), attrs["stride"], attrs["padding"],
                       attrs["output_padding"], attrs["dilation"], attrs["groups"])
    H.assert_close(y, ref, 1e-12, "deconv")


@pytest.mark.parametrize("seed", range(10))
def test_deconv_gradients_match_finite_differences(seed, layout):
    x, params, attrs = deconv_case(seed)
    H.check_grads("deconv", [x], params, attrs, wrt_params=_wrt(params), seed=seed)


def test_deconv_output_padding_beyond_bottom_padding_is_bias_only():
    # output_padding 1 > bottom padding 0: the last row/column receive no input.
    attrs = dict(out_channels=2, kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)),
                 output_padding=(1, 1), dilation=(1, 1), groups=1, bias=True, trainable=True)
    rng = np.random.default_rng(0)
    params = {"weight": rng.standard_normal((3, 2, 2, 2)), "bias": np.array([1.5, -2.0])}
    y, _ = H.run("deconv", [rng.standard_normal((1, 3, 2, 2))], params, attrs)
    assert y.shape == (1, 2, 5, 5)
    np.testing.assert_array_equal(y[0, :, 4, :], np.repeat(params["bias"][:, None], 5, axis=1))


# ---------------------------------------------------------------- local

@pytest.mark.parametrize("unshared", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_local_forward_matches_naive(seed, unshared):
    x, params, attrs = local_case(seed, unshared)
    y, _ = H.run("local", [x], params, attrs)
    ref = naive_local(x, params["weight"], params.get("bias"), attrs["stride"], attrs["padding"])
    H.assert_close(y, ref, 1e-12, "local")


@pytest.mark.parametrize("unshared", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_local_gradients_match_finite_differences(seed, unshared):
    x, params, attrs = local_case(seed, unshared)
    H.check_grads("local", [x], params, attrs, wrt_params=_wrt(params), seed=seed)


def test_local_with_one_tile_is_a_conv():
    x, params, attrs = conv_case(6)                      # groups 1, 3 -> 4 channels
    attrs = {**attrs, "dilation": (1, 1)}
    y_conv, _ = H.run("conv", [x], params, attrs)
    w = params["weight"][:, None, None]                  # [O, 1, 1, C, kh, kw]
    local_params = {"weight": w}
    if "bias" in params:
        local_params["bias"] = params["bias"][:, None, None]
    local_attrs = {k: attrs[k] for k in ("out_channels", "kernel", "stride", "padding", "bias")}
    y_local, _ = H.run("local", [x], local_params, {**local_attrs, "tile": (1, 1)})
    H.assert_close(y_local, y_conv, 1e-12, "local vs conv")


# ---------------------------------------------------------------- linear

def linear_case(seed: int):
    rng = np.random.default_rng(seed + 300)
    f, o = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    attrs = dict(out_features=o, bias=bool(seed % 2), trainable=True, weights=None)
    params = {"weight": rng.standard_normal((o, f))}
    if attrs["bias"]:
        params["bias"] = rng.standard_normal(o)
    return rng.standard_normal((3, f)), params, attrs


@pytest.mark.parametrize("seed", range(4))
def test_linear_forward_matches_naive(seed):
    x, params, attrs = linear_case(seed)
    y, _ = H.run("linear", [x], params, attrs)
    w, b = params["weight"], params.get("bias")
    ref = np.array([[sum(w[o, f] * x[n, f] for f in range(x.shape[1])) + (0 if b is None else b[o])
                     for o in range(w.shape[0])] for n in range(x.shape[0])])
    H.assert_close(y, ref, 1e-12, "linear")


@pytest.mark.parametrize("seed", range(4))
def test_linear_gradients_match_finite_differences(seed):
    x, params, attrs = linear_case(seed)
    H.check_grads("linear", [x], params, attrs, wrt_params=_wrt(params), seed=seed)


def test_linear_first_layer_and_frozen():
    x, params, attrs = linear_case(1)
    y, cache = H.run("linear", [x], params, {**attrs, "trainable": False}, Context(need_input_grad=False))
    (dx,), grads = KERNELS["linear"].backward(np.ones_like(y), cache)
    assert dx is None and grads == {}


# ---------------------------------------------------------------- torch oracle

@pytest.mark.torch
@pytest.mark.parametrize("seed", range(10))
def test_conv_matches_torch(seed, layout):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, params, attrs = conv_case(seed)
    (pt, pb), (pl, pr) = attrs["padding"]

    def fn(x, weight, bias=None):
        return F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight, bias, attrs["stride"], 0,
                        attrs["dilation"], attrs["groups"])
    H.torch_compare("conv", [x], params, attrs, fn, wrt_params=_wrt(params), seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(10))
def test_deconv_matches_torch(seed, layout):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, params, attrs = deconv_case(seed)
    (pt, pb), (pl, pr) = attrs["padding"]
    oph, opw = attrs["output_padding"]

    def fn(x, weight, bias=None):
        if pt == pb and pl == pr:                        # PyTorch's own padding/output_padding
            return F.conv_transpose2d(x, weight, bias, attrs["stride"], (pt, pl), attrs["output_padding"],
                                      attrs["groups"], attrs["dilation"])
        full = F.conv_transpose2d(x, weight, None, attrs["stride"], 0, 0, attrs["groups"], attrs["dilation"])
        full = F.pad(full, (0, opw, 0, oph))
        y = full[:, :, pt:full.shape[2] - pb, pl:full.shape[3] - pr]
        return y if bias is None else y + bias[:, None, None]
    H.torch_compare("deconv", [x], params, attrs, fn, wrt_params=_wrt(params), seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("unshared", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_local_matches_per_position_torch(seed, unshared):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, params, attrs = local_case(seed, unshared)
    (pt, pb), (pl, pr) = attrs["padding"]
    o, th, tw = params["weight"].shape[:3]

    def fn(x, weight, bias=None):
        y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight[:, 0, 0], None, attrs["stride"])
        rows = []
        for i in range(y.shape[2]):
            cols = []
            for j in range(y.shape[3]):
                # One torch conv per output position with that position's tile of weights.
                win = F.pad(x, (pl, pr, pt, pb))[:, :, i * attrs["stride"][0]:, j * attrs["stride"][1]:]
                out = F.conv2d(win, weight[:, i % th, j % tw])[:, :, 0, 0]
                cols.append(out if bias is None else out + bias[:, i % th, j % tw])
            rows.append(torch.stack(cols, dim=-1))
        return torch.stack(rows, dim=-2)
    H.torch_compare("local", [x], params, attrs, fn, wrt_params=_wrt(params), seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(4))
def test_linear_matches_torch(seed):
    torch = pytest.importorskip("torch")
    x, params, attrs = linear_case(seed)
    H.torch_compare("linear", [x], params, attrs, torch.nn.functional.linear, wrt_params=_wrt(params), seed=seed)


@pytest.mark.parametrize("stride", [1, 2])
def test_wide_stem_takes_the_channels_last_path_and_stays_exact(stride):
    """An ImageNet-like stem (3 -> 64 channels, 5x5 = 75 patch values) runs the channels-last
    im2col (ConvPlan.wide_stem) whatever the few-channel threshold says; forward against the naive
    conv, gradients against finite differences."""
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 3, 7, 6))
    params = {"weight": rng.standard_normal((64, 3, 5, 5)), "bias": rng.standard_normal(64)}
    attrs = dict(out_channels=64, kernel=(5, 5), stride=(stride, stride), padding=((2, 2), (2, 2)),
                 dilation=(1, 1), groups=1, bias=True, trainable=True, weights=None)
    win = Window.of((7, 6), (5, 5), (stride, stride), ((2, 2), (2, 2)))
    assert conv_module.ConvPlan(win, 2, 3, 64, 1).wide_stem
    assert not conv_module.ConvPlan(win, 2, 3, 32, 1).wide_stem       # 32 outputs: channels-first
    y, _ = H.run("conv", [x], params, attrs)
    H.assert_close(y, naive_conv(x, params["weight"], params["bias"], attrs["stride"], attrs["padding"],
                                 (1, 1), 1), 1e-12, "conv")
    H.check_grads("conv", [x], params, attrs, wrt_params=["bias", "weight"], seed=stride)


@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_is_one_gemm_and_exact(bias, monkeypatch):
    """A 1x1 stride-1 unpadded conv on the channels-last path (16 channels) reads its input with no
    im2col (`pointwise`); forward against the naive conv, gradients against finite differences."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 16, 4, 5))
    params = {"weight": rng.standard_normal((24, 16, 1, 1)), **({"bias": rng.standard_normal(24)} if bias else {})}
    attrs = dict(out_channels=24, kernel=(1, 1), stride=(1, 1), padding=((0, 0), (0, 0)),
                 dilation=(1, 1), groups=1, bias=bias, trainable=True, weights=None)
    assert conv_module.pointwise(conv_module.ConvPlan(Window.of((4, 5), (1, 1), (1, 1), ((0, 0), (0, 0))),
                                                      3, 16, 24, 1))
    copies = []
    real = conv_module._Padder
    monkeypatch.setattr(conv_module, "_Padder", lambda *a: copies.append(1) or real(*a))
    y, _ = H.run("conv", [x], params, attrs)
    H.assert_close(y, naive_conv(x, params["weight"], params.get("bias"), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
                   1e-12, "conv")
    H.check_grads("conv", [x], params, attrs, wrt_params=_wrt(params), seed=7)
    assert not copies                                         # no im2col in either direction
