"""Analyses against hand-computed tables: receptive fields, costs, memory, lints."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from cnnc.compiler.report import to_json


def rf(c, name):
    f = c.analysis.rf[name]
    return tuple((fl.size, fl.stride, fl.padding) for fl in f) if f else None


def test_receptive_field_table_by_hand(compile_src):
    # Distill (Araujo et al. 2019) recurrences, computed by hand layer by layer:
    #   conv 3x3 s1 p1 : r = 1 + 2*1 = 3,  S = 1, P = 1
    #   maxpool 2 s2   : r = 3 + 1*1 = 4,  S = 2, P = 1
    #   conv 3x3 s1 p1 : r = 4 + 2*2 = 8,  S = 2, P = 1 + 1*2 = 3
    #   conv 3x3 d2 p2 : k_eff = 5, r = 8 + 4*2 = 16, S = 2, P = 3 + 2*2 = 7
    #   conv 5x1 s(2,1): r = (16 + 4*2, 16) = (24, 16), S = (4, 2), P = (7, 7)
    c = compile_src("""
    network N {
        input x: [1, 64, 64]
        x -> conv(4, 3, pad = 1) -> maxpool(2) -> conv(4, 3, pad = 1)
          -> conv(4, 3, dilation = 2, pad = 2) -> conv(4, (5, 1), stride = (2, 1))
    }
    """)
    F = Fraction
    assert rf(c, "conv_1") == ((F(3), F(1), F(1)),) * 2
    assert rf(c, "maxpool") == ((F(4), F(2), F(1)),) * 2
    assert rf(c, "conv_2") == ((F(8), F(2), F(3)),) * 2
    assert rf(c, "conv_3") == ((F(16), F(2), F(7)),) * 2
    assert rf(c, "conv_4") == ((F(24), F(4), F(7)), (F(16), F(2), F(7)))


def test_receptive_field_is_whole_input_after_global_ops(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 16, 16]
        x -> conv(4, 3) -> global_avgpool -> flatten -> linear(2)
    }
    """)
    assert rf(c, "conv") is not None
    assert rf(c, "global_avgpool") is None and rf(c, "linear") is None


def test_fractional_stride_after_transposed_conv(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 16, 16]
        x -> conv(4, 2, stride = 2) -> deconv(4, 2, stride = 2) -> upsample(2)
    }
    """)
    (deconv_h, _), (up_h, _) = c.analysis.rf["deconv"], c.analysis.rf["upsample"]
    # conv 2/2 then deconv 2/2: deconv output j reads conv unit j//2, i.e. input rows 2(j//2)..+1;
    # the continuous window [j - 1, j + 1] (size 3) contains them
    assert deconv_h.stride == Fraction(1) and deconv_h.size == Fraction(3) and deconv_h.padding == 1
    assert up_h.stride == Fraction(1, 2) and not up_h.exact
    from cnnc.compiler.report import to_json
    layer = next(l for l in to_json(c)["layers"] if l["name"] == "upsample")
    assert layer["rf"]["stride"] == ["1/2", "1/2"] and layer["rf"]["approximate"] is True


def test_misaligned_merge_is_warned(compile_src):
    # a 3x3 valid conv shifts the centre by one pixel; cropping the other path keeps them aligned
    c = compile_src("""
    network N {
        input x: [1, 16, 16]
        a = x -> conv(1, 3)
        b = x -> conv(1, 3, pad = 1) -> pad(((0, 0), (0, 0)))
        c = x -> maxpool(2, stride = 1)
        output a, b
        d = a -> conv(1, 1, stride = 1)
    }
    """, allow={"unreachable", "unused"})
    assert not [w for w in c.warnings if w.code == "misaligned"]
    c2 = compile_src("""
    network N {
        input x: [1, 16, 16]
        a = x -> conv(1, 3) -> pad(((2, 0), (1, 1)))
        b = x -> conv(1, 3, pad = 1)
        a + b
    }
    """)
    warns = [w for w in c2.warnings if w.code == "misaligned"]
    assert len(warns) == 1 and "vertical" in warns[0].message and warns[0].loc.line == 5


def test_costs_follow_the_documented_conventions(compile_src):
    c = compile_src("""
    network N {
        input x: [3, 8, 8]
        x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> conv(6, 3, groups = 2, bias = false)
          -> flatten -> linear(5)
    }
    """)
    a = c.analysis
    # conv: out elements * C/g * kh * kw MACs; FLOPs = 2 MACs + one per bias add
    assert a.macs["conv_1"] == 4 * 8 * 8 * 3 * 9 and a.flops["conv_1"] == 2 * a.macs["conv_1"] + 4 * 8 * 8
    assert a.macs["relu"] == 0 and a.flops["relu"] == 4 * 8 * 8
    assert a.flops["maxpool"] == 4 * 4 * 4 * 4  # one per window element read
    assert a.macs["conv_2"] == 6 * 2 * 2 * (4 // 2) * 9 and a.flops["conv_2"] == 2 * a.macs["conv_2"]
    assert a.macs["linear"] == 24 * 5 and a.flops["linear"] == 2 * 24 * 5 + 5
    assert a.macs["flatten"] == 0 and a.flops["flatten"] == 0
    t = a.totals()
    assert t["params"] == (3 * 9 * 4 + 4) + (2 * 9 * 6) + (24 * 5 + 5)


def test_parameters_trainable_fixed_and_buffers(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 8, 8]
        x -> conv(1, 3, bias = false, trainable = false, weights = [[1, 1, 1], [1, 1, 1], [1, 1, 1]])
          -> conv(2, 1) -> batchnorm
    }
    """)
    t = c.analysis.totals()
    assert t["non_trainable_params"] == 9 and t["trainable_params"] == 2 + 2 + 4
    assert t["params"] == 9 + 8 and t["buffers"] == 4  # BN running mean/var are buffers, not parameters
    fixed = c.analysis.params["conv_1"]["weight"]
    assert fixed.init == "fixed" and fixed.value.shape == (1, 1, 3, 3)


