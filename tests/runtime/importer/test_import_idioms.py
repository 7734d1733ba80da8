"""What exporters write for one layer is imported as that layer: each idiom from a small PyTorch module.

Each module is exported with `torch.onnx.export` (TorchScript exporter, opset 17
unless said), imported; the written network has the layers the idiom means (and
none of its pieces), and its outputs on the imported weights are the module's.
"""
from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.runtime import checkpoint as checkpoints
from cnnc.runtime.importer.importer import import_onnx
from cnnc.runtime.plan import Plan
from import_helpers import relative

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
nn, F = torch.nn, torch.nn.functional


def imported(module, shape, tmp_path, opset=17, dynamic=False, training=torch.onnx.TrainingMode.PRESERVE):
    """(the compiled imported network, its outputs, the module's outputs) on a random input."""
    module = module.eval()
    with torch.no_grad():     # trained-like: no unit scales, zero shifts or trivial statistics
        gen = torch.Generator().manual_seed(0)
        for p in module.parameters():
            p.add_(torch.rand(p.shape, generator=gen) * 0.5 - 0.25)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "m.onnx"
    axes = {"x": {0: "N", **({i: f"S{i}" for i in range(2, len(shape) + 1)} if dynamic else {})}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x[:1],), str(path), dynamo=False, training=training,
                          input_names=["x"], dynamic_axes=axes, opset_version=opset)
    info = import_onnx(str(path), str(tmp_path / "m.cnn"))
    c = compile_file(tmp_path / "m.cnn", inputs={"x": tuple(shape)} if dynamic else None)
    store = checkpoints.load(info["checkpoint"]).params
    plan = Plan(c.net, c.analysis.params, dtype=np.float64, params={k: v.astype(np.float64) for k, v in store.items()})
    got = plan.forward({"x": x.numpy().astype(np.float64)})[0][c.net.outputs[0]]
    with torch.no_grad():
        want = module(x).numpy()
    return c, got, want


def ops(c) -> Counter:
    return Counter(n.layer or n.op for n in c.net.layers())


class Gated(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 6, 3, padding=1), act

    def forward(self, x):
        return self.act(self.conv(x))


@pytest.mark.parametrize("act, written", [(nn.SiLU(), "silu"), (nn.Hardswish(), "hardswish"), (nn.Mish(), "mish"),
                                           (nn.GELU(), "gelu"), (nn.Hardsigmoid(), "hardsigmoid"),
                                           (nn.ReLU6(), "relu6"), (nn.LeakyReLU(0.2), "leaky_relu"),
                                           (nn.ELU(0.5), "elu"), (lambda x: x * torch.sigmoid(x), "silu"),
                                           (lambda x: x * F.hardsigmoid(x), "hardswish"),
                                           (lambda x: 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)), "gelu")])
def test_activations_and_their_written_out_forms_are_one_layer(act, written, tmp_path):
    c, got, want = imported(Gated(act), (3, 8, 8), tmp_path)
    assert ops(c) == Counter({"conv": 1, written: 1})
    assert relative(got, want) < 1e-6


