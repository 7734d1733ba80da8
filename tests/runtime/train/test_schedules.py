"""Learning-rate schedules against torch.optim.lr_scheduler, plus state round trips."""
from __future__ import annotations

import json

import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.train.schedules import make_schedule

BASE = 0.1


def _torch_lrs(make, epochs: int, metrics=None) -> list[float]:
    """The lr torch uses in each epoch: read before the epoch, step the scheduler after it."""
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=BASE)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for epoch in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # keeps torch from warning about the call order
        sched.step(metrics[epoch]) if metrics is not None else sched.step()
    return out


def _ours(spec, epochs: int, metrics=None) -> list[float]:
    sched = make_schedule(spec, BASE, epochs)
    out = []
    for epoch in range(epochs):
        out.append(sched.lr(epoch))
        if metrics is not None:
            sched.observe(metrics[epoch])
    return out


# A validation curve that improves, stalls, improves a little (below threshold), then stalls.
METRICS = [1.0, 0.8, 0.7, 0.7, 0.71, 0.69, 0.6999, 0.7, 0.72, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
           0.49999, 0.5, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46, 0.47]


@pytest.mark.torch
@pytest.mark.parametrize("spec,make,epochs", [
    (("step", {"step_size": 3}), lambda s, o: s.StepLR(o, step_size=3), 12),
    (("step", {"step_size": 2, "gamma": 0.5}), lambda s, o: s.StepLR(o, step_size=2, gamma=0.5), 9),
    ("cosine", lambda s, o: s.CosineAnnealingLR(o, T_max=20), 20),
    (("cosine", {"T_max": 5, "eta_min": 0.01}), lambda s, o: s.CosineAnnealingLR(o, T_max=5, eta_min=0.01), 23),
    (("warmup", {"epochs": 3}), lambda s, o: s.LinearLR(o, start_factor=0.25, total_iters=3), 8),
    ({"name": "warmup", "epochs": 4, "start_factor": 0.1},
     lambda s, o: s.LinearLR(o, start_factor=0.1, total_iters=4), 8),
    (("warmup", {"epochs": 2, "then": "cosine"}),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=1 / 3, total_iters=2),
                                     s.CosineAnnealingLR(o, T_max=10)], milestones=[2]), 12),
    (("warmup", {"epochs": 3, "then": ("step", {"step_size": 2, "gamma": 0.3})}),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.25, total_iters=3),
                                     s.StepLR(o, step_size=2, gamma=0.3)], milestones=[3]), 10),
])
def test_epoch_schedules_match_torch(spec, make, epochs):
    assert _ours(spec, epochs) == pytest.approx(_torch_lrs(make, epochs), rel=1e-12, abs=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("options", [
    {"patience": 2},
    {"patience": 1, "cooldown": 2, "factor": 0.5},
    {"patience": 0, "threshold": 0.05, "threshold_mode": "abs", "min_lr": 0.002},
    {"patience": 1, "mode": "max", "factor": 0.2},
    {},  # torch defaults: patience 10
])
def test_plateau_matches_torch(options):
    got = _ours(("plateau", options), len(METRICS), METRICS)
    want = _torch_lrs(lambda s, o: s.ReduceLROnPlateau(o, **options), len(METRICS), METRICS)
    assert got == pytest.approx(want, rel=1e-12)
    if options.get("patience") == 2:
        assert len(set(got)) > 2  # the curve really triggers several reductions


def test_constant_and_default_spec():
    assert _ours(None, 3) == [BASE] * 3 == _ours("none", 3) == _ours("constant", 3)


def test_warmup_hides_its_metrics_from_plateau():
    sched = make_schedule(("warmup", {"epochs": 2, "then": ("plateau", {"patience": 0})}), BASE, 10)
    lrs = []
    for epoch, metric in enumerate([5.0, 9.0, 1.0, 2.0, 3.0]):
        lrs.append(sched.lr(epoch))
        sched.observe(metric)
    # Warm-up metrics (5, 9) are ignored; plateau sees 1 (best), then 2: reduce at once.
    assert lrs == pytest.approx([BASE / 3, 2 * BASE / 3, BASE, BASE, BASE * 0.1])


def _run(sched, start, stop, metrics):
    out = []
    for epoch in range(start, stop):
        out.append(sched.lr(epoch))
        sched.observe(metrics[epoch])
    return out


@pytest.mark.parametrize("spec", [
    ("plateau", {"patience": 1, "cooldown": 1}),
    ("warmup", {"epochs": 2, "then": ("plateau", {"patience": 1})}),
    ("warmup", {"epochs": 2, "then": "cosine"}),
    ("step", {"step_size": 4}),
])
def test_state_round_trip_through_json(spec):
    straight = make_schedule(spec, BASE, len(METRICS))
    first = _run(straight, 0, 12, METRICS)
    state = straight.state_dict()
    assert all(isinstance(v, (int, float)) for v in state.values())
    restored = make_schedule(spec, BASE, len(METRICS))
    restored.load_state_dict(json.loads(json.dumps(state)))  # as checkpoint metadata does
    rest = _run(restored, 12, len(METRICS), METRICS)
    assert first + rest == _run(make_schedule(spec, BASE, len(METRICS)), 0, len(METRICS), METRICS)
    assert rest == _run(straight, 12, len(METRICS), METRICS)


def test_state_refusals():
    with pytest.raises(CnncError) as e:
        make_schedule("cosine", BASE, 5).load_state_dict({"best": 1.0})
    assert e.value.message == "schedule 'cosine' has no state, but the checkpoint has ['best']"
    with pytest.raises(CnncError) as e:
        make_schedule("plateau", BASE, 5).load_state_dict({"best": 1.0})
    assert e.value.hint == "the checkpoint was saved with another schedule"


def test_spec_refusals():
    with pytest.raises(CnncError) as e:
        make_schedule("cosin", BASE, 5)
    assert e.value.message == "unknown learning-rate schedule 'cosin'"
    assert e.value.hint == "did you mean 'cosine'?"
    with pytest.raises(CnncError) as e:
        make_schedule(("step", {"gamma": 0.5}), BASE, 5)
    assert e.value.message == "schedule 'step' needs option 'step_size'"
    with pytest.raises(CnncError) as e:
        make_schedule(("cosine", {"tmax": 3}), BASE, 5)
    assert e.value.message == "schedule 'cosine' has no option 'tmax'"
    assert e.value.hint == "its options: T_max, eta_min"
    with pytest.raises(CnncError) as e:
        make_schedule(("warmup", {"then": "cosine"}), BASE, 5)
    assert e.value.message == "schedule 'warmup' needs option 'epochs'"
    with pytest.raises(CnncError) as e:
        make_schedule(("plateau", {"factor": 2}), BASE, 5)
    assert e.value.message == "schedule plateau: factor must lie in (0, 1), got 2"
    with pytest.raises(CnncError) as e:
        make_schedule(42, BASE, 5)
    assert e.value.message == "cannot read schedule spec 42"
