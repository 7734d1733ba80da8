"""1-D signals ([C, L]): shapes, parameters, MACs and receptive fields of conv, pooling and the rest.

Hand-computed figures (PyTorch's Conv1d/MaxPool1d/AvgPool1d rules) and a PyTorch twin of
examples/signal_cnn.cnn; each new mistake is checked for its message, location and hint.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_signal_layers_shapes_params_macs(compile_src):
    c = compile_src("""
        network N {
            input x: [2, 100]
            x -> a: conv(16, 5, pad = 2) -> batchnorm -> relu -> b: maxpool(2)
              -> d: conv(32, 3, pad = same, dilation = 2, groups = 2) -> e: avgpool(3, stride = 2, pad = 1)
              -> u: upsample(2) -> g: global_avgpool -> flatten -> f: linear(4)
        }
    """)
    s, a = c.net.shapes, c.analysis
    assert [s[n] for n in "abdeugf"] == [(16, 100), (16, 50), (32, 50), (32, 25), (32, 50), (32, 1), (4,)]
    assert a.params["a"]["weight"].shape == (16, 2, 5)              # PyTorch Conv1d's layout
    assert a.layer_params["d"] == 32 * 8 * 3 + 32
    assert a.macs["a"] == 16 * 100 * 2 * 5 and a.macs["d"] == 32 * 50 * 8 * 3
    assert a.flops["b"] == 16 * 50 * 2                               # one per window element read
    assert c.net.node("d").attrs["padding"] == ((0, 0), (2, 2))     # 'same' with dilation 2, k 3


def test_signal_receptive_fields_are_one_dimensional(compile_src):
    c = compile_src("""
        network N {
            input x: [1, 64]
            x -> a: conv(4, 5) -> b: maxpool(2) -> d: conv(4, 3, dilation = 2) -> e: conv(4, 3, stride = 2)
        }
    """)
    height, length = c.analysis.rf["e"]
    assert (height.size, height.stride) == (1, 1)
    # r: 5, then pool 2 (s 2): 6; dilated 3 (span 5) at stride 2: 14; k 3 at stride 2: 18; stride 4
    assert [c.analysis.rf[n][1].size for n in "abde"] == [5, 6, 14, 18]
    assert length.stride == 4
    from cnnc.compiler.report import to_json
    layers = {entry["name"]: entry for entry in to_json(c)["layers"]}
    assert layers["e"]["rf"] == {"size": [18], "stride": [4], "padding": [0]}


def test_signal_cnn_example_figures():
    c = compile_file(EXAMPLES / "signal_cnn.cnn")
    t = c.analysis.totals()
    # conv 3->32 k7, bn, conv 32->64 k5, bn, conv 64->64 k3, bn (no conv bias), fc 64->4
    assert t["params"] == 32 * 3 * 7 + 64 + 64 * 32 * 5 + 128 + 64 * 64 * 3 + 128 + 64 * 4 + 4 == 23_780
    assert t["macs"] == 32 * 128 * 21 + 64 * 64 * 160 + 64 * 32 * 192 + 256 == 1_134_848
    assert c.net.shapes[c.net.outputs[0]] == (4,)


def test_length_query_and_signal_add_concat(compile_src):
    c = compile_src("""
        block res(c) {
            main = conv(c, 3, pad = 1) -> relu
            (main + in) -> conv(c, 1) -> conv(c // 2, 1) -> conv(length(in) // 4, 1)
        }
        network N {
            input x: [8, 32]
            y = x -> res(8)
            z = x -> global_maxpool
            concat(y, x * z, x[2:4])
        }
    """)
    assert c.net.shapes[c.net.outputs[0]] == (8 + 8 + 2, 32)


@pytest.mark.parametrize("layer, message, hint", [
    ("conv(4, (3, 5))", "conv on a [C, L] signal takes an integer k, got [3, 5]", "a pair (h, w) is for images"),
    ("maxpool(2, stride = (1, 2))", "pooling on a [C, L] signal takes an integer stride, got [1, 2]",
     "a pair (h, w) is for images"),
    ("conv(4, 3, pad = ((1, 1), (2, 0)))", "conv on a [C, L] signal takes pad as an integer, same, valid, full or causal",
     "a pair (h, w) is for images"),
    ("deconv(4, 2)", "deconv needs a [C, H, W] input, got [3, 20]", "this layer needs an image"),
    ("adaptive_avgpool(2)", "adaptive_avgpool needs a [C, H, W] input, got [3, 20]", "this layer needs an image"),
    ("conv(4, 30)", "kernel of size 30 does not fit the padded input", "smaller kernel"),
    ("upsample(size = (2, 8))", "upsample on a [C, L] signal takes an integer size, got [2, 8]",
     "a pair (h, w) is for images"),
    ("upsample(2, size = 8)", "give one of scale, size and like, not scale and size", "keep the one"),
])
def test_signal_mistakes_are_located(write, layer, message, hint):
    path = write(f"network N {{\n    input x: [3, 20]\n    x -> {layer}\n}}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    text = str(err.value)
    assert "net.cnn:3:" in text and message in text and hint in text, text


def test_signal_upsampling_to_a_size_or_like_another_signal(compile_src):
    c = compile_src("""
        network N {
            input x: [2, 12]
            a = x -> conv(4, 3, stride = 2, pad = 1)
            s = a -> u1: upsample(size = 9, mode = bilinear, align_corners = true)
            l = a -> u2: upsample(like = x) -> u3: upsample
            output s, l
        }
    """)
    assert [c.net.shapes[n] for n in ("u1", "u2", "u3")] == [(4, 9), (4, 12), (4, 24)]
    assert c.net.node("u1").attrs["size"] == (1, 9)        # a unit-height pair, as a signal's other sizes
    height, length = c.analysis.rf["u2"]
    assert (height.size, height.stride) == (1, 1) and length.stride == 1   # conv stride 2, then 6 -> 12


@pytest.mark.parametrize("inputs, layer, col, message", [
    ("input x: [3, 20]\n    input img: [3, 8, 8]", "x -> upsample(like = img)", 26,
     "like must be a [C, L] signal, as the input is, got [3, 8, 8]"),
    ("input x: [3, 20]\n    input img: [3, 8, 8]", "img -> upsample(like = x)", 28,
     "like must be a [C, H, W] tensor, got [3, 20]"),
])
def test_upsample_like_of_another_kind_is_located(write, inputs, layer, col, message):
    path = write(f"network N {{\n    {inputs}\n    {layer}\n}}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert f"net.cnn:4:{col}:" in str(err.value) and message in str(err.value), str(err.value)


def test_height_of_a_signal_names_length(write):
    path = write("network N {\n    input x: [3, 20]\n    x -> conv(height(x), 1)\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:3:22:" in str(err.value) and "length() reads a [C, L] signal" in str(err.value)


def test_four_dimensional_input_is_refused(write):
    path = write("network N {\n    input x: [1, 2, 3, 4]\n    x\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:2:5:" in str(err.value) and "an input is [C, H, W], [C, L] or [F]" in str(err.value)


# ------------------------------------------------------------------ torch twin
torch = pytest.importorskip("torch")
nn = torch.nn


def signal_cnn(classes: int = 4) -> nn.Sequential:
    def block(cin, c, k, d=1):
        return [nn.Conv1d(cin, c, k, padding=d * (k - 1) // 2, dilation=d, bias=False), nn.BatchNorm1d(c), nn.ReLU()]
    return nn.Sequential(*block(3, 32, 7), nn.MaxPool1d(2), *block(32, 64, 5), nn.MaxPool1d(2),
                         *block(64, 64, 3, 2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.1),
                         nn.Linear(64, classes))


@pytest.mark.torch
def test_signal_cnn_matches_a_torch_twin():
    model = signal_cnn()
    macs = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv1d):
            macs.append(out.numel() * m.in_channels // m.groups * m.kernel_size[0])
        elif isinstance(m, nn.Linear):
            macs.append(m.in_features * m.out_features)

    for m in model.modules():
        m.register_forward_hook(hook)
    y = model.eval()(torch.zeros(1, 3, 128))
    c = compile_file(EXAMPLES / "signal_cnn.cnn")
    t = c.analysis.totals()
    assert t["params"] == sum(p.numel() for p in model.parameters())
    assert t["macs"] == sum(macs)
    assert c.net.shapes[c.net.outputs[0]] == tuple(y.shape[1:])
    convs = [n.name for n in c.net.layers() if n.op == "conv"]
    assert [c.analysis.params[n]["weight"].shape for n in convs] == \
        [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv1d)]


def test_dropped_values_of_a_signal_are_named_along_its_length(compile_src):
    c = compile_src("""
        network N {
            input x: [2, 102]
            x -> conv(4, 3, stride = 2) -> maxpool(3, stride = 2)
        }
    """)
    messages = [w.message for w in c.analysis.warnings if w.code == "dropped-pixels"]
    assert messages == ["'conv': the last 1 value of its length-102 input fall outside every window",
                        "'maxpool': the last 1 value of its length-50 input fall outside every window"]
