"""`cnnc viz --style diagnostics`: per-layer heat strips from the `layers` of metrics.jsonl."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from cnnc.cli import main
from cnnc.viz.diagnostics import MISSING, colour, diagnostics_svg
from cnnc.viz.curves import read_metrics

LENET = str(Path(__file__).resolve().parents[2] / "examples" / "lenet5.cnn")
NS = "{http://www.w3.org/2000/svg}"


def layer(name, line, grad=None, ratio=None, dead=None):
    r = {"layer": name, "op": "conv" if grad is not None else "relu", "line": line}
    if grad is not None:
        r["params"] = {"weight": {"norm": 1.0, "grad_norm": grad, "grad_growth": None, "update_ratio": ratio}}
    if dead is not None:
        r["activation"] = {"mean": 0.1, "std": 0.1, "inactive": dead, "dead": dead, "saturated": None}
    return r


def write_metrics(tmp_path, epochs):
    path = tmp_path / "metrics.jsonl"
    lines = [{"epoch": e, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None,
              "lr": 0.1, "seconds": 1.0, "layers": layers} for e, layers in enumerate(epochs, 1)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def cells(svg_path):
    """(fill) of every heat cell, row by row, panel by panel (the cells have a white 0.5 stroke)."""
    root = ET.fromstring(svg_path.read_bytes())
    return [r.get("fill") for r in root.iter(f"{NS}rect") if r.get("stroke") == "white"]


def test_the_cells_are_coloured_by_each_panels_own_range(tmp_path, capsys):
    metrics = write_metrics(tmp_path, [
        [layer("conv_a", 3, grad=1e-4, ratio=1e-3), layer("relu_a", 3, dead=0.0), layer("conv_b", 5, grad=1e-2)],
        [layer("conv_a", 3, grad=1e-3, ratio=1e-1), layer("relu_a", 3, dead=0.5), layer("conv_b", 5, grad=1e-1)],
    ])
    out = tmp_path / "d.svg"
    assert main(["viz", LENET, "--style", "diagnostics", "--metrics", str(metrics), "-o", str(out)]) == 0
    fills = cells(out)
    # gradient norm, log10 from -4 to -1: conv_a -4, -3; conv_b -2, -1
    grad = [colour(0.0), colour(1 / 3), colour(2 / 3), colour(1.0)]
    dead = [colour(0.0), colour(0.5)]                # dead units on 0..1
    ratio = [colour(0.0), colour(1.0)]               # conv_b has no update ratio: no row
    assert fills == grad + dead + ratio
    text = out.read_text()
    assert "conv_a (line 3)" in text and "relu_a (line 3)" in text and "1e-4.0" in text and "1e-1.0" in text
    assert math.isclose(int(colour(1.0)[1:3], 16), 253)


def test_the_style_needs_metrics_with_layer_records(tmp_path, capsys):
    assert main(["viz", LENET, "--style", "diagnostics", "-o", str(tmp_path / "d.svg")]) == 1
    assert "--style diagnostics needs --metrics FILE" in capsys.readouterr().err
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "train_accuracy": None, "val_loss": None,
                               "val_accuracy": None, "lr": 0.1, "seconds": 1.0}) + "\n")
    assert main(["viz", LENET, "--style", "diagnostics", "--metrics", str(old), "-o", str(tmp_path / "d.svg")]) == 1
    err = capsys.readouterr().err
    assert f"{old}: no per-layer records to draw" in err and not (tmp_path / "d.svg").exists()


def test_a_malformed_layer_record_is_named_at_its_line(tmp_path, capsys):
    bad = write_metrics(tmp_path, [[layer("conv_a", 3, grad=1e-4)], [{"layer": "conv_a", "op": "conv",
                                                                      "line": 3, "params": {"weight": {"nrm": 1}}}]])
    assert main(["viz", LENET, "--style", "diagnostics", "--metrics", str(bad), "-o", str(tmp_path / "d.svg")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:1: error: malformed metrics line: layers[0]: 'params.weight.nrm' is not a figure" in err


def test_an_epoch_without_a_layers_figure_is_a_grey_cell(tmp_path):
    metrics = write_metrics(tmp_path, [[layer("conv_a", 3, grad=1e-4)], [], [layer("conv_a", 3, grad=1e-2)]])
    out = tmp_path / "d.svg"
    out.write_text(diagnostics_svg(read_metrics(metrics)))
    assert cells(out) == [colour(0.0), MISSING, colour(1.0)]
