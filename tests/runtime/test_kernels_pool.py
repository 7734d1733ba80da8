"""Kernel tests for the pooling and resampling ops: naive loops, finite differences, PyTorch."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cnnc.runtime.kernels import KERNELS, Context, MaxPoolIndices


import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)


# ---------------------------------------------------------------- references

def _window_rows(i, s, lo, k, d, size):
    """In-bounds input indices of window i along one axis."""
    return [i * s - lo + t * d for t in range(k) if 0 <= i * s - lo + t * d < size]


def naive_maxpool(x, kernel, stride, padding, dilation, ceil_mode):
    """(y, argmax (row, col) of the first maximum per window) straight from the definition."""
    n, c, h, w = x.shape
    oh = H.ref_out_size(h, kernel[0], stride[0], dilation[0], *padding[0], ceil_mode)
    ow = H.ref_out_size(w, kernel[1], stride[1], dilation[1], *padding[1], ceil_mode)
    y, arg = np.full((n, c, oh, ow), -np.inf), np.zeros((n, c, oh, ow, 2), int)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    for r in _window_rows(i, stride[0], padding[0][0], kernel[0], dilation[0], h):
                        for q in _window_rows(j, stride[1], padding[1][0], kernel[1], dilation[1], w):
                            if x[b, ch, r, q] > y[b, ch, i, j]:
                                y[b, ch, i, j], arg[b, ch, i, j] = x[b, ch, r, q], (r, q)
    return y, arg


def naive_avgpool(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's avg_pool2d: the divisor counts padding (not the ceil overhang) if asked."""
    n, c, h, w = x.shape
    (pt, pb), (pl, pr) = padding
    oh = H.ref_out_size(h, kernel[0], stride[0], 1, pt, pb, ceil_mode)
    ow = H.ref_out_size(w, kernel[1], stride[1], 1, pl, pr, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * stride[0] - pt, j * stride[1] - pl
            h1, w1 = min(h0 + kernel[0], h + pb), min(w0 + kernel[1], w + pr)
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            div = size if count_include_pad else (h1 - h0) * (w1 - w0)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
    return y


def naive_lppool(x, p, kernel, stride, ceil_mode):
    n, c, h, w = x.shape
    oh = H.ref_out_size(h, kernel[0], stride[0], 1, 0, 0, ceil_mode)
    ow = H.ref_out_size(w, kernel[1], stride[1], 1, 0, 0, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride[0]:i * stride[0] + kernel[0], j * stride[1]:j * stride[1] + kernel[1]]
            y[:, :, i, j] = (patch ** p).sum(axis=(2, 3)) ** (1 / p)
    return y


def naive_adaptive(x, out, reduce=np.mean):
    n, c, h, w = x.shape
    y = np.zeros((n, c, *out))
    for i in range(out[0]):
        for j in range(out[1]):
            r0, r1 = math.floor(i * h / out[0]), math.ceil((i + 1) * h / out[0])
            c0, c1 = math.floor(j * w / out[1]), math.ceil((j + 1) * w / out[1])
            y[:, :, i, j] = reduce(x[:, :, r0:r1, c0:c1], axis=(2, 3))
    return y


def naive_upsample(x, scale, mode):
    n, c, h, w = x.shape
    y = np.zeros((n, c, h * scale[0], w * scale[1]))

    def source(d, s, size):
        src = max((d + 0.5) / s - 0.5, 0.0)
        i0 = math.floor(src)
        return i0, min(i0 + 1, size - 1), src - i0
    for i in range(h * scale[0]):
        for j in range(w * scale[1]):
            if mode == "nearest":
                y[:, :, i, j] = x[:, :, i // scale[0], j // scale[1]]
                continue
            r0, r1, a = source(i, scale[0], h)
            c0, c1, b = source(j, scale[1], w)
            y[:, :, i, j] = ((1 - a) * (1 - b) * x[:, :, r0, c0] + (1 - a) * b * x[:, :, r0, c1]
                             + a * (1 - b) * x[:, :, r1, c0] + a * b * x[:, :, r1, c1])
    return y


# ---------------------------------------------------------------- attributes

def _covers(size, k, s, d, lo, hi, ceil_mode):
    """Every window holds at least one input element (as PyTorch's constraints guarantee)."""
    n = H.ref_out_size(size, k, s, d, lo, hi, ceil_mode)
    return n >= 1 and all(_window_rows(i, s, lo, k, d, size) for i in range(n))


def pool_case(seed: int, dilated: bool = True, padded: bool = True, overlap: bool = True):
    rng = np.random.default_rng(seed)
    while True:
        kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
        stride = tuple(int(rng.integers(1, 4)) if overlap else k + int(rng.integers(0, 2)) for k in kernel)
        dilation = tuple(int(d) for d in rng.integers(1, 3, 2)) if dilated else (1, 1)
        padding = tuple((int(rng.integers(0, k // 2 + 1)), int(rng.integers(0, k // 2 + 1))) if padded else (0, 0)
                        for k in kernel)
        ceil_mode = bool(rng.integers(0, 2))
        hw = tuple(int(dilation[a] * (kernel[a] - 1) + 1 + rng.integers(0, 5)) for a in (0, 1))
        if all(_covers(hw[a], kernel[a], stride[a], dilation[a], *padding[a], ceil_mode) for a in (0, 1)):
            return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=ceil_mode), (2, 3, *hw), rng


def _distinct(rng, shape):
    return H.spread_values(rng, shape)


# ---------------------------------------------------------------- maxpool

@pytest.mark.parametrize("seed", range(12))
def test_maxpool_forward_and_argmax_match_naive(seed):
    attrs, shape, rng = pool_case(seed)
    x = rng.standard_normal(shape)
    x[0, 0] = 0.0                                    # ties: the first maximum must win
    for training in (False, True):
        ctx = Context(training=training, node="pool")
        y, _ = H.run("maxpool", [x], {}, attrs, ctx)
        ref, arg = naive_maxpool(x, attrs["kernel"], attrs["stride"], attrs["padding"],
                                 attrs["dilation"], attrs["ceil_mode"])
        H.assert_close(y, ref, 0, "maxpool")
        rec = ctx.saved["pool"]
        assert isinstance(rec, MaxPoolIndices) and rec.in_shape == x.shape
        # Decode the stored kernel offsets to input coordinates.
        ki, kj = np.divmod(rec.argmax(), attrs["kernel"][1])
        oh, ow = y.shape[2:]
        rows = np.arange(oh)[:, None] * attrs["stride"][0] - attrs["padding"][0][0] + ki * attrs["dilation"][0]
        cols = np.arange(ow)[None, :] * attrs["stride"][1] - attrs["padding"][1][0] + kj * attrs["dilation"][1]
        np.testing.assert_array_equal(rows, arg[..., 0])
        np.testing.assert_array_equal(cols, arg[..., 1])


@pytest.mark.parametrize("seed", range(12))
def test_maxpool_gradients_match_finite_differences(seed):
    attrs, shape, rng = pool_case(seed)
    H.check_grads("maxpool", [_distinct(rng, shape)], {}, attrs, make_ctx=H.ctx_factory(training=bool(seed % 2)))


def test_maxpool_tie_gradient_goes_to_first_maximum_only():
    x = np.zeros((1, 1, 4, 4))
    attrs = dict(kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1), ceil_mode=False)
    y, cache = H.run("maxpool", [x], {}, attrs, Context(training=True))
    (dx,), _ = KERNELS["maxpool"].backward(np.ones_like(y), cache)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


# ---------------------------------------------------------------- avgpool

def avg_case(seed):
    attrs, shape, rng = pool_case(seed + 50, dilated=False)
    del attrs["dilation"]
    attrs["count_include_pad"] = bool(seed % 2)
    return attrs, rng.standard_normal(shape)


@pytest.mark.parametrize("seed", range(10))
def test_avgpool_forward_matches_naive(seed):
    attrs, x = avg_case(seed)
    y, _ = H.run("avgpool", [x], {}, attrs)
    ref = naive_avgpool(x, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["ceil_mode"],
                        attrs["count_include_pad"])
    H.assert_close(y, ref, 1e-12, "avgpool")


@pytest.mark.parametrize("seed", range(10))
def test_avgpool_gradients_match_finite_differences(seed):
    attrs, x = avg_case(seed)
    H.check_grads("avgpool", [x], {}, attrs, seed=seed)


# ---------------------------------------------------------------- lppool

def lp_case(seed):
    attrs, shape, rng = pool_case(seed + 80, dilated=False, padded=False)
    p = [2.0, 1.0, 3.0, 1.5][seed % 4]
    lp = dict(p=p, kernel=attrs["kernel"], stride=attrs["stride"], ceil_mode=attrs["ceil_mode"])
    return lp, np.abs(rng.standard_normal(shape)) + 0.1


@pytest.mark.parametrize("seed", range(8))
def test_lppool_forward_matches_naive(seed):
    attrs, x = lp_case(seed)
    y, _ = H.run("lppool", [x], {}, attrs)
    H.assert_close(y, naive_lppool(x, attrs["p"], attrs["kernel"], attrs["stride"], attrs["ceil_mode"]),
                   1e-12, "lppool")


@pytest.mark.parametrize("seed", range(8))
def test_lppool_gradients_match_finite_differences(seed):
    attrs, x = lp_case(seed)
    H.check_grads("lppool", [x], {}, attrs, seed=seed)


def test_lppool_p2_accepts_signed_input():
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 4))
    attrs = dict(p=2.0, kernel=(2, 2), stride=(2, 2), ceil_mode=False)
    y, _ = H.run("lppool", [x], {}, attrs)
    H.assert_close(y, naive_lppool(x, 2, (2, 2), (2, 2), False), 1e-12, "lppool p=2")
    H.check_grads("lppool", [x], {}, attrs)


# ------------------------------------------------------- global / adaptive

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1), (2, 1, 3, 1)])
def test_global_pools_forward_and_gradients(shape):
    rng = np.random.default_rng(sum(shape))
    x = _distinct(rng, shape)
    y, _ = H.run("global_avgpool", [x])
    ref = np.array([[[[np.mean([x[n, c, i, j] for i in range(shape[2]) for j in range(shape[3])])]]
                     for c in range(shape[1])] for n in range(shape[0])])
    H.assert_close(y, ref, 1e-12, "global_avgpool")
    y, _ = H.run("global_maxpool", [x])
    ref = np.array([[[[max(x[n, c].ravel())]] for c in range(shape[1])] for n in range(shape[0])])
    H.assert_close(y, ref, 0, "global_maxpool")
    H.check_grads("global_avgpool", [x])
    H.check_grads("global_maxpool", [x])


