"""Tests for the Graphviz diagram (viz/diagram.py, viz/view.py): DOT structure, rendering, fallbacks."""
from __future__ import annotations

import importlib
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError
from cnnc.viz import diagram, diagram_svg, render
from cnnc.viz.style import FAMILY_COLOURS, SKIP_COLOUR
from cnnc.viz.view import build_view, fusion_groups, main_path

diagram_module = importlib.import_module("cnnc.viz.diagram")  # the package's `diagram` is the function
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="the Graphviz program 'dot' is not installed (apt-get install graphviz)")


@pytest.fixture(scope="module")
def resnet18():
    return compile_file(EXAMPLES / "resnet18.cnn")


@pytest.fixture(scope="module")
def lenet():
    return compile_file(EXAMPLES / "lenet5.cnn")


def node_ids(source: str) -> list[str]:
    """Ids of node statements (lines `ID [label=...`) in DOT source, legend excluded."""
    ids = re.findall(r'^\s*("(?:[^"\\]|\\.)*"|[\w@]+) \[label=', source, re.M)
    return [i.strip('"') for i in ids]


def edges(source: str) -> dict[tuple[str, str], str]:
    """(tail, head) -> the edge statement's attribute text."""
    out = {}
    for tail, head, attrs in re.findall(r'^\s*("[^"]*"|[\w@]+) -> ("[^"]*"|[\w@]+) \[(.*)\]$', source, re.M):
        out[(tail.strip('"'), head.strip('"'))] = attrs
    return out


# -------------------------------------------------------------- structure
def test_one_node_per_layer_for_lenet(lenet):
    src = diagram(lenet).source
    assert len(node_ids(src)) == len(lenet.net.order())  # 11 layers and the input
    assert "conv 5×5, 6" in src and "avgpool 2×2 /2" in src and "linear 120" in src


def test_edges_carry_tensor_shapes(lenet):
    e = edges(diagram(lenet).source)
    assert len(e) == len(lenet.net.order()) - 1
    assert 'label="1×28×28"' in e[("x", "conv_1")]
    assert 'label="16×5×5"' in e[("avgpool_2", "flatten")]
    assert 'label=400' in e[("flatten", "linear_1")] or 'label="400"' in e[("flatten", "linear_1")]


def test_blocks_are_named_clusters(resnet18):
    src = diagram(resnet18).source
    for name in ("stem", "basic_1", "basic_3", "basic_3.conv_bn_relu", "basic_8"):
        assert f"cluster_{name}" in src
    # nested: the conv_bn_relu cluster sits inside basic_3's
    outer = src.index('subgraph cluster_basic_3 {')
    inner = src.index('subgraph "cluster_basic_3.conv_bn_relu" {')
    assert outer < inner


def test_repeat_is_folded_to_the_first_instance(resnet18):
    src = diagram(resnet18).source
    ids = node_ids(src)
    assert "basic_1.conv" in ids and not any(i.startswith("basic_2.") for i in ids)
    label = re.search(r"subgraph cluster_basic_1 \{.*?\n\t\t(color=.*?label=<(.*?)>) labeljust", src, re.S)
    assert label and "×2" in label.group(2)
    assert len(ids) == len(resnet18.net.order()) - 7  # basic_2's seven layers are folded away
    # the tensor leaving the fold is the last repeat's output, drawn from the first instance
    e = edges(src)
    assert ("basic_1.relu", "basic_3.conv_bn_relu.conv") in e
    assert ("basic_1.relu", "basic_3.conv_2") in e


def test_expand_draws_every_repeat(resnet18):
    src = diagram(resnet18, expand=True).source
    assert len(node_ids(src)) == len(resnet18.net.order())
    assert "×2" not in src.split("label=<<TABLE", 1)[0]


