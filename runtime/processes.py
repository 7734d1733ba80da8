"""Stage 3 (runtime): processes cnnc starts, which never outlive the process that started them.

cnnc starts processes of its own: the workers of `cnnc search`
(select/pool.py) and the training processes of `cnnc run --nproc N`
(app/launch.py). None may outlive its parent: a worker whose parent was
killed (kill -9, the out-of-memory killer) would go on training for nobody,
holding its run directory's lock, its memory and its CPU.

The parent gives its children a *lifeline*: the read end of a pipe whose
write end only the parent holds and never writes to. However the parent ends
— exit, exception, kill -9 — the kernel closes that write end, so a read of
the pipe returns end-of-file at once; a thread in each child waits for it and
ends the child (`watch_parent`). A pipe rather than Linux's
prctl(PR_SET_PDEATHSIG), because the pipe works on every POSIX system, cannot
miss a parent that died before the child started watching (the end-of-file
is already there), is not fooled by a reused pid, and does not depend on
which thread started the child (PR_SET_PDEATHSIG fires when that *thread*
ends). Children stay in their parent's process group, so a terminal's
Ctrl-C and Ctrl-Z, and `kill -- -PGID`, reach them too.

`LostPeer` is the error of a process of several (a DDP rank) that stopped
because another one is gone: the one line it prints names this process, and
a launcher that knows which process ended first names that one instead.

A process that joined a process group of several ends with `leave` (cli.py):
its output flushed, then `os._exit` without the interpreter's teardown. Once a
peer is gone (or, seen under load, even after a clean `destroy_process_group`),
the teardown destroys gloo's threads while they are still joinable, and the
C runtime aborts the process with "terminate called without an active
exception" on the terminal after cnnc's own message, and SIGABRT for a status.
Everything the run writes is closed before `leave` (checkpoints and metrics
are written whole and renamed), so the teardown has nothing left to do.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from typing import Mapping, Sequence

from ..dsl.source import CnncError

LIFELINE = "CNNC_LIFELINE_FD"   # the environment variable naming the child's end of the lifeline
_in_group = False               # this process joined a process group of several (`joined_group`)


def joined_group() -> None:
    """Called once this process has joined a process group of several (the torch engine's DDP)."""
    global _in_group
    _in_group = True


def leave(code: int) -> int:
    """The command's exit status; a process that joined a process group ends here, its output flushed,
    without the interpreter's teardown (see the module docstring)."""
    if _in_group:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


class Lifeline:
    """The parent's side: start children with `spawn`; `cut()` (or the parent's death) ends them."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()   # neither is inherited unless passed on

    def spawn(self, command: Sequence[str], env: Mapping[str, str] | None = None, **popen) -> subprocess.Popen:
        """Start `command` holding the lifeline (it must call `watch_parent` to act on it)."""
        child_env = dict(os.environ if env is None else env, **{LIFELINE: str(self._read)})
        return subprocess.Popen(list(command), env=child_env, pass_fds=(self._read,), **popen)

    def cut(self) -> None:
        """Tell every child to end now (what the parent's death does)."""
        for fd in (self._write, self._read):
            if fd >= 0:
                os.close(fd)
        self._read = self._write = -1


def watch_parent(farewell: str | None = None) -> bool:
    """In a child started by `Lifeline.spawn`: end this process (status 1) as soon as the parent is gone,
    after printing `farewell` on stderr if given. False, and nothing done, in a process started otherwise."""
    text = os.environ.pop(LIFELINE, None)   # popped: a process this one starts must not inherit the name
    if text is None:
        return False
    try:
        fd = int(text)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except (ValueError, OSError):
        return False

    def wait_for_the_end() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break            # end-of-file: the parent closed its end, or died
            except InterruptedError:
                continue
            except OSError:
                break
        if farewell:
            try:
                os.write(2, (farewell + "\n").encode("utf-8", "replace"))
            except OSError:
                pass
        os._exit(1)   # now, from this thread, whatever the main thread is doing

    threading.Thread(target=wait_for_the_end, name="cnnc-lifeline", daemon=True).start()
    return True


class LostPeer(CnncError):
    """A process of several stopped because another one is gone (killed, crashed, stopped)."""


def ended_by(returncode: int) -> str:
    """How a child ended, for a message: 'was killed by SIGKILL' or 'exited with status 3'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"