def adaptive_case(seed):
    rng = np.random.default_rng(seed + 120)
    hw = tuple(int(v) for v in rng.integers(1, 8, 2))
    out = tuple(int(rng.integers(1, 2 * v + 1)) for v in hw)     # shrink and grow
    return dict(output=out), rng.standard_normal((2, 2, *hw))


@pytest.mark.parametrize("seed", range(8))
def test_adaptive_avgpool_forward_and_gradients(seed):
    attrs, x = adaptive_case(seed)
    y, _ = H.run("adaptive_avgpool", [x], {}, attrs)
    H.assert_close(y, naive_adaptive(x, attrs["output"]), 1e-12, "adaptive_avgpool")
    H.check_grads("adaptive_avgpool", [x], {}, attrs, seed=seed)


@pytest.mark.parametrize("seed", range(8))
def test_adaptive_maxpool_forward_and_gradients(seed):
    """Bins that overlap (the sizes do not divide) send each bin's gradient to its own maximum, summed
    where one element is the maximum of two bins; distinct values keep finite differences away from ties."""
    attrs, x = adaptive_case(seed)
    x = _distinct(np.random.default_rng(seed), x.shape)
    y, _ = H.run("adaptive_maxpool", [x], {}, attrs)
    H.assert_close(y, naive_adaptive(x, attrs["output"], np.max), 0, "adaptive_maxpool")
    H.check_grads("adaptive_maxpool", [x], {}, attrs, seed=seed)