def test_depth_collapses_blocks(resnet18):
    full = len(node_ids(diagram(resnet18).source))
    one = len(node_ids(diagram(resnet18, depth=1).source))
    zero_src = diagram(resnet18, depth=0).source
    zero = len(node_ids(zero_src))
    assert zero < one < full
    # x, stem, maxpool, basic_1 (folded ×2), basic_3 … basic_8, global_avgpool, flatten, fc
    assert zero == 13
    assert '"@basic_3"' in zero_src and "peripheries=2" in zero_src
    assert "9 layers" in zero_src and "230 K params" in zero_src  # basic_3: totals of its layers
    assert "128×28×28" in zero_src


def test_skip_connections_have_their_own_colour(resnet18):
    e = edges(diagram(resnet18).source)
    assert SKIP_COLOUR in e[("maxpool", "basic_1.add")]
    assert SKIP_COLOUR in e[("basic_3.relu", "basic_4.add")]
    assert SKIP_COLOUR not in e[("basic_1.batchnorm", "basic_1.add")]
    assert 'weight=0' in e[("maxpool", "basic_1.add")]


def test_skips_in_unet_bypass_the_bottleneck():
    c = compile_file(EXAMPLES / "unet.cnn", inputs={"x": (1, 64, 64)})
    view = build_view(c.net)
    skips = {(e.src, e.dst) for e in view.edges if e.skip}
    assert skips == {("double_conv_4.relu_2", "up_1.concat"), ("double_conv_3.relu_2", "up_2.concat"),
                     ("double_conv_2.relu_2", "up_3.concat"), ("double_conv_1.relu_2", "up_4.concat")}


def test_colours_follow_the_op_family(resnet18):
    src = diagram(resnet18).source
    def fill(node):
        m = re.search(rf'^\s*"?{re.escape(node)}"? \[label=.*fillcolor="([^"]+)"', src, re.M)
        return m.group(1)
    assert fill("stem.conv") == FAMILY_COLOURS["convolution"][0]
    assert fill("maxpool") == FAMILY_COLOURS["pooling"][0]
    assert fill("stem.relu") == FAMILY_COLOURS["activation"][0]
    assert fill("stem.batchnorm") == FAMILY_COLOURS["normalisation"][0]
    assert fill("flatten") == FAMILY_COLOURS["structure"][0]


def test_legend_lists_the_families_drawn(resnet18, lenet):
    src = diagram(resnet18).source
    assert 'ID="legend"' in src
    for fam in ("convolution", "pooling", "activation", "normalisation", "structure", "skip connection"):
        assert fam in src
    assert "normalisation" not in diagram(lenet).source  # LeNet has no normalisation layer


def test_details_add_params_macs_and_field(resnet18):
    src = diagram(resnet18, details=True).source
    assert "9.41 K params · 118 M MACs" in src  # stem.conv: 9,408 params, 118,013,952 MACs
    assert "RF 7 /2" in src and "RF whole input" in src


def test_rankdir(lenet):
    assert "rankdir=LR" in diagram(lenet, rankdir="LR").source
    assert "rankdir=TB" in diagram(lenet).source


def test_fused_groups(resnet18):
    groups = fusion_groups(resnet18.net)
    assert ("stem.conv", "stem.batchnorm", "stem.relu") in groups
    assert ("basic_3.conv_2", "basic_3.batchnorm_2") in groups  # conv → bn feeding an add
    assert len(groups) == 20  # every conv of ResNet-18 is followed by its batchnorm
    src = diagram(resnet18, fuse=True).source
    assert "cluster_fused_stem.conv" in src and "style=\"dashed,rounded\"" in src
    assert "fused" not in diagram(resnet18).source.replace("fused group", "")


def test_fusion_needs_a_single_consumer(tmp_path):
    f = tmp_path / "branch.cnn"
    f.write_text("network B {\n    input x: [3, 8, 8]\n    a = x -> conv(4, 3, pad = 1)\n"
                 "    b = a -> batchnorm -> relu\n    a + b\n}\n")
    c = compile_file(f)
    # the conv's output is also read by the add: it cannot fuse; batchnorm -> relu still can
    assert fusion_groups(c.net) == [("batchnorm", "relu")]


def test_symbolic_shapes_are_written_as_expressions():
    c = compile_file(EXAMPLES / "unet.cnn")
    src = diagram(c).source
    assert "64×H×W" in src and "MACs depend on H, W" in src


