"""Stage 3 (runtime): the run directory of `cnnc run` — locked, never silently reused, metrics kept safe.

A run owns its directory (`--out`, default runs/NETWORK) while it runs: an
`fcntl.flock` on `OUT/.lock` (which also holds the run's pid) is taken before
anything is read or written there and released when the process ends, so a
second run into the same directory fails at once instead of deleting the
first one's temporary files and interleaving its metrics. A directory that
holds an earlier run is refused unless the run resumes it or overwrites it.
`metrics.jsonl` is strict JSON (non-finite numbers become null), rewritten
atomically at every append through `cnnc.dsl.files`, which never writes
through a symbolic link.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Callable

from ...dsl import files
from ...dsl.source import CnncError


class RunDirectory:
    """OUT, locked for one run: `OUT/.lock` holds an flock (and the pid) until the run ends."""

    LOCK = ".lock"
    OUTPUTS = ("last.npz", "best.npz", "metrics.jsonl")
    SNAPSHOTS = "snapshot-*.npz"   # a snapshot ensemble's members (train key `snapshots`)

    def __init__(self, out: Path):
        self.out = Path(out)
        self._fd: int | None = None

    def __enter__(self) -> "RunDirectory":
        shown = files.describe_path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise CnncError(f"--out '{shown}' is not a directory", hint="give a directory for the run's files")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / self.LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise CnncError(f"--out '{shown}' cannot be used: {(err.strerror or str(err)).lower()}") from None
        try:
            _lock(fd, self.out)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _own(self) -> None:
        """Write our pid into the lock file, once the run starts writing (a refused run changes nothing)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def claim(self, overwrite: bool) -> None:
        """A fresh run: refuse a directory holding an earlier run unless told to overwrite it."""
        present = [name for name in self.OUTPUTS if os.path.lexists(self.out / name)]
        present += sorted(p.name for p in self.out.glob(self.SNAPSHOTS))
        if present and not overwrite:
            raise CnncError(f"run directory '{files.describe_path(self.out)}' already holds a run "
                            f"({', '.join(present)})",
                            hint="continue it with --resume, replace it with --overwrite, or choose another --out")
        for name in present:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.out / name)

    def metrics(self, epochs_done: int) -> "MetricsFile":
        path = self.out / "metrics.jsonl"
        files.check_output(path, "metrics file")  # refused before anything in OUT changes
        self._own()
        return MetricsFile(path, epochs_done)


def _lock(fd: int, out: Path) -> None:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not protected from each other
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        raise CnncError(f"run directory '{files.describe_path(out)}' is in use by another cnnc run (pid {pid})",
                        hint="wait for it to finish, or choose another --out") from None


class MetricsFile:
    """metrics.jsonl as strict JSON lines, rewritten atomically at every append (never through a link)."""


    def __init__(self, path: Path, epochs_done: int):
        self.path = path
        self.readers: list[Callable[[dict], None]] = []   # each record once it is written (the TensorBoard writer)
        files.check_output(path, "metrics file")
        self.lines = self._kept(epochs_done) if epochs_done else []
        self._write()

    def _kept(self, epochs_done: int) -> list[str]:
        """On resume, the epochs up to the checkpoint: lines written after it are dropped."""
        if not self.path.exists():
            return []
        raw = files.read_bytes(self.path, "metrics file", files.limit("metrics"))
        keep = []
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and rec["epoch"] <= epochs_done:
                keep.append(_json_line(rec))
        return keep

    def append(self, record: dict) -> None:
        line = _json_line(record)
        self.lines.append(line)
        self._write()
        for read in self.readers:
            read(json.loads(line))   # what the file holds, not what the run meant to write

    def _write(self) -> None:
        files.write_atomic(self.path, "".join(line + "\n" for line in self.lines), "metrics file")


def _json_line(record: dict) -> str:
    """Strict JSON: a non-finite number (which JSON cannot hold), at any depth, is written as null."""
    return json.dumps(_finite(record), allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
