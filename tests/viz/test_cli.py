"""End-to-end tests of `cnnc viz`: every style to a file, and every user error as a diagnostic."""
from __future__ import annotations

import importlib
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LENET, RESNET, UNET = (str(EXAMPLES / f) for f in ("lenet5.cnn", "resnet18.cnn", "unet.cnn"))
diagram_module = importlib.import_module("cnnc.viz.diagram")
cli_module = importlib.import_module("cnnc.viz.output")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="the Graphviz program 'dot' is not installed (apt-get install graphviz)")
needs_rsvg = pytest.mark.skipif(shutil.which("rsvg-convert") is None,
                                reason="rsvg-convert (librsvg2-bin) is not installed")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def metrics_file(tmp_path) -> str:
    path = tmp_path / "metrics.jsonl"
    lines = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.8, "val_loss": 1.1 / e, "val_accuracy": 0.78,
              "lr": 0.1, "seconds": 1.0} for e in (1, 2, 3)]
    lines.append({"split": "test", "loss": 0.3, "accuracy": 0.9})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return str(path)


def well_formed_svg(path: Path) -> ET.Element:
    root = ET.fromstring(path.read_bytes())
    assert root.tag.endswith("svg")
    return root


# ------------------------------------------------------------------ styles
def test_dot_source(capsys, tmp_path):
    out = tmp_path / "r.dot"
    code, stdout, _ = run(capsys, "viz", RESNET, "-o", str(out), "--depth", "1", "--rankdir", "LR")
    assert code == 0 and f"wrote {out}" in stdout
    text = out.read_text(encoding="utf-8")
    assert text.startswith("digraph ResNet18") and "rankdir=LR" in text and "cluster_basic_3" in text


@needs_dot
@pytest.mark.parametrize("ext", ["svg", "png", "pdf"])
def test_graph_through_dot(capsys, tmp_path, ext):
    out = tmp_path / f"lenet.{ext}"
    code, _, err = run(capsys, "viz", LENET, "-o", str(out), "--details", "--fuse")
    assert code == 0, err
    data = out.read_bytes()
    magic = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF"}[ext]
    assert data.startswith(magic)
    if ext == "svg":
        well_formed_svg(out)
    assert err == ""  # dot's own warnings are not passed on


@pytest.mark.parametrize("style, extra, expected", [
    ("figure", [], "6@28×28"),
    ("rf", [], "input size 28"),
    ("rf-grid", ["--unit", "1,1"], "LeNet5: receptive field of unit (1, 1) of 'avgpool_2'"),
    ("rf-grid", ["--layer", "conv_1"], "LeNet5: receptive field of unit (13, 13) of 'conv_1'"),
])
def test_svg_styles(capsys, tmp_path, style, extra, expected):
    out = tmp_path / f"{style}.svg"
    code, _, err = run(capsys, "viz", LENET, "-o", str(out), "--style", style, *extra)
    assert code == 0, err
    root = well_formed_svg(out)
    assert expected in [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_curves_style(capsys, tmp_path):
    out = tmp_path / "curves.svg"
    code, _, err = run(capsys, "viz", LENET, "-o", str(out), "--style", "curves", "--metrics", metrics_file(tmp_path))
    assert code == 0, err
    assert "test 90.00%" in out.read_text(encoding="utf-8")
    well_formed_svg(out)


def test_unet_with_a_bound_input(capsys, tmp_path):
    out = tmp_path / "unet.svg"
    code, _, err = run(capsys, "viz", UNET, "--input", "x=1x64x64", "-o", str(out), "--style", "rf-grid")
    assert code == 0, err
    texts = [t.text for t in well_formed_svg(out).iter("{http://www.w3.org/2000/svg}text")]
    assert "UNet: receptive field of unit (31, 31) of 'conv'" in texts


def test_figure_as_png_with_no_system_tool(capsys, tmp_path, monkeypatch):
    """PNG through resvg (a wheel): the same picture with or without rsvg-convert on the machine."""
    real = shutil.which
    monkeypatch.setattr(cli_module.shutil, "which", lambda c, *a, **k: None if c == "rsvg-convert" else real(c))
    out = tmp_path / "fig.png"
    code, _, err = run(capsys, "viz", LENET, "-o", str(out), "--style", "figure")
    assert code == 0, err
    svg = tmp_path / "fig.svg"
    assert run(capsys, "viz", LENET, "-o", str(svg), "--style", "figure")[0] == 0
    width = float(ET.parse(svg).getroot().get("width"))
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] == round(2 * width)  # drawn at twice the SVG's pixels
        grey = np.asarray(img.convert("L"))
    assert (grey < 100).mean() > 0.005  # text and outlines were drawn, not a blank page


