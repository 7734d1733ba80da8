"""Every example program compiles, and the analysis reproduces the published figures.

Sources of the figures (cited at each assertion):
- torchvision: the "Params" and "GFLOPS" columns of the model tables in the
  torchvision documentation (docs.pytorch.org/vision/stable/models.html);
  torchvision's GFLOPS are multiply-accumulates, our MACs.
- Distill: Araujo, Norris & Sim, "Computing Receptive Fields of
  Convolutional Neural Networks", Distill 2019, table of receptive fields
  (the same figures as google-research/receptive_field's README): size r,
  effective stride S, effective padding P of the last feature layer, for
  TF-slim models (stride on the 1x1 of ResNet v1, "SAME" padding).
- The papers, for networks torchvision does not ship.
The torch-twin tests (test_against_torch.py) check the same networks
independently, layer by layer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnc.cli import main as cli
from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.cnn"))


def compiled(name: str, **kw):
    return compile_file(EXAMPLES / name, **kw)


def totals(name: str, **kw) -> dict:
    return compiled(name, **kw).analysis.totals()


def before_global_pool(c) -> str:
    return next(n for n in c.net.layers() if n.op == "global_avgpool").inputs[0]


def field(c, layer: str) -> tuple:
    """(size, stride, padding) of a layer's receptive field; asserts it is square."""
    fy, fx = c.analysis.rf[layer]
    assert (fy.size, fy.stride, fy.padding) == (fx.size, fx.stride, fx.padding)
    return fy.size, fy.stride, fy.padding


