"""Segmentation masks: palette PNGs (viz/masks.py) and `cnnc predict` on a dense output."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main
from cnnc.dsl.source import CnncError
from cnnc.viz.masks import PALETTE, mask_png

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_mask_reads_back_as_its_class_indices_with_the_palette():
    mask = np.array([[0, 1, 2], [2, 1, 0]])
    image = Image.open(io.BytesIO(mask_png(mask, 3)))
    assert image.mode == "P" and image.size == (3, 2)
    np.testing.assert_array_equal(np.asarray(image), mask)
    assert image.getpalette()[:9] == [v for c in PALETTE[:3] for v in c]
    rgb = np.asarray(image.convert("RGB"))
    assert tuple(rgb[0, 1]) == PALETTE[1] and tuple(rgb[0, 0]) == (0, 0, 0)


@pytest.mark.parametrize("mask, classes, message", [
    (np.zeros((2, 2, 2)), 3, r"a mask must be \[H, W\]"),
    (np.array([[0, 3]]), 3, r"mask values must lie in \[0, 3\), got 0 to 3"),
    (np.zeros((2, 2)), 300, "at most 256 classes"),
])
def test_bad_masks_are_refused(mask, classes, message):
    with pytest.raises(CnncError, match=message):
        mask_png(mask, classes)


@pytest.mark.slow
def test_predict_on_a_segmentation_network_writes_masks(tmp_path, capsys):
    net = str(EXAMPLES / "small_unet.cnn")
    assert main(["run", net, "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "run" / "best.npz")
    assert main(["predict", net, ckpt, "--limit", "3", "-o", str(tmp_path / "masks")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"test #{i}: mask 32x32, classes ") and "pixel accuracy" in line
        image = Image.open(tmp_path / "masks" / f"mask_{i:04d}.png")
        assert image.mode == "P" and image.size == (32, 32)
    # the written masks are the argmax of the network's outputs, computed here independently
    from cnnc.compiler.driver import compile_file
    from cnnc.runtime import checkpoint, preprocess
    from cnnc.runtime.plan import Plan
    from cnnc.runtime.data.pipeline import inputs, prepare
    from cnnc.runtime.data.targets import NetworkShapes
    from cnnc.runtime.train.losses import loss_for
    c = compile_file(net)
    ck = checkpoint.load(ckpt)
    plan = Plan(c.net, c.analysis.params)
    plan.load_state(ck.params, ckpt)
    ds = prepare(c.net.train, NetworkShapes.of(c.net), loss_for(c.net.train),
                 records=preprocess.check_records(ck.preprocess, ckpt))
    expected = plan.predict(inputs(ds, ds.test.x[:3])).argmax(axis=1)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "masks" / f"mask_{i:04d}.png")), expected[i])


def test_masks_are_only_for_dense_outputs(tmp_path, capsys):
    net = str(EXAMPLES / "lenet5.cnn")
    assert main(["run", net, "--epochs", "1", "--limit", "64", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    code = main(["predict", net, str(tmp_path / "run" / "last.npz"), "-o", str(tmp_path / "m")])
    assert code == 1
    assert "only a segmentation network's masks are written" in capsys.readouterr().err
