"""`cnnc viz --style confusion`: the test split's confusion matrix from metrics.jsonl."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnnc.cli import main
from cnnc.dsl.source import CnncError
from cnnc.viz.confusion import BLUE, confusion_svg
from cnnc.viz.curves import read_metrics

NS = "{http://www.w3.org/2000/svg}"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EPOCH = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None,
         "lr": 0.1, "seconds": 1.0}


def metrics(tmp_path, **test) -> str:
    path = tmp_path / "metrics.jsonl"
    record = {"split": "test", "loss": 0.5, "accuracy": 0.7, **test}
    path.write_text(json.dumps(EPOCH) + "\n" + json.dumps(record) + "\n")
    return str(path)


def cells(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg.encode("utf-8"))
    return [r for r in root.iter(f"{NS}rect") if r.get("stroke") == "#ffffff"]


def test_cells_counts_shades_and_scores(tmp_path):
    m = [[8, 2, 0], [1, 3, 0], [0, 0, 6]]
    path = metrics(tmp_path, confusion=m, precision=[8 / 9, 0.6, 1.0], recall=[0.8, 0.75, 1.0], f1=[0.84, 0.67, 1.0])
    svg = confusion_svg(read_metrics(path), classes=["cat", "dog", "bird"])
    rects = cells(svg)
    assert len(rects) == 9
    # shade = share of the row: row 2 is all class 2 (darkest), row 0's 8/10, empty cells white
    darkest = "#{:02x}{:02x}{:02x}".format(*BLUE)
    assert rects[8].get("fill") == darkest and rects[0].get("fill") != darkest
    assert rects[2].get("fill") == "#ffffff"
    texts = [t.text for t in ET.fromstring(svg.encode()).iter(f"{NS}text")]
    for word in ("cat", "dog", "bird", "8", "2", "3", "6", "predicted class", "true class"):
        assert word in texts
    assert "P 89  R 80  F1 84" in texts
    assert any("20 test samples, 85.00% on the diagonal" in (t or "") for t in texts)  # (8+3+6)/20


@pytest.mark.parametrize("test, message", [
    ({}, "its test record has no confusion matrix"),
    ({"confusion": [[1, 2], [3]]}, "not a square matrix of counts"),
    ({"confusion": [[1, -2], [3, 4]]}, "not a square matrix of counts"),
])
def test_a_record_without_a_usable_matrix_is_refused(tmp_path, test, message):
    with pytest.raises(CnncError, match=message):
        confusion_svg(read_metrics(metrics(tmp_path, **test)))


def texts_of(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg.encode()).iter(f"{NS}text")]


def test_the_class_names_of_the_test_record_label_the_rows(tmp_path):
    path = metrics(tmp_path, confusion=[[2, 0], [1, 3]], classes=["astronaut", "coffee"])
    texts = texts_of(confusion_svg(read_metrics(path), classes=["a", "b"]))  # the record's names win
    assert texts.count("astronaut") == 2 and texts.count("coffee") == 2 and "a" not in texts
    texts = texts_of(confusion_svg(read_metrics(metrics(tmp_path, confusion=[[2, 0], [4, 3]]))))
    assert texts.count("0") == 2 and texts.count("1") == 2  # no names anywhere: the indices


@pytest.mark.parametrize("test, message", [
    ({"precision": [0.5, 1e300]}, "the test record's 'precision' is not a list of 2 fractions in \\[0, 1\\]"),
    ({"recall": [0.5]}, "the test record's 'recall' is not a list of 2 fractions"),
    ({"f1": [0.5, "x"]}, "the test record's 'f1' is not a list of 2 fractions"),
    ({"classes": ["a", 3]}, "the test record's 'classes' is not a list of 2 names"),
])
def test_scores_and_names_that_are_not_what_cnnc_writes_are_refused(tmp_path, test, message):
    with pytest.raises(CnncError, match=message):
        confusion_svg(read_metrics(metrics(tmp_path, confusion=[[1, 0], [0, 1]], **test)))


@pytest.mark.parametrize("number", ["9" * 4300, "1" + "0" * 400, "-" + "1" * 19])
def test_an_integer_beyond_int64_is_refused_at_its_line_and_column(tmp_path, number):
    path = tmp_path / "metrics.jsonl"
    head = '{"split": "test", "loss": 0.5, "confusion": [['
    path.write_text(json.dumps(EPOCH) + "\n" + head + number + ', 1], [2, 3]]}\n')
    with pytest.raises(CnncError) as err:
        read_metrics(path)
    digits = len(number.lstrip("-"))
    assert err.value.message == f"malformed metrics line: an integer of {digits:,} digits (at most 18)"
    assert (err.value.diagnostic.loc.line, err.value.diagnostic.loc.col) == (2, len(head) + 1)


def test_the_command_draws_a_real_run(tmp_path, capsys):
    net = str(EXAMPLES / "lenet5.cnn")
    assert main(["run", net, "--epochs", "1", "--limit", "256", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = tmp_path / "confusion.svg"
    assert main(["viz", net, "--style", "confusion", "--metrics", str(tmp_path / "run" / "metrics.jsonl"),
                 "-o", str(out)]) == 0
    assert len(cells(out.read_text())) == 100
    assert main(["viz", net, "--style", "confusion", "-o", str(out)]) == 1
    assert "--style confusion needs --metrics FILE" in capsys.readouterr().err
