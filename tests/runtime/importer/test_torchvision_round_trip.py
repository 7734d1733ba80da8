"""torchvision's networks through `torch.onnx.export` and `cnnc import` (random weights, no download).

For each: the imported file compiles to the model's own parameter count and
torchvision's published MACs; cnnc's runtime on it and its checkpoint gives what
ONNX Runtime gives on the exported model (itself checked against PyTorch);
`cnnc export --to onnx` of the imported file runs with the same outputs; and
the file is short, its repeated structures folded into blocks. The export has
dynamic sizes, so the file's input is `[3, H, W]`: the figures are those of
the published size, the outputs are compared at 64x64. ResNet-18 and
MobileNetV3 run in the normal suite, the rest are slow-marked.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.symbolic import Dim
from import_helpers import relative, round_trip
from torchvision_models import import_torchvision

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

# name: (torchvision's published GMACs ("GFLOPS") at its size, the size, at most this many lines)
NETWORKS = {
    "resnet18": (1.81, 224, 30),
    "resnet50": (4.09, 224, 30),
    "mobilenet_v3_large": (0.22, 224, 80),
    "efficientnet_b0": (0.39, 224, 50),
    "densenet121": (2.83, 224, 30),
    "convnext_tiny": (4.46, 224, 30),
    "shufflenet_v2_x1_0": (0.14, 224, 45),   # 44: three wrapped lines of conv -> batchnorm chains
    "regnet_y_400mf": (0.40, 224, 40),
    "googlenet": (1.50, 224, 40),
    "fcn_resnet50": (152.72, 520, 40),
}
FAST = {"resnet18", "mobilenet_v3_large"}


def torchvision_model(name: str):
    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed (the test extra installs it)")
    if name == "googlenet":
        model = tv.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    elif name == "fcn_resnet50":   # with its auxiliary head, as the published figures count it
        model = tv.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True)
    else:
        model = getattr(tv.models, name)(weights=None)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():     # trained-like: no unit scales, zero shifts or trivial running statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
        for p in model.parameters():
            if p.ndim <= 1 or p.ndim == 3:    # norms' scales and shifts, biases, ConvNeXt's layer scales
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + (0.75 if p.ndim == 3 or p.min() == 1 else -0.25))
    return model.eval()


class Outputs(torch.nn.Module):
    """A segmentation model's dict of outputs as a tuple (out, aux): two outputs of the ONNX model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return tuple(out.values()) if isinstance(out, dict) else out


def exported(name: str, tmp: Path) -> tuple[Path, object]:
    """The model as the two lines of docs/import.md export it, with the batch and the image's height and
    width dynamic (they become the sizes N, H and W of the imported file)."""
    model = Outputs(torchvision_model(name)).eval()
    path = tmp / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                          dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}}, opset_version=17)
    return path, model


SIZE = 64     # the outputs are compared at 64x64 (the figures at the published size)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow]) for n in NETWORKS])
def test_a_torchvision_network_imports_with_its_figures_and_outputs(name, tmp_path):
    from cnnc.compiler.driver import compile_file
    macs, size, most_lines = NETWORKS[name]
    path, model = exported(name, tmp_path)
    trip = round_trip(path, tmp_path, inputs={"input_": (3, SIZE, SIZE)})
    assert trip.imported.net.inputs == {"input_": (3, Dim.symbol("H"), Dim.symbol("W"))}
    totals = compile_file(trip.info["file"], inputs={"input_": (3, size, size)}).analysis.totals()
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    assert round(totals["macs"] / 1e9, 2) == macs
    with torch.no_grad():
        x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
        out = model(torch.from_numpy(x))
        want = [t.numpy() for t in out] if isinstance(out, tuple) else out.numpy()
        assert relative(trip.reference, want) <= 1e-4   # the export is the model
    assert relative(trip.runtime, trip.reference) <= 1e-5
    assert relative(trip.exported, trip.reference) <= 1e-5
    assert trip.lines <= most_lines and trip.info["blocks"] >= 1
