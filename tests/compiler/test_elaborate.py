"""Elaboration: blocks, names, repeats, conditionals, shape queries, imports, bindings."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def names(c):
    return [n.name for n in c.net.layers()]


def test_resnet_names_follow_block_paths():
    c = compile_file(EXAMPLES / "resnet18.cnn")
    got = names(c)
    assert got[:4] == ["stem.conv", "stem.batchnorm", "stem.relu", "maxpool"]
    # a scope numbers a name only when it holds more than one layer of that name
    assert "basic_1.conv_bn_relu.conv" in got and "basic_1.conv" in got
    assert {"basic_3.conv_1", "basic_3.conv_2", "basic_3.batchnorm_1", "basic_3.batchnorm_2"} <= set(got)
    assert got[-1] == "fc" and c.net.outputs == ("fc",)
    # `basic(64) * 2` is recorded as one repeat group of two instances
    reps = {c.net.node(n).repeat for n in got if c.net.node(n).repeat}
    assert reps == {("basic_1", 0, 2), ("basic_1", 1, 2)}  # (group = first instance, index, count)


def test_block_defaults_keywords_and_tensor_arguments(compile_src):
    c = compile_src("""
    block up(c, skip, k = 2) {
        u = deconv(c, k, stride = 2)
        concat(skip, u) -> conv(c, 3, pad = 1)
    }
    network N {
        input x: [4, 16, 16]
        a = x -> conv(8, 3, pad = 1)
        b = a -> maxpool(2) -> conv(16, 3, pad = 1)
        b -> up(skip = a, c = 8)
    }
    """)
    assert c.net.shapes["up.deconv"] == (8, 16, 16)
    assert c.net.shapes["up.concat"] == (16, 16, 16)
    assert c.net.node("up.concat").inputs == ("conv_1", "up.deconv")


def test_if_else_picks_the_branch_from_shapes(compile_src):
    c = compile_src("""
    block proj(c) {
        if channels(in) != c { conv(c, 1) } else { in }
    }
    network N {
        input x: [4, 8, 8]
        x -> proj(4) -> proj(6) -> relu
    }
    """)
    assert names(c) == ["proj_2.conv", "relu"]


def test_shape_queries_and_integer_arithmetic(compile_src):
    c = compile_src("""
    block squeeze_excite(r = 4) {
        w = global_avgpool -> conv(channels(in) // r, 1) -> relu -> conv(channels(in), 1) -> sigmoid
        in * w
    }
    network N {
        input x: [16, 12, 10]
        x -> conv(height(x) + width(x) - 2 * 3 % 4, 1) -> squeeze_excite
    }
    """)
    assert c.net.shapes["conv"] == (20, 12, 10)
    assert c.net.shapes["squeeze_excite.conv_1"] == (5, 1, 1)
    assert c.net.shapes["squeeze_excite.mul"] == (20, 12, 10)


def test_labels_share_weights_and_parameters_count_once(compile_src):
    c = compile_src("""
    network Siamese {
        input a: [1, 8, 8]
        input b: [1, 8, 8]
        fa = a -> enc: conv(4, 3) -> flatten
        fb = b -> enc -> flatten
        output fa, fb
    }
    """)
    shared = [n for n in c.net.layers() if n.shares]
    assert len(shared) == 1 and shared[0].shares == "enc"
    assert c.analysis.totals()["params"] == 4 * 9 + 4
    assert c.net.outputs == ("flatten_1", "flatten_2")


def test_repeat_of_a_layer_and_of_a_block(compile_src):
    c = compile_src("""
    block unit(c) { conv(c, 3, pad = 1) -> relu }
    network N {
        input x: [3, 8, 8]
        x -> unit(4) * 3 -> conv(2, 1) * 2
    }
    """)
    assert [n for n in names(c) if n.startswith("unit")] == [
        "unit_1.conv", "unit_1.relu", "unit_2.conv", "unit_2.relu", "unit_3.conv", "unit_3.relu"]
    assert c.net.node("unit_3.conv").repeat == ("unit_1", 2, 3)


def test_recursive_block_with_an_end(compile_src):
    c = compile_src("""
    block tower(n) { if n == 0 { in } else { conv(4, 3, pad = 1) -> tower(n - 1) } }
    network N {
        input x: [1, 8, 8]
        x -> tower(3)
    }
    """)
    assert len([n for n in names(c) if n.endswith("conv")]) == 3


def test_separable_and_depthwise_lower_to_grouped_convs(compile_src):
    c = compile_src("""
    network N {
        input x: [8, 16, 16]
        x -> depthwise_conv(3, pad = 1, multiplier = 2) -> separable_conv(32, 3, stride = 2, pad = 1)
    }
    """)
    dw = c.net.node("depthwise_conv")
    assert dw.op == "conv" and dw.attrs["groups"] == 8 and dw.attrs["out_channels"] == 16
    sep = [n for n in c.net.layers() if n.layer == "separable_conv"]
    assert [n.name for n in sep] == ["separable_conv.depthwise", "separable_conv.pointwise"]
    assert c.net.shapes["separable_conv.pointwise"] == (32, 8, 8)
    # depthwise 16*9 + 16 bias; separable: depthwise 16*9 (no bias) + pointwise 16*32 + 32
    assert c.analysis.totals()["params"] == 16 * 9 + 16 + 16 * 9 + 16 * 32 + 32


def test_segnet_unpool_uses_the_labelled_pool(compile_src):
    c = compile_src("""
    network SegNetTiny {
        input x: [3, 16, 16]
        x -> conv(8, 3, pad = 1) -> p1: maxpool(2) -> conv(8, 3, pad = 1) -> unpool(p1) -> conv(2, 1)
    }
    """)
    assert c.net.node("unpool").attrs["of"] == "p1"
    assert c.net.shapes["unpool"] == (8, 16, 16)


def test_crop_and_pad(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 20, 20]
        small = x -> conv(4, 5)
        x -> conv(4, 1) -> crop(like = small) -> pad(((1, 2), (0, 3)), value = 1.5)
    }
    """)
    assert c.net.shapes["crop"] == (4, 16, 16)
    assert c.net.node("crop").inputs == ("conv_2", "conv_1")
    assert c.net.shapes["pad"] == (4, 19, 19)


