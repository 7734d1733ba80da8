"""runtime/processes.py `leave`: a process that joined a process group of several ends without the
interpreter's teardown (gloo's threads abort it there once a peer is gone), its output flushed first."""
from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import atexit, sys
from cnnc.runtime.processes import joined_group, leave
atexit.register(lambda: print("teardown ran", file=sys.stderr))
print("the run's last line", end="")     # not yet flushed: leave flushes it
if {joined}:
    joined_group()
sys.exit(leave(7))
"""


def _run(joined: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM.format(joined=joined)], capture_output=True, text=True,
                          timeout=120)


def test_a_process_of_a_group_leaves_with_its_output_and_status_and_no_teardown():
    done = _run(joined=True)
    assert (done.returncode, done.stdout, done.stderr) == (7, "the run's last line", "")


def test_any_other_process_ends_as_usual():
    done = _run(joined=False)
    assert (done.returncode, done.stdout, done.stderr) == (7, "the run's last line", "teardown ran\n")
