"""Losses: values and gradients against PyTorch and central finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.train import losses
from cnnc.runtime.train.losses import LOSSES, get_loss, make_loss

RNG = np.random.default_rng(1234)


def _torch():
    return pytest.importorskip("torch")


def finite_difference(fn, pred: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar fn(pred) with respect to every element."""
    grad = np.zeros_like(pred)
    flat, gflat = pred.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = fn(pred)
        flat[i] = keep - eps
        down = fn(pred)
        flat[i] = keep
        gflat[i] = (up - down) / (2 * eps)
    return grad


def _ce_case(n=6, k=5):
    return RNG.standard_normal((n, k)) * 2, RNG.integers(0, k, n)


def _pixel_case(n=2, k=3, h=3, w=4):
    return RNG.standard_normal((n, k, h, w)), RNG.integers(0, k, (n, h, w))


# ---------------------------------------------------------------- finite differences (float64)

FD_CASES = {
    "cross_entropy": lambda: (*_ce_case(), {}),
    "cross_entropy_smooth": lambda: (*_ce_case(), {"label_smoothing": 0.2}),
    "pixel_cross_entropy": lambda: (*_pixel_case(), {"ignore_index": 1, "label_smoothing": 0.1}),
    "bce": lambda: (RNG.standard_normal((7, 1)) * 3, RNG.integers(0, 2, (7, 1)).astype(float), {}),
    "multilabel_bce": lambda: (RNG.standard_normal((4, 3)), RNG.integers(0, 2, (4, 3)).astype(float), {}),
    "mse": lambda: (RNG.standard_normal((5, 3)), RNG.standard_normal((5, 3)), {}),
    "smooth_l1": lambda: (RNG.standard_normal((6, 4)) * 2, RNG.standard_normal((6, 4)), {}),
}


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_gradient_matches_finite_differences(case):
    pred, target, options = FD_CASES[case]()
    name = case.replace("_smooth", "")
    fn = LOSSES[name].fn
    _, grad = fn(pred, target, **options)
    numeric = finite_difference(lambda p: fn(p, target, **options)[0], pred.copy())
    assert grad.dtype == np.float64 and grad.shape == pred.shape
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_smooth_l1_finite_differences_away_from_kink_with_other_beta():
    pred = np.array([[-2.0, -0.3, 0.2, 0.6, 1.7]])
    target = np.zeros_like(pred)
    _, grad = losses.smooth_l1(pred, target, beta=0.5)
    numeric = finite_difference(lambda p: losses.smooth_l1(p, target, beta=0.5)[0], pred.copy())
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- against PyTorch

def _torch_value_and_grad(torch, fn, pred, target):
    p = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    value = fn(p, target)
    value.backward()
    return value.item(), p.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_torch(smoothing):
    torch = _torch()
    z, y = _ce_case(8, 6)
    value, grad = losses.cross_entropy(z, y, label_smoothing=smoothing)
    ref, ref_grad = _torch_value_and_grad(
        torch, lambda p, t: torch.nn.functional.cross_entropy(p, torch.tensor(t), label_smoothing=smoothing),
        z, y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.torch
def test_cross_entropy_ignore_index_matches_torch():
    torch = _torch()
    z, y = _ce_case(8, 4)
    y[[1, 4]] = -100
    value, grad = losses.cross_entropy(z, y, ignore_index=-100, label_smoothing=0.1)
    ref, ref_grad = _torch_value_and_grad(
        torch, lambda p, t: torch.nn.functional.cross_entropy(p, torch.tensor(t), label_smoothing=0.1), z, y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
    assert np.all(grad[[1, 4]] == 0)


@pytest.mark.torch
@pytest.mark.parametrize("options", [{}, {"ignore_index": 255}, {"ignore_index": 255, "label_smoothing": 0.2}])
def test_pixel_cross_entropy_matches_torch(options):
    torch = _torch()
    z, y = _pixel_case(3, 4, 5, 6)
    if options:
        y[0, :2, :3] = 255
    value, grad = losses.pixel_cross_entropy(z, y, **options)
    torch_options = {"ignore_index": options.get("ignore_index", -100),
                     "label_smoothing": options.get("label_smoothing", 0.0)}
    ref, ref_grad = _torch_value_and_grad(
        torch, lambda p, t: torch.nn.functional.cross_entropy(p, torch.tensor(t), **torch_options), z, y)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["bce", "multilabel_bce"])
def test_bce_matches_torch_including_soft_targets(name):
    torch = _torch()
    z = RNG.standard_normal((6, 3)) * 4
    t = RNG.random((6, 3))  # probabilities, not only 0/1
    value, grad = LOSSES[name].fn(z, t)
    ref, ref_grad = _torch_value_and_grad(
        torch, lambda p, tt: torch.nn.functional.binary_cross_entropy_with_logits(p, torch.tensor(tt)), z, t)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.torch
def test_bce_accepts_flat_targets_for_single_logit():
    torch = _torch()
    z = RNG.standard_normal((5, 1))
    t = np.array([0, 1, 1, 0, 1])
    value, grad = losses.bce(z, t)
    ref, ref_grad = _torch_value_and_grad(
        torch, lambda p, tt: torch.nn.functional.binary_cross_entropy_with_logits(
            p, torch.tensor(tt, dtype=torch.float64).reshape(5, 1)), z, t)
    assert value == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10)


