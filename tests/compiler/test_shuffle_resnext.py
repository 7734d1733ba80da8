"""Channel slicing (`x[a:b]`), `channel_shuffle` and grouped bottlenecks: ShuffleNet V2 and ResNeXt-50.

The examples are checked against their published figures and against hand-built
PyTorch twins layer by layer (the helpers of test_against_torch.py); the
twins follow torchvision's `shufflenetv2.py` and `resnet.py` (not imported:
torchvision is not installed). The new diagnostics are checked for message,
location and hint.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# ------------------------------------------------------------ published figures
def test_shufflenet_v2_published_figures():
    # torchvision docs, shufflenet_v2_x1_0: 2,278,604 params, 0.14 GFLOPS (MACs); paper Table 5: 146 M FLOPs.
    c = compile_file(EXAMPLES / "shufflenet_v2.cnn")
    t = c.analysis.totals()
    assert t["params"] == 2_278_604
    assert t["macs"] == 144_907_992 and round(t["macs"] / 1e7) == 14
    assert c.net.shapes["stage4.unit_3.channel_shuffle"] == (464, 7, 7)
    assert c.net.shapes["stage2.unit_1.split_1"] == (58, 28, 28)
    assert c.net.node("stage2.unit_1.split_2").attrs == {"start": 58, "stop": 116}


def test_resnext50_published_figures():
    # torchvision docs, resnext50_32x4d: 25,028,904 params, 4.23 GFLOPS (MACs).
    t = compile_file(EXAMPLES / "resnext50.cnn").analysis.totals()
    assert t["params"] == 25_028_904
    assert t["macs"] == 4_230_479_872 and round(t["macs"] / 1e7) == 423


# ------------------------------------------------------------------ torch twins
torch = pytest.importorskip("torch")
nn = torch.nn

def _zoo():
    """test_against_torch.py's builders and profilers (tests run with --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location("_torch_zoo", Path(__file__).with_name("test_against_torch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_Z = _zoo()
assert_same, bn, cnnc_profile, conv_bn, conv_bn_relu, torch_profile = (
    _Z.assert_same, _Z.bn, _Z.cnnc_profile, _Z.conv_bn, _Z.conv_bn_relu, _Z.torch_profile)


