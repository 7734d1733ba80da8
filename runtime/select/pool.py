"""Stage 3 (runtime), model selection: the supervised worker processes that run a search's trials.

`run_supervised(task, jobs, workers, done)` calls `task(job)` for every job in
up to `workers` processes of its own, and `done(job, result, failure)` in this
process as each job ends. Jobs and results are plain JSON.

Why not concurrent.futures' ProcessPoolExecutor: when one of its workers
dies, the whole pool breaks — every job not yet finished, running or never
started, fails with BrokenProcessPool — and it cannot tell which job the dead
worker was running; its workers and multiprocessing's resource tracker also
outlive a parent that was killed. Here:

- each worker is `python -c` reading one job per line on its stdin and
  writing, on a private copy of its stdout, `{"started": true}` when it takes
  the job and `{"result": ...}` when it is done (its fd 1 is pointed at
  stderr, so nothing a trial prints can garble the protocol);
- the pool knows which job each worker holds. A worker that dies (kill -9,
  the out-of-memory killer, a crash in native code) costs only the job it had
  started: `done(job, None, "the worker was killed by SIGKILL")`. A job it had
  been sent but not yet started goes back to the queue, and a new worker
  takes its place;
- the workers hold the parent's lifeline (runtime/processes.py) and ignore
  SIGINT: they end when the parent ends, however it ends, and an interrupt is
  the parent's to act on. No resource tracker is involved.
"""
from __future__ import annotations

import importlib
import json
import os
import selectors
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ...dsl.source import CnncError
from ..processes import Lifeline, ended_by, watch_parent

# The worker's program: a terminal's Ctrl-C ignored from the first statement (the parent acts on it), the
# parent's module path (never the current folder's modules first), then serve(). _signal and sys are built
# into the interpreter: no file of the current folder can stand in for them.
BOOT = ("import _signal; _signal.signal(_signal.SIGINT, _signal.SIG_IGN); "
        "import sys; i = sys.argv.index('--'); sys.path[:] = sys.argv[i + 1:]; del sys.argv[i:]; "
        "from cnnc.runtime.select.pool import serve; serve(sys.argv[1])")
FAILED_STARTS = 3   # workers in a row that end before taking any job: then the pool gives up
STOP_WAIT = 5.0     # seconds a worker gets to end after its lifeline is cut, before SIGKILL

Done = Callable[[dict, Any, "str | None"], None]


# ------------------------------------------------------------------ the worker
def serve(task_name: str) -> None:
    """A worker's loop: `task_name` is 'module:function'; one job per stdin line, replies on fd 1."""
    watch_parent()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    module, _, name = task_name.partition(":")
    task = getattr(importlib.import_module(module), name)
    for line in sys.stdin:
        job = json.loads(line)
        _say(channel, {"started": True})
        try:
            reply = {"result": task(job)}
        except Exception as err:   # the task's own failure, reported for its job
            reply = {"error": f"{type(err).__name__}: {err}"}
        _say(channel, reply)


def _say(channel, message: dict) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


# ------------------------------------------------------------------ the parent
@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    buffer: bytes = b""
    job: dict | None = None
    started: bool = False      # the job was taken (a death now costs it)
    took_any: bool = False     # this worker ever took a job

    @property
    def fd(self) -> int:
        return self.process.stdout.fileno()

    def send(self, job: dict) -> None:
        self.job, self.started = job, False
        try:
            self.process.stdin.write((json.dumps(job) + "\n").encode("utf-8"))
            self.process.stdin.flush()
        except OSError:
            pass   # it died: its end-of-file on stdout tells, and the job goes back to the queue

    def lines(self, data: bytes) -> list[dict]:
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in complete if line.strip()]


def run_supervised(task: str, jobs: Sequence[dict], workers: int, done: Done) -> None:
    """Run every job (see the module docstring); a dead worker costs only the job it had started."""
    queue = deque(jobs)
    lifeline = Lifeline()
    selector = selectors.DefaultSelector()
    pool: list[_Worker] = []
    failed_starts = 0

    def start() -> _Worker:
        process = lifeline.spawn([sys.executable, "-c", BOOT, task, "--", *sys.path],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        worker = _Worker(process)
        pool.append(worker)
        selector.register(worker.fd, selectors.EVENT_READ, worker)
        return worker

    try:
        while queue or any(w.job is not None for w in pool):
            while queue:
                idle = next((w for w in pool if w.job is None), None)
                if idle is None and len(pool) >= workers:
                    break
                (idle or start()).send(queue.popleft())
            for key, _ in selector.select():
                worker: _Worker = key.data
                data = os.read(worker.fd, 1 << 16)
                for message in worker.lines(data):
                    if message.get("started"):
                        worker.started = worker.took_any = True
                        failed_starts = 0
                    else:
                        job, worker.job = worker.job, None
                        done(job, message.get("result"), message.get("error"))
                if data:
                    continue
                # End-of-file: the worker is gone.
                selector.unregister(worker.fd)
                pool.remove(worker)
                status = _reap(worker.process)
                if worker.job is not None and worker.started:
                    done(worker.job, None, f"the worker {ended_by(status)}")
                elif worker.job is not None:
                    queue.appendleft(worker.job)
                if not worker.took_any:
                    failed_starts += 1
                    if failed_starts >= FAILED_STARTS:
                        raise CnncError(f"the search's worker processes end before taking a trial (the last "
                                        f"one {ended_by(status)})")
    finally:
        lifeline.cut()
        for worker in pool:
            _reap(worker.process)
        selector.close()


def _reap(process: subprocess.Popen) -> int:
    """The worker's exit status, once it has ended (killed if it does not end within STOP_WAIT)."""
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        return process.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
