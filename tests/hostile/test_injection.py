"""Issue 9, class 1: code injection in generated modules.

Every value that reaches a module written by `--emit numpy` (the source path,
the checkpoint path, the output stem, numeric attributes) must be escaped: the
module compiles, importing it runs no code of the attacker, and running it
works. And `--emit` never destroys the checkpoint it reads.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hostile_harness import TINY, child_env, refused, succeeded
from hostile_inputs import HOSTILE_STEMS


IMPORT_AND_RUN = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("emitted", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
y = module.forward(np.zeros((2, 1, 8, 8), np.float32))
assert np.asarray(y).shape == (2, 4), np.asarray(y).shape
print("imported")
"""


def import_emitted(scratch, module: str) -> subprocess.CompletedProcess:
    """Import the generated module in a fresh interpreter in the scratch directory and run forward."""
    return subprocess.run([sys.executable, "-c", IMPORT_AND_RUN, module], cwd=scratch.root,
                          env=child_env(), capture_output=True, text=True, timeout=60)


def assert_module_is_safe(scratch, module: str) -> None:
    done = import_emitted(scratch, module)
    assert not scratch.path("PWNED").exists(), "importing the generated module ran injected code"
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]


STEM_CASES = ("triple-quote", "newline", "windows-path", "escape-sequences", "quote-soup")


@pytest.mark.parametrize("kind", STEM_CASES)
def test_hostile_source_name_cannot_inject_code(scratch, kind):
    source = scratch.write(HOSTILE_STEMS[kind] + ".cnn", TINY)
    result = scratch.run("compile", source.name, "--emit", "numpy", "-o", "model.py")
    succeeded(result, scratch, outputs=("model.py", "model.npz"))
    assert_module_is_safe(scratch, "model.py")


@pytest.mark.parametrize("kind", ["newline"])
def test_hostile_checkpoint_name_cannot_inject_code(scratch, checkpoint, kind):
    hostile = checkpoint.rename(checkpoint.with_name(HOSTILE_STEMS[kind] + ".npz"))
    scratch.tiny()
    result = scratch.run("compile", "tiny.cnn", "--emit", "numpy", "--checkpoint", hostile.name, "-o", "model.py")
    succeeded(result, scratch, outputs=("model.py", "model.npz"))
    assert_module_is_safe(scratch, "model.py")


@pytest.mark.parametrize("kind", ["triple-quote"])
def test_hostile_output_name_cannot_inject_code(scratch, kind):
    scratch.tiny()
    stem = HOSTILE_STEMS[kind]
    result = scratch.run("compile", "tiny.cnn", "--emit", "numpy", "-o", stem + ".py")
    succeeded(result, scratch, outputs=(stem + ".py", stem + ".npz"))
    assert_module_is_safe(scratch, stem + ".py")


def test_infinite_attribute_is_refused_or_emitted_as_a_value(scratch):
    scratch.write("pad.cnn", TINY.replace("x -> conv(4, 3, pad = 1)",
                                          "x -> pad(1, value = 1e400) -> conv(4, 3)"))
    result = scratch.run("compile", "pad.cnn", "--emit", "numpy", "-o", "model.py")
    if result.status != 0:
        refused(result, scratch)
        return
    succeeded(result, scratch, outputs=("model.py", "model.npz"))
    assert_module_is_safe(scratch, "model.py")


def test_emit_beside_its_checkpoint_keeps_the_checkpoint(scratch, checkpoint):
    scratch.tiny()
    before = checkpoint.read_bytes()
    result = scratch.run("compile", "tiny.cnn", "--emit", "numpy", "--checkpoint", "best.npz", "-o", "best.py")
    assert checkpoint.read_bytes() == before, "the checkpoint --emit read was overwritten"
    if result.status == 0:
        succeeded(result, scratch, outputs=("best.py",) + tuple(
            n for n in scratch.touched() if n.startswith("best") and n != "best.npz"))
    else:
        refused(result, scratch)


def test_emit_into_a_run_directory_keeps_best_npz(scratch, checkpoint):
    scratch.tiny()
    run_dir = scratch.path("runs/e")
    run_dir.mkdir(parents=True)
    shutil.move(checkpoint, run_dir / "best.npz")
    before = (run_dir / "best.npz").read_bytes()
    result = scratch.run("compile", "tiny.cnn", "--emit", "numpy", "--checkpoint", "runs/e/best.npz",
                         "-o", "runs/e/best.py")
    assert (run_dir / "best.npz").read_bytes() == before, "runs/e/best.npz was destroyed by --emit"
    assert result.status in (0, 1), str(result)
