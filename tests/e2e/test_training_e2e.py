"""End-to-end training through the CLI (slow: run in CI, skip locally with -m 'not slow')."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cnnc(*argv: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnc", *argv], capture_output=True, text=True,
                          timeout=timeout)


def metrics(out: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [l for l in lines if "epoch" in l], next(l for l in lines if l.get("split") == "test")


@pytest.fixture(scope="module")
def lenet_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The example's own train section, unchanged, on both engines at once (one thread each)."""
    runs = {}
    for engine in ("numpy", "torch"):
        out = tmp_path_factory.mktemp(f"lenet5-{engine}")
        runs[engine] = (subprocess.Popen([sys.executable, "-m", "cnnc", "run", str(EXAMPLES / "lenet5.cnn"),
                                          "--out", str(out), "--quiet", "--engine", engine, "--threads", "1"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out)
    done = {}
    for engine, (p, out) in runs.items():
        stdout, stderr = p.communicate(timeout=1800)
        done[engine] = (subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr), out)
    return done


@pytest.mark.slow
def test_lenet5_reaches_the_accuracy_target_on_the_embedded_digits(lenet_runs):
    """The acceptance run on real MNIST digits."""
    r, out = lenet_runs["numpy"]
    assert r.returncode == 0, r.stderr
    epochs, test = metrics(out)
    assert test["accuracy"] >= 0.975, test
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] / 5
    assert "test: loss" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.slow
def test_lenet5_on_the_torch_engine_is_within_a_point_of_the_numpy_engine(lenet_runs):
    pytest.importorskip("torch")
    accuracy = {}
    for engine, (r, out) in lenet_runs.items():
        assert r.returncode == 0, r.stderr
        accuracy[engine] = metrics(out)[1]["accuracy"]
    assert abs(accuracy["torch"] - accuracy["numpy"]) <= 0.01, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("example, args", [
    ("small_resnet.cnn", ["--epochs", "2", "--limit", "2000"]),
    ("small_inception.cnn", ["--epochs", "3", "--limit", "3000"]),
    ("small_unet.cnn", ["--epochs", "3"]),
])
def test_residual_inception_and_unet_examples_learn(tmp_path, example, args):
    r = cnnc("run", str(EXAMPLES / example), "--out", str(tmp_path), "--quiet", "--allow", "all", *args)
    assert r.returncode == 0, r.stderr
    epochs, test = metrics(tmp_path)
    assert epochs[-1]["train_loss"] < 0.7 * epochs[0]["train_loss"], epochs
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"], epochs
    chance = 0.5 if example == "small_unet.cnn" else 0.1
    assert test["accuracy"] > chance + 0.2, test