class ChannelsLast(nn.Module):
    """ConvNeXt's block body: LayerNorm and Linear on the channels of each position, between permutes."""

    def __init__(self):
        super().__init__()
        self.dw, self.norm = nn.Conv2d(8, 8, 7, padding=3, groups=8), nn.LayerNorm(8, eps=1e-6)
        self.up, self.down, self.scale = nn.Linear(8, 32), nn.Linear(32, 8), nn.Parameter(torch.full((8, 1, 1), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(F.gelu(self.up(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.scale * y


def test_a_channels_last_region_is_layer_norm_and_linear_maps_over_the_channels(tmp_path):
    c, got, want = imported(ChannelsLast(), (8, 6, 6), tmp_path)
    assert ops(c) == Counter({"depthwise_conv": 1, "layernorm": 1, "linear": 2, "gelu": 1, "layer_scale": 1, "add": 1})
    assert all(n.attrs["over"] == "channels" for n in c.net.layers() if n.op in ("layernorm", "linear"))
    assert relative(got, want) < 1e-6


@pytest.mark.parametrize("norm, written", [(nn.GroupNorm(4, 8), "groupnorm"), (nn.GroupNorm(1, 8), "layernorm"),
                                            (nn.InstanceNorm2d(8, affine=True), "instancenorm")])
def test_norms_written_out_as_reshapes_are_one_layer(norm, written, tmp_path):
    c, got, want = imported(nn.Sequential(nn.Conv2d(3, 8, 1), norm), (3, 5, 5), tmp_path)
    assert ops(c) == Counter({"conv": 1, written: 1})
    assert relative(got, want) < 1e-6


class Shuffle(nn.Module):
    """ShuffleNet V2's unit: chunk, a branch, concatenation, torchvision's channel shuffle (view, transpose, view)."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous()
        return x.view(n, -1, h, w)


def test_chunks_and_the_channel_shuffle_views_are_slices_and_a_shuffle(tmp_path):
    c, got, want = imported(Shuffle(), (8, 4, 4), tmp_path)
    assert ops(c) == Counter({"slice": 2, "conv": 1, "batchnorm": 1, "relu": 1, "concat": 1, "channel_shuffle": 1})
    assert relative(got, want) < 1e-6


class Flatten(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.conv, self.fc, self.how = nn.Conv2d(3, 4, 3), nn.Linear(4 * 4 * 4, 5), how

    def forward(self, x):
        y = self.conv(x)
        y = y.view(y.size(0), -1) if self.how == "view" else y.reshape(-1, 64) if self.how == "reshape" else \
            torch.flatten(y, 1)
        return self.fc(y)


@pytest.mark.parametrize("how", ["view", "reshape", "flatten"])
def test_flattens_computed_from_sizes_are_flatten(how, tmp_path):
    c, got, want = imported(Flatten(how), (3, 6, 6), tmp_path)
    assert ops(c) == Counter({"conv": 1, "flatten": 1, "linear": 1})
    assert relative(got, want) < 1e-6


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_mean_over_height_and_width_is_global_pooling(tmp_path):
    c, got, want = imported(Pooled(), (3, 6, 6), tmp_path)
    assert ops(c) == Counter({"conv": 1, "global_avgpool": 1, "flatten": 1, "linear": 1})
    assert relative(got, want) < 1e-6


class PaddedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(F.pad(x, (1, 0, 2, 0)))


def test_a_pad_before_a_conv_is_the_convs_padding(tmp_path):
    c, got, want = imported(PaddedConv(), (3, 6, 6), tmp_path)
    (conv,) = c.net.layers()
    assert conv.attrs["padding"] == ((3, 1), (2, 1))
    assert relative(got, want) < 1e-6


class Resized(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.conv, self.mode = nn.Conv2d(3, 3, 3, stride=2, padding=1), mode

    def forward(self, x):
        y = self.conv(x)
        if self.mode == "like":
            return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False) + x
        return F.interpolate(y, scale_factor=2, mode=self.mode)


@pytest.mark.parametrize("mode", ["like", "nearest", "bilinear"])
def test_resizes_are_upsample_by_a_factor_or_to_another_tensors_size(mode, tmp_path):
    c, got, want = imported(Resized(mode), (3, 8, 8), tmp_path, dynamic=mode == "like")
    (up,) = [n for n in c.net.layers() if n.op == "upsample"]
    assert (len(up.inputs) == 2) == (mode == "like")
    assert up.attrs["mode"] == ("nearest" if mode == "nearest" else "bilinear")
    assert relative(got, want) < 1e-6


class Arithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        a = y * 0.5 + 1          # one affine
        b = 1 - y / 6            # with the negation below, one affine: -(1 - y/6)
        return torch.maximum(a, -b) - torch.minimum(a, x)     # the difference: add(·, affine(-1)(·))


def test_numbers_with_tensors_are_affine_and_max_min_sub_are_layers(tmp_path):
    c, got, want = imported(Arithmetic(), (3, 4, 4), tmp_path)
    assert ops(c) == Counter({"conv": 1, "affine": 3, "maximum": 1, "minimum": 1, "add": 1})
    assert relative(got, want) < 1e-6


class Causal(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, dilation=2)

    def forward(self, x):
        return self.conv(F.pad(x, (4, 0)))


def test_a_left_padded_conv1d_is_a_causal_conv_on_a_signal(tmp_path):
    c, got, want = imported(Causal(), (2, 12), tmp_path)
    (conv,) = c.net.layers()
    assert conv.attrs["padding"] == ((0, 0), (4, 0)) and "pad = causal" in (tmp_path / "m.cnn").read_text()
    assert relative(got, want) < 1e-6


class Dense(nn.Module):
    """DenseNet's habit: each layer joins all earlier features again."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(4 + 2 * i), nn.ReLU(), nn.Conv2d(4 + 2 * i, 2, 3, padding=1))
                                    for i in range(4))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


def test_re_joined_features_become_one_block_repeated(tmp_path):
    c, got, want = imported(Dense(), (4, 5, 5), tmp_path)
    text = (tmp_path / "m.cnn").read_text()
    assert ops(c)["concat"] == 4 and "* 4" in text and "concat(in, " in text
    assert relative(got, want) < 1e-6


def test_opset_20_writes_gelu_as_one_node(tmp_path):
    c, got, want = imported(Gated(nn.GELU()), (3, 6, 6), tmp_path, opset=20)
    assert ops(c) == Counter({"conv": 1, "gelu": 1})
    assert relative(got, want) < 1e-6


def test_an_export_in_eval_mode_folds_batchnorm_and_imports_as_convs_with_biases(tmp_path):
    """docs/import.md: without TrainingMode.PRESERVE PyTorch folds each batchnorm into its conv; the file
    is a different (equivalent) model, and cnnc reports that one: C biases instead of batchnorm's 2C."""
    module = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    kept, got, want = imported(module, (3, 6, 6), tmp_path)
    assert ops(kept) == Counter({"conv": 1, "batchnorm": 1, "relu": 1})
    folded, got, want = imported(module, (3, 6, 6), tmp_path, training=torch.onnx.TrainingMode.EVAL)
    assert ops(folded) == Counter({"conv": 1, "relu": 1})
    assert folded.analysis.totals()["params"] == kept.analysis.totals()["params"] - 8
    assert relative(got, want) < 1e-6
