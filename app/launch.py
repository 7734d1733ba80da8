"""Command line: `cnnc run --engine torch --nproc N` — N training processes on this machine.

Starts the same `cnnc run` command N times without `--nproc`, each with the
environment a launcher such as torchrun gives its workers (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so one code path
reads both; the torch engine (runtime/train/torch_engine.py) joins them into one
DistributedDataParallel run. The first process to fail stops the others (a
worker waiting for a peer that is gone would wait forever), and so do Ctrl-C
and SIGTERM: the run directory keeps its last checkpoint, and `--resume`
continues from it.

The workers hold this process's lifeline (runtime/processes.py): if the
launcher is killed (even with kill -9), they stop at once instead of training
on as orphans that write the run directory and hold its lock. When a worker
ends on its own — killed, crashed, or stopped by an error it printed — the
launcher stops the others and prints one line naming it (a worker that
stopped only because a peer was gone exits quietly with `LOST_PEER`, so the
line names the cause, whatever the order in which the processes noticed).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .dsl.files import describe_path
from .runtime.processes import Lifeline, ended_by

LOST_PEER = 75   # a worker's exit status when it stopped because another worker was gone


def without_nproc(argv: list[str]) -> list[str]:
    """The command line minus `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(argv: list[str], nproc: int, out: Path) -> int:
    """Run N workers training into `out`; the exit status is the failing worker's, else 0."""
    port = _free_port()
    command = [sys.executable, "-m", "cnnc", *without_nproc(argv)]
    lifeline = Lifeline()
    procs: list[subprocess.Popen] = []

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for rank in range(nproc):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                       LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            procs.append(lifeline.spawn(command, env=env))
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes):
                # Polled again: a worker that died before the one seen first is seen now, whatever the order.
                codes = [p.poll() for p in procs]
                _stop(procs)
                return _report(codes, procs, out)
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        lifeline.cut()
        signal.signal(signal.SIGTERM, previous)


def _report(codes: list[int | None], procs: list[subprocess.Popen], out: Path) -> int:
    """The launcher's exit status once a worker failed: the status of the worker that ended on its own
    first (by rank), saying how it ended if it could not say so itself (killed by a signal)."""
    causes = [(rank, c) for rank, c in enumerate(codes) if c not in (None, 0, LOST_PEER)]
    if causes and causes[0][1] > 0:
        return causes[0][1]          # it printed its own error
    last = out / "last.npz"
    keeps = (f"continue from {describe_path(last)} with --resume" if last.is_file()
             else "no checkpoint was written yet")
    if causes:
        rank, code = causes[0]
        others = "the other process was" if len(procs) == 2 else f"the other {len(procs) - 1} processes were"
        print(f"cnnc: error: training process {rank} of {len(procs)} (pid {procs[rank].pid}) {ended_by(code)}; "
              f"{others} stopped; {keeps}", file=sys.stderr)
    else:
        print(f"cnnc: error: the {len(procs)} training processes lost contact with each other; {keeps}",
              file=sys.stderr)
    return 1
