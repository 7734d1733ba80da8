"""Hyper-parameter search: axes and distributions parsed and checked, grid and random plans, ranking,
successive halving's rungs, and searches run end to end (parallel workers, a failing trial, --resume after a
kill, a Dask cluster)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.dsl.source import CnncError
from cnnc.runtime.select import search as s

SMALL = """
network Small(width = 16, classes = 10) {
    input x: [1, 28, 28]
    x -> maxpool(4) -> flatten -> linear(width) -> relu -> linear(classes)
}
train Small {
    data = mnist10k(val = 0.2)
    epochs = 1
    batch = 32
    optimizer = adam(lr = 0.01)
}
"""
PARAMS = ["width", "classes"]


def test_a_grid_axis_of_a_train_key_and_of_a_network_parameter():
    lr = s.parse_axis("lr=0.1,0.01", PARAMS)
    assert (lr.name, lr.train, lr.values) == ("lr", True, ("0.1", "0.01"))
    width = s.parse_axis("width=16,32", PARAMS)
    assert (width.train, width.values) == (False, ("16", "32"))
    opt = s.parse_axis("optimizer=adam(lr=0.1, betas=(0.9, 0.99)),sgd", PARAMS)   # commas inside calls
    assert opt.values == ("adam(lr=0.1, betas=(0.9, 0.99))", "sgd") and opt.distribution is None
    plan = s.plan_grid([lr, width])
    assert plan == [{"lr": "0.1", "width": "16"}, {"lr": "0.1", "width": "32"},
                    {"lr": "0.01", "width": "16"}, {"lr": "0.01", "width": "32"}]


def test_random_draws_follow_their_distributions_and_the_seed():
    axes = [s.parse_axis("lr=loguniform(1e-4, 1e-1)", PARAMS), s.parse_axis("width=randint(8, 10)", PARAMS),
            s.parse_axis("optimizer=choice(adam, sgd)", PARAMS), s.parse_axis("l2=uniform(0, 0.5)", PARAMS)]
    plan = s.plan_random(axes, 40, seed=3)
    assert plan == s.plan_random(axes, 40, seed=3) and plan != s.plan_random(axes, 40, seed=4)
    lrs = np.array([float(p["lr"]) for p in plan])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    assert (np.log10(lrs) < -2.5).sum() > 10          # log-uniform: about half below the geometric middle
    assert {p["width"] for p in plan} == {"8", "9", "10"} and {p["optimizer"] for p in plan} == {"adam", "sgd"}
    assert all(0 <= float(p["l2"]) <= 0.5 for p in plan)
    assert len({s.settings_key(p) for p in plan}) == 40
    few = s.plan_random([s.parse_axis("lr=0.1,0.2", PARAMS)], 5, 0)   # only two distinct trials exist
    assert sorted(p["lr"] for p in few) == ["0.1", "0.2"]


@pytest.mark.parametrize("text, message", [
    ("lr", "--grid lr: expected NAME=V1,V2,... or NAME=DISTRIBUTION(...)"),
    ("lr=", "--grid lr=: expected NAME=V1,V2"),
    ("lr=0.1,,0.2", "--grid lr=0.1,,0.2: an empty value"),
    ("lr=0.1,0.1", "a value is given twice"),
    ("wdith=1,2", "--grid wdith=1,2: 'wdith' is neither a train key nor a parameter of the network"),
    ("lr=logunifrom(1e-4, 1e-1)", "--grid lr=logunifrom(1e-4, 1e-1): unknown distribution 'logunifrom'"),
    ("lr=loguniform(0, 1)", "loguniform(0, 1): low must be positive"),
    ("lr=uniform(1, 0.5)", "uniform(1, 0.5): low must be below high"),
    ("width=randint(1.5, 4)", "randint takes two integers"),
    ("lr=uniform(1)", "uniform takes two numbers (low, high), got 1"),
])
def test_malformed_axes_are_refused_naming_the_flag(text, message):
    with pytest.raises(CnncError) as info:
        s.parse_axis(text, PARAMS)
    assert message in info.value.message
    if "wdith" in text:
        assert info.value.hint == "did you mean 'width'?"
    if "logunifrom" in text:
        assert info.value.hint == "did you mean 'loguniform'?"


def test_a_distribution_needs_random():
    with pytest.raises(CnncError, match="a distribution needs --random N"):
        s.plan_grid([s.parse_axis("lr=loguniform(1e-4, 1e-1)", PARAMS)])


def test_ranking_follows_the_metric_direction_and_puts_failures_last():
    recs = [{"settings": {"a": "1"}, "status": "ok", "figures": {"val_loss": 0.5, "val_accuracy": 0.7}},
            {"settings": {"a": "2"}, "status": "failed", "error": "x"},
            {"settings": {"a": "3"}, "status": "ok", "figures": {"val_loss": 0.3, "val_accuracy": 0.6}}]
    assert [r["settings"]["a"] for r in s.rank(recs, "val_accuracy")] == ["1", "3", "2"]
    assert [r["settings"]["a"] for r in s.rank(recs, "val_loss")] == ["3", "1", "2"]
    assert s.choose_metric(recs, None) == "val_accuracy"
    assert s.choose_metric([{"settings": {}, "status": "ok", "figures": {"train_loss": 1.0}}], None) == "train_loss"
    with pytest.raises(CnncError, match="--metric val_acc: unknown metric"):
        s.choose_metric(recs, "val_acc")


def test_halving_rungs_and_survivors():
    assert s.halving_rungs(9, 3) == [1, 3, 9]
    assert s.halving_rungs(10, 2) == [1, 2, 5, 10]
    assert s.halving_rungs(1, 3) == [1]
    recs = [{"settings": {"i": str(i)}, "status": "ok", "figures": {"val_loss": float(i)}} for i in range(5)]
    assert [r["settings"]["i"] for r in s.survivors(recs, "val_loss", 2)] == ["0", "1", "2"]


# ------------------------------------------------------------------ end to end
def _cnnc(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "cnnc", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_a_four_trial_grid_on_two_workers_ranks_its_trials(write, tmp_path, capsys):
    path = write(SMALL)
    out = tmp_path / "search"
    argv = ["search", str(path), "--grid", "lr=0.01,0.001", "--grid", "width=8,32", "--workers", "2",
            "--limit", "300", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    records = _records(out / "results.jsonl")
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    ranked = sorted(records, key=lambda r: -r["figures"]["val_accuracy"])
    lines = [line for line in text.splitlines() if line[:4].strip().isdigit()]
    assert [line.split()[1:3] for line in lines] == [[r["settings"]["lr"], r["settings"]["width"]] for r in ranked]
    best = ranked[0]["settings"]
    assert (f"cnnc run {path} --set width={best['width']} --train lr={best['lr']} --limit 300") in text
    # one format (accuracies as percentages); the test split's figures only for the chosen trial
    trials = [line for line in text.splitlines() if line.startswith("trial ")]
    assert len(trials) == 4 and all("test_" not in t and "val_accuracy " in t and "%" in t for t in trials)
    assert "test_" not in next(line for line in text.splitlines() if line.startswith("rank "))
    chosen = ranked[0]["figures"]
    assert (f"best (val_accuracy {chosen['val_accuracy']:.2%}, test_accuracy {chosen['test_accuracy']:.2%}, "
            f"test_loss {chosen['test_loss']:.4f}): ") in text
    for r in records:
        assert (out / f"trial-{r['trial']}" / "last.npz").exists()
    assert main(argv) == 1                                          # not replaced by accident
    assert "already holds a search" in capsys.readouterr().err


def test_a_failing_trial_is_recorded_and_the_search_goes_on(write, tmp_path, capsys):
    path = write(SMALL.replace("adam(lr = 0.01)", "sgd(lr = 0.01)"))
    out = tmp_path / "search"
    assert main(["search", str(path), "--grid", "lr=0.01,1e30", "--limit", "100", "--out", str(out)]) == 0
    records = {r["settings"]["lr"]: r for r in _records(out / "results.jsonl")}
    assert records["0.01"]["status"] == "ok"
    assert records["1e30"]["status"] == "failed" and "the loss became nan" in records["1e30"]["error"]
    assert "failed: the loss became nan" in capsys.readouterr().out


def test_resume_after_a_kill_runs_only_the_missing_trials(write, tmp_path):
    path = write(SMALL.replace("epochs = 1", "epochs = 2"))
    out = tmp_path / "search"
    argv = ["search", str(path), "--grid", "lr=0.01,0.003", "--grid", "width=8,16", "--workers", "2",
            "--limit", "1500", "--out", str(out)]
    proc = _cnnc(*argv, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(_records(out / "results.jsonl")) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)                             # the search and its worker, mid-way
    proc.wait()
    done = _records(out / "results.jsonl")
    assert 1 <= len(done) < 4, "the search should have been killed mid-way"
    resumed = _cnnc(*argv, "--resume")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"resuming: {len(done)} of 4 trials are finished; running the other {4 - len(done)}" in stdout
    ran = [line for line in stdout.splitlines() if line.startswith("trial ")]
    assert len(ran) == 4 - len(done)
    finished = {s.settings_key(r["settings"]) for r in done}
    assert not any(f"lr={r['settings']['lr']}, width={r['settings']['width']}:" in " ".join(ran)
                   for r in done if s.settings_key(r["settings"]) in finished)
    final = _records(out / "results.jsonl")
    assert len(final) == 4 and all(r["status"] == "ok" for r in final)
    assert [r for r in final if s.settings_key(r["settings"]) in finished] == done   # kept as they were


def test_successive_halving_stops_weak_trials_early(write, tmp_path, capsys):
    path = write(SMALL.replace("epochs = 1", "epochs = 4"))
    out = tmp_path / "search"
    assert main(["search", str(path), "--grid", "lr=0.01,0.001,0.0001", "--grid", "width=8,16", "--halving", "2",
                 "--workers", "2", "--limit", "200", "--out", str(out)]) == 0
    records = _records(out / "results.jsonl")
    epochs = sorted(r["epochs"] for r in records)
    assert epochs == [1, 1, 1, 2, 4, 4], epochs                      # 6 -> 3 -> 2 trials over rungs 1, 2, 4
    assert all(r["final"] for r in records)
    assert sum("halted" in r for r in records) == 4
    assert "successive halving: 3 of 6 trials continue to 2 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--grid", "lr"], "--grid lr: expected NAME=V1,V2,..."),
    (["--grid", "foo=1,2"], "--grid foo=1,2: 'foo' is neither a train key nor a parameter of the network"),
    (["--grid", "lr=logunifrom(1e-4, 1e-1)", "--random", "2"], "unknown distribution 'logunifrom'"),
    (["--grid", "lr=loguniform(1e-4, 1e-1)"], "a distribution needs --random N"),
    (["--grid", "lr=-1,0.1"], "--grid lr=-1,0.1: lr=-1: lr must be a positive number"),
    (["--grid", "width=a,b"], "--grid width=a,b: width=a: the value must be a number or true/false"),
    (["--grid", "width=8,-3"], "--grid with width=-3:"),
    (["--grid", "kfold=2,3"], "kfold is for cnnc run"),
    (["--grid", "lr=0.1", "--grid", "lr=0.2"], "the axis 'lr' is given twice"),
    (["--grid", "lr=0.1", "--random", "0"], "--random 0: must be at least 1"),
    (["--grid", "lr=0.1", "--workers", "0"], "--workers 0: must be at least 1"),
    (["--grid", "lr=0.1", "--halving", "1"], "--halving 1: must be at least 2"),
    (["--grid", "lr=0.1", "--metric", "acc"], "--metric acc: unknown metric"),
    (["--grid", "lr=0.1", "--train", "epochs=0"], "--train epochs=0: epochs must be a positive integer"),
    (["--grid", "epochs=1,2", "--halving", "2"], "--halving 2: the trials train for different epochs"),
    ([], "--grid: a search needs at least one axis"),
])
def test_bad_search_flags_are_one_line_errors(write, tmp_path, capsys, argv, message):
    path = write(SMALL)
    assert main(["search", str(path), "--out", str(tmp_path / "s"), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "s").exists()                            # refused before anything is written


def test_without_dask_the_scheduler_flag_names_the_extra(write, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)           # as if the extra were not installed
    path = write(SMALL)
    assert main(["search", str(path), "--grid", "lr=0.1", "--out", str(tmp_path / "s"), "--limit", "50",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("cnnc: error: --scheduler tcp://127.0.0.1:1: running trials on a Dask cluster needs Dask's "
                   "distributed, which is not installed: run pip install 'cnnc[dask]'")


@pytest.mark.slow
def test_trials_run_on_a_local_two_worker_dask_cluster(write, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    path = write(SMALL)
    with distributed.LocalCluster(n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        assert main(["search", str(path), "--grid", "lr=0.01,0.001", "--grid", "width=8,16", "--limit", "200",
                     "--out", str(tmp_path / "s"), "--scheduler", cluster.scheduler_address]) == 0
        with distributed.Client(cluster) as client:
            workers = client.scheduler_info()["workers"]
            assert len(workers) == 2
    records = _records(tmp_path / "s" / "results.jsonl")
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert f"on the Dask cluster at {cluster.scheduler_address}" in capsys.readouterr().out
