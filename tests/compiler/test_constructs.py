"""The language's constructs of issue 24: powers and logarithms, silu, pairs for adaptive pooling, min of
tensors, causal padding, layer norm over the channels, linear over the channels, layer scale, drop-path,
blocks giving several tensors; their shapes, figures and every new mistake with its location and hint."""
from __future__ import annotations

import numpy as np
import pytest

NET = "network N {{\n    input x: [3, 32, 32]\n    {body}\n}}\n"
SIG = "network N {{\n    input s: [2, 20]\n    {body}\n}}\n"
SYM = "network N {{\n    input x: [3, H, W]\n    {body}\n}}\n"


def net(body: str, template: str = NET) -> str:
    return template.format(body=body)


# ------------------------------------------------------------------ numbers
def test_powers_and_logarithms_are_pythons(compile_src):
    c = compile_src("network N(a = 2 ** 3 ** 2, b = -2 ** 2, c = 2 ** -1, d = 3 * 2 ** 2,\n"
                    "          e = round(log(1000, 10)), f = round(exp(log(7))), g = 9 ** 0.5) {\n"
                    "    input x: [1, 4, 4]\n"
                    "    x -> conv(a, 1) -> conv(-b, 1) -> conv(int(8 * c), 1) -> conv(d, 1) -> conv(e, 1)\n"
                    "      -> conv(f, 1) -> conv(int(g), 1)\n}\n")
    assert [n.attrs["out_channels"] for n in c.net.layers()] == [2 ** 3 ** 2, 4, 4, 12, 3, 7, 3]


def regnet_widths(depth, w0, wa, wm, q=8):
    """torchvision's BlockParams.from_init_params, restated with NumPy (the reference)."""
    u = np.arange(depth) * wa + w0
    steps = np.round(np.log(u / w0) / np.log(wm))
    return (np.round(w0 * np.power(wm, steps) / q) * q).astype(int).tolist()


def test_regnets_width_rule_is_a_numeric_function(compile_src):
    """RegNetY-400MF (w0 = 48, wa = 27.89, wm = 2.09, 16 blocks): the widths of the docs' formula."""
    calls = " -> ".join(f"conv(regnet_width({i}), 1)" for i in range(16))
    c = compile_src("def regnet_width(i, w0 = 48, wa = 27.89, wm = 2.09, q = 8) {\n"
                    "    steps = round(log((w0 + wa * i) / w0) / log(wm))\n"
                    "    int(round(w0 * wm ** steps / q)) * q\n}\n" + net(f"x -> {calls}"))
    widths = [n.attrs["out_channels"] for n in c.net.layers()]
    assert widths == regnet_widths(16, 48, 27.89, 2.09)
    assert sorted(set(widths)) == [48, 104, 208, 440]     # regnet_y_400mf's four stage widths


# ------------------------------------------------------------------ layers
def test_silu_is_swish_under_pytorchs_name(compile_src):
    c = compile_src(net("x -> silu -> swish"))
    first, second = c.net.layers()
    assert (first.op, first.layer, first.name) == ("swish", "silu", "silu")
    assert (second.op, second.layer) == ("swish", "swish")


@pytest.mark.parametrize("call, shape", [("adaptive_avgpool((6, 6))", (3, 6, 6)), ("adaptive_avgpool((4, 2))", (3, 4, 2)),
                                         ("adaptive_avgpool(5)", (3, 5, 5)), ("adaptive_avgpool(4, 2)", (3, 4, 2))])
def test_adaptive_pooling_takes_pytorchs_output_size(compile_src, call, shape):
    c = compile_src(net(f"x -> {call}"))
    assert c.net.shapes[c.net.outputs[0]] == shape


def test_min_of_tensors_is_a_pairwise_minimum_that_broadcasts(compile_src):
    c = compile_src(net("a = x -> global_avgpool\n    min(x, a, x * 2)"))
    ops = [n.op for n in c.net.layers()]
    assert ops.count("minimum") == 2 and c.net.shapes[c.net.outputs[0]] == (3, 32, 32)
    assert c.analysis.flops[c.net.outputs[0]] == 3 * 32 * 32


