"""The hostile-input harness: run the real `cnnc` command in a subprocess and judge what it did.

Every case of tests/hostile runs `python -m cnnc ...` with the interpreter that
runs pytest, in a scratch directory, under an address-space limit (a bomb that
inflates to gigabytes dies as a MemoryError instead of taking the machine down)
and a timeout (a FIFO that blocks for ever fails the case instead of hanging
the suite). `refused(...)` then asserts the whole contract of issue 9 for a
command that must fail:

- the exit status (1 for a user error, 2 for command-line usage);
- stderr is ONE diagnostic: a first line `file:line:col: error: ...` or
  `cnnc: error: ...` (argparse's `usage:` lines and `cnnc CMD: error: ...` for
  status 2), followed only by the quoted source line, its caret, and `hint:` /
  `note:` lines; each line short (messages are clipped, not megabytes);
- no "Traceback", no "internal error", no raw ESC or BEL byte in stdout or
  stderr, and never the secret marker of a file cnnc must not quote;
- no file in the scratch directory was created, changed or removed apart from
  the outputs the case allows (snapshot of type, size, mtime and SHA-256 of
  every entry, without following links or opening FIFOs), and the `victim`
  file that hostile links point at keeps its bytes.

Cases that kill processes start them with `start_tree`, which marks the
process's environment: `tree(mark)` finds, through /proc, every process of
that tree still alive (its children too, whoever their parent is by then), so
`assert_no_survivors` checks that no worker, rank or helper outlived the case.
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

MEMORY_LIMIT = 1536 << 20  # bytes of address space for the cnnc process
MEMORY_3GB = 3 * 10**9     # issue 22's bound, for cases that load torch or ONNX (their address space is larger)
TIMEOUT = 60.0  # seconds
SECRET = "CNNC-SECRET-MARKER-7f3a9c"  # put in files cnnc must never quote
VICTIM_TEXT = b"victim: a file a hostile path points at; it must keep these bytes\n"
MAX_LINE = 600  # characters per stderr line: quoted lines are clipped around the column
MAX_STDERR = 4000  # characters of stderr for one diagnostic

# A tiny classifier that trains in a fraction of a second on synthetic data.
TINY = """\
network Tiny(classes = 4) {
    input x: [1, 8, 8]
    x -> conv(4, 3, pad = 1) -> relu -> flatten -> linear(classes)
}

