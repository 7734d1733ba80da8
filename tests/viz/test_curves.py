"""Tests for the training curves (viz/curves.py): reading metrics.jsonl and drawing it."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from cnnc.dsl.source import CnncError
from cnnc.viz import curves_svg, read_metrics

NS = "{http://www.w3.org/2000/svg}"


def write(tmp_path, lines: list) -> str:
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def epochs(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 1 - 0.5 / e, "val_loss": 1.2 / e,
             "val_accuracy": 1 - 0.6 / e, "lr": 0.1, "seconds": 2.5} for e in range(1, n + 1)]


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg.encode("utf-8")).iter(f"{NS}text")]


def test_curves_show_loss_accuracy_and_the_test_result(tmp_path):
    path = write(tmp_path, epochs(10) + [{"split": "test", "loss": 0.2, "accuracy": 0.9812}])
    m = read_metrics(path)
    assert len(m.epochs) == 10 and m.test["accuracy"] == 0.9812
    svg = curves_svg(m, "LeNet5")
    t = texts(svg)
    assert {"loss", "accuracy", "train", "validation", "epoch", "LeNet5"} <= set(t)
    assert "test 98.12%" in t and "test 0.2" in t
    curves = [p for p in ET.fromstring(svg.encode("utf-8")).iter(f"{NS}polyline") if p.get("points").count(",") == 10]
    assert len(curves) == 4  # train and validation, loss and accuracy: ten epochs each


def test_missing_validation_and_accuracy_are_fine(tmp_path):
    path = write(tmp_path, [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.5, "val_loss": None}])
    t = texts(curves_svg(read_metrics(path)))
    assert "loss" in t and "accuracy" not in t and "validation" not in t


def test_a_single_epoch_draws(tmp_path):
    t = texts(curves_svg(read_metrics(write(tmp_path, epochs(1)))))
    assert "loss" in t


@pytest.mark.parametrize("bad, line, what", [
    ('{"epoch": 1, "train_loss": 0.5', 2, "malformed metrics line"),
    ("[1, 2, 3]", 2, "expected a JSON object"),
    ('{"train_loss": 0.5}', 2, "needs a numeric 'epoch'"),
    ('{"epoch": 2, "train_loss": "low"}', 2, "'train_loss' must be a number"),
    ('{"split": "test", "accuracy": "high"}', 2, "'accuracy' must be a number"),
])
def test_malformed_lines_name_file_and_line(tmp_path, bad, line, what):
    path = write(tmp_path, [epochs(1)[0], bad])
    with pytest.raises(CnncError) as err:
        read_metrics(path)
    assert what in err.value.message
    assert err.value.loc.file == path and err.value.loc.line == line
    assert f"{path}:{line}:" in err.value.diagnostic.render()


def test_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, [json.dumps(epochs(2)[0]), "", json.dumps(epochs(2)[1])])
    assert len(read_metrics(path).epochs) == 2


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(CnncError) as err:
        read_metrics(tmp_path / "nope.jsonl")
    assert "no such file" in err.value.message and "cnnc run" in err.value.hint
    with pytest.raises(CnncError, match="no epoch records"):
        read_metrics(write(tmp_path, [{"split": "test", "loss": 0.1, "accuracy": 0.9}]))


def test_a_diverged_run_draws_without_its_non_finite_values(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.1, "val_loss": NaN, "lr": 0.1, "seconds": 1}\n'
        '{"epoch": 2, "train_loss": 1e308, "train_accuracy": 0.1, "val_loss": -Infinity, "lr": 0.1, "seconds": 1}\n'
        '{"epoch": 3, "train_loss": Infinity, "train_accuracy": 0.1, "val_loss": 1.0, "lr": 0.1, "seconds": 1}\n'
        '{"split": "test", "loss": Infinity, "accuracy": NaN}\n')
    m = read_metrics(path)
    assert m.series("train_loss") == [(1, 2.0), (2, 1e308)]
    assert m.series("val_loss") == [(3, 1.0)]
    svg = curves_svg(m)
    ET.fromstring(svg)
    assert "test (after training)" not in svg  # nothing finite to mark
    assert "inf" not in svg.lower() and "nan" not in svg.lower()


def test_an_epoch_that_is_not_finite_is_malformed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": Infinity, "train_loss": 1.0}\n')
    with pytest.raises(CnncError) as err:
        read_metrics(path)
    assert "numeric 'epoch'" in err.value.message and err.value.loc.line == 1


def test_metrics_are_read_only_from_regular_files():
    with pytest.raises(CnncError, match="'/dev/zero' is not a regular file"):
        read_metrics("/dev/zero")
