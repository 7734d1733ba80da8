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


def test_the_command_draws_a_real_run(tmp_path, capsys):
    net = str(EXAMPLES / "lenet5.cnn")
    assert main(["run", net, "--epochs", "1", "--limit", "256", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = tmp_path / "confusion.svg"
    assert main(["viz", net, "--style", "confusion", "--metrics", str(tmp_path / "run" / "metrics.jsonl"),
                 "-o", str(out)]) == 0
    assert len(cells(out.read_text())) == 100
    assert main(["viz", net, "--style", "confusion", "-o", str(out)]) == 1
    assert "--style confusion needs --metrics FILE" in capsys.readouterr().err