class ShuffleUnit(nn.Module):
    """torchvision's InvertedResidual: split (stride 1) or two branches (stride 2), concat, shuffle 2."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), bn(cin),
                                         nn.Conv2d(cin, half, 1, bias=False), bn(half), nn.ReLU())
        self.branch2 = nn.Sequential(nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False), bn(half),
                                     nn.ReLU(), nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
                                     bn(half), nn.Conv2d(half, half, 1, bias=False), bn(half), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return nn.functional.channel_shuffle(out, 2)


def shufflenet_v2(widths=(24, 116, 232, 464, 1024), repeats=(4, 8, 4), classes: int = 1000) -> nn.Sequential:
    mods, cin = [*conv_bn_relu(3, widths[0], 3, 2), nn.MaxPool2d(3, 2, 1)], widths[0]
    for c, n in zip(widths[1:4], repeats):
        mods += [ShuffleUnit(cin, c, 2), *(ShuffleUnit(c, c, 1) for _ in range(n - 1))]
        cin = c
    return nn.Sequential(*mods, *conv_bn_relu(cin, widths[4], 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(widths[4], classes))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, c: int, stride: int, groups: int = 32, width_per_group: int = 4):
        super().__init__()
        width = c * width_per_group // 64 * groups
        self.main = nn.Sequential(*conv_bn_relu(cin, width, 1), nn.Conv2d(width, width, 3, stride, 1, groups=groups,
                                                                          bias=False),
                                  bn(width), nn.ReLU(), *conv_bn(width, 4 * c, 1))
        self.skip = conv_bn(cin, 4 * c, 1, stride) if stride != 1 or cin != 4 * c else None

    def forward(self, x):
        return torch.relu(self.main(x) + (x if self.skip is None else self.skip(x)))


def resnext50(classes: int = 1000) -> nn.Sequential:
    mods, cin = [*conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
    for i, n in enumerate((3, 4, 6, 3)):
        c = 64 * 2 ** i
        for j in range(n):
            mods.append(Bottleneck(cin, c, 2 if i > 0 and j == 0 else 1))
            cin = 4 * c
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


@pytest.mark.torch
@pytest.mark.parametrize("file, build", [("shufflenet_v2.cnn", shufflenet_v2), ("resnext50.cnn", resnext50)])
def test_matches_torch_twin(file, build):
    c = compile_file(EXAMPLES / file)
    assert_same(cnnc_profile(c), torch_profile(build, (3, 224, 224), "meta"))


@pytest.mark.torch
def test_shufflenet_twin_has_the_published_parameter_count():
    assert sum(p.numel() for p in shufflenet_v2().parameters()) == 2_278_604


# ----------------------------------------------------------------- the language
def test_slice_bounds_default_and_shapes(compile_src):
    c = compile_src("""
        network N {
            input x: [8, 5, 5]
            a = x[:3]
            b = x[3:]
            c = x[2:6]
            output a, b, c
        }
    """)
    assert [c.net.shapes[o] for o in c.net.outputs] == [(3, 5, 5), (5, 5, 5), (4, 5, 5)]
    assert [dict(c.net.node(o).attrs) for o in c.net.outputs] == [
        {"start": 0, "stop": 3}, {"start": 3, "stop": 8}, {"start": 2, "stop": 6}]
    assert c.analysis.macs[c.net.outputs[0]] == 0


def test_slice_of_a_flat_tensor_and_in_a_chain(compile_src):
    c = compile_src("""
        network N {
            input x: [10]
            x[2:7] -> linear(3)
        }
    """)
    assert c.net.shapes[c.net.outputs[0]] == (3,)
    assert c.analysis.layer_params[c.net.outputs[0]] == 5 * 3 + 3


def test_channel_shuffle_keeps_the_shape_and_the_field(compile_src):
    c = compile_src("""
        network N {
            input x: [6, 8, 8]
            x -> conv(6, 3, pad = 1) -> channel_shuffle(3)
        }
    """)
    out = c.net.outputs[0]
    assert c.net.shapes[out] == (6, 8, 8)
    assert c.analysis.rf[out][0].size == 3


# Columns on line 3, `    y = EXPR` (EXPR starts at column 9): each error points at the value at fault.
@pytest.mark.parametrize("expr, col, message, hint", [
    ("x[0:9]", 13, "slice: channel slice 0:9 is out of range for 8 channels", "0 <= start < stop <= 8"),   # the 9
    ("x[5:3]", 13, "slice: channel slice 5:3 is out of range for 8 channels", "0 <= start < stop <= 8"),   # the 3
    ("x[-1:]", 11, "slice: channel slice -1:8 is out of range for 8 channels", "0 <= start < stop <= 8"),  # the -1
    ("x[0.5:2]", 11, "a channel slice's start must be an integer, got the number 0.5", "x[0:c // 2]"),
    ("x -> channel_shuffle(3)", 30, "channel_shuffle: groups must divide the channels, but 3 does not divide 8",
     "groups of equal size"),                                                                         # the 3
])
def test_slice_and_shuffle_errors_are_located(write, expr, col, message, hint):
    path = write(f"network N {{\n    input x: [8, 4, 4]\n    y = {expr}\n    y\n}}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    text = str(err.value)
    assert f"net.cnn:3:{col}: error:" in text, text
    assert message in text and hint in text, text


def test_slice_error_points_at_the_bound(write):
    path = write("network N {\n    input x: [8, 4, 4]\n    x[2:12]\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:3:9:" in str(err.value)


def test_unknown_layer_hint_names_layers_only(write):
    path = write("network N {\n    input x: [8, 4, 4]\n    x -> channel_shufle(2)\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:3:10:" in str(err.value) and "did you mean 'channel_shuffle'?" in str(err.value)
    path = write("network N {\n    input x: [8, 4, 4]\n    x -> channel(2)\n}\n", "b.cnn")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "'channels'" not in str(err.value) or "a shape query, not a layer" in str(err.value)


def test_a_shape_query_suggested_for_a_call_says_what_it_is(write):
    path = write("network N {\n    input x: [8, 4, 4]\n    x -> conv(chanels(x), 1)\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "did you mean 'channels' (a shape query, not a layer)?" in str(err.value)


@pytest.mark.parametrize("call, suggestion", [
    ("make_divisbl(30)", "'make_divisible' (a function, not a layer)"),   # the program's own `def`
    ("roun(30.2)", "'round' (a function, not a layer)"),                  # a built-in of numbers
])
def test_a_function_suggested_for_a_call_says_what_it_is(write, call, suggestion):
    path = write("def make_divisible(v, d = 8) = max(d, int(v + d / 2) // d * d)\n"
                 f"network N {{\n    input x: [8, 4, 4]\n    x -> conv({call}, 1)\n}}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:4:15:" in str(err.value) and f"did you mean {suggestion}?" in str(err.value), str(err.value)


def test_a_numeric_function_is_not_suggested_after_an_arrow(write):
    path = write("def make_divisible(v, d = 8) = max(d, int(v + d / 2) // d * d)\n"
                 "network N {\n    input x: [8, 4, 4]\n    x -> make_divisbl\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:4:10:" in str(err.value) and "make_divisible" not in str(err.value), str(err.value)


def test_a_misspelt_shared_layer_is_still_suggested(write):
    path = write("network N {\n    input a: [1, 8, 8]\n    input b: [1, 8, 8]\n"
                 "    fa = a -> encoder: conv(4, 3) -> flatten\n    fb = b -> encodr -> flatten\n    output fa, fb\n}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    assert "net.cnn:5:15:" in str(err.value) and "did you mean 'encoder'?" in str(err.value)


# ------------------------------------------------------------------ split
def test_split_binds_equal_channel_slices(compile_src):
    c = compile_src("""
        block unit() {
            kept, rest = split(2)
            concat(kept, rest -> relu) -> channel_shuffle(2)
        }
        network N {
            input x: [8, 3, 3]
            a, b, d, e = x -> split(4)
            p, q = split(x, 2)
            y = x -> unit
            output a, e, q, y
        }
    """)
    nodes = [c.net.node(o) for o in c.net.outputs[:3]]
    assert [(n.op, n.layer, dict(n.attrs)) for n in nodes] == [
        ("slice", "split", {"start": 0, "stop": 2}), ("slice", "split", {"start": 6, "stop": 8}),
        ("slice", "split", {"start": 4, "stop": 8})]
    assert c.net.shapes[c.net.outputs[3]] == (8, 3, 3)


@pytest.mark.parametrize("stmt, col, message, hint", [
    ("a, b = x -> split(3)", 23, "split: 3 parts do not divide the 8 channels", "use a divisor of 8"),
    ("a, b = x -> split(4)", 5, "2 names for 4 tensors", "split(2)"),
    ("a, b = x -> relu", 12, "2 names need 2 tensors (a split, or a block giving several), got a tensor", "a, b = x -> split(2)"),
    ("a, b = x -> split(2) -> relu", 12, "expected a tensor, got 2 tensors (the parts of a split, or a block's values)", "bind them first"),
    ("a, b = x -> s: split(2)", 20, "a split cannot carry a label", "label the layers"),
])
def test_split_errors_are_located(write, stmt, col, message, hint):
    path = write(f"network N {{\n    input x: [8, 4, 4]\n    {stmt}\n    a\n}}\n")
    with pytest.raises(CnncError) as err:
        compile_file(path)
    text = str(err.value)
    assert f"net.cnn:3:{col}:" in text and message in text and hint in text, text