# ------------------------------------------------------------------ all files
def test_there_are_examples():
    names = {f.name for f in FILES}
    for expected in ("lenet5.cnn", "alexnet.cnn", "vgg16.cnn", "resnet18.cnn", "resnet50.cnn", "resnet152.cnn",
                     "resnet1001.cnn", "googlenet.cnn", "densenet121.cnn", "se_resnet.cnn", "mobilenet_v1.cnn",
                     "unet.cnn", "fcn32s.cnn", "segnet.cnn", "deeplab.cnn", "sobel.cnn", "mean_blur.cnn",
                     "inception_block.cnn", "small_resnet.cnn", "small_inception.cnn", "small_unet.cnn",
                     "cifar_resnet20.cnn", "sharpen.cnn", "gaussian_blur.cnn", "emboss.cnn", "rgb_edges.cnn"):
        assert expected in names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_example_passes_cnnc_check(path, capsys):
    assert cli(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert " is valid (" in out


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_example_has_a_header(path):
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 2, "start with a comment: what it is, the paper, the figures it should produce"
    assert any(ch.isdigit() for ch in "".join(header)), "the header should state the figures to expect"


# ------------------------------------------------------- published parameters
def test_lenet5():
    # d2l.ai section 7.6 (LeNet): 61,706 parameters; the language brief: 416,520 MACs.
    t = totals("lenet5.cnn")
    assert (t["params"], t["macs"]) == (61_706, 416_520)


def test_resnet18():
    # torchvision docs: resnet18 11,689,512 params, 1.81 GFLOPS (= 1,814,073,344 MACs, the brief).
    t = totals("resnet18.cnn")
    assert (t["params"], t["macs"]) == (11_689_512, 1_814_073_344)


def test_resnet50():
    # torchvision docs: resnet50 (v1.5) 25,557,032 params, 4.09 GFLOPS; architecture brief: 4,089,184,256 MACs.
    t = totals("resnet50.cnn")
    assert (t["params"], t["macs"]) == (25_557_032, 4_089_184_256)


def test_resnet50_v1_moves_the_stride_not_the_parameters():
    # The paper's layout (stride on the first 1x1): same parameters, fewer MACs (checked against torch).
    t = totals("resnet50.cnn", args={"v1_5": False})
    assert (t["params"], t["macs"]) == (25_557_032, 3_857_973_248)


def test_resnet152():
    # torchvision docs: resnet152 60,192,808 params, 11.51 GFLOPS.
    t = totals("resnet152.cnn")
    assert t["params"] == 60_192_808
    assert round(t["macs"] / 1e7) == 1151
    assert t["macs"] == 11_513_626_624  # exact value, checked against the torch twin


def test_vgg16():
    # torchvision docs: vgg16 138,357,544 params, 15.47 GFLOPS.
    t = totals("vgg16.cnn")
    assert t["params"] == 138_357_544
    assert round(t["macs"] / 1e7) == 1547


def test_alexnet():
    # torchvision docs: alexnet 61,100,840 params, 0.71 GFLOPS.
    t = totals("alexnet.cnn")
    assert t["params"] == 61_100_840
    assert round(t["macs"] / 1e7) == 71


def test_alexnet_paper_layout():
    # Caffe's bvlc_alexnet (the paper's grouped two-tower network): 60,965,224 parameters.
    c = compiled("alexnet_lrn.cnn")
    assert c.analysis.totals()["params"] == 60_965_224
    assert c.net.shapes["pool5"] == (256, 6, 6)
    assert sum(1 for n in c.net.layers() if n.op == "lrn") == 2


def test_googlenet():
    # torchvision docs: googlenet 6,624,904 params, 1.50 GFLOPS (BasicConv2d = conv without bias + batchnorm,
    # and the "5x5" branch with a 3x3 kernel).
    t = totals("googlenet.cnn")
    assert t["params"] == 6_624_904
    assert round(t["macs"] / 1e7) == 150


def test_inception_block():
    # Szegedy et al. 2015, Table 1, inception (3a): output 28x28x256, 128 M ops, 159 K params -- the table's
    # "K" is 1024 and leaves out biases: 163,328 weights / 1024 = 159.5.
    c = compiled("inception_block.cnn")
    out = c.net.outputs[0]
    t = c.analysis.totals()
    assert c.net.shapes[out] == (256, 28, 28)
    assert t["macs"] == 128_049_152
    biases = 64 + 96 + 128 + 16 + 32 + 32
    assert t["params"] - biases == 163_328
    assert int((t["params"] - biases) / 1024) == 159


def test_densenet121():
    # torchvision docs: densenet121 7,978,856 params, 2.83 GFLOPS.
    c = compiled("densenet121.cnn")
    t = c.analysis.totals()
    assert t["params"] == 7_978_856
    assert round(t["macs"] / 1e7) == 283
    assert c.net.shapes[before_global_pool(c)] == (1024, 7, 7)


def test_mobilenet_v1():
    # Howard et al. 2017, Table 1 / 8: 569 million mult-adds, 4.2 million parameters; exact figures from the brief.
    t = totals("mobilenet_v1.cnn")
    assert (t["params"], t["macs"]) == (4_231_976, 568_740_352)


def test_se_resnet50():
    # Hu et al. 2018, Table 2: SE-ResNet-50 28.1 M params (28,088,024 in timm's seresnet50 and torch twin).
    t = totals("se_resnet.cnn")
    assert t["params"] == 28_088_024
    assert t["params"] - 25_557_032 == 2_530_992  # the gates alone


def test_cifar_resnet20():
    # He et al. 2016, section 4.2: 0.27 M params; with 1x1-conv + batchnorm projections (option B) 272,474.
    t = totals("cifar_resnet20.cnn")
    assert t["params"] == 272_474
    assert t["macs"] == 40_813_184


def test_resnet1001():
    # He et al. 2016 ("Identity mappings"), Table 2: ResNet-1001 has 10.2 M parameters -- the figure counts
    # convolutions and the classifier; batchnorm adds 149,216 more.
    c = compiled("resnet1001.cnn")
    t = c.analysis.totals()
    weighted = [n for n in c.net.layers() if n.op in ("conv", "linear")]
    assert len(weighted) == 1001 + 3  # 1001 layers deep, plus three projection shortcuts
    assert round(sum(c.analysis.layer_params[n.name] for n in weighted) / 1e5) == 102
    assert t["params"] == 10_327_706
    assert c.net.shapes[c.net.outputs[0]] == (10,)


def test_small_training_networks():
    for name, params, out in (("small_resnet.cnn", 77_754, (10,)), ("small_inception.cnn", 20_070, (10,)),
                              ("small_unet.cnn", 116_770, (2, 32, 32))):
        c = compiled(name)
        assert c.analysis.totals()["params"] == params, name
        assert 1_000 <= params <= 150_000
        assert c.net.shapes[c.net.outputs[0]] == out
        assert c.net.train is not None, f"{name} should carry a train section"


# ----------------------------------------------------------- receptive fields
def test_rf_resnet18():
    # 435 pixels at the last block (the brief; also measured with torch in test_against_torch.py).
    c = compiled("resnet18.cnn")
    assert field(c, before_global_pool(c))[:2] == (435, 32)


def test_rf_resnet50():
    # Distill: resnet_v1_50 r = 483, S = 32 (P = 239 with TF "SAME" padding; torch-style padding gives 241).
    c = compiled("resnet50.cnn", args={"v1_5": False})
    assert field(c, before_global_pool(c)) == (483, 32, 241)
    # torchvision's v1.5 moves the stride to the 3x3: three 3x3 convolutions see half the stride, 56 pixels less.
    c = compiled("resnet50.cnn")
    assert field(c, before_global_pool(c))[:2] == (427, 32)


def test_rf_resnet152():
    # Distill: resnet_v1_152 r = 1507, S = 32.
    c = compiled("resnet152.cnn", args={"v1_5": False})
    assert field(c, before_global_pool(c))[:2] == (1507, 32)


def test_rf_vgg16():
    # Distill: vgg_16 r = 212, S = 32, P = 90 -- at pool5; the last convolution (conv5_3) sees 196 at stride 16.
    c = compiled("vgg16.cnn")
    assert field(c, "conv5.conv_relu_3.conv") == (196, 16, 90)
    assert field(c, "conv5.maxpool") == (212, 32, 90)


def test_rf_alexnet():
    # Distill: alexnet_v2 r = 195, S = 32, P = 64. torchvision pads conv1 by 2 (P = 66); the paper's layout
    # does not pad conv1, as alexnet_v2, and matches all three.
    assert field(compiled("alexnet.cnn"), "pool5")[:2] == (195, 32)
    assert field(compiled("alexnet_lrn.cnn"), "pool5") == (195, 32, 64)


def test_rf_mobilenet_v1():
    # Distill: mobilenet_v1 r = 315, S = 32 (P = 126 with TF "SAME" padding).
    c = compiled("mobilenet_v1.cnn")
    assert field(c, before_global_pool(c))[:2] == (315, 32)


def test_rf_is_whole_input_after_global_pooling():
    c = compiled("resnet18.cnn")
    assert c.analysis.rf["global_avgpool"] is None
    assert c.analysis.rf["fc"] is None


def test_rf_of_dilated_aspp_branches():
    # deeplab.cnn: the widest ASPP branch (3x3, dilation 18) spans 37 taps at the backbone's stride 8.
    c = compiled("deeplab.cnn", inputs={"x": (3, 513, 513)})
    before = field(c, "maxpool_5")
    after = field(c, "aspp.concat")
    assert before[1] == 8
    assert after[0] == before[0] + 36 * 8


# ---------------------------------------------------------------------- U-Net
def test_unet_symbolic_constraint():
    c = compiled("unet.cnn")
    assert "H must be a multiple of 16" in c.net.constraints
    assert "W must be a multiple of 16" in c.net.constraints
    assert c.net.symbols["H"]["smallest"] == 16


@pytest.mark.parametrize("size", [576, 512, 64])
def test_unet_compiles_at_multiples_of_16(size):
    c = compiled("unet.cnn", inputs={"x": (1, size, size)})
    assert c.net.shapes[c.net.outputs[0]] == (2, size, size)
    assert c.analysis.totals()["params"] == 31_030_658


@pytest.mark.parametrize("size", [570, 572])
def test_unet_rejects_other_sizes_with_a_located_error(size):
    # The padded U-Net needs multiples of 16; 572 is the paper's tile for the *unpadded* network (unet_paper.cnn).
    with pytest.raises(CnncError) as err:
        compiled("unet.cnn", inputs={"x": (1, size, size)})
    d = err.value.diagnostic
    assert d.loc is not None and Path(d.loc.file).name == "unet.cnn"
    assert d.loc.line == 8  # concat(skip, u): where the floor division shows
    assert "concat" in d.message


def test_unet_cli_reports_the_location(capsys):
    assert cli(["compile", str(EXAMPLES / "unet.cnn"), "--input", "x=1x570x570"]) == 1
    err = capsys.readouterr().err
    assert "unet.cnn:8:5: error:" in err


def test_unet_paper_572_gives_388():
    # Ronneberger et al. 2015, Figure 1: a 572x572 tile gives a 388x388 map.
    c = compiled("unet_paper.cnn", inputs={"x": (1, 572, 572)})
    assert c.net.shapes[c.net.outputs[0]] == (2, 388, 388)
    assert not [w for w in c.warnings if w.code == "dropped-pixels"]


def test_unet_paper_570_drops_pixels_with_located_warnings():
    c = compiled("unet_paper.cnn", inputs={"x": (1, 570, 570)})
    assert c.net.shapes[c.net.outputs[0]] == (2, 372, 372)
    dropped = [w for w in c.warnings if w.code == "dropped-pixels"]
    assert dropped and all(Path(w.loc.file).name == "unet_paper.cnn" for w in dropped)


# ---------------------------------------------------- fixed kernels, segmenters
def test_sobel_is_fixed():
    c = compiled("sobel.cnn")
    t = c.analysis.totals()
    assert (t["params"], t["trainable_params"]) == (9, 0)
    (conv,) = [n for n in c.net.layers() if n.op == "conv"]
    assert conv.attrs["weights"].reshape(3, 3).tolist() == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]


