"""Issue 22, items 1-3: processes killed by signal — search workers, a search, DDP launchers and ranks.

Each case kills a real process at the harmful moment, found by synchronising
on what the process writes (a trial's run-directory lock holds the worker's
pid once it trains; metrics.jsonl gets its first epoch), never by sleeping,
and then checks: the outcome (a dead worker costs only its own trial, a dead
rank gives one line naming it), and that no process of the case's tree
survives (hostile_harness.tree: every process carrying the case's mark in its
environment, whoever its parent is by then).
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sys

import pytest

from hostile_harness import (TINY, assert_no_survivors, children, finish, refused, start_tree, succeeded,
                             wait_for)

# Six trials of about a second each: long enough to be killed mid-way, short enough for the suite.
SEARCH = TINY.replace("n = 64", "n = 1500").replace("epochs     = 2", "epochs     = 3")
GRID = ["--grid", "lr=0.1,0.05,0.02", "--grid", "batch=16,32"]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _training_workers(out) -> dict[int, list[str]]:
    """pid -> the trial folders whose run directory the worker of that pid has started writing."""
    found: dict[int, list[str]] = {}
    for lock in out.glob("trial-*/.lock"):
        text = lock.read_text().strip()
        if text.isdigit():
            found.setdefault(int(text), []).append(lock.parent.name)
    return found


def _start_search(scratch, *flags: str):
    scratch.write("search.cnn", SEARCH)
    return start_tree(["search", "search.cnn", *GRID, "--workers", "2", "--out", "s", *flags], scratch.root)


@pytest.mark.slow
def test_a_killed_search_worker_costs_only_its_own_trial(scratch):
    search, mark = _start_search(scratch)
    pid = next(iter(wait_for(lambda: _training_workers(scratch.path("s")), "a worker training a trial")))
    os.kill(pid, signal.SIGSTOP)   # frozen mid-trial: it cannot finish before the kill
    recorded = {r["out"].rsplit("/", 1)[-1] for r in _records(scratch.path("s/results.jsonl"))}
    running = [f for f in _training_workers(scratch.path("s"))[pid] if f not in recorded]
    assert len(running) == 1, f"the worker was stopped between trials: {running}"
    folder = running[0]
    os.kill(pid, signal.SIGKILL)
    result = finish(search)
    succeeded(result)
    records = _records(scratch.path("s/results.jsonl"))
    assert len(records) == 6, records
    failed = [r for r in records if r["status"] != "ok"]
    assert [r["out"].rsplit("/", 1)[-1] for r in failed] == [folder], failed
    assert failed[0]["error"] == "the worker was killed by SIGKILL"
    assert "no trial finished" not in result.out and "best (" in result.out
    assert_no_survivors(mark)


@pytest.mark.slow
def test_a_worker_killed_before_it_takes_its_trial_costs_no_trial(scratch):
    search, mark = _start_search(scratch)
    booting = wait_for(lambda: children(search.pid), "the search's workers")   # sent a trial, still importing
    os.kill(booting[0], signal.SIGKILL)
    succeeded(finish(search))
    records = _records(scratch.path("s/results.jsonl"))
    assert len(records) == 6 and all(r["status"] == "ok" for r in records), records
    assert_no_survivors(mark)


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGKILL, -9), (signal.SIGTERM, -15), (signal.SIGINT, 130)],
                         ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_killed_search_leaves_no_worker_behind(scratch, signum, status):
    search, mark = _start_search(scratch)
    wait_for(lambda: len(_training_workers(scratch.path("s"))) >= 2, "both workers training")
    os.kill(search.pid, signum)
    result = finish(search)
    assert result.status == status, str(result)
    if signum == signal.SIGINT:
        assert result.err.strip() == "cnnc: interrupted", str(result)
    assert_no_survivors(mark)
    for lock in scratch.path("s").glob("**/.lock"):   # no one holds a run directory any more
        with open(lock, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ------------------------------------------------------------------ DDP: cnnc run --engine torch --nproc 2
DDP = """\
network N {
    input x: [1, 8, 8]
    x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> flatten -> linear(8) -> tanh -> linear(3)
}
train N {
    data = synthetic(n = 600, classes = 3)
    epochs = 40
    batch = 16
    seed = 3
    optimizer = sgd(lr = 0.1, momentum = 0.9)
}
"""


def _first_epoch(scratch) -> bool:
    """The first epoch's checkpoint is written (metrics.jsonl has its line already)."""
    return scratch.path("o/last.npz").exists()


