"""Issue 9, class 2: wrong predictions.

`cnnc predict` on files must apply the training normalisation exactly as the
data set path does: the same digits give the same classes and probabilities
whether they come from the test split or from image or array files.
"""
from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from hostile_harness import run_cli, succeeded
from hostile_inputs import png_bytes

DIGITS = """\
network Digits {
    input x: [1, 28, 28]
    x -> conv(4, 5) -> relu -> maxpool(4) -> flatten -> linear(10)
}

train Digits {
    data       = mnist10k(val = 0.1)
    preprocess = normalize
    epochs     = 1
    batch      = 64
    loss       = cross_entropy
    optimizer  = adam(lr = 0.003)
    seed       = 0
}
"""
COUNT = 8


def _mnist_test_digits() -> np.ndarray:
    resource = importlib.resources.files("cnnc.runtime").joinpath("datasets", "mnist10k.npz")
    with resource.open("rb") as f, np.load(f) as z:
        return z["x_test"][:COUNT]


def _guesses(stdout: str) -> list[str]:
    """The 'class (probability), ...' part of each prediction line, without the name or the label."""
    return [line.split(": ", 1)[1].split("  [label")[0] for line in stdout.splitlines() if ": " in line]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    (root / "digits.cnn").write_text(DIGITS)
    result = run_cli(["run", "digits.cnn", "--out", "r", "--limit", "1024", "--quiet"], root)
    succeeded(result)
    from_split = run_cli(["predict", "digits.cnn", "r/best.npz", "--limit", str(COUNT), "--top", "3"], root)
    succeeded(from_split)
    assert len(_guesses(from_split.out)) == COUNT, from_split.out
    return root, _guesses(from_split.out)


@pytest.mark.slow
def test_predicting_from_png_files_equals_predicting_from_the_test_split(digits_run, scratch):
    root, expected = digits_run
    names = []
    for i, digit in enumerate(_mnist_test_digits()):
        names.append(str(scratch.write(f"d{i}.png", png_bytes(digit))))
    result = run_cli(["predict", "digits.cnn", "r/best.npz", *names, "--top", "3"], root)
    succeeded(result)
    assert _guesses(result.out) == expected


@pytest.mark.slow
def test_predicting_from_an_npy_file_equals_predicting_from_the_test_split(digits_run, scratch):
    root, expected = digits_run
    path = scratch.path("digits.npy")
    np.save(path, _mnist_test_digits())  # uint8 [N, 28, 28], as the data set stores them
    result = run_cli(["predict", "digits.cnn", "r/best.npz", str(path), "--top", "3"], root)
    succeeded(result)
    assert _guesses(result.out) == expected