def test_sobel_xy_has_two_fixed_outputs():
    c = compiled("sobel_xy.cnn", inputs={"img": (1, 20, 30)})
    t = c.analysis.totals()
    assert (t["params"], t["trainable_params"]) == (18, 0)
    assert len(c.net.outputs) == 2
    assert [c.net.shapes[o] for o in c.net.outputs] == [(1, 20, 30)] * 2
    gx, gy = (c.net.node(o).attrs["weights"].reshape(3, 3) for o in c.net.outputs)
    assert (gy == gx.T).all()


def test_mean_blur_is_fixed():
    c = compiled("mean_blur.cnn")
    t = c.analysis.totals()
    assert (t["params"], t["trainable_params"]) == (9, 0)
    w = c.net.node("blur").attrs["weights"]
    assert abs(float(w.sum()) - 1.0) < 1e-6 and float(w.min()) == float(w.max())


@pytest.mark.parametrize("name, layer, kernel, out", [
    # parameters by hand: one output channel, one input, k x k weights, no bias
    ("sharpen.cnn", "sharpen", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], 1),
    ("emboss.cnn", "emboss", [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], 1),
    ("gaussian_blur.cnn", "blur", (np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256).tolist(), 1),
])
def test_fixed_filters(name, layer, kernel, out):
    c = compiled(name, inputs={"img": (1, 20, 30)})
    k = np.array(kernel)
    t = c.analysis.totals()
    assert (t["params"], t["trainable_params"]) == (k.size, 0)  # 9, 9, 25
    assert t["macs"] == 20 * 30 * k.size  # one MAC per weight per pixel
    assert c.net.shapes[layer] == (out, 20, 30)
    np.testing.assert_allclose(c.net.node(layer).attrs["weights"].reshape(k.shape), k, atol=1e-12)