def _start_ddp(scratch):
    pytest.importorskip("torch")
    scratch.write("ddp.cnn", DDP)
    return start_tree(["run", "ddp.cnn", "--engine", "torch", "--nproc", "2", "--out", "o"], scratch.root)


def _rank_pids(launcher) -> list[int]:
    """The pids of the launcher's ranks 0 and 1, as soon as both are started (their program runs)."""
    def both():
        ranks = {_rank(pid): pid for pid in children(launcher.pid)}
        return [ranks[0], ranks[1]] if {0, 1} <= set(ranks) else None
    return wait_for(both, "both ranks")


def _rank(pid: int) -> int | None:
    """The RANK a process was started with; None until it runs its own program (a child between fork and
    exec still shows its parent's environment)."""
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    return next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)


@pytest.mark.slow
def test_a_killed_ddp_launcher_stops_its_ranks_and_frees_the_run_directory(scratch):
    launcher, mark = _start_ddp(scratch)
    wait_for(lambda: _first_epoch(scratch), "the first epoch")
    launcher.kill()
    finish(launcher)
    assert_no_survivors(mark, within=5.0)
    with open(scratch.path("o/.lock"), "rb") as f:   # the lock is free: a new run may take the directory
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("moment", ["starting", "training"])
def test_a_killed_rank_is_one_line_naming_it(scratch, rank, moment):
    launcher, mark = _start_ddp(scratch)
    pids = _rank_pids(launcher)
    if moment == "training":
        wait_for(lambda: _first_epoch(scratch), "the first epoch")
    os.kill(pids[rank], signal.SIGKILL)
    result = finish(launcher)
    refused(result)
    kept = "continue from o/last.npz with --resume" if moment == "training" else "no checkpoint was written yet"
    assert result.err.strip() == (f"cnnc: error: training process {rank} of 2 (pid {pids[rank]}) was killed by "
                                  f"SIGKILL; the other process was stopped; {kept}"), str(result)
    assert_no_survivors(mark)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_without_cnncs_launcher_the_survivor_names_the_lost_peer(scratch, rank):
    """Ranks started as torchrun starts them: the one left says in one line that it lost the other."""
    pytest.importorskip("torch")
    scratch.write("ddp.cnn", DDP)
    world = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = [start_tree(["run", "ddp.cnn", "--engine", "torch", "--out", "o"], scratch.root,
                        env={**world, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    wait_for(lambda: _first_epoch(scratch), "the first epoch")
    ranks[rank][0].kill()
    finish(ranks[rank][0])
    survivor = finish(ranks[1 - rank][0])
    refused(survivor)
    assert survivor.err.startswith(f"cnnc: error: training process {1 - rank} of 2 lost contact with the others "
                                   "while "), str(survivor)
    for _, mark in ranks:
        assert_no_survivors(mark)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_launcher_names_the_worker_that_ended_first_whatever_the_order(tmp_path, capsys):
    """The launcher's verdict from the exit statuses it saw (a lost peer's LOST_PEER names no cause)."""
    from cnnc.launch import LOST_PEER, _report

    class Worker:
        def __init__(self, pid):
            self.pid = pid
    procs = [Worker(100), Worker(101), Worker(102)]
    cases = [([None, -9, LOST_PEER], 1, "training process 1 of 3 (pid 101) was killed by SIGKILL"),
             ([LOST_PEER, None, -15], 1, "training process 2 of 3 (pid 102) was killed by SIGTERM"),
             ([LOST_PEER, 1, -9], 1, None),          # rank 1 printed its own error; the launcher adds nothing
             ([None, 70, None], 70, None),
             ([LOST_PEER, LOST_PEER, None], 1, "the 3 training processes lost contact with each other")]
    for codes, status, line in cases:
        assert _report(codes, procs, tmp_path) == status
        err = capsys.readouterr().err
        assert (line in err and len(err.splitlines()) == 1) if line else err == "", (codes, err)