def test_memory_by_hand(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 4, 4]
        a = x -> conv(2, 1)
        b = a -> relu
        c = a -> sigmoid
        b + c
    }
    """)
    m = c.analysis.memory
    each = 2 * 4 * 4 * 4  # bytes of a [2, 4, 4] float32 tensor
    assert m["activation_bytes"] == 4 * each
    # conv keeps its input (64 B); relu a one-byte mask (32 B); sigmoid its output; add nothing
    assert m["train_saved_bytes"] == 64 + 32 + each
    # live: x(64) + a -> x freed after conv? x is the graph input and a's only producer input:
    # step conv: x + a = 64 + 128 = 192 (x freed after); relu: a + b = 256; sigmoid: a + b + c = 384,
    # then a is freed; add: b + c + out = 384
    assert m["inference_peak_bytes"] == 384


def test_lints(compile_src):
    c = compile_src("""
    network N {
        input x: [1, 15, 15]
        unused = x -> relu
        x -> conv(4, 2, pad = same) -> maxpool(2) -> dropout(0.2) -> batchnorm
          -> sigmoid -> conv(4, 1) -> tanh -> conv(4, 1) -> sigmoid -> conv(4, 1) -> tanh
    }
    """)
    codes = {w.code: w for w in c.warnings}
    assert set(codes) >= {"unused", "asymmetric-padding", "dropped-pixels", "dropout-before-batchnorm",
                          "saturating-activations", "unreachable"}
    assert codes["unused"].loc.line == 3
    assert codes["asymmetric-padding"].loc.line == 4
    assert "the last 1 row and 1 column of its 15x15 input" in codes["dropped-pixels"].message
    assert codes["saturating-activations"].message.startswith("4 sigmoid/tanh activations")


def test_lints_can_be_silenced(compile_src):
    src = "network N {\n    input x: [1, 8, 8]\n    u = x -> relu\n    x -> relu\n}\n"
    assert {w.code for w in compile_src(src).warnings} == {"unused", "unreachable"}
    assert {w.code for w in compile_src(src, allow={"unused"}).warnings} == {"unreachable"}
    assert compile_src(src, allow={"all"}).warnings == []


def test_squeeze_excite_gate_is_not_a_saturating_stack(compile_src):
    c = compile_src("""
    block se() {
        w = global_avgpool -> conv(channels(in), 1) -> sigmoid
        in * w
    }
    network N {
        input x: [4, 8, 8]
        x -> se -> se -> se -> se -> se
    }
    """)
    assert not [w for w in c.warnings if w.code == "saturating-activations"]


def test_fields_through_transposed_convs_contain_the_true_dependencies(compile_src):
    """After upsampling the field is an approximation, but a safe one: measured with PyTorch
    gradients (all-ones weights), every input row an output unit depends on lies inside it."""
    torch = pytest.importorskip("torch")
    import numpy as np
    c = compile_src("""
    network N {
        input x: [1, 32, 32]
        x -> conv(1, 3, stride = 2, pad = 1) -> conv(1, 3, stride = 2, pad = 1)
          -> deconv(1, 2, stride = 2) -> deconv(1, 3, stride = 2, pad = 1, output_padding = 1)
    }
    """)
    f = c.analysis.rf[c.net.outputs[0]][0]
    assert not f.exact
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, 2, 1), torch.nn.Conv2d(1, 1, 3, 2, 1),
                            torch.nn.ConvTranspose2d(1, 1, 2, 2), torch.nn.ConvTranspose2d(1, 1, 3, 2, 1, 1))
    for p in m.parameters():
        torch.nn.init.constant_(p, 1.0)
    x = torch.zeros(1, 1, 32, 32, requires_grad=True)
    y = m(x)
    for j in range(0, 32, 3):
        x.grad = None
        y[0, 0, j, j].backward(retain_graph=True)
        rows = np.nonzero(x.grad[0, 0].abs().sum(1).numpy())[0]
        start = -f.padding + j * f.stride
        assert start <= rows.min() and rows.max() <= start + f.size - 1, j


def test_a_gated_units_field_is_the_whole_input_and_its_local_field_the_convs(compile_src):
    """The Distill definition: every input pixel that can change a unit. A squeeze-and-excitation gate pools
    the whole input, so a gated unit's field is all of it (rf None, JSON null); the local field, through the
    convolutions only, is the conv's 3x3. Both checked against the gradient of one unit."""
    torch = pytest.importorskip("torch")
    c = compile_src("""
    network N {
        input x: [1, 16, 16]
        y = x -> conv(1, 3, pad = 1)
        w = y -> global_avgpool -> sigmoid
        y * w
    }
    """)
    assert c.analysis.rf["mul"] is None
    local = c.analysis.local_rf["mul"]
    assert (local[0].size, local[1].size) == (3, 3) and c.analysis.rf["conv"] == c.analysis.local_rf["conv"]
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.nn.init.constant_(conv.weight, 1.0)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    y = conv(x)
    out = y * torch.sigmoid(y.mean(dim=(2, 3), keepdim=True))
    out[0, 0, 8, 8].backward()
    assert (x.grad[0, 0] != 0).all()                        # every pixel changes the gated unit
    y2 = conv(x)
    x.grad = None
    y2[0, 0, 8, 8].backward()                              # the local path: the 3x3 window only
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 9, 7, 9)
    layer = next(entry for entry in to_json(c)["layers"] if entry["name"] == "mul")
    assert layer["rf"] is None and layer["local_rf"]["size"] == [3, 3]
