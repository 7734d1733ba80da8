"""Fixtures of the hostile-input suite: a scratch directory per case and one trained tiny run.

The helper modules (hostile_harness: running and judging the CLI;
hostile_inputs: the generators) are imported by name, so this folder goes on
sys.path here.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile_harness import Scratch, run_cli, TINY  # noqa: E402


@pytest.fixture
def scratch(tmp_path) -> Scratch:
    """A scratch directory with a victim file; call scratch.freeze() once the inputs are made."""
    root = tmp_path / "scratch"
    root.mkdir()
    return Scratch(root)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory of the tiny network (best.npz, last.npz, metrics.jsonl), trained once per session."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.cnn").write_text(TINY)
    result = run_cli(["run", "tiny.cnn", "--out", "run", "--quiet"], root)
    assert result.status == 0, str(result)
    return root / "run"


@pytest.fixture
def checkpoint(trained_run, scratch) -> Path:
    """A copy of the trained tiny network's best.npz in the scratch directory."""
    target = scratch.path("best.npz")
    shutil.copyfile(trained_run / "best.npz", target)
    return target