def test_blurs_and_sharpen_keep_flat_regions():
    for name, layer in (("sharpen.cnn", "sharpen"), ("gaussian_blur.cnn", "blur"), ("mean_blur.cnn", "blur")):
        assert float(compiled(name).net.node(layer).attrs["weights"].sum()) == pytest.approx(1.0)


def test_rgb_edges():
    c = compiled("rgb_edges.cnn", inputs={"img": (3, 20, 30)})
    t = c.analysis.totals()
    assert (t["params"], t["trainable_params"]) == (2 * 3 * 3 * 3, 0)  # 54
    assert t["macs"] == 20 * 30 * 54 and c.net.shapes["edges"] == (2, 20, 30)
    w = c.net.node("edges").attrs["weights"]
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 3
    for rgb in range(3):
        np.testing.assert_allclose(w[0, rgb], sobel, atol=1e-12)
        np.testing.assert_allclose(w[1, rgb], sobel.T, atol=1e-12)


def test_fcn32s_any_size():
    for size in ((224, 224), (500, 375), (33, 47)):
        c = compiled("fcn32s.cnn", inputs={"x": (3, *size)})
        assert c.net.shapes[c.net.outputs[0]] == (21, *size)
    assert totals("fcn32s.cnn", inputs={"x": (3, 224, 224)})["params"] == 136_152_917