@pytest.mark.torch
def test_mse_and_smooth_l1_match_torch():
    torch = _torch()
    p = RNG.standard_normal((4, 5)) * 2
    t = RNG.standard_normal((4, 5))
    for ours, theirs in ((losses.mse(p, t), torch.nn.functional.mse_loss),
                         (losses.smooth_l1(p, t), torch.nn.functional.smooth_l1_loss)):
        ref, ref_grad = _torch_value_and_grad(torch, lambda a, b: theirs(a, torch.tensor(b)), p, t)
        assert ours[0] == pytest.approx(ref, rel=1e-12)
        np.testing.assert_allclose(ours[1], ref_grad, rtol=1e-10, atol=1e-14)
    for beta in (0.0, 0.3, 2.0):
        value, grad = losses.smooth_l1(p, t, beta=beta)
        ref, ref_grad = _torch_value_and_grad(
            torch, lambda a, b: torch.nn.functional.smooth_l1_loss(a, torch.tensor(b), beta=beta), p, t)
        assert value == pytest.approx(ref, rel=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- numerics and dtypes

def test_extreme_logits_are_stable():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        value, grad = losses.bce(np.array([[1000.0], [-1000.0]]), np.array([[1.0], [0.0]]))
        assert value == pytest.approx(0.0, abs=1e-300) and np.all(grad == 0)
        value, grad = losses.bce(np.array([[1000.0]]), np.array([[0.0]]))
        assert value == pytest.approx(1000.0) and grad[0, 0] == pytest.approx(1.0)
        value, grad = losses.cross_entropy(np.array([[1e4, -1e4, 0.0]]), np.array([1]))
        assert value == pytest.approx(2e4) and np.isfinite(grad).all()


def test_float32_in_float32_gradient_out():
    z, y = _ce_case()
    for name, args in (("cross_entropy", (z.astype(np.float32), y)),
                       ("mse", (z.astype(np.float32), z.astype(np.float32) * 0))):
        value, grad = LOSSES[name](*args)
        assert isinstance(value, float) and grad.dtype == np.float32


def test_cross_entropy_accepts_integral_float_labels():
    z, y = _ce_case()
    assert losses.cross_entropy(z, y.astype(np.float32))[0] == losses.cross_entropy(z, y)[0]


def test_all_ignored_gives_zero_loss_and_gradient():
    z, y = _ce_case(3, 4)
    value, grad = losses.cross_entropy(z, np.full(3, 7), ignore_index=7)
    assert value == 0.0 and not grad.any()


# ---------------------------------------------------------------- accuracy and registry

def test_accuracy_counters():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    labels = np.array([0, 1, 0, 0])
    assert LOSSES["cross_entropy"].correct(logits, labels) == (3, 4)
    assert LOSSES["cross_entropy"].accuracy(logits, labels) == 0.75
    seg = np.zeros((1, 2, 2, 2))
    seg[0, 1, 0, :] = 1.0  # top row predicts class 1, bottom row class 0
    masks = np.array([[[1, 0], [0, 255]]])
    spec = make_loss("pixel_cross_entropy", ignore_index=255)
    assert spec.correct(seg, masks) == (2, 3)  # the ignored pixel is not counted
    assert LOSSES["bce"].correct(np.array([[0.3], [-0.2], [2.0]]), np.array([1, 1, 0])) == (1, 3)
    assert LOSSES["multilabel_bce"].accuracy(np.array([[1.0, -1.0]]), np.array([[1, 1]])) == 0.5
    assert LOSSES["mse"].accuracy(logits, logits) is None
    assert LOSSES["smooth_l1"].correct(logits, logits) is None


def test_registry_and_options():
    assert set(LOSSES) == {"cross_entropy", "bce", "multilabel_bce", "mse", "smooth_l1",
                           "pixel_cross_entropy"}
    for name, spec in LOSSES.items():
        assert spec.name == name
    assert LOSSES["cross_entropy"].classification and not LOSSES["mse"].classification
    smooth = make_loss("cross_entropy", label_smoothing=0.3)
    z, y = _ce_case()
    assert smooth(z, y)[0] == losses.cross_entropy(z, y, label_smoothing=0.3)[0]
    with pytest.raises(CnncError) as e:
        make_loss("mse", beta=2)
    assert e.value.message == "loss 'mse' has no option 'beta'"
    with pytest.raises(CnncError) as e:
        get_loss("cross_entropi")
    assert e.value.message == "unknown loss 'cross_entropi'"
    assert e.value.hint == "did you mean 'cross_entropy'?"


def test_refusals_name_the_problem():
    z, _ = _ce_case(3, 4)
    with pytest.raises(CnncError) as e:
        losses.cross_entropy(z, np.array([0, 4, 1]))
    assert e.value.message == "cross_entropy: label 4 is outside [0, 4)"
    with pytest.raises(CnncError) as e:
        losses.cross_entropy(z, np.array([0.5, 1, 1]))
    assert "class labels must be integers" in e.value.message
    with pytest.raises(CnncError) as e:
        losses.mse(z, np.zeros((3, 5)))
    assert e.value.message == ("mse: the targets have shape [3, 5] but the network output has "
                               "shape [3, 4]")
    with pytest.raises(CnncError) as e:
        losses.pixel_cross_entropy(np.zeros((1, 2, 3, 3)), np.zeros((1, 4, 4), int))
    assert "the masks have shape [1, 4, 4]" in e.value.message
    with pytest.raises(CnncError) as e:
        losses.cross_entropy(z, np.zeros(3, int), label_smoothing=1.5)
    assert "label_smoothing must lie in [0, 1]" in e.value.message
