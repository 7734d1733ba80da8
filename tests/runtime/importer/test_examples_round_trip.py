"""Every example through ONNX and back: `cnnc export --to onnx`, `cnnc import`, then the figures and outputs.

The imported file compiles to the example's parameters and MACs (symbolic ones
too), cnnc's runtime on it and its checkpoint gives what ONNX Runtime gives on
the exported model, `cnnc export --to onnx` of the imported file runs with the
same outputs, and the file is at most about twice the example's lines. The
examples with 100M-parameter classifiers or hundreds of layers are slow-marked.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from import_helpers import example_onnx, relative, round_trip

pytest.importorskip("onnxruntime")
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SLOW = {"alexnet", "alexnet_lrn", "vgg16", "fcn32s", "resnet50", "resnet152", "resnet1001", "resnext50", "se_resnet",
        "densenet121", "googlenet", "efficientnet", "mobilenet_v3", "deeplab", "deeplabv3", "unet", "unet_paper",
        "convnext_tiny", "segnet"}
# Sizes for the examples whose input is symbolic: the smallest their layers take (U-Net's 188, multiples of 16).
SIZES = {"unet": 32, "unet_paper": 188, "segnet": 32, "fcn32s": 64, "deeplab": 33, "deeplabv3": 33}
# Norms' scales for the trained-like weights: ResNet-1001's 333 residual blocks overflow float32 with (0.5, 1.5).
SCALES = {"resnet1001": (0.05, 0.15)}
FILES = sorted(EXAMPLES.glob("*.cnn"))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else [])
                                  for p in FILES])
def test_an_example_imports_back_with_its_figures_and_outputs(path, tmp_path):
    from cnnc.compiler.driver import compile_file
    original = compile_file(path)
    model = example_onnx(path, tmp_path, scale=SCALES.get(path.stem, (0.5, 1.5)))
    symbolic = any(not isinstance(d, int) for s in original.net.inputs.values() for d in s)
    sizes = None
    if symbolic:
        n = SIZES.get(path.stem, 16)
        sizes = {k: tuple(d if isinstance(d, int) else n for d in s) for k, s in original.net.inputs.items()}
    trip = round_trip(model, tmp_path, inputs=sizes)
    want, got = original.analysis.totals(), trip.imported.analysis.totals()
    assert got["params"] == want["params"]
    assert str(got["macs"]) == str(want["macs"])             # symbolic MACs as the same expression
    assert relative(trip.runtime, trip.reference) <= 1e-5
    assert relative(trip.exported, trip.reference) <= 1e-5
    example_lines = len(path.read_text().splitlines())
    assert trip.lines <= 2 * example_lines, f"{trip.lines} lines for the example's {example_lines}"
