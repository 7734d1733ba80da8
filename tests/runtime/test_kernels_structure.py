"""Kernel tests for flatten, identity, concat, add, mul, pad, crop and the dropouts."""
from __future__ import annotations


import numpy as np
import pytest

from cnnc.runtime.kernels import KERNELS, Context


import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)


# ------------------------------------------------------------ flatten, identity

@pytest.mark.parametrize("shape", [(2, 3, 2, 4), (3, 5), (1, 1, 1, 1)])
def test_flatten_and_identity(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    y, _ = H.run("flatten", [x])
    ref = np.zeros((shape[0], int(np.prod(shape[1:]))))
    for idx in np.ndindex(shape):
        ref[idx[0], np.ravel_multi_index(idx[1:], shape[1:])] = x[idx]
    H.assert_close(y, ref, 0, "flatten")
    y, _ = H.run("identity", [x])
    np.testing.assert_array_equal(y, x)
    H.check_grads("flatten", [x])
    H.check_grads("identity", [x])


# ---------------------------------------------------------------- concat

def concat_case(seed):
    rng = np.random.default_rng(seed)
    n, spatial = 2, [(3, 2), (), (1, 4)][seed % 3]
    return [rng.standard_normal((n, int(c), *spatial)) for c in rng.integers(1, 4, int(rng.integers(1, 4)))]


@pytest.mark.parametrize("seed", range(5))
def test_concat_forward_and_gradients(seed):
    xs = concat_case(seed)
    y, _ = H.run("concat", xs)
    channels = [(i, c) for i, x in enumerate(xs) for c in range(x.shape[1])]
    assert y.shape[1] == len(channels)
    for k, (i, c) in enumerate(channels):
        np.testing.assert_array_equal(y[:, k], xs[i][:, c])
    H.check_grads("concat", xs, seed=seed)


# ---------------------------------------------------------------- add, mul

def broadcast_case(seed):
    """2-4 same-rank inputs; each axis of each input is either full or 1 (batch included)."""
    rng = np.random.default_rng(seed + 10)
    full = [(2, 3, 2, 3), (3, 4), (2, 1, 3, 2)][seed % 3]
    xs = []
    for _ in range(int(rng.integers(2, 5))):
        shape = tuple(1 if rng.random() < 0.4 else s for s in full)
        xs.append(rng.standard_normal(shape))
    xs[int(rng.integers(len(xs)))] = rng.standard_normal(full)      # someone has the full shape
    return xs


def _naive_combine(xs, op):
    shape = tuple(max(x.shape[a] for x in xs) for a in range(xs[0].ndim))
    y = np.zeros(shape)
    for idx in np.ndindex(shape):
        vals = [x[tuple(i if s > 1 else 0 for i, s in zip(idx, x.shape))] for x in xs]
        y[idx] = sum(vals) if op == "add" else np.prod(vals)
    return y


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("seed", range(6))
def test_add_mul_forward_and_gradients(op, seed):
    xs = broadcast_case(seed)
    y, _ = H.run(op, xs)
    H.assert_close(y, _naive_combine(xs, op), 1e-13, op)
    H.check_grads(op, xs, seed=seed)


def test_mul_gradient_with_zeros_and_repeated_input():
    x = np.array([[0.0, 2.0, -1.0]])
    y, cache = H.run("mul", [x, x, x])
    grads, _ = KERNELS["mul"].backward(np.ones_like(y), cache)
    for g in grads:
        np.testing.assert_array_equal(g, x * x)
    with pytest.raises(ValueError):
        H.run("add", [np.ones((2, 3)), np.ones((2, 3, 1, 1))])


def test_add_does_not_write_into_its_inputs():
    xs = [np.ones((2, 3, 2, 2)), np.ones((2, 3, 1, 1)), np.ones((1, 3, 2, 2))]
    copies = [x.copy() for x in xs]
    H.run("add", xs)
    H.run("add", xs[:1])
    for x, c in zip(xs, copies):
        np.testing.assert_array_equal(x, c)


# ---------------------------------------------------------------- pad, crop

def pad_case(seed):
    rng = np.random.default_rng(seed + 20)
    padding = tuple(tuple(int(p) for p in rng.integers(0, 3, 2)) for _ in range(2))
    return rng.standard_normal((2, 2, 3, 2)), {"padding": padding, "value": [0.0, -1.5][seed % 2]}


@pytest.mark.parametrize("seed", range(4))
def test_pad_forward_and_gradients(seed):
    x, attrs = pad_case(seed)
    (t, b), (l, r) = attrs["padding"]
    y, _ = H.run("pad", [x], {}, attrs)
    assert y.shape == (2, 2, 3 + t + b, 2 + l + r)
    for i, j in np.ndindex(y.shape[2:]):
        inside = t <= i < t + 3 and l <= j < l + 2
        np.testing.assert_array_equal(y[:, :, i, j], x[:, :, i - t, j - l] if inside else attrs["value"])
    H.check_grads("pad", [x], {}, attrs, seed=seed)


@pytest.mark.parametrize("big,small", [((5, 6), (3, 3)), ((4, 4), (4, 4)), ((6, 3), (3, 2)), ((2, 7), (1, 2))])
def test_crop_takes_the_centre_and_blocks_the_like_gradient(big, small):
    rng = np.random.default_rng(sum(big))
    x, like = rng.standard_normal((2, 2, *big)), rng.standard_normal((2, 3, *small))
    y, _ = H.run("crop", [x, like])
    top, left = (big[0] - small[0]) // 2, (big[1] - small[1]) // 2
    for i, j in np.ndindex(small):
        np.testing.assert_array_equal(y[:, :, i, j], x[:, :, top + i, left + j])
    H.check_grads("crop", [x, like], no_grad_inputs=[1])


def test_crop_odd_difference_drops_bottom_right():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, _ = H.run("crop", [x, np.zeros((1, 1, 3, 3))])
    np.testing.assert_array_equal(y[0, 0], x[0, 0, :3, :3])


@pytest.mark.parametrize("offset", [(0, 0), (2, 1), (0, 3)])
def test_crop_at_an_offset_takes_that_window(offset):
    """Caffe's crop layer: the window starts at (top, left) = offset (FCN-8s crops its score maps at 31)."""
    rng = np.random.default_rng(sum(offset))
    x, like = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((2, 3, 3, 3))
    y, _ = H.run("crop", [x, like], {}, {"offset": offset})
    top, left = offset
    np.testing.assert_array_equal(y, x[:, :, top:top + 3, left:left + 3])
    H.check_grads("crop", [x, like], {}, {"offset": offset}, no_grad_inputs=[1])


def test_a_crop_offset_past_the_input_is_refused_at_the_offset(error_of):
    err = error_of("network N {\n    input x: [1, 8, 8]\n    a = x -> conv(1, 3)\n"
                   "    x -> crop(like = a, offset = (3, 0))\n}\n")
    assert err.message == "crop: crop at offset (3, 0) to 6x6 runs past the rows of [1, 8, 8]"
    assert err.hint == "the offset may be at most 2 there" and (err.loc.line, err.loc.col) == (4, 34)


# ---------------------------------------------------------------- dropout

@pytest.mark.parametrize("mode", ["upscale_in_train", "downgrade_in_infer"])
def test_dropout_inference_scaling(mode):
    x = np.random.default_rng(0).standard_normal((4, 5))
    y, cache = H.run("dropout", [x], {}, {"p": 0.3, "mode": mode}, Context(training=False))
    scale = 1.0 if mode == "upscale_in_train" else 0.7
    np.testing.assert_allclose(y, x * scale, rtol=1e-15)
    (dx,), _ = KERNELS["dropout"].backward(np.ones_like(y), cache)
    np.testing.assert_allclose(dx, np.full_like(x, scale), rtol=1e-15)
    y, _ = H.run("spatial_dropout", [x], {}, {"p": 0.3}, Context(training=False))
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("mode,p", [("upscale_in_train", 0.3), ("downgrade_in_infer", 0.6), ("upscale_in_train", 0.0)])
def test_dropout_training_mask(mode, p):
    x = np.random.default_rng(1).standard_normal((50, 40, 5)) + 5.0     # never exactly 0
    ctx = Context(training=True, rng=np.random.default_rng(7))
    y, cache = H.run("dropout", [x], {}, {"p": p, "mode": mode}, ctx)
    scale = 1 / (1 - p) if mode == "upscale_in_train" else 1.0
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-15)
    n = x.size                                                 # binomial: 5 sigma
    assert abs(kept.mean() - (1 - p)) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12
    dy = np.random.default_rng(2).standard_normal(y.shape)
    (dx,), _ = KERNELS["dropout"].backward(dy, cache)
    np.testing.assert_allclose(dx, np.where(kept, dy * scale, 0.0), rtol=1e-15)
    # Same rng state, same mask; another seed, another mask.
    y2, _ = H.run("dropout", [x], {}, {"p": p, "mode": mode}, Context(training=True, rng=np.random.default_rng(7)))
    np.testing.assert_array_equal(y, y2)
    if p > 0:
        y3, _ = H.run("dropout", [x], {}, {"p": p, "mode": mode}, Context(training=True, rng=np.random.default_rng(8)))
        assert not np.array_equal(y, y3)