def test_main_path_is_the_longest(resnet18):
    path = [n.name for n in main_path(resnet18.net)]
    assert path[0] == "x" and path[-1] == "fc"
    assert "basic_3.conv_1" in path and "basic_3.conv_2" not in path  # the 3×3 branch, not the projection


def test_viz_never_mutates_the_graph(resnet18):
    net = resnet18.net
    before = (list(net.graph.nodes(data=True)), list(net.graph.edges), dict(net.shapes))
    nodes = {n: net.node(n) for n in net.graph}
    from cnnc.viz import figure_svg, rf_grid_svg, rf_svg
    diagram(resnet18, depth=1, fuse=True, details=True)
    figure_svg(resnet18), rf_svg(resnet18), rf_grid_svg(resnet18)
    after = (list(net.graph.nodes(data=True)), list(net.graph.edges), dict(net.shapes))
    assert before == after
    assert all(net.node(n) is nodes[n] for n in net.graph)


def test_viz_does_not_import_the_runtime():
    import ast
    viz_dir = Path(__file__).resolve().parents[2] / "viz"
    for path in viz_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert "runtime" not in (node.module or ""), path.name
            elif isinstance(node, ast.Import):
                assert not any("runtime" in a.name for a in node.names), path.name


# -------------------------------------------------------------- rendering
@needs_dot
def test_renders_svg_through_dot(resnet18):
    svg = render(diagram(resnet18), "svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    text = svg.decode("utf-8")
    assert "conv 7×7 /2, 64" in text and "64×56×56" in text


@needs_dot
def test_renders_png_through_dot(lenet):
    png = render(diagram(lenet), "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@needs_dot
def test_notebook_svg_uses_graphviz(lenet):
    svg = diagram_svg(lenet)
    ET.fromstring(svg.encode("utf-8"))
    assert "graphviz" in svg.lower()


# --------------------------------------------------------------- no Graphviz
def test_without_dot_rendering_fails_with_a_one_line_hint(monkeypatch, lenet):
    real_which = shutil.which
    monkeypatch.setattr(diagram_module.shutil, "which", lambda cmd, *a, **k: None if cmd == "dot"
                        else real_which(cmd, *a, **k))
    with pytest.raises(CnncError) as err:
        render(diagram(lenet), "png", "lenet.png")
    assert "dot" in err.value.message and "'lenet.png'" in err.value.message
    assert "apt-get install graphviz" in err.value.hint and "brew install graphviz" in err.value.hint
    assert "\n" not in err.value.hint


def test_dot_vanishing_at_run_time_is_the_same_error(monkeypatch, lenet):
    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])
    monkeypatch.setattr(diagram_module, "dot_available", lambda: True)
    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    with pytest.raises(CnncError, match="not installed"):
        render(diagram(lenet), "svg")


def test_notebook_svg_falls_back_to_the_figure(monkeypatch, lenet):
    monkeypatch.setattr(diagram_module, "dot_available", lambda: False)
    svg = diagram_svg(lenet)
    ET.fromstring(svg.encode("utf-8"))
    assert "6@28×28" in svg and "graphviz" not in svg.lower()


def test_nested_repeats_fold_the_outer_one(tmp_path):
    f = tmp_path / "nested.cnn"
    f.write_text("block unit(c) { conv(c, 3, pad = 1) -> relu }\n"
                 "block stage(c) { unit(c) * 2 }\n"
                 "network N {\n    input x: [3, 16, 16]\n    x -> stage(8) * 3 -> global_avgpool\n}\n")
    c = compile_file(f)
    view = build_view(c.net)
    assert [f.count for f in view.folds.values()] == [3]
    drawn = [i for i in view.items if i != "x"]
    assert drawn == ["stage_1.unit_1.conv", "stage_1.unit_1.relu", "stage_1.unit_2.conv", "stage_1.unit_2.relu",
                     "global_avgpool"]
    src = diagram(c).source
    assert "stage <FONT" in src and "×3" in src
    assert ("stage_1.unit_2.relu", "global_avgpool") in edges(src)