@pytest.mark.parametrize("k, d, length", [(3, 1, 20), (2, 4, 20), (5, 2, 20)])
def test_causal_padding_keeps_the_length_and_pads_on_the_left(compile_src, k, d, length):
    c = compile_src(net(f"s -> conv(4, {k}, dilation = {d}, pad = causal)", SIG))
    conv = c.net.layers()[0]
    assert conv.attrs["padding"] == ((0, 0), (d * (k - 1), 0))
    assert c.net.shapes[conv.name] == (4, length)
    (field,) = [c.analysis.rf[conv.name][1]]
    assert (field.size, field.padding) == (d * (k - 1) + 1, d * (k - 1))   # sees the past only


def test_layer_norm_over_channels_counts_like_pytorchs(compile_src):
    c = compile_src(net("x -> layernorm(over = channels) -> layernorm"))
    one, every = c.net.layers()
    assert one.attrs["over"] == "channels" and every.attrs["over"] == "all"
    assert c.analysis.totals()["params"] == 4 * 3          # weight and bias [C] each, either way


def test_linear_over_channels_has_pytorchs_weights_and_a_1x1_convs_macs(compile_src):
    c = compile_src(net("x -> linear(8, over = channels) -> conv(8, 1)"))
    lin, conv = c.net.layers()
    assert c.net.shapes[lin.name] == (8, 32, 32)
    assert {k: v.shape for k, v in c.analysis.params[lin.name].items()} == {"weight": (8, 3), "bias": (8,)}
    assert c.analysis.macs[lin.name] == 8 * 3 * 32 * 32
    assert c.analysis.macs[conv.name] == 8 * 8 * 32 * 32
    assert c.analysis.rf[lin.name] == c.analysis.rf["x"]     # element-wise over the places


def test_layer_scale_has_a_factor_per_channel_and_no_macs(compile_src):
    c = compile_src(net("x -> layer_scale(0.25) -> flatten -> layer_scale"))
    image, flat = c.net.layers()[0], c.net.layers()[2]
    assert c.analysis.params[image.name]["weight"].shape == (3, 1, 1)
    assert c.analysis.params[flat.name]["weight"].shape == (3072,)
    assert c.analysis.macs[image.name] == 0 and c.analysis.flops[image.name] == 3 * 32 * 32
    assert np.all(c.analysis.params[image.name]["weight"].value == np.float32(0.25))


def test_stochastic_depth_costs_nothing_and_is_a_random_drop(compile_src):
    c = compile_src(net("x -> stochastic_depth(0.2) -> stochastic_depth(0.1, mode = batch)"))
    first, second = c.net.layers()
    assert (first.attrs["p"], first.attrs["mode"], second.attrs["mode"]) == (0.2, "row", "batch")
    assert c.analysis.flops[first.name] == 0


def test_a_block_gives_several_tensors_bound_by_name(compile_src):
    c = compile_src("block encode(c) {\n    skip = conv(c, 3, pad = 1) -> relu\n    (skip, skip -> maxpool(2))\n}\n"
                    + net("e1, x1 = x -> encode(8)\n    e2, x2 = x1 -> encode(16)\n"
                          "    (x2 -> upsample(2)) + (e2 -> conv(16, 1))"))
    shapes = {n.name: c.net.shapes[n.name] for n in c.net.layers()}
    assert shapes["encode_1.maxpool"] == (8, 16, 16) and shapes["encode_2.relu"] == (16, 16, 16)
    assert c.net.shapes[c.net.outputs[0]] == (16, 16, 16)


