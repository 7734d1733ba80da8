"""Schedules and early stopping watch the figure they say, with PyTorch's and Keras's meanings.

Issue 20 found `plateau` fed the validation loss whatever its mode (so `mode = max` cut the rate while the
loss fell), never fed anything without a validation split, and early stopping always watching validation
accuracy. The class-level tests: for every monitor of the vocabulary, a scripted run of epoch records —
whose four figures move differently — is fed to the trainer (`Trainer.observe`, what every epoch calls);
the plateau schedule's rates equal torch.optim.lr_scheduler.ReduceLROnPlateau stepped with that
figure, and early stopping stops where Keras's EarlyStopping (written out below from its documented
rule) stops.
"""
from __future__ import annotations

import math

import pytest

from cnnc.compiler.train_vocab import MONITORS
from cnnc.runtime.train.trainer import Trainer

# Four figures per epoch, each with its own ups and downs: a monitor that reads the wrong one fails.
RECORDS = [
    {"train_loss": 2.0, "train_accuracy": 0.20, "val_loss": 2.2, "val_accuracy": 0.10},
    {"train_loss": 1.5, "train_accuracy": 0.30, "val_loss": 2.3, "val_accuracy": 0.25},
    {"train_loss": 1.6, "train_accuracy": 0.45, "val_loss": 1.9, "val_accuracy": 0.24},
    {"train_loss": 1.4, "train_accuracy": 0.44, "val_loss": 1.95, "val_accuracy": 0.35},
    {"train_loss": 1.45, "train_accuracy": 0.50, "val_loss": 2.0, "val_accuracy": 0.34},
    {"train_loss": 1.42, "train_accuracy": 0.49, "val_loss": 1.7, "val_accuracy": 0.36},
    {"train_loss": 1.0, "train_accuracy": 0.48, "val_loss": 1.8, "val_accuracy": 0.33},
    {"train_loss": 1.1, "train_accuracy": 0.60, "val_loss": 1.85, "val_accuracy": 0.32},
    {"train_loss": 1.05, "train_accuracy": 0.59, "val_loss": 1.6, "val_accuracy": 0.40},
]

NET = """
network N {
    input x: [1, 8, 8]
    x -> conv(2, 3, pad = 1) -> relu -> flatten -> linear(3)
}
train N {
    data = synthetic(n = 32, classes = 3, val = 0.25)
    batch = 8
    epochs = 20
    KEYS
}
"""


def _trainer(compile_src, tmp_path, keys: str) -> Trainer:
    c = compile_src(NET.replace("KEYS", keys), allow={"all"})
    return Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, threads=1)


@pytest.mark.torch
@pytest.mark.parametrize("monitor", MONITORS)
@pytest.mark.parametrize("options", ["patience = 0", "patience = 1, factor = 0.5",
                                     "patience = 0, threshold = 0.1, threshold_mode = abs, cooldown = 1"])
def test_plateau_follows_its_monitor_as_torch_does(compile_src, tmp_path, monitor, options):
    torch = pytest.importorskip("torch")
    t = _trainer(compile_src, tmp_path, f"schedule = plateau(monitor = {monitor}, {options})\n    lr = 1.0")
    opts = dict(o.split(" = ") for o in options.split(", "))
    kwargs = {"patience": int(opts["patience"]), "factor": float(opts.get("factor", 0.1)),
              "threshold": float(opts.get("threshold", 1e-4)), "threshold_mode": opts.get("threshold_mode", "rel"),
              "cooldown": int(opts.get("cooldown", 0)), "mode": "max" if monitor.endswith("accuracy") else "min"}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    ours, theirs = [], []
    for record in RECORDS:
        t.observe(record)
        reference.step(record[monitor])
        ours.append(t.schedule.lr(0))
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert len(set(theirs)) > 1, "the script must make the rate move"


def keras_early_stopping(values, patience, min_delta, mode):
    """Keras's EarlyStopping.on_epoch_end, as documented: improvement when `value - min_delta` beats the
    best (min) — `value + min_delta` for max — the wait reset on improvement, else counted; the run stops
    at the first epoch where the wait reaches the patience. Returns the number of epochs run."""
    best, wait = None, 0
    delta = -abs(min_delta) if mode == "min" else abs(min_delta)
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    for epoch, value in enumerate(values, 1):
        if best is None or better(value - delta, best):
            best, wait = value, 0
            continue
        wait += 1
        if wait >= patience:
            return epoch
    return len(values)


@pytest.mark.parametrize("monitor", MONITORS)
@pytest.mark.parametrize("patience, min_delta", [(1, 0.0), (2, 0.0), (2, 0.05), (3, 0.2)])
def test_early_stopping_follows_its_monitor_as_keras_does(compile_src, tmp_path, monitor, patience, min_delta):
    t = _trainer(compile_src, tmp_path,
                 f"early_stop = early_stop(monitor = {monitor}, patience = {patience}, min_delta = {min_delta})")
    mode = "max" if monitor.endswith("accuracy") else "min"
    expected = keras_early_stopping([r[monitor] for r in RECORDS], patience, min_delta, mode)
    run = 0
    for record in RECORDS:
        t.observe(record)
        run += 1
        if t.watch.stop:
            break
    assert run == expected


def test_the_monitors_stop_at_different_epochs():
    """The script is a real test of reading the right figure: the monitors disagree."""
    stops = {m: keras_early_stopping([r[m] for r in RECORDS], 2, 0.0, "max" if m.endswith("accuracy") else "min")
             for m in MONITORS}
    assert len(set(stops.values())) > 1, stops


def test_best_follows_the_early_stopping_monitor(compile_src, tmp_path):
    t = _trainer(compile_src, tmp_path, "early_stop = early_stop(monitor = train_accuracy, patience = 9)")
    improved = [t.observe(r) for r in RECORDS]
    accs = [r["train_accuracy"] for r in RECORDS]
    assert improved == [a > max(accs[:i], default=-math.inf) for i, a in enumerate(accs)]


def test_a_run_without_validation_watches_a_training_figure(compile_src, tmp_path):
    """plateau(monitor = train_loss) without a validation split changes the rate (issue 20: a rate of 5
    that never moved while the loss rose from 4 to 61)."""
    c = compile_src(NET.replace("KEYS", "schedule = plateau(monitor = train_loss, patience = 0)\n    lr = 5.0")
                    .replace(", val = 0.25", "").replace("epochs = 20", "epochs = 4"), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, threads=1)
    result = t.run()
    rates = [r["lr"] for r in result.history]
    expected, best = [5.0], math.inf
    for record in result.history[:-1]:   # patience 0: every epoch that does not improve cuts the next rate
        improves = record["train_loss"] < best * (1 - 1e-4)
        best = min(best, record["train_loss"])
        expected.append(expected[-1] * (1 if improves else 0.1))
    assert rates == pytest.approx(expected) and len(set(rates)) > 1