# ---------------------------------------------------------------- upsample

def upsample_case(seed):
    rng = np.random.default_rng(seed + 140)
    attrs = dict(scale=tuple(int(s) for s in rng.integers(1, 4, 2)), mode=["nearest", "bilinear"][seed % 2])
    return attrs, rng.standard_normal((2, 2, *(int(v) for v in rng.integers(1, 5, 2))))


@pytest.mark.parametrize("seed", range(8))
def test_upsample_forward_and_gradients(seed):
    attrs, x = upsample_case(seed)
    y, _ = H.run("upsample", [x], {}, attrs)
    H.assert_close(y, naive_upsample(x, attrs["scale"], attrs["mode"]), 1e-12, "upsample")
    H.check_grads("upsample", [x], {}, attrs, seed=seed)


# ---------------------------------------------------------------- unpool

def _pooled(seed, training, overlap=True):
    attrs, shape, rng = pool_case(seed + 160, overlap=overlap, dilated=overlap)
    xin = rng.standard_normal(shape)
    ctx = Context(training=training, node="pool")
    y, _ = H.run("maxpool", [xin], {}, attrs, ctx)
    return attrs, xin, y, ctx.saved, rng


@pytest.mark.parametrize("seed", range(8))
def test_unpool_forward_matches_naive_and_gradients(seed):
    attrs, xin, y, saved, rng = _pooled(seed, training=bool(seed % 2))
    x = rng.standard_normal(y.shape)
    out, _ = H.run("unpool", [x], {}, {"of": "pool"}, Context(saved=saved))
    assert out.shape == xin.shape
    _, arg = naive_maxpool(xin, attrs["kernel"], attrs["stride"], attrs["padding"],
                           attrs["dilation"], attrs["ceil_mode"])
    ref = np.zeros(xin.shape)
    for n, c, i, j in np.ndindex(y.shape):
        ref[n, c, arg[n, c, i, j, 0], arg[n, c, i, j, 1]] += x[n, c, i, j]   # scatter-add
    H.assert_close(out, ref, 1e-12, "unpool")
    H.check_grads("unpool", [x], {}, {"of": "pool"}, make_ctx=H.ctx_factory(saved=saved), seed=seed)


