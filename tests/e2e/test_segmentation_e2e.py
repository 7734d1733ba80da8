"""Segmentation end to end: `cnnc make-shapes` writes the synthetic shapes set, examples/small_unet.cnn
trains on it through `cnnc run --data DIR`, and the test record of metrics.jsonl shows a mean IoU far
above what predicting the background everywhere scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_small_unet_learns_the_shapes(tmp_path, capsys):
    data = tmp_path / "shapes"
    # small_unet.cnn takes [1, 32, 32]: grey 32x32 images; four classes (background, disc, square, triangle)
    assert main(["make-shapes", str(data), "--n", "500", "--test", "125", "--size", "32", "--channels", "1",
                 "--seed", "0"]) == 0
    net = str(EXAMPLES / "small_unet.cnn")
    assert main(["run", net, "--set", "classes=4", "--data", str(data), "--epochs", "15", "--lr", "0.003",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    test = next(r for r in records if r.get("split") == "test")
    # what "background everywhere" scores: IoU of class 0 = its pixel share, 0 for the shapes
    masks = np.stack([np.asarray(Image.open(p)) for p in sorted((data / "test" / "masks").iterdir())])
    chance = float((masks == 0).mean()) / 4
    assert chance < 0.25
    assert test["mean_iou"] > 0.6, test            # measured 0.785 (seed 0)
    assert min(test["iou"][1:]) > 0.4, test["iou"]  # every shape is found, not only the background
    assert test["pixel_accuracy"] > 0.93