def test_figure_as_pdf_without_rsvg_is_a_page_of_the_pictures_size(capsys, tmp_path, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(cli_module.shutil, "which", lambda c, *a, **k: None if c == "rsvg-convert" else real(c))
    out = tmp_path / "fig.pdf"
    code, _, err = run(capsys, "viz", LENET, "-o", str(out), "--style", "figure")
    assert code == 0, err
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    svg = tmp_path / "fig.svg"
    assert run(capsys, "viz", LENET, "-o", str(svg), "--style", "figure")[0] == 0
    root = ET.parse(svg).getroot()
    box = re.search(rb"/MediaBox \[ ?0 0 ([0-9.]+) ([0-9.]+) ?\]", data)
    # the page is the picture's size: an SVG pixel is 1/96 inch, a PDF point 1/72
    assert float(box.group(1)) == pytest.approx(float(root.get("width")) * 72 / 96, abs=1)
    assert float(box.group(2)) == pytest.approx(float(root.get("height")) * 72 / 96, abs=1)


@needs_rsvg
def test_figure_as_pdf_through_rsvg_is_vector(capsys, tmp_path):
    out = tmp_path / "fig.pdf"
    code, _, err = run(capsys, "viz", LENET, "-o", str(out), "--style", "figure")
    assert code == 0, err
    assert out.read_bytes().startswith(b"%PDF-") and b"/Image" not in out.read_bytes()


# ------------------------------------------------------------------ no dot
def test_without_graphviz(capsys, tmp_path, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(diagram_module.shutil, "which", lambda c, *a, **k: None if c == "dot" else real(c))
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "g.png"))
    assert code == 1
    lines = err.strip().splitlines()
    assert "error: cannot write" in lines[0] and "'dot' is not installed" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  hint: install Graphviz (apt-get install graphviz")
    assert "Traceback" not in err
    # .dot and the SVG figure need no Graphviz
    assert run(capsys, "viz", LENET, "-o", str(tmp_path / "g.dot"))[0] == 0
    assert run(capsys, "viz", LENET, "-o", str(tmp_path / "f.svg"), "--style", "figure")[0] == 0
    well_formed_svg(tmp_path / "f.svg")


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv, message", [
    (["-o", "x.jpg"], "unknown output format ('.jpg')"),
    (["-o", "noext"], "unknown output format (no extension)"),
    (["-o", "x.svg", "--style", "rf-grid", "--layer", "conv_9"], "did you mean 'conv_2' or 'conv_1'?"),
    (["-o", "x.svg", "--style", "rf-grid", "--layer", "linear_3"], "has no spatial receptive field"),
    (["-o", "x.svg", "--style", "rf-grid", "--unit", "1;2"], "expected two integers I,J"),
    (["-o", "x.svg", "--style", "rf-grid", "--unit", "0,5"], "'avgpool_2' has 5×5 units"),
    (["-o", "x.svg", "--style", "curves"], "--style curves needs --metrics FILE"),
    (["-o", "x.svg", "--style", "curves", "--metrics", "no/such.jsonl"], "no such file"),
    (["-o", "x.svg", "--unit", "1,1"], "--unit is for --style rf-grid"),
    (["-o", "x.svg", "--metrics", "m.jsonl"], "--metrics is for --style curves"),
    (["-o", "x.svg", "--depth", "-1"], "the depth must be 0 or more"),
    (["-o", "x.dot", "--style", "figure"], "has no .dot source"),
])
def test_user_errors(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "viz", LENET, *argv)
    assert code == 1
    assert message in err and "Traceback" not in err


def test_malformed_metrics_point_at_the_line(capsys, tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_loss": }\n')
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "c.svg"), "--style", "curves",
                       "--metrics", str(path))
    assert code == 1 and f"{path}:2:" in err and "malformed metrics line" in err


def test_symbolic_input_asks_for_a_size(capsys, tmp_path):
    code, _, err = run(capsys, "viz", UNET, "-o", str(tmp_path / "g.svg"), "--style", "rf-grid")
    assert code == 1 and "--input x=1x64x64" in err


@pytest.mark.parametrize("flags", [["--details"], ["--expand"], ["--fuse"], ["--rankdir", "LR"], ["--depth", "1"]])
def test_graph_options_are_refused_for_other_styles(capsys, tmp_path, flags):
    code, _, err = run(capsys, "viz", LENET, "-o", str(tmp_path / "f.svg"), "--style", "figure", *flags)
    assert code == 1 and f"cnnc: error: {flags[0]} is for --style graph, not --style figure" in err
    assert not (tmp_path / "f.svg").exists()
