"""`cnnc predict` prints class names: the train section's `classes`, recorded in the checkpoint."""
from __future__ import annotations

import pytest

from cnnc.cli import main

NET = """network N {
    input x: [1, 8, 8]
    x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> flatten -> linear(3)
}
train N {
    data = synthetic(n = 64, classes = 3)
    epochs = 1
    batch = 16
    classes = CLASSES
}
"""


def test_predictions_and_labels_carry_the_class_names(tmp_path, capsys):
    src = tmp_path / "n.cnn"
    src.write_text(NET.replace("CLASSES", '["circle", "square", "ring"]'))
    assert main(["run", str(src), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", str(src), str(tmp_path / "run" / "last.npz"), "--limit", "4", "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for line in lines:
        guesses, label = line.split("  [label ")
        assert all(name in guesses for name in ("circle", "square", "ring"))
        assert label.rstrip("]").split(" ", 1)[1] in ("circle", "square", "ring")


def test_classes_must_name_every_output(tmp_path, capsys):
    src = tmp_path / "n.cnn"
    src.write_text(NET.replace("CLASSES", '["circle", "square"]'))
    assert main(["run", str(src), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{src}:9:5: error: classes names 2 classes, but the network has 3 outputs" in err


@pytest.mark.parametrize("value, message", [
    ('["a", "a", "b"]', "classes must be a list of distinct names in quotes"),
    ("[1, 2, 3]", "classes must be a list of distinct names in quotes"),
])
def test_classes_must_be_distinct_names(tmp_path, capsys, value, message):
    src = tmp_path / "n.cnn"
    src.write_text(NET.replace("CLASSES", value))
    assert main(["check", str(src)]) == 1
    err = capsys.readouterr().err
    assert f"{src}:9:15: error: {message}" in err