def test_dropout_p1_drops_everything():
    y, _ = H.run("dropout", [np.ones((3, 4))], {}, {"p": 1.0}, Context(training=True))
    assert not y.any() and np.isfinite(y).all()


def test_spatial_dropout_drops_whole_channels():
    x = np.random.default_rng(3).standard_normal((40, 30, 3, 2)) + 5.0
    y, _ = H.run("spatial_dropout", [x], {}, {"p": 0.4}, Context(training=True, rng=np.random.default_rng(1)))
    per_channel = (y != 0).reshape(40, 30, -1)
    assert (per_channel.all(axis=2) | ~per_channel.any(axis=2)).all()
    kept = per_channel.all(axis=2)
    assert abs(kept.mean() - 0.6) <= 5 * np.sqrt(0.24 / kept.size)
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-14)


@pytest.mark.parametrize("op,attrs", [("dropout", {"p": 0.4}), ("dropout", {"p": 0.5, "mode": "downgrade_in_infer"}),
                                      ("spatial_dropout", {"p": 0.5})])
@pytest.mark.parametrize("training", [True, False])
def test_dropout_gradients_match_finite_differences(op, attrs, training):
    x = np.random.default_rng(4).standard_normal((3, 4, 2, 2))
    H.check_grads(op, [x], {}, attrs, make_ctx=H.ctx_factory(training=training, seed=5))


