"""Warm restarts (`cosine_restarts`) against PyTorch's CosineAnnealingWarmRestarts, and snapshot ensembles:
a checkpoint at the end of every cycle, refused without restarts."""
from __future__ import annotations

import pytest

from cnnc.cli import main
from cnnc.runtime import checkpoint
from cnnc.runtime.train.schedules import make_schedule

BASE = 0.1


def _torch_lrs(T_0: int, T_mult: int, eta_min: float, epochs: int) -> list[float]:
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=BASE)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.torch
@pytest.mark.parametrize("T_0, T_mult, eta_min, epochs", [(3, 1, 0.0, 10), (2, 2, 0.001, 30), (1, 3, 0.0, 14),
                                                          (5, 1, 0.01, 17)])
def test_cosine_restarts_match_torch(T_0, T_mult, eta_min, epochs):
    ours = make_schedule(("cosine_restarts", {"T_0": T_0, "T_mult": T_mult, "eta_min": eta_min}), BASE, epochs)
    assert [ours.lr(e) for e in range(epochs)] == pytest.approx(_torch_lrs(T_0, T_mult, eta_min, epochs),
                                                                rel=1e-12, abs=1e-15)


def test_cycle_ends_are_the_epochs_before_a_restart():
    s = make_schedule(("cosine_restarts", {"T_0": 2, "T_mult": 2}), BASE, 14)
    assert [e for e in range(14) if s.cycle_end(e)] == [1, 5, 13]   # cycles of 2, 4, 8 epochs
    assert [e for e in range(14) if s.lr(e) == BASE] == [0, 2, 6]   # the rate restarts right after
    w = make_schedule(("warmup", {"epochs": 2, "then": ("cosine_restarts", {"T_0": 3})}), BASE, 10)
    assert w.restarts and [e for e in range(10) if w.cycle_end(e)] == [4, 7]
    assert not make_schedule("cosine", BASE, 10).restarts


NET = """
network Tiny {
    input x: [1, 8, 8]
    x -> flatten -> linear(3)
}
train Tiny {
    data = synthetic(n = 40, classes = 3)
    epochs = 5
    batch = 20
    schedule = cosine_restarts(2)
    snapshots = true
}
"""


def test_a_snapshot_is_kept_at_each_cycle_end(write, tmp_path, capsys):
    path = write(NET)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all"]) == 0
    snaps = sorted(p.name for p in out.glob("snapshot-*.npz"))
    assert snaps == ["snapshot-1.npz", "snapshot-2.npz"]            # epochs 2 and 4 end cycles; 5 does not
    assert [checkpoint.load(out / n).epoch for n in snaps] == [2, 4]
    assert main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all"]) == 1
    assert "snapshot-1.npz" in capsys.readouterr().err               # snapshots count as an earlier run
    assert main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all", "--overwrite",
                 "--epochs", "1"]) == 0
    assert not list(out.glob("snapshot-*.npz"))                       # overwritten, not left stale


def test_snapshots_without_restarts_are_refused_where_written(write, tmp_path, capsys):
    path = write(NET.replace("schedule = cosine_restarts(2)", "schedule = cosine"))
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet", "--allow", "all"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:10:5: error: snapshots = true needs a schedule with warm restarts"), err