train Tiny {
    data       = synthetic(classes = 4, shape = (1, 8, 8), n = 64, val = 0.25, seed = 0)
    preprocess = normalize
    epochs     = 2
    batch      = 16
    loss       = cross_entropy
    optimizer  = sgd(lr = 0.05)
    seed       = 0
}
"""

_LOCATED = re.compile(r"^.+:\d+:\d+: error: \S")
_PLAIN = re.compile(r"^cnnc: error: \S")
_USAGE_ERROR = re.compile(r"^cnnc(?: [a-z]+)?: error: \S")
_FOLLOWERS = (
    re.compile(r"^ *\d+ \| "),  # the quoted source line
    re.compile(r"^ *\^~*$"),  # the caret under the column
    re.compile(r"^  (?:hint|note): "),
)


@dataclass
class Result:
    """What one cnnc run did."""

    args: list[str]
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def __str__(self) -> str:
        return f"cnnc {self.args!r} -> {self.status}\n--- stdout\n{self.out[:3000]}\n--- stderr\n{self.err[:3000]}"


def _limits(file_size: int | None = None, memory: int = MEMORY_LIMIT):
    """The child's preexec function: the memory limit, and optionally a file-size limit (a "full disk":
    writing past it fails with EFBIG instead of killing the process with SIGXFSZ)."""
    def apply() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    return apply


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNC_")}
    env.update({"NO_COLOR": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra or {})
    return env


def cnnc_command(args: Sequence[str | os.PathLike]) -> list[str]:
    return [sys.executable, "-m", "cnnc", *map(os.fspath, args)]



# Python that prints nothing, an expression for the peak resident memory (bytes) of the process that
# evaluates it: VmHWM, the high-water mark of its own memory since exec. (ru_maxrss is not that: Linux
# carries the parent's RSS at fork over exec, so a child of a big pytest process reports the parent.)
PEAK_BYTES = ("int(next(line.split()[1] for line in open('/proc/self/status') "
              "if line.startswith('VmHWM:'))) * 1024")


def run_cli(args: Sequence[str | os.PathLike], cwd: Path, *, env: dict[str, str] | None = None,
            stdout=subprocess.PIPE, timeout: float = TIMEOUT, file_size: int | None = None,
            memory: int = MEMORY_LIMIT) -> Result:
    """Run `cnnc ARGS` in `cwd` under the memory limit and the timeout (and a file-size limit if given)."""
    done = subprocess.run(cnnc_command(args), cwd=cwd, env=child_env(env), stdin=subprocess.DEVNULL,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                          preexec_fn=_limits(file_size, memory))
    return Result([os.fspath(a) for a in args], done.returncode, done.stdout or b"", done.stderr)


def run_python(code: str, cwd: Path, *, env: dict[str, str] | None = None, timeout: float = TIMEOUT,
               memory: int = MEMORY_LIMIT, args: Sequence[str] = ()) -> Result:
    """Run Python `code` (generated code, or cnnc with a patched table) under the same limits."""
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=child_env(env), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, preexec_fn=_limits(None, memory))
    return Result(["python", "-c", code[:60]], done.returncode, done.stdout, done.stderr)


def start_cli(args: Sequence[str | os.PathLike], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `cnnc ARGS` in the background (for the concurrent-run and killed-process cases)."""
    return subprocess.Popen(cnnc_command(args), cwd=cwd, env=child_env(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits())


# ------------------------------------------------------------------ snapshots
Entry = tuple  # (kind, size, mtime_ns, digest or link target)


def _entry(path: Path) -> Entry:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return ("link", 0, 0, os.readlink(path))
    if stat.S_ISREG(info.st_mode):
        return ("file", info.st_size, info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    if stat.S_ISDIR(info.st_mode):
        return ("dir", 0, 0, "")
    return ("special", 0, 0, stat.S_IFMT(info.st_mode))  # FIFOs and devices are never opened


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under `root`, without following links."""
    found = {}
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(directory) / name
            found[os.path.relpath(path, root)] = _entry(path)
    return found


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> dict[str, str]:
    diff = {}
    for name in before.keys() | after.keys():
        if name not in after:
            diff[name] = "removed"
        elif name not in before:
            diff[name] = "created"
        elif before[name] != after[name]:
            diff[name] = "changed"
    return diff


class Scratch:
    """A scratch directory holding the case's inputs, a victim file and a snapshot."""

    def __init__(self, root: Path):
        self.root = root
        self.victim = root / "victim.txt"
        self.victim.write_bytes(VICTIM_TEXT)
        self.before: dict[str, Entry] | None = None

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def tiny(self, name: str = "tiny.cnn") -> Path:
        return self.write(name, TINY)

    def freeze(self) -> None:
        """Take the 'before' snapshot: call it after the inputs are made, before running cnnc."""
        self.before = snapshot(self.root)

    def run(self, *args: str | os.PathLike, env: dict[str, str] | None = None, stdout=subprocess.PIPE,
            timeout: float = TIMEOUT, file_size: int | None = None, memory: int = MEMORY_LIMIT) -> Result:
        if self.before is None:
            self.freeze()
        return run_cli(args, self.root, env=env, stdout=stdout, timeout=timeout, file_size=file_size,
                       memory=memory)

    def touched(self) -> dict[str, str]:
        assert self.before is not None, "freeze() before running"
        return changes(self.before, snapshot(self.root))


# ------------------------------------------------------------------ verdicts
def assert_clean_output(result: Result) -> None:
    """No traceback, no internal error, no terminal control bytes, no secret, in either stream."""
    for name, stream in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert b"Traceback" not in stream, f"a traceback on {name}\n{result}"
        assert b"internal error" not in stream, f"an internal error on {name}\n{result}"
        assert b"\x1b" not in stream and b"\x07" not in stream and b"\x9b" not in stream, \
            f"raw terminal control bytes on {name}\n{result}"
        assert SECRET.encode() not in stream, f"the secret marker was quoted on {name}\n{result}"


def assert_one_diagnostic(result: Result, status: int) -> None:
    """stderr is one diagnostic: a first error line, then only its quote, caret, hints and notes."""
    text = result.err
    assert len(text) <= MAX_STDERR, f"{len(text)} characters of stderr for one error\n{result}"
    lines = text.rstrip("\n").split("\n")
    if status == 2:  # argparse: usage lines, then "cnnc CMD: error: ..."
        assert len(lines) >= 1 and _USAGE_ERROR.match(lines[-1]), f"not one usage error\n{result}"
        assert sum("error:" in line for line in lines) == 1, f"more than one error\n{result}"
        return
    assert _LOCATED.match(lines[0]) or _PLAIN.match(lines[0]), f"the first line is not a diagnostic\n{result}"
    for line in lines[1:]:
        assert any(p.match(line) for p in _FOLLOWERS), f"stray line {line!r} after the diagnostic\n{result}"
    for line in lines:
        assert len(line) <= MAX_LINE, f"a {len(line)}-character line in the diagnostic\n{result}"


def refused(result: Result, scratch: Scratch | None = None, *, status: int | Iterable[int] = 1,
            outputs: Iterable[str] = ()) -> None:
    """The command failed cleanly: status, one diagnostic, clean streams, nothing but `outputs` touched."""
    allowed = {status} if isinstance(status, int) else set(status)
    assert result.status in allowed, f"exit status {result.status}, expected {sorted(allowed)}\n{result}"
    assert_clean_output(result)
    assert_one_diagnostic(result, result.status)
    if scratch is not None:
        assert_untouched(scratch, outputs)


def succeeded(result: Result, scratch: Scratch | None = None, *, outputs: Iterable[str] = ()) -> None:
    """The command worked: status 0, clean streams, nothing touched but `outputs` (names or prefixes)."""
    assert result.status == 0, f"exit status {result.status}\n{result}"
    assert_clean_output(result)
    if scratch is not None:
        assert_untouched(scratch, outputs)


def assert_untouched(scratch: Scratch, outputs: Iterable[str] = ()) -> None:
    allowed = tuple(outputs)
    touched = {name: what for name, what in scratch.touched().items()
               if not any(name == o or name.startswith(o.rstrip("/") + "/") for o in allowed)}
    assert not touched, f"files touched outside the expected output: {touched}"
    assert scratch.victim.read_bytes() == VICTIM_TEXT, "the victim file was changed"


# ------------------------------------------------------------------ process trees
# Every process a case starts carries TREE=<a fresh mark> in its environment, and so does everything it
# starts in turn (cnnc's workers inherit the environment): scanning /proc for the mark finds every
# process of the tree, whoever its parent is now (a killed parent's children are re-parented).
TREE = "HOSTILE_PROCESS_TREE"


def start_tree(args: Sequence[str | os.PathLike], cwd: Path,
               env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `cnnc ARGS` (under the memory limit) with a fresh tree mark; returns (process, mark)."""
    mark = os.urandom(8).hex()
    process = subprocess.Popen(cnnc_command(args), cwd=cwd, env=child_env({**(env or {}), TREE: mark}),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_limits())
    return process, mark


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int | str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != b"Z"   # a zombie is dead, waiting to be reaped


def tree(mark: str) -> list[int]:
    """The live processes whose environment carries `mark`."""
    found, needle = [], f"{TREE}={mark}".encode()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if needle in environ and _alive(entry):
            found.append(int(entry))
    return found


def children(pid: int) -> list[int]:
    """The live children of `pid`."""
    return sorted(int(entry) for entry in filter(str.isdigit, os.listdir("/proc"))
                  if (fields := _stat(entry)) is not None and int(fields[1]) == pid and fields[0] != b"Z")


def wait_for(condition, what: str, timeout: float = TIMEOUT, every: float = 0.02):
    """Poll `condition()` until it returns something true (returned); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(every)


def assert_no_survivors(mark: str, within: float = 10.0) -> None:
    """Within `within` seconds no process of the tree is left (each named with its command line if any)."""
    deadline = time.monotonic() + within
    while tree(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for pid in tree(mark)}
    for pid in left:
        os.kill(pid, signal.SIGKILL)   # do not leave them to the rest of the suite
    assert not left, f"processes outlived the case: {left}"


def finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> Result:
    """Wait for a started process; its Result."""
    out, err = process.communicate(timeout=timeout)
    return Result([os.fspath(a) for a in process.args[3:]], process.returncode, out, err)