# ---------------------------------------------------------------- torch oracle

@pytest.mark.torch
@pytest.mark.parametrize("seed", range(3))
def test_structure_ops_match_torch(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(seed).standard_normal((2, 3, 4, 2))
    H.torch_compare("flatten", [x], {}, {}, lambda t: torch.flatten(t, 1), seed=seed)
    H.torch_compare("identity", [x], {}, {}, lambda t: t.clone(), seed=seed)
    xs = concat_case(seed)
    H.torch_compare("concat", xs, {}, {}, lambda *ts: torch.cat(ts, dim=1), seed=seed)
    xs = broadcast_case(seed)
    H.torch_compare("add", xs, {}, {}, lambda *ts: sum(ts[1:], ts[0]), seed=seed)
    H.torch_compare("mul", xs, {}, {}, lambda *ts: torch.stack(torch.broadcast_tensors(*ts)).prod(0), seed=seed)
    x, attrs = pad_case(seed)
    (t, b), (l, r) = attrs["padding"]
    H.torch_compare("pad", [x], {}, attrs, lambda u: F.pad(u, (l, r, t, b), value=attrs["value"]), seed=seed)


@pytest.mark.torch
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_inference_matches_torch(p):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(0).standard_normal((3, 4, 2, 2))
    # Training masks are random on both sides; inference is deterministic and must agree.
    H.torch_compare("dropout", [x], {}, {"p": p}, lambda t: F.dropout(t, p, training=False))
    H.torch_compare("spatial_dropout", [x], {}, {"p": p}, lambda t: F.dropout2d(t, p, training=False))
    H.torch_compare("dropout", [x], {}, {"p": p, "mode": "downgrade_in_infer"},
                    lambda t: F.dropout(t, p, training=False) * (1 - p))


# ------------------------------------------------- affine (tensor and number), maximum

@pytest.mark.parametrize("scale, shift", [(0.5, 3.0), (-1.0, 1.0), (1.0, -2.5), (1 / 6, 0.0)])
def test_affine_forward_and_gradients(scale, shift):
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5))
    y, _ = H.run("affine", [x], {}, {"scale": scale, "shift": shift})
    ref = np.array([[[[scale * v + shift for v in row] for row in plane] for plane in s] for s in x])
    H.assert_close(y, ref, 1e-15, "affine")
    H.check_grads("affine", [x], {}, {"scale": scale, "shift": shift})


def test_affine_keeps_float32():
    x = np.ones((1, 2, 2, 2), np.float32)
    y, _ = H.run("affine", [x], {}, {"scale": 0.1, "shift": 3.0})
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.float32(1) * np.float32(0.1) + np.float32(3.0))


def test_maximum_forward_broadcasts_and_routes_gradients():
    rng = np.random.default_rng(4)
    a = H.spread_values(rng, (2, 3, 4, 4))
    b = H.spread_values(rng, (2, 3, 1, 1), low=-0.3)
    c = H.spread_values(rng, (2, 3, 4, 4), low=-0.5, gap=0.013)
    y, _ = H.run("maximum", [a, b, c])
    H.assert_close(y, np.maximum(np.maximum(a, b), c), 0, "maximum")
    H.check_grads("maximum", [a, b, c])


def test_maximum_splits_the_gradient_of_a_tie():
    a = np.array([[[[1.0, 2.0]]]])
    b = np.array([[[[1.0, 0.0]]]])
    _, cache = H.run("maximum", [a, b])
    (da, db), _ = KERNELS["maximum"].backward(np.ones((1, 1, 1, 2)), cache)
    np.testing.assert_array_equal(da, [[[[0.5, 1.0]]]])   # torch.maximum: half to each on a tie
    np.testing.assert_array_equal(db, [[[[0.5, 0.0]]]])


@pytest.mark.torch
def test_affine_and_maximum_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 5))
    H.torch_compare("affine", [x], {}, {"scale": -0.25, "shift": 1.5}, lambda t: 1.5 - t * 0.25)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 1, 1))
    H.torch_compare("maximum", [a, b], {}, {}, lambda s, t: torch.maximum(s, t))