# ------------------------------------------------------------------ mistakes
BLOCK2 = "block two { (in -> relu, in -> tanh) }\n"
CASES = [
    # (id, program, line, col, message fragment, hint fragment)
    ("tensor-power", net("x ** 2"), 3, 7, "tensors support '+', '-', '*' and '/', not '**'", "`x * x`"),
    ("size-power", net("x -> conv(height(x) ** 2, 1)", SYM), 3, 25, "'**' on a size", None),
    ("power-too-large", net("x -> conv(10 ** 100, 1)"), 3, 18, "number too large", None),
    ("power-of-zero", net("x -> conv(int(0 ** -1), 1)"), 3, 21, "zero cannot be raised to a negative power", None),
    ("power-not-real", net("x -> conv(int((-8) ** 0.5), 1)"), 3, 24, "is not a real number", None),
    ("line-starts-with-plus", net("y = x\n    + x"), 4, 5, "unexpected '+'", "a new line ended the statement"),
    ("line-starts-with-power", net("y = 2\n    ** 3\n    x"), 4, 5, "unexpected '**'", "end the previous line with"),
    ("log-of-negative", net("x -> conv(int(log(-1)), 1)"), 3, 23, "'log' needs a positive number, got the integer -1",
     None),
    ("log-base-one", net("x -> conv(int(log(8, 1)), 1)"), 3, 26, "'log' to the base 1 is undefined", None),
    ("log-of-a-tensor", net("x -> conv(int(log(x)), 1)"), 3, 23, "expected a number, got a tensor", None),
    ("log-three-arguments", net("x -> conv(int(log(8, 2, 2)), 1)"), 3, 19, "'log' takes one or two numbers",
     "log(x) or log(x, base)"),
    ("exp-overflow", net("x -> conv(int(exp(1000)), 1)"), 3, 19, "number too large", None),
    ("silu-typo", net("x -> slu"), 3, 10, "unknown name 'slu'", "did you mean 'silu'?"),
    ("adaptive-size-twice", net("x -> adaptive_avgpool((6, 4), 3)"), 3, 35, "the output size is given twice",
     "give a pair (h, w)"),
    ("min-tensor-and-number", net("min(x, 6)"), 3, 12, "min takes tensors or numbers, not both", "relu6"),
    ("causal-on-an-image", net("x -> conv(4, 3, pad = causal)"), 3, 27, "pad = causal is for [C, L] signals", None),
    ("signal-one-sided-pad", net("s -> conv(4, 3, pad = ((0, 0), (2, 0)))", SIG), 3, 27,
     "on a [C, L] signal takes pad as an integer, same, valid, full or causal", "pad = causal"),
    ("layernorm-over-what", net("x -> layernorm(over = chanels)"), 3, 27, "over must be one of all, channels",
     "did you mean 'channels'?"),
    ("linear-needs-flat-or-over", net("x -> linear(10)"), 3, 10, "linear needs a flat input",
     "linear(..., over = channels)"),
    ("stochastic-depth-needs-p", net("x -> stochastic_depth"), 3, 10, "'stochastic_depth' needs its argument 'p'",
     None),
    ("stochastic-depth-p-one", net("x -> stochastic_depth(1)"), 3, 27, "p must satisfy 0 <= p < 1", None),
    ("block-values-chained", BLOCK2 + net("x -> two -> relu"), 4, 5, "expected a tensor, got 2 tensors",
     "bind them first"),
    ("block-values-repeated", BLOCK2 + net("x -> two * 2"), 4, 14, "a repeated block must give one tensor",
     "chain the calls by hand"),
    ("block-values-too-few-names", BLOCK2 + net("a, b, c = x -> two"), 4, 5, "3 names for 2 tensors", None),
    ("block-ends-with-numbers", "block b { (1, 2) }\n" + net("x -> b"), 1, 11,
     "block 'b' must end with a tensor (or a tuple of tensors)", "end it with `(a, b)`"),
]


@pytest.mark.parametrize("program, line, col, message, extra", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_new_mistakes_are_located_errors_with_hints(error_of, program, line, col, message, extra):
    err = error_of(program)
    rendered = err.render()
    assert message in err.message, rendered
    assert (err.loc.line, err.loc.col) == (line, col), rendered
    assert program.splitlines()[line - 1] in rendered
    if extra:
        assert extra in rendered, rendered