def test_segnet_unpools_to_odd_sizes():
    c = compiled("segnet.cnn", inputs={"x": (3, 45, 37)})
    assert c.net.shapes[c.net.outputs[0]] == (12, 45, 37)
    assert sum(1 for n in c.net.layers() if n.op == "unpool") == 5


def test_deeplab_uses_dilations_6_12_18():
    c = compiled("deeplab.cnn", inputs={"x": (3, 513, 513)})
    dilations = sorted({n.attrs["dilation"][0] for n in c.net.layers() if n.op == "conv"})
    assert dilations == [1, 2, 6, 12, 18]
    assert c.net.shapes[c.net.outputs[0]] == (21, 513, 513)


# ------------------------------------- MobileNetV3, EfficientNet B0-B7, DeepLabV3 (issue 11, part A)
def test_mobilenet_v3_large_published_figures():
    t = totals("mobilenet_v3.cnn")
    assert t["params"] == 5_483_032                       # torchvision docs, mobilenet_v3_large
    assert t["macs"] == 216_589_760                       # "0.22 GFLOPS"
    assert round(t["macs"] / 1e9, 2) == 0.22
    assert compiled("mobilenet_v3.cnn").net.shapes["fc"] == (1000,)


# variant, published parameters and GFLOPS (torchvision docs), resolution they were measured at
EFFICIENTNET = [(0, 5_288_548, 0.39, 224), (1, 7_794_184, 0.69, 240), (2, 9_109_994, 1.09, 288),
                (3, 12_233_232, 1.83, 300), (4, 19_341_616, 4.39, 380), (5, 30_389_784, 10.27, 456),
                (6, 43_040_704, 19.07, 528), (7, 66_347_960, 37.75, 600)]


@pytest.mark.parametrize("variant, params, gmacs, resolution", EFFICIENTNET, ids=[f"b{e[0]}" for e in EFFICIENTNET])
def test_efficientnet_family_from_one_file(variant, params, gmacs, resolution):
    c = compiled("efficientnet.cnn", args={"variant": variant, "resolution": resolution})
    t = c.analysis.totals()
    assert t["params"] == params
    assert round(t["macs"] / 1e9, 2) == gmacs
    assert c.net.inputs["x"] == (3, resolution, resolution)


def test_efficientnet_b0_figures_and_free_scaling():
    assert totals("efficientnet.cnn")["macs"] == 385_814_752          # B0 at 224: "0.39 GFLOPS"
    assert compiled("efficientnet.cnn", args={"variant": 2}).net.inputs["x"] == (3, 260, 260)  # the paper's size
    # the multipliers are parameters too: B0's width and depth give B0, whatever the variant says
    assert totals("efficientnet.cnn", args={"variant": 5, "width": 1.0, "depth": 1.0,
                                            "resolution": 224})["params"] == 5_288_548


def test_deeplabv3_published_figures_on_a_symbolic_input():
    c = compiled("deeplabv3.cnn")
    (out,) = c.net.outputs
    assert [str(d) for d in c.net.shapes[out]] == ["21", "H", "W"]   # resized back to any input
    assert not c.net.constraints
    t = totals("deeplabv3.cnn", inputs={"x": (3, 520, 520)})
    aux_params, aux_macs = 2_365_205, 9_990_739_200                  # torchvision's auxiliary FCN head
    assert t["params"] == 39_638_869 == 42_004_074 - aux_params      # torchvision docs: 42,004,074
    assert t["macs"] == 168_731_205_888
    assert round((t["macs"] + aux_macs) / 1e9, 2) == 178.72          # torchvision docs: "178.72 GFLOPS"
    odd = compiled("deeplabv3.cnn", inputs={"x": (3, 45, 37)})
    assert odd.net.shapes[out] == (21, 45, 37)


def test_efficientnet_refuses_an_unknown_variant():
    with pytest.raises(CnncError) as info:
        compiled("efficientnet.cnn", args={"variant": 9})
    rendered = info.value.render()
    assert "function 'width_of' must give a number" in rendered and "variant must be 0 to 7" in rendered
    assert "called here" in rendered