def test_same_valid_full_padding(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 11, 10]
        a = x -> conv(2, 4, stride = 3, pad = same)
        b = x -> conv(2, 3, pad = full)
        c = x -> conv(2, 3, pad = valid)
        output a, b, c
    }
    """, allow={"all"})
    # TensorFlow 'same': out = ceil(n / s); total = max((out-1)s + k - n, 0), left = total // 2
    assert c.net.shapes["conv_1"] == (2, 4, 4)
    # H = 11: out 4, total 3*3 + 4 - 11 = 2 -> (1, 1); W = 10: total 3 -> (1, 2)
    assert c.net.node("conv_1").attrs["padding"] == ((1, 1), (1, 2))
    assert c.net.shapes["conv_2"] == (2, 13, 12)
    assert c.net.shapes["conv_3"] == (2, 9, 8)


def test_symbolic_input_constraints_and_binding(write):
    path = write("""
    network N {
        input x: [1, H, W]
        a = x -> maxpool(2) -> maxpool(2)
        b = a -> upsample(4)
        concat(x, b)
    }
    """)
    c = compile_file(path)
    assert c.net.constraints == ["H must be a multiple of 4", "W must be a multiple of 4"]
    assert c.net.symbols["H"]["smallest"] == 4
    assert str(c.net.shapes["maxpool_2"][1]) == "H//4"
    bound = compile_file(path, inputs={"x": (1, 32, 20)})
    assert bound.net.shapes["concat"] == (2, 32, 20)
    with pytest.raises(CnncError) as info:
        compile_file(path, inputs={"x": (1, 30, 20)})
    assert "concat" in info.value.message and "[1, 30, 20]" in info.value.message
    assert info.value.loc.line == 5


def test_input_binding_errors(write):
    path = write("network N {\n    input x: [3, 32, 32]\n    x -> relu\n}\n")
    smaller = compile_file(path, inputs={"x": (3, 16, 16)})  # like torchinfo's input_size: allowed, said
    assert smaller.net.shapes["relu"] == (3, 16, 16)
    assert [w.code for w in smaller.warnings] == ["input-override"]
    square = write("network S {\n    input x: [1, H, H]\n    x -> relu\n}\n", "square.cnn")
    with pytest.raises(CnncError, match=r"does not match the declared shape \[1, H, H\]"):
        compile_file(square, inputs={"x": (1, 32, 16)})
    with pytest.raises(CnncError, match="has 2 dimensions"):
        compile_file(path, inputs={"x": (32, 32)})
    with pytest.raises(CnncError, match="no such input"):
        compile_file(path, inputs={"y": (3, 32, 32)})


def test_network_parameters_can_be_set(write):
    path = write("network N(classes = 10) {\n    input x: [4]\n    x -> linear(classes)\n}\n")
    assert compile_file(path).net.shapes["linear"] == (10,)
    assert compile_file(path, args={"classes": 3}).net.shapes["linear"] == (3,)
    with pytest.raises(CnncError, match="no parameter 'clases'"):
        compile_file(path, args={"clases": 3})


def test_imports_are_relative_and_cycles_are_reported(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.cnn").write_text("block cbr(c) { conv(c, 3, pad = 1) -> batchnorm -> relu }\n")
    (tmp_path / "net.cnn").write_text('import "lib/blocks.cnn"\nnetwork N {\n    input x: [3, 8, 8]\n'
                                      "    x -> cbr(4)\n}\n")
    assert [n.name for n in compile_file(tmp_path / "net.cnn").net.layers()] == [
        "cbr.conv", "cbr.batchnorm", "cbr.relu"]
    (tmp_path / "a.cnn").write_text('import "b.cnn"\n')
    (tmp_path / "b.cnn").write_text('\nimport "a.cnn"\n')
    with pytest.raises(CnncError) as info:
        compile_file(tmp_path / "a.cnn")
    assert info.value.message == "import cycle: a.cnn -> b.cnn -> a.cnn"
    assert (info.value.loc.file.endswith("b.cnn"), info.value.loc.line) == (True, 2)


def test_parameters_may_shadow_builtins_with_a_warning(compile_src):
    c = compile_src("""
    block b(width, pad = 1) { conv(width, 3, pad = pad) }
    network N {
        input x: [3, 8, 8]
        x -> b(5)
    }
    """)
    assert c.net.shapes["b.conv"] == (5, 8, 8)
    shadow = [w for w in c.warnings if w.code == "shadowing"]
    assert len(shadow) == 2 and {w.loc.col for w in shadow} == {9, 16}


def test_several_networks_need_a_choice(write):
    path = write("network A {\n    input x: [1]\n    x -> relu\n}\nnetwork B {\n    input x: [2]\n    x -> relu\n}\n")
    with pytest.raises(CnncError, match="several networks: A, B"):
        compile_file(path)
    assert compile_file(path, network="B").net.name == "B"
    with pytest.raises(CnncError) as info:
        compile_file(path, network="C")
    assert "no network of that name" in info.value.message


def test_nodes_know_the_block_of_each_scope_level(compile_src):
    c = compile_src("""
    block inner(c) { conv(c, 1) }
    block outer(c) { stem: inner(c) -> separable_conv(c, 3, pad = 1) }
    network N {
        input x: [2, 8, 8]
        x -> outer(4) * 2
    }
    """)
    node = c.net.node("outer_2.stem.conv")
    assert node.scope == ("outer_2", "stem") and node.scope_blocks == ("outer", "inner")
    sep = c.net.node("outer_1.separable_conv.pointwise")
    assert sep.scope_blocks == ("outer", "separable_conv")


def test_a_parenthesised_chain_can_be_repeated(compile_src):
    c = compile_src("""
    block stage(c, n) { (conv(c, 3, pad = 1) -> relu) * n }
    network N {
        input x: [3, 8, 8]
        x -> stage(4, 3) -> (conv(2, 1) -> sigmoid) * 2
    }
    """, allow={"all"})
    assert [n.op for n in c.net.layers()] == ["conv", "relu"] * 3 + ["conv", "sigmoid"] * 2


def test_functional_calls_apply_a_layer_to_a_named_tensor(compile_src):
    c = compile_src("""
    block up(c, skip) {
        u = deconv(c, 2, stride = 2)
        concat(crop(skip, like = u), u) -> relu
    }
    network N {
        input x: [4, 18, 18]
        y = relu(x)
        y -> maxpool(2) -> up(4, x)
    }
    """)
    assert c.net.node("relu").inputs == ("x",)
    assert c.net.node("up.crop").inputs == ("x", "up.deconv") and c.net.shapes["up.crop"] == (4, 18, 18)
    assert c.net.shapes["up.concat"] == (8, 18, 18)


def test_bound_sizes_that_break_a_derived_constraint_say_so(write):
    path = write("""
    network N {
        input x: [1, H, W]
        y = x -> maxpool(2) -> maxpool(2) -> upsample(4)
        concat(x, y)
    }
    """)
    with pytest.raises(CnncError) as info:
        compile_file(path, inputs={"x": (1, 30, 32)})
    assert info.value.hint == "H must be a multiple of 4, and --input gives H = 30 (the smallest valid H is 4)"


# ------------------------------------------ issue 11 part A: numbers, functions, resizing
def _layers(c, op):
    return [n for n in c.net.layers() if n.op == op]


def test_tensor_number_arithmetic_lowers_to_one_affine_each(compile_src):
    c = compile_src("""
    network N(m = 0.5) {
        input x: [2, 4, 4]
        a = x + 3
        b = x - m
        d = 1 - x
        e = x * 0.5
        f = 2 * x
        g = x / 4
        h = -x
        output a, b, d, e, f, g, h
    }""")
    got = [(n.attrs["scale"], n.attrs["shift"]) for n in _layers(c, "affine")]
    assert got == [(1.0, 3.0), (1.0, -0.5), (-1.0, 1.0), (0.5, 0.0), (2.0, 0.0), (0.25, 0.0), (-1.0, 0.0)]
    assert all(c.net.shapes[n.name] == (2, 4, 4) for n in _layers(c, "affine"))
    # FLOPs: one per element for the multiply and one for the add, each only when not the identity
    assert [c.analysis.flops[n.name] for n in _layers(c, "affine")] == [32, 32, 64, 32, 32, 32, 32]


def test_tensor_difference_is_an_add_of_the_negated_operand(compile_src):
    c = compile_src("network N {\n    input x: [2, 4, 4]\n    y = x -> relu\n    x - y\n}\n")
    (neg,), (add,) = _layers(c, "affine"), _layers(c, "add")
    assert (neg.attrs["scale"], neg.attrs["shift"], neg.inputs) == (-1.0, 0.0, ("relu",))
    assert add.inputs == ("x", neg.name)


def test_max_of_tensors_is_a_pairwise_maximum_that_broadcasts(compile_src):
    c = compile_src("""
    network N {
        input x: [2, 4, 4]
        g = x -> global_avgpool
        max(x, g, x -> relu)
    }""")
    first, second = _layers(c, "maximum")
    assert first.inputs == ("x", "global_avgpool") and second.inputs == (first.name, "relu")
    assert c.net.shapes[second.name] == (2, 4, 4)
    assert c.analysis.macs[second.name] == 0 and c.analysis.flops[second.name] == 32


def test_repeat_zero_times_is_the_identity(compile_src):
    src = "network N(n = 1) {\n    input x: [2, 4, 4]\n    x -> conv(3, 1) -> conv(3, 1) * (n - 1) -> relu\n}\n"
    c = compile_src(src)
    assert [n.op for n in c.net.layers()] == ["conv", "relu"]
    assert [n.op for n in compile_src(src, args={"n": 3}).net.layers()] == ["conv", "conv", "conv", "relu"]


def test_rounding_functions_and_numeric_helpers(compile_src):
    c = compile_src("""
    def make_divisible(v, divisor = 8) {
        n = max(divisor, int(v + divisor / 2) // divisor * divisor)
        if n < 0.9 * v { n + divisor } else { n }
    }
    def twice(v) = 2 * v
    def nested(v, w = twice(v)) = w + 1
    network N(wm = 1.25) {
        input x: [3, 8, 8]
        x -> conv(make_divisible(32 * wm), 1) -> conv(make_divisible(10), 1) -> conv(round(2.5), 1)
          -> conv(round(3.5), 1) -> conv(ceil(2.1), 1) -> conv(floor(2.9), 1) -> conv(int(-2.7) + 5, 1)
          -> conv(nested(3), 1) -> conv(nested(3, w = 2), 1) -> conv(round(channels(x) * 1.0), 1)
    }""")
    # make_divisible: 40 stays 40; 10 -> 8 is below 0.9 * 10, so 16; round halves to even (Python)
    assert [n.attrs["out_channels"] for n in _layers(c, "conv")] == [40, 16, 2, 4, 3, 2, 3, 7, 3, 3]


def test_a_family_member_is_picked_with_set(compile_src):
    src = """
    def width_of(v) = if v == 0 { 1.0 } else { 1.5 }
    network N(variant = 0, width = width_of(variant)) {
        input x: [3, 8, 8]
        x -> conv(int(16 * width), 1)
    }"""
    assert _layers(compile_src(src), "conv")[0].attrs["out_channels"] == 16
    assert _layers(compile_src(src, args={"variant": 1}), "conv")[0].attrs["out_channels"] == 24
    assert _layers(compile_src(src, args={"width": 2.0}), "conv")[0].attrs["out_channels"] == 32


def test_functions_are_imported_with_blocks(tmp_path):
    (tmp_path / "lib.cnn").write_text("def half(v) = v // 2\n")
    (tmp_path / "main.cnn").write_text('import "lib.cnn"\nnetwork N {\n    input x: [4, 8, 8]\n'
                                       '    x -> conv(half(channels(x)), 1)\n}\n')
    c = compile_file(tmp_path / "main.cnn")
    assert c.net.shapes["conv"] == (2, 8, 8)


def test_upsample_to_a_size_and_to_a_symbolic_tensor(compile_src):
    src = """
    network N {
        input x: [3, H, W]
        f = x -> conv(8, 3, stride = 2, pad = 1)
        p = f -> global_avgpool -> upsample(like = f, mode = bilinear)
        back = concat(f, p) -> upsample(like = x, mode = bilinear, align_corners = true)
        s = back -> upsample(size = (5, 7))
        output back, s
    }"""
    c = compile_src(src)
    ups = {n.name: n for n in _layers(c, "upsample")}
    assert c.net.shapes["upsample_1"] == c.net.shapes["conv"]                  # [8, (H + 1)//2, (W + 1)//2]
    assert c.net.shapes["upsample_2"][1:] == c.net.shapes["x"][1:]          # H and W, symbolic
    assert c.net.shapes["upsample_3"] == (16, 5, 7)
    assert ups["upsample_1"].inputs == ("global_avgpool", "conv")             # `like` is a second input
    assert ups["upsample_3"].attrs["scale"] is None and ups["upsample_3"].attrs["size"] == (5, 7)
    assert not c.net.constraints                                              # any H, W
    bound = compile_src(src, inputs={"x": (3, 45, 37)})
    assert bound.net.shapes["upsample_2"] == (16, 45, 37)
    assert bound.analysis.flops["upsample_2"] == 4 * 16 * 45 * 37            # bilinear: four per element


def test_upsample_receptive_field_stride_is_the_size_ratio(compile_src):
    c = compile_src("network N {\n    input x: [1, 8, 8]\n    x -> upsample(size = (12, 20))\n}\n")
    fy, fx = c.analysis.rf["upsample"]
    assert (fy.stride, fx.stride) == (Fraction(2, 3), Fraction(2, 5))
    assert (fy.size, fx.size) == (1, 1)