def test_unpool_rejects_a_mismatched_input():
    _, _, y, saved, _ = _pooled(0, training=False)
    with pytest.raises(ValueError):
        H.run("unpool", [np.zeros((y.shape[0], y.shape[1], y.shape[2] + 1, y.shape[3]))], {}, {"of": "pool"},
              Context(saved=saved))


# ---------------------------------------------------------------- torch oracle

def _sym(padding):
    return padding[0][0] == padding[0][1] and padding[1][0] == padding[1][1]


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(12))
def test_maxpool_matches_torch(seed):
    torch = pytest.importorskip("torch")
    attrs, shape, rng = pool_case(seed + 200)
    (pt, pb), (pl, pr) = attrs["padding"]
    if not _sym(attrs["padding"]) and attrs["ceil_mode"]:
        attrs["padding"] = ((pt, pt), (pl, pl))        # torch has no asymmetric ceil-mode rule

    def fn(x):
        (pt, pb), (pl, pr) = attrs["padding"]
        if _sym(attrs["padding"]):
            return torch.nn.functional.max_pool2d(x, attrs["kernel"], attrs["stride"], (pt, pl),
                                                  attrs["dilation"], attrs["ceil_mode"])
        x = torch.nn.functional.pad(x, (pl, pr, pt, pb), value=-math.inf)
        return torch.nn.functional.max_pool2d(x, attrs["kernel"], attrs["stride"], 0, attrs["dilation"])
    if not all(_covers(shape[2 + a], attrs["kernel"][a], attrs["stride"][a], attrs["dilation"][a],
                       *attrs["padding"][a], attrs["ceil_mode"]) for a in (0, 1)):
        pytest.skip("symmetrised padding leaves an empty window")
    H.torch_compare("maxpool", [_distinct(rng, shape)], {}, attrs, fn,
                    make_ctx=H.ctx_factory(training=True), seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(10))
