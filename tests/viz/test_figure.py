"""Tests for the LeNet-style architecture figure (viz/figure.py): SVG by our own code."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.viz import figure_svg
from cnnc.viz.figure import arcs_of, groups_of, scale_of, slabs_of
from cnnc.viz.style import SKIP_COLOUR
from cnnc.viz.view import main_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NS = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode("utf-8"))  # also proves the document is well-formed XML
    return [t.text or "" for t in root.iter(f"{NS}text")]


@pytest.fixture(scope="module")
def resnet18():
    return compile_file(EXAMPLES / "resnet18.cnn")


def test_lenet_figure_writes_feature_map_sizes():
    svg = figure_svg(compile_file(EXAMPLES / "lenet5.cnn"))
    t = texts(svg)
    for size in ("1@28×28", "6@28×28", "6@14×14", "16@10×10", "16@5×5", "400", "120", "84", "10"):
        assert size in t
    for label in ("input x", "conv 5×5, 6", "avgpool 2×2 /2", "conv 5×5, 16", "flatten", "linear 120"):
        assert label in t
    assert "sigmoid" in t  # folded into the conv's slab, written under it
    assert t[0] == "LeNet5"


def test_activations_fold_into_the_slab_before():
    c = compile_file(EXAMPLES / "lenet5.cnn")
    slabs = slabs_of(c.net, main_path(c.net))
    assert [s.nodes[0].op for s in slabs] == ["input", "conv", "avgpool", "conv", "avgpool", "flatten",
                                              "linear", "linear", "linear"]
    assert [n.op for n in slabs[1].nodes] == ["conv", "sigmoid"]


def test_resnet_groups_equal_layers_and_draws_merges_as_arcs(resnet18):
    net = resnet18.net
    path = main_path(net)
    slabs = slabs_of(net, path)
    groups = groups_of(net, slabs)
    assert any(g.label == "conv 3×3, 64  ×4" for g in groups)
    arcs, notes = arcs_of(net, path, slabs)
    assert len(arcs) == 8 and notes == []  # one per basic block
    assert sum(a.label == "conv 1×1 /2, 128" for a in arcs) == 1  # the projection shortcut of basic_3
    svg = figure_svg(resnet18)
    t = texts(svg)
    assert "3@224×224" in t and "512@7×7" in t and "conv 7×7 /2, 64" in t
    assert svg.count(f'stroke="{SKIP_COLOUR}"') >= 8
    assert any("8 merges drawn as arcs" in x for x in t)


def test_sizes_scale_by_square_root_and_stay_visible(resnet18):
    scale = scale_of([[3, 224, 224], [512, 7, 7]])
    assert scale.side(224) == pytest.approx(150)
    assert scale.side(7) >= 12 and scale.side(56) == pytest.approx(75)
    assert scale.channels(512) == pytest.approx(44) and scale.channels(3) >= 4


def test_inception_branches_are_counted(tmp_path):
    f = tmp_path / "inc.cnn"
    f.write_text("""
block inception(c1, c3r, c3, c5r, c5, pool_proj) {
    b1 = conv(c1, 1) -> relu
    b2 = conv(c3r, 1) -> relu -> conv(c3, 3, pad = 1) -> relu
    b3 = conv(c5r, 1) -> relu -> conv(c5, 5, pad = 2) -> relu
    b4 = maxpool(3, stride = 1, pad = 1) -> conv(pool_proj, 1) -> relu
    concat(b1, b2, b3, b4)
}
network Inc {
    input x: [3, 32, 32]
    x -> conv(16, 3, pad = 1) -> inception(8, 8, 16, 4, 8, 8) -> global_avgpool -> flatten -> linear(10)
}
""")
    c = compile_file(f)
    t = texts(figure_svg(c))
    assert "3 branches" in t and "40@32×32" in t
    assert any(x.startswith("main path: ") for x in t)


def test_long_networks_wrap_into_rows(tmp_path):
    f = tmp_path / "deep.cnn"
    body = " -> ".join(f"conv({8 + 8 * (k % 3)}, 3, pad = 1) -> relu" for k in range(40))
    f.write_text(f"network Deep {{\n    input x: [3, 32, 32]\n    x -> {body}\n}}\n")
    svg = figure_svg(compile_file(f))
    root = ET.fromstring(svg.encode("utf-8"))
    assert float(root.get("width")) < 2000  # wrapped, not one 5000 px row
    assert "<polyline" in svg


def test_symbolic_sizes_are_labelled_and_drawn_at_a_nominal_size():
    c = compile_file(EXAMPLES / "unet.cnn")
    t = texts(figure_svg(c))
    assert "1@H×W" in t and "64@H×W" in t
    assert any("drawn at H = 64, W = 64" in x for x in t)


def test_unet_skips_are_arcs():
    c = compile_file(EXAMPLES / "unet.cnn", inputs={"x": (1, 64, 64)})
    path = main_path(c.net)
    arcs, _ = arcs_of(c.net, path, slabs_of(c.net, path))
    assert len(arcs) == 4 and all(a.label == "skip" for a in arcs)
    t = texts(figure_svg(c))
    assert "deconv 2×2 ↑2, 512" in t and "1024@4×4" in t
