"""Every kind of search axis changes what a trial trains with, and a trial's record says what that was.

Issue 20 found a search whose `lr` axis never reached the optimizer while the table reported the drawn
rates. The class-level test: for a network parameter and for every train key (walked from the
vocabulary, not listed), a two-trial search whose stored records differ in that key and whose trained
weights differ — or, for the keys that by design change something else, that other thing. The trials run
in this process (the worker's own `run_trial`), so the walk stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.train_spec import TrainConfig, key_text
from cnnc.compiler.train_vocab import KEYS
from cnnc.runtime import checkpoint
from cnnc.runtime.select import search as s

from ..train.test_train_vocabulary import BASE, NETS, P, files_dir  # noqa: F401  (a fixture)

# The walk's network with a parameter and a batchnorm (so that sync_bn has something to synchronise).
NET = NETS["classes"].replace("conv(4, 3, pad = 1) -> relu", "conv(width, 3, pad = 1) -> batchnorm -> relu")
# A second value for the keys whose default is "none": each axis needs two values it can train with.
OTHER = {"normalize": "normalize(0.5, 0.25)", "val": "0.5", "test": "0.5", "classes": '["p", "q", "r"]', "early_stop": "early_stop(monitor = train_loss, "
         "patience = 3)", "schedule": "warmup(2)", "init": "xavier_normal", "kfold": "3",
         "loss_weights": "[0.25]"}
# What an axis changes besides (or instead of) the weights, by design.
NOT_WEIGHTS = {
    "classes": "the class names a checkpoint records",
    "sync_bn": "nothing in one process (it synchronises batchnorm across processes)",
    "snapshots": "the snapshot files kept",
}


def _program(tmp, overrides: dict[str, str]) -> str:
    keys = {**BASE, **overrides}
    body = "\n".join(f"    {k} = {v}" for k, v in keys.items()).replace("{tmp}", str(tmp))
    return f"network N(width = 4) {{\n    {NET}\n}}\ntrain N {{\n{body}\n}}\n"


def _in_process(monkeypatch):
    def execute(specs, workers, scheduler, done):
        for spec in specs:
            done(s.run_trial(spec))
    monkeypatch.setattr(s, "execute", execute)


def _search(tmp_path, monkeypatch, program: str, axis: str, net: str = NET):
    path = tmp_path / "net.cnn"
    path.write_text(program)
    _in_process(monkeypatch)
    base = s.Base(str(path), allow=["all"], threads=1)
    axes = [s.parse_axis(axis, s.network_parameters(base))]
    s.run_search(base, axes, s.plan_grid(axes), tmp_path / "search", log=lambda line: None)
    return s.read_results(tmp_path / "search" / s.RESULTS)


def _weights(record) -> dict[str, np.ndarray]:
    return checkpoint.load(f"{record['out']}/last.npz").params


def _values(key: str, tmp) -> tuple[str, str]:
    """Two values of `key` a trial can train with: the vocabulary walk's variant, and the base program's
    value (else a second one, else the default written back)."""
    _, base, variant = P[(key, "", "")]
    other = {**BASE, **base}.get(key) or OTHER.get(key) or key_text(TrainConfig(), key)
    return variant[key].replace("{tmp}", str(tmp)), other.replace("{tmp}", str(tmp))


def test_the_second_values_are_those_of_keys_without_a_default():
    assert set(OTHER) == {k for k in KEYS if getattr(TrainConfig(), k, None) is None}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_train_key_as_an_axis_trains_and_records_what_it_says(tmp_path, monkeypatch, files_dir, key):
    _, base, _ = P[(key, "", "")]
    first, second = _values(key, files_dir)
    program = _program(files_dir, {k: v for k, v in base.items() if k != key})
    axis = f"{key}={first},{second}"
    if key == "kfold":
        with pytest.raises(Exception, match="kfold is for cnnc run"):
            _search(tmp_path, monkeypatch, program, axis)
        return
    records = _search(tmp_path, monkeypatch, program, axis)
    assert [r["status"] for r in records] == ["ok", "ok"], records
    field = {"normalize": "preprocess", "lr": "optimizer"}.get(key, key)
    a, b = (r["train"][field] for r in records)
    assert a != b, f"{key}: both trials recorded {a}"
    assert records[0]["trained"][key] != records[1]["trained"][key]   # and the table shows them apart
    wa, wb = (_weights(r) for r in records)
    same = all(np.array_equal(wa[k], wb[k]) for k in wa)
    if key in NOT_WEIGHTS:
        assert same or key == "classes", f"{key}: {NOT_WEIGHTS[key]}"
        if key == "classes":
            names = [checkpoint.load(f"{r['out']}/last.npz").classes for r in records]
            assert names[0] != names[1]
        if key == "snapshots":
            kept = [sorted(p.name for p in Path(r["out"]).glob("snapshot-*")) for r in records]
            assert kept[0] != kept[1]
        return
    assert not same, f"{key}: the trials {first!r} and {second!r} trained the same weights"


def test_a_network_parameter_as_an_axis(tmp_path, monkeypatch):
    records = _search(tmp_path, monkeypatch, _program(tmp_path, {}), "width=2,6")
    assert [r["trained"]["width"] for r in records] == ["2", "6"]
    shapes = [_weights(r)["conv.weight"].shape[0] for r in records]
    assert shapes == [2, 6]


def test_the_documented_rate_search_trains_at_the_drawn_rates(write, tmp_path, capsys):
    """docs/model_selection.md's example: a log-uniform rate with the optimizer as another axis. Each
    trial's optimizer steps at its drawn rate — two sgd trials at different rates end differently — and
    the table, results.jsonl and the best command report the rates the trials trained with."""
    path = write(_program(tmp_path, {"optimizer": "adam(lr = 0.01)", "data": "synthetic(n = 64, classes = 3, val = 0.25)"}))
    out = tmp_path / "s"
    assert main(["search", str(path), "--random", "3", "--draw-seed", "1", "--grid", "lr=loguniform(1e-3, 1e-1)",
                 "--grid", "optimizer=sgd", "--out", str(out), "--allow", "all"]) == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (out / s.RESULTS).read_text().splitlines()]
    losses = {r["figures"]["train_loss"] for r in records}
    assert len(records) == 3 and len(losses) == 3
    for r in records:
        drawn = float(r["settings"]["lr"])
        assert r["train"]["optimizer"] == {**r["train"]["optimizer"], "name": "sgd", "lr": drawn}
        assert r["trained"]["optimizer"] == f"sgd(lr = {drawn!r})"
        meta = checkpoint.load(f"{r['out']}/last.npz").meta
        assert meta["train"]["optimizer"]["lr"] == drawn and meta["history"][0]["lr"] == drawn
    best = printed.splitlines()[-1]
    assert any(f"--train lr={r['trained']['lr']} --train 'optimizer=sgd(lr = {r['trained']['lr']})'" in best
               for r in records), best
