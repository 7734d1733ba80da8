"""Optimizers against torch.optim, state round trips, penalties."""
from __future__ import annotations

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.checkpoint import load_checkpoint, save_checkpoint
from cnnc.runtime.train.optim import OPTIMIZERS, default_is_weight, make_optimizer, penalty, weight_predicate

SHAPES = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "fc.weight": (5, 6)}

# (our name, torch class name, hyper-parameters shared by both)
CONFIGS = [
    ("sgd", "SGD", {}),
    ("sgd", "SGD", {"momentum": 0.9}),
    ("sgd", "SGD", {"momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-2}),
    ("sgd", "SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-3}),
    ("adam", "Adam", {}),
    ("adam", "Adam", {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2}),
    ("adam", "Adam", {"amsgrad": True}),
    ("adamw", "AdamW", {}),
    ("adamw", "AdamW", {"weight_decay": 0.1, "amsgrad": True}),
    ("adagrad", "Adagrad", {}),
    ("adagrad", "Adagrad", {"lr_decay": 0.05, "weight_decay": 1e-2, "initial_accumulator_value": 0.1}),
    ("rmsprop", "RMSprop", {}),
    ("rmsprop", "RMSprop", {"momentum": 0.9, "centered": True, "weight_decay": 1e-2, "alpha": 0.9}),
]
LRS = [0.1, 0.05, 0.05, 0.02, 0.01, 0.01]  # changes between steps, as a schedule would


def _params(seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def _grad_sequence(steps: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Random gradients; "conv.bias" is missing on step 2 to test per-parameter laziness."""
    rng = np.random.default_rng(seed)
    seq = []
    for i in range(steps):
        grads = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
        if i == 2:
            del grads["conv.bias"]
        seq.append(grads)
    return seq


def _run_ours(name, hyper, params, grads_seq, lrs):
    opt = make_optimizer(name, params, **hyper)
    for grads, lr in zip(grads_seq, lrs):
        opt.step(grads, lr)
    return opt


def _run_torch(cls_name, hyper, params, grads_seq, lrs):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = getattr(torch.optim, cls_name)(list(tensors.values()), lr=lrs[0], **hyper)
    for grads, lr in zip(grads_seq, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for key, t in tensors.items():
            t.grad = torch.tensor(grads[key]) if key in grads else None
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.torch
@pytest.mark.parametrize("name,torch_name,hyper", CONFIGS,
                         ids=[f"{c[0]}-{'-'.join(c[2]) or 'defaults'}" for c in CONFIGS])
def test_matches_torch(name, torch_name, hyper):
    params = _params()
    grads_seq = _grad_sequence(len(LRS))
    expected = _run_torch(torch_name, hyper, params, grads_seq, LRS)
    _run_ours(name, hyper, params, grads_seq, LRS)
    for key in SHAPES:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-9, atol=1e-9, err_msg=key)


@pytest.mark.torch
def test_float32_parameters_track_torch_float32():
    pytest.importorskip("torch")
    params = _params(dtype=np.float32)
    grads_seq = [{k: g.astype(np.float32) for k, g in step.items()} for step in _grad_sequence(5)]
    expected = _run_torch("Adam", {"weight_decay": 1e-3}, params, grads_seq, LRS)
    assert expected["fc.weight"].dtype == np.float32
    _run_ours("adam", {"weight_decay": 1e-3}, params, grads_seq, LRS)
    for key in SHAPES:
        assert params[key].dtype == np.float32
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,hyper", [(c[0], c[2]) for c in CONFIGS])
def test_state_dict_round_trip_continues_identically(tmp_path, name, hyper):
    grads_seq = _grad_sequence(6, seed=3)
    straight = _params()
    opt = _run_ours(name, hyper, straight, grads_seq[:3], LRS[:3])
    resumed = {k: v.copy() for k, v in straight.items()}
    # Through a real pickle-free checkpoint file, as the trainer will do it.
    save_checkpoint(tmp_path / "opt.npz", opt.state_dict(), {"optimizer": name})
    state, meta = load_checkpoint(tmp_path / "opt.npz")
    assert all(isinstance(v, np.ndarray) for v in opt.state_dict().values())
    opt2 = make_optimizer(meta["optimizer"], resumed, **hyper)
    opt2.load_state_dict(state)
    for grads, lr in zip(grads_seq[3:], LRS[3:]):
        opt.step(grads, lr)
        opt2.step(grads, lr)
    for key in SHAPES:
        np.testing.assert_array_equal(straight[key], resumed[key])


def test_step_updates_in_place_only_keys_with_gradients():
    params = _params()
    before = {k: v.copy() for k, v in params.items()}
    arrays = dict(params)
    opt = make_optimizer("sgd", params, momentum=0.9)
    opt.step({"fc.weight": np.ones(SHAPES["fc.weight"])}, lr=0.5)
    assert params["fc.weight"] is arrays["fc.weight"]  # same object, new values
    np.testing.assert_allclose(params["fc.weight"], before["fc.weight"] - 0.5)
    np.testing.assert_array_equal(params["conv.weight"], before["conv.weight"])
    assert set(opt.state_dict()) == {"fc.weight/momentum_buffer", "fc.weight/step"}


def test_default_learning_rates_follow_torch():
    p = _params()
    assert {n: make_optimizer(n, p).lr for n in OPTIMIZERS} == {
        "sgd": 1e-3, "adam": 1e-3, "adamw": 1e-3, "adagrad": 1e-2, "rmsprop": 1e-2}
    opt = make_optimizer("sgd", p, lr=0.25)
    before = p["conv.bias"].copy()
    opt.step({"conv.bias": np.ones(4)})  # no lr given: the constructor's
    np.testing.assert_allclose(p["conv.bias"], before - 0.25)


def test_load_state_dict_refusals():
    params = _params()
    adam = _run_ours("adam", {}, params, _grad_sequence(2), LRS[:2])
    sgd = make_optimizer("sgd", params, momentum=0.9)
    with pytest.raises(CnncError) as e:
        sgd.load_state_dict(adam.state_dict())
    assert e.value.message.endswith("entry, which sgd does not use")
    assert e.value.hint == "the checkpoint was saved with a different optimizer"
    other = make_optimizer("adam", {"fc.weight": np.zeros((2, 2))})
    with pytest.raises(CnncError) as e:
        other.load_state_dict({"fc.weight/exp_avg": np.zeros((5, 6)), "fc.weight/exp_avg_sq": np.zeros((5, 6)),
                               "fc.weight/step": np.array(1)})
    assert e.value.message == ("optimizer state 'fc.weight/exp_avg' has shape [5, 6] but the "
                               "parameter has [2, 2]")
    with pytest.raises(CnncError) as e:
        other.load_state_dict({"nope.weight/step": np.array(1)})
    assert e.value.message == "optimizer state refers to unknown parameter 'nope.weight'"
    with pytest.raises(CnncError) as e:
        other.load_state_dict({"fc.weight/exp_avg": np.zeros((2, 2)), "fc.weight/step": np.array(1)})
    assert e.value.message == "optimizer state for 'fc.weight' lacks its 'exp_avg_sq' entry"


def test_construction_refusals():
    with pytest.raises(CnncError) as e:
        make_optimizer("adma", {})
    assert e.value.message == "unknown optimizer 'adma'" and e.value.hint == "did you mean 'adam'?"
    with pytest.raises(CnncError) as e:
        make_optimizer("sgd", {}, momentun=0.9)
    assert e.value.message == "optimizer 'sgd' has no hyper-parameter 'momentun'"
    assert "momentum" in e.value.hint
    with pytest.raises(CnncError) as e:
        make_optimizer("sgd", {}, nesterov=True)
    assert e.value.message == "optimizer sgd: nesterov needs momentum > 0 and dampening 0"
    with pytest.raises(CnncError) as e:
        make_optimizer("adam", {}, betas=(0.9, 1.0))
    assert e.value.message == "optimizer adam: betas[1] must lie in [0.0, 1.0), got 1.0"


# ---------------------------------------------------------------- penalties

PENALTY_PARAMS = {
    "conv1.weight": np.array([[[[1.0, -2.0], [0.0, 3.0]]]]),
    "conv1.bias": np.array([5.0]),
    "bn1.weight": np.array([7.0]),
    "block.a.fc.weight": np.array([[-1.0, 0.5]]),
    "bn1.running_mean": np.array([9.0]),
}


def test_penalty_values_and_gradients():
    value, grads = penalty(PENALTY_PARAMS, l1=0.1, l2=0.01)
    # conv1.weight: sum|w| = 6, sum w^2 = 14; fc: 1.5 and 1.25
    assert value == pytest.approx(0.1 * 7.5 + 0.01 * 15.25)
    assert set(grads) == {"conv1.weight", "block.a.fc.weight"}
    np.testing.assert_allclose(grads["block.a.fc.weight"], [[0.1 * -1 + 0.02 * -1.0, 0.1 + 0.02 * 0.5]])
    assert grads["conv1.weight"][0, 0, 1, 0] == 0.0  # subgradient 0 at w == 0

    def total(w):
        return penalty({"x.weight": w}, l1=0.1, l2=0.01)[0]

    w = np.random.default_rng(0).standard_normal((3, 4))
    numeric = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        d = np.zeros_like(w)
        d[idx] = 1e-6
        numeric[idx] = (total(w + d) - total(w - d)) / 2e-6
    np.testing.assert_allclose(penalty({"x.weight": w}, 0.1, 0.01)[1]["x.weight"], numeric, rtol=1e-6)


def test_penalty_predicates():
    assert penalty(PENALTY_PARAMS) == (0.0, {})
    assert default_is_weight("conv1.weight", PENALTY_PARAMS["conv1.weight"])
    assert not default_is_weight("bn1.weight", PENALTY_PARAMS["bn1.weight"])
    assert not default_is_weight("conv1.bias", PENALTY_PARAMS["conv1.bias"])
    ops = {"conv1": "conv", "bn1": "batchnorm", "block.a.fc": "linear"}
    is_weight = weight_predicate(ops)
    chosen = sorted(penalty(PENALTY_PARAMS, l2=1.0, predicate=is_weight)[1])
    assert chosen == ["block.a.fc.weight", "conv1.weight"]
    only_norm = weight_predicate({"bn1": "batchnorm"})
    assert penalty(PENALTY_PARAMS, l2=1.0, predicate=only_norm) == (0.0, {})
    custom = penalty(PENALTY_PARAMS, l2=1.0, predicate=lambda k, v: k == "conv1.bias")
    assert custom[0] == 25.0 and list(custom[1]) == ["conv1.bias"]