def test_avgpool_matches_torch(seed):
    torch = pytest.importorskip("torch")
    attrs, x = avg_case(seed + 20)
    (pt, _), (pl, _) = attrs["padding"]
    attrs["padding"] = ((pt, pt), (pl, pl))
    if not all(_covers(x.shape[2 + a], attrs["kernel"][a], attrs["stride"][a], 1, *attrs["padding"][a],
                       attrs["ceil_mode"]) for a in (0, 1)):
        pytest.skip("symmetrised padding leaves an empty window")

    def fn(x):
        return torch.nn.functional.avg_pool2d(x, attrs["kernel"], attrs["stride"], (pt, pl),
                                              attrs["ceil_mode"], attrs["count_include_pad"])
    H.torch_compare("avgpool", [x], {}, attrs, fn, seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(8))
def test_lppool_matches_torch(seed):
    torch = pytest.importorskip("torch")
    attrs, x = lp_case(seed + 10)
    # PyTorch rescales ceil-mode partial windows by kernel area / elements present,
    # which the contract's (Σ x^p)^(1/p) does not: compare on full windows only.
    attrs["ceil_mode"] = False

    def fn(x):
        return torch.nn.functional.lp_pool2d(x, attrs["p"], attrs["kernel"], attrs["stride"])
    H.torch_compare("lppool", [x], {}, attrs, fn, seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(4))
def test_global_and_adaptive_pools_match_torch(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    attrs, x = adaptive_case(seed + 30)
    H.torch_compare("adaptive_avgpool", [x], {}, attrs, lambda t: F.adaptive_avg_pool2d(t, attrs["output"]),
                    seed=seed)
    H.torch_compare("global_avgpool", [x], {}, {}, lambda t: t.mean(dim=(2, 3), keepdim=True), seed=seed)
    xd = _distinct(np.random.default_rng(seed), x.shape)
    H.torch_compare("global_maxpool", [xd], {}, {}, lambda t: F.adaptive_max_pool2d(t, 1), seed=seed)
    H.torch_compare("adaptive_maxpool", [xd], {}, attrs, lambda t: F.adaptive_max_pool2d(t, attrs["output"]),
                    seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(8))
def test_upsample_matches_torch(seed):
    torch = pytest.importorskip("torch")
    attrs, x = upsample_case(seed + 40)
    kwargs = {} if attrs["mode"] == "nearest" else {"align_corners": False}

    def fn(t):
        return torch.nn.functional.interpolate(t, scale_factor=attrs["scale"], mode=attrs["mode"], **kwargs)
    H.torch_compare("upsample", [x], {}, attrs, fn, seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(6))
def test_unpool_matches_torch_max_unpool_on_disjoint_windows(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    attrs, xin, y, saved, rng = _pooled(seed + 7, training=False, overlap=False)
    (pt, _), (pl, _) = attrs["padding"]
    attrs["padding"] = ((pt, pt), (pl, pl))
    ctx = Context(node="pool")
    y, _ = H.run("maxpool", [xin.astype(np.float32)], {}, attrs, ctx)
    _, idx = F.max_pool2d(torch.tensor(xin, dtype=torch.float32), attrs["kernel"], attrs["stride"], (pt, pl),
                          ceil_mode=attrs["ceil_mode"], return_indices=True)
    x = rng.standard_normal(y.shape)

    def fn(t):
        return F.max_unpool2d(t, idx, attrs["kernel"], attrs["stride"], (pt, pl), output_size=xin.shape[2:])
    H.torch_compare("unpool", [x], {}, {"of": "pool"}, fn, make_ctx=H.ctx_factory(saved=ctx.saved), seed=seed)


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_pool_gradient_keeps_a_channels_last_input_layout(op):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 6))
    x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    attrs = dict(kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), ceil_mode=False)
    if op == "maxpool":
        attrs["dilation"] = (1, 1)
    for inp, channel_stride in ((x, 36 * 8), (x_cl, 8)):
        y, cache = H.run(op, [inp], {}, attrs, Context(training=True))
        (dx,), _ = KERNELS[op].backward(np.ones_like(y), cache)
        assert dx.strides[1] == channel_stride            # channels adjacent in memory iff they were
        ref, _ = H.run(op, [x], {}, attrs, Context(training=True))
        np.testing.assert_array_equal(y, ref)


