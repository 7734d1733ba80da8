"""Diagram labels of layers on 1-D signals (no unit height shown) and of slice/channel_shuffle."""
from __future__ import annotations

from cnnc.viz import style

SRC = """
network N {
    input x: [4, 64]
    x -> a: conv(8, 5, stride = 2, dilation = 3) -> b: maxpool(3, stride = 2)
      -> s: slice(2, 6) -> c: channel_shuffle(2) -> g: global_avgpool
}
"""


def test_signal_layers_are_labelled_along_their_length(compile_src):
    c = compile_src(SRC)
    label = lambda name: style.op_label(c.net.node(name), c.net.shapes[c.net.node(name).inputs[0]][0], True)
    assert label("a") == "conv 5 /2 d3, 8"
    assert label("b") == "maxpool 3 /2"
    assert label("s") == "channels 2:6"
    assert label("c") == "shuffle g=2"


def test_image_labels_keep_both_axes(compile_src):
    c = compile_src("network N {\n    input x: [3, 16, 16]\n    x -> a: conv(8, (1, 7), stride = 2)\n}\n")
    assert style.op_label(c.net.node("a"), 3) == "conv 1×7 /2, 8"


def test_the_graph_diagram_of_a_signal_network(compile_src, tmp_path):
    from cnnc.viz.diagram import diagram
    dot = diagram(compile_src(SRC)).source
    assert "conv 5 /2 d3, 8" in dot and "1×5" not in dot


def test_signal_upsampling_to_a_size_is_labelled_along_its_length(compile_src):
    c = compile_src("""
        network N {
            input x: [4, 64]
            x -> u: upsample(size = 80, mode = bilinear, align_corners = true) -> v: upsample(3)
              -> w: upsample(like = x)
        }
    """)
    label = lambda name: style.op_label(c.net.node(name), 4, True)
    assert [label(n) for n in "uvw"] == ["upsample → 80 bilinear aligned", "upsample ×3 nearest",
                                         "upsample → size of x nearest"]
