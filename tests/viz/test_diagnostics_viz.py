"""`cnnc viz --style diagnostics`: per-layer heat strips from the `layers` of metrics.jsonl."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------- histograms
def hist(lo, hi, counts):
    from cnnc.compiler.metrics_format import HIST_BINS
    return {"lo": lo, "hi": hi, "counts": list(counts) + [0] * (HIST_BINS - len(counts))}


def with_histograms(name, line, weight=None, activation=None):
    r = layer(name, line, grad=1e-3 if weight else None, dead=0.1 if activation else None)
    r["histograms"] = {"params": {"weight": weight}} if weight else {"activation": activation}
    return r


def outlines(svg_path):
    """stroke -> the points of each histogram outline (polylines inside the cells' grey boxes)."""
    root = ET.fromstring(svg_path.read_bytes())
    out: dict[str, list] = {}
    for p in root.iter(f"{NS}polyline"):
        pts = [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
        if len(pts) > 2:
            out.setdefault(p.get("stroke"), []).append(pts)
    return out


def test_histograms_at_the_chosen_epochs_share_a_value_axis(tmp_path, capsys):
    from cnnc.compiler.metrics_format import HIST_BINS
    from cnnc.viz.diagnostics import CELL_H, CELL_W, _epoch_colour
    # epoch 1: every value in the first bin of 0..1; epoch 3: all in the last bin of 0..2
    epochs = [[with_histograms("conv_a", 3, weight=hist(0.0, 1.0, [10]))],
              [with_histograms("conv_a", 3, weight=hist(0.0, 1.5, [4, 6]))],
              [with_histograms("conv_a", 3, weight=hist(0.0, 2.0, [0] * (HIST_BINS - 1) + [5]))]]
    out = tmp_path / "d.svg"
    assert main(["viz", LENET, "--style", "diagnostics", "--metrics", str(write_metrics(tmp_path, epochs)),
                 "--epochs", "1,3", "-o", str(out)]) == 0
    drawn = outlines(out)
    first, last = drawn[_epoch_colour(0, 2)][0], drawn[_epoch_colour(1, 2)][0]
    assert _epoch_colour(0, 2) != _epoch_colour(1, 2) and len(drawn) == 2     # epoch 2 is not drawn
    x0, bottom = first[0]
    top = min(y for _, y in first)
    assert bottom - top == pytest.approx(CELL_H - 4, abs=0.06)                              # a whole share fills the cell
    # on the shared axis 0..2, epoch 1's first bin is 1/30 of 0..1, i.e. 1/60 of the cell's width
    tall = [x for x, y in first if y == top]
    assert (min(tall) - x0, max(tall) - x0) == pytest.approx((0.0, CELL_W / (2 * HIST_BINS)), abs=0.06)
    # its bins are twice as wide: half the density, half the height
    assert bottom - min(y for _, y in last) == pytest.approx((CELL_H - 4) / 2, abs=0.06)
    tall = [x for x, y in last if y == min(y for _, y in last)]
    assert (min(tall) - x0, max(tall) - x0) == pytest.approx((CELL_W * (1 - 1 / HIST_BINS), CELL_W), abs=0.06)
    assert "Histograms at epochs 1, 3" in out.read_text()


def test_by_default_the_first_middle_and_last_epochs_and_an_activation_beside_its_layer(tmp_path):
    epochs = [[with_histograms("conv_a", 3, weight=hist(0.0, 1.0, [e])),
               with_histograms("relu_a", 3, activation=hist(0.0, 1.0, [1, e])),
               with_histograms("relu_b", 5, activation=hist(0.0, 1.0, [e]))] for e in range(1, 6)]
    out = tmp_path / "d.svg"
    out.write_text(diagnostics_svg(read_metrics(write_metrics(tmp_path, epochs))))
    text = out.read_text()
    assert "Histograms at epochs 1, 3, 5" in text
    assert "conv_a · relu_a (line 3)" in text and "relu_b (line 5)" in text
    assert sum(len(v) for v in outlines(out).values()) == 3 * 3     # 3 epochs x (weight, relu_a, relu_b)


def test_the_histograms_flags_name_what_is_wrong(tmp_path, capsys):
    epochs = [[with_histograms("conv_a", 3, weight=hist(0.0, 1.0, [1]))]] * 2
    metrics = str(write_metrics(tmp_path, epochs))
    out = tmp_path / "d.svg"
    for flags, message in (
            (["--epochs", "3"], f"--epochs 3: {metrics} has epochs 1 to 2"),
            (["--epochs", "1,x"], "--epochs '1,x': give epoch numbers separated by commas"),
            (["--epochs", "0"], "--epochs '0': epochs are numbered from 1"),
            (["--layers", "conv_b"], f"--layers conv_b: {metrics} has no records of 'conv_b'"),
    ):
        assert main(["viz", LENET, "--style", "diagnostics", "--metrics", metrics, "-o", str(out), *flags]) == 1
        err = capsys.readouterr().err
        assert message in err, (flags, err)
        assert not out.exists()
    assert "did you mean 'conv_a'" in err
    assert main(["viz", LENET, "--style", "curves", "--metrics", metrics, "-o", str(out), "--epochs", "1"]) == 1
    assert "--epochs is for --style diagnostics, not --style curves" in capsys.readouterr().err
    assert main(["viz", LENET, "--style", "diagnostics", "--metrics", metrics, "-o", str(out),
                 "--layers", "conv_a", "--epochs", "2"]) == 0
    assert "Histograms at epochs 2" in out.read_text()


# ---------------------------------------------------------------- one layer (the explorer's panel)
def test_each_layer_gets_its_own_picture_and_figures_on_the_range_of_every_layer(tmp_path):
    import base64
    from cnnc.compiler.driver import compile_file
    from cnnc.viz.diagnostics import LAYER_W, layer_diagnostics
    from cnnc.viz.explorer import metrics_data
    h = hist(-1.0, 1.0, [2, 3])
    weights = {"params": {"weight": h}, "gradients": {"weight": h}}
    epochs = [[{**layer("conv_1", 7, grad=g, ratio=r), "histograms": weights},
               {**layer("sigmoid_1", 7), "activation": {"mean": 0.5, "std": 0.2, "inactive": None, "dead": None,
                                                        "saturated": s}, "histograms": {"activation": h}},
               layer("conv_2", 8, grad=g * 100, ratio=None),
               layer("not_in_lenet", 9, grad=1.0)]
              for g, r, s in ((1e-4, 1e-3, 0.25), (1e-3, 1e-1, 0.5))]
    metrics = read_metrics(write_metrics(tmp_path, epochs))
    every = layer_diagnostics(metrics)
    assert list(every) == ["conv_1", "sigmoid_1", "conv_2", "not_in_lenet"]
    d = layer_diagnostics(metrics, {"conv_1", "sigmoid_1"})
    assert list(d) == ["conv_1", "sigmoid_1"] and d["conv_1"]["svg"] == every["conv_1"]["svg"]
    conv, sig = d["conv_1"], d["sigmoid_1"]
    assert conv["columns"] == [{"title": "gradient norm", "log": True}, {"title": "update ratio |dw|/|w|", "log": True}]
    assert conv["rows"] == [[1, 1e-4, 1e-3], [2, 1e-3, 1e-1]]
    assert sig["columns"] == [{"title": "saturated units", "log": False}] and sig["rows"] == [[1, 0.25], [2, 0.5]]
    out = tmp_path / "conv.svg"
    out.write_text(conv["svg"])
    root = ET.fromstring(out.read_bytes())
    assert float(root.get("width")) == LAYER_W
    # gradient norms on the range of every layer: log10 from -4 (conv_1, epoch 1) to 0 (not_in_lenet)
    assert cells(out) == [colour(0.0), colour(0.25), colour(0.0), colour(1.0)]
    text = conv["svg"]
    assert "conv_1 (conv, line 7)" in text and "sigmoid" not in text
    assert ">0.001<" in text and ">0.1<" in text            # the last epoch's figures
    assert "weights (weight)" in text and "gradients (weight, last step)" in text and "activation" not in text
    assert "saturated units" in sig["svg"] and ">50.0%<" in sig["svg"] and "activation (probe)" in sig["svg"]
    # the explorer keeps the layers of its network only, as SVG data URIs
    data = metrics_data(compile_file(LENET), str(tmp_path / "metrics.jsonl"))
    assert list(data["layers"]) == ["conv_1", "sigmoid_1", "conv_2"]
    uri = data["layers"]["conv_1"]["svg"]
    assert uri.startswith("data:image/svg+xml;base64,") and base64.b64decode(uri.split(",", 1)[1]).decode() == text


def test_layers_without_figures_and_files_without_records_add_nothing(tmp_path):
    from cnnc.compiler.driver import compile_file
    from cnnc.dsl.source import CnncError
    from cnnc.viz.diagnostics import layer_diagnostics
    from cnnc.viz.explorer import metrics_data
    empty = {"layer": "relu_1", "op": "relu", "line": 3,
             "activation": {"mean": None, "std": None, "inactive": None, "dead": None, "saturated": None}}
    assert layer_diagnostics(read_metrics(write_metrics(tmp_path, [[empty], []]))) == {}
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "train_accuracy": None, "val_loss": None,
                               "val_accuracy": None, "lr": 0.1, "seconds": 1.0}) + "\n")
    data = metrics_data(compile_file(LENET), str(old))
    assert "layers" not in data and data["epochs"] == 1 and data["curves"].startswith("data:image/svg+xml")
    bad = write_metrics(tmp_path, [[layer("conv_1", 7, grad=1e-4)], [{"layer": "conv_1", "op": "conv", "params": 3}]])
    with pytest.raises(CnncError, match="malformed metrics line: layers\\[0\\]: 'params' must be an object"):
        metrics_data(compile_file(LENET), str(bad))