# ------------------------------------------------ upsample to a size or like a tensor

def naive_resize(x, size, mode, align_corners):
    """PyTorch's interpolate to `size`, written per output pixel from its documented coordinate rules."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, *size))

    def source(d, n_in, n_out):
        if mode == "nearest":
            return min(math.floor(d * n_in / n_out), n_in - 1), None, 0.0
        if align_corners:
            src = d * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), src - i0
    for i in range(size[0]):
        for j in range(size[1]):
            r0, r1, a = source(i, h, size[0])
            c0, c1, b = source(j, w, size[1])
            if mode == "nearest":
                y[:, :, i, j] = x[:, :, r0, c0]
                continue
            y[:, :, i, j] = ((1 - a) * (1 - b) * x[:, :, r0, c0] + (1 - a) * b * x[:, :, r0, c1]
                             + a * (1 - b) * x[:, :, r1, c0] + a * b * x[:, :, r1, c1])
    return y


RESIZE_CASES = [((3, 4), (7, 5), "nearest", False), ((5, 5), (3, 8), "nearest", False),
                ((3, 4), (7, 5), "bilinear", False), ((6, 2), (4, 9), "bilinear", False),
                ((3, 4), (7, 5), "bilinear", True), ((1, 4), (3, 1), "bilinear", True),
                ((1, 1), (4, 6), "bilinear", False), ((4, 4), (8, 8), "bilinear", True)]


@pytest.mark.parametrize("insize, size, mode, corners", RESIZE_CASES)
@pytest.mark.parametrize("form", ["size", "like"])
def test_upsample_to_a_size_forward_and_gradients(insize, size, mode, corners, form):
    x = np.random.default_rng(7).standard_normal((2, 2, *insize))
    attrs = {"scale": None, "size": size if form == "size" else None, "mode": mode, "align_corners": corners}
    xs = [x] if form == "size" else [x, np.zeros((1, 3, *size))]
    y, _ = H.run("upsample", xs, {}, attrs)
    H.assert_close(y, naive_resize(x, size, mode, corners), 1e-12, "upsample to a size")
    H.check_grads("upsample", xs, {}, attrs, no_grad_inputs=(1,) if form == "like" else ())


@pytest.mark.torch
@pytest.mark.parametrize("insize, size, mode, corners", RESIZE_CASES)
def test_upsample_to_a_size_matches_torch(insize, size, mode, corners):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(8).standard_normal((2, 3, *insize))
    attrs = {"scale": None, "size": size, "mode": mode, "align_corners": corners}
    kwargs = {"align_corners": corners} if mode == "bilinear" else {}
    H.torch_compare("upsample", [x], {}, attrs,
                    lambda t: torch.nn.functional.interpolate(t, size=size, mode=mode, **kwargs))


@pytest.mark.torch
def test_upsample_by_a_scale_with_aligned_corners_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(9).standard_normal((1, 2, 3, 5))
    attrs = {"scale": (2, 3), "mode": "bilinear", "align_corners": True}
    H.torch_compare("upsample", [x], {}, attrs, lambda t: torch.nn.functional.interpolate(
        t, scale_factor=(2, 3), mode="bilinear", align_corners=True))
