"""Issue 9, class 3: lost or destroyed data.

A second run into a run directory, two runs at once, a symlinked metrics
file, a diverging run and a full disk must never destroy what is there: the
existing metrics.jsonl, best.npz, SVG or module keep their bytes unless the
user asked for them to be replaced, and every checkpoint left behind is
finite and loadable.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from hostile_harness import TINY, VICTIM_TEXT, refused, start_cli, succeeded
from hostile_inputs import read_npz

FULL_DISK = 20_000  # bytes a process may write per file: smaller than any output below


def test_second_run_into_a_run_directory_is_refused(scratch, trained_run):
    scratch.tiny()
    shutil.copytree(trained_run, scratch.path("r"))
    assert_refused_or_new_directory(scratch.run("run", "tiny.cnn", "--out", "r", "--quiet", "--epochs", "1"),
                                    scratch, "r")


def assert_refused_or_new_directory(result, scratch, run_dir: str) -> None:
    """Refused, or (issue 9 allows it) trained into a new directory: either way `run_dir` keeps every byte."""
    if result.status != 0:
        refused(result, scratch)
        return
    succeeded(result)
    touched = [name for name in scratch.touched() if name == run_dir or name.startswith(run_dir + "/")]
    assert not touched, f"the existing run directory was changed: {touched}"


def test_second_run_into_the_default_run_directory_is_refused(scratch, trained_run):
    scratch.tiny()
    shutil.copytree(trained_run, scratch.path("runs/Tiny"))
    assert_refused_or_new_directory(scratch.run("run", "tiny.cnn", "--quiet", "--epochs", "1"), scratch, "runs/Tiny")


def test_failed_run_keeps_the_run_directory(scratch, trained_run):
    scratch.tiny()
    shutil.copytree(trained_run, scratch.path("r"))
    refused(scratch.run("run", "tiny.cnn", "--out", "r", "--threads", "0"), scratch)


def _slow_tiny(epochs: int) -> str:
    return TINY.replace("n = 64", "n = 4000").replace("epochs     = 2", f"epochs     = {epochs}")


@pytest.mark.slow
def test_two_runs_into_one_directory_the_second_is_refused(scratch):
    scratch.write("slow.cnn", _slow_tiny(40))
    first = start_cli(["run", "slow.cnn", "--out", "r", "--quiet"], scratch.root)
    try:
        deadline = time.monotonic() + 30
        while not scratch.path("r/last.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started; make it slower"
        scratch.freeze()
        second = scratch.run("run", "slow.cnn", "--out", "r", "--quiet", "--overwrite")
        still_running = first.poll() is None
    finally:
        out, err = first.communicate(timeout=120)
    assert still_running, "the second run waited for the first instead of being refused"
    refused(second)
    assert first.returncode == 0, err.decode()
    epochs = [json.loads(line).get("epoch") for line in scratch.path("r/metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 41)) + [None], epochs


def test_symlinked_metrics_file_is_not_written_through(scratch, trained_run):
    scratch.tiny()
    shutil.copytree(trained_run, scratch.path("r"))
    os.unlink(scratch.path("r/metrics.jsonl"))
    os.symlink("../victim.txt", scratch.path("r/metrics.jsonl"))
    result = scratch.run("run", "tiny.cnn", "--out", "r", "--resume", "--epochs", "3", "--quiet")
    assert scratch.victim.read_bytes() == VICTIM_TEXT, "metrics were written through the link"
    if result.status == 0:
        succeeded(result, scratch, outputs=("r",))
    else:
        refused(result, scratch)


def _finite(path) -> bool:
    return all(np.isfinite(v).all() for k, v in read_npz(path).items()
               if k.startswith("param/") and v.dtype.kind == "f")


def test_diverging_run_leaves_only_finite_checkpoints_and_json(scratch):
    scratch.tiny()
    result = scratch.run("run", "tiny.cnn", "--out", "r", "--quiet", "--lr", "1e300", "--epochs", "3")
    assert "Traceback" not in result.err and result.status in (0, 1), str(result)
    for name in ("best.npz", "last.npz"):
        if scratch.path(f"r/{name}").exists():
            assert _finite(scratch.path(f"r/{name}")), f"{name} holds inf/NaN parameters"
    for line in scratch.path("r/metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl has a bare {c}"))
    for word in result.err.split():
        if word.endswith(".npz"):
            assert os.path.exists(scratch.path(word.strip("'\",."))) or os.path.exists(word.strip("'\",.")), \
                f"the message names {word}, which does not exist\n{result}"


def test_viz_on_a_full_disk_keeps_the_old_picture(scratch):
    scratch.tiny()
    old = scratch.write("g.svg", "<svg>the old picture</svg>\n")
    result = scratch.run("viz", "tiny.cnn", "--style", "figure", "-o", "g.svg", file_size=FULL_DISK // 10)
    refused(result, scratch)
    assert old.read_text() == "<svg>the old picture</svg>\n"


def test_emit_on_a_full_disk_keeps_the_old_module_and_weights(scratch):
    scratch.tiny()
    scratch.write("model.py", "# the old module\n")
    scratch.write("model.npz", b"PK old weights")
    result = scratch.run("compile", "tiny.cnn", "--emit", "numpy", "-o", "model.py", file_size=2000)
    refused(result, scratch)


def test_failed_viz_keeps_the_old_picture(scratch):
    scratch.tiny()
    scratch.write("c.svg", "<svg>the old picture</svg>\n")
    scratch.write("m.jsonl", "not json\n")
    refused(scratch.run("viz", "tiny.cnn", "--style", "curves", "--metrics", "m.jsonl", "-o", "c.svg"), scratch)


def test_viz_output_that_is_a_symlink_is_not_written_through(scratch):
    scratch.tiny()
    os.symlink("victim.txt", scratch.path("g.svg"))
    refused(scratch.run("viz", "tiny.cnn", "--style", "figure", "-o", "g.svg"), scratch)


def test_emit_output_that_is_a_symlink_is_not_written_through(scratch):
    scratch.tiny()
    os.symlink("victim.txt", scratch.path("model.py"))
    refused(scratch.run("compile", "tiny.cnn", "--emit", "numpy", "-o", "model.py"), scratch)
