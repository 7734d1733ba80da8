"""Per-class evaluation (runtime/train/evaluation.py), checked against figures computed by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnc.runtime.train.evaluation import Confusion, report


def one_hot_logits(classes: list[int], k: int) -> np.ndarray:
    return np.eye(k)[classes]


def test_classification_report_by_hand():
    truth = [0, 0, 0, 1, 1, 2]
    guess = [0, 0, 1, 1, 2, 2]
    c = Confusion(3)
    c.add(one_hot_logits(guess[:4], 3), np.array(truth[:4]))  # two batches sum
    c.add(one_hot_logits(guess[4:], 3), np.array(truth[4:]))
    r = report(c, dense=False)
    assert r["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class 0: precision 2/2, recall 2/3; class 1: 1/2, 1/2; class 2: 1/2, 1/1
    assert r["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert r["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert r["f1"] == pytest.approx(f1)
    assert r["macro_f1"] == pytest.approx(np.mean(f1))


def test_a_class_never_seen_nor_predicted_has_no_score_and_leaves_the_means():
    c = Confusion(3)
    c.add(one_hot_logits([0, 1], 3), np.array([0, 1]))
    r = report(c, dense=False)
    assert r["precision"][2] is None and r["recall"][2] is None and r["f1"][2] is None
    assert r["macro_f1"] == 1.0
    json.dumps(r, allow_nan=False)  # strict JSON, as metrics.jsonl is


def test_a_class_never_predicted_scores_f1_zero():
    c = Confusion(3)
    c.add(one_hot_logits([0, 0, 1], 3), np.array([0, 2, 1]))   # class 2 occurs, is never predicted
    r = report(c, dense=False)
    assert r["precision"][2] is None and r["recall"][2] == 0.0 and r["f1"][2] == 0.0
    assert r["precision"][0] == 0.5 and r["f1"][0] == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_segmentation_report_by_hand_with_ignored_pixels():
    truth = np.array([[[0, 0], [1, 255]]])                 # one 2x2 mask; 255 is ignored
    guess = np.array([[[0, 1], [1, 1]]])
    logits = np.moveaxis(np.eye(2)[guess], -1, 1)        # [N, K, H, W]
    c = Confusion(2, ignore_index=255)
    c.add(logits, truth)
    r = report(c, dense=True)
    assert r["confusion"] == [[1, 1], [0, 1]]
    # IoU: class 0 = 1 / (2 + 1 - 1) = 1/2; class 1 = 1 / (1 + 2 - 1) = 1/2
    assert r["iou"] == pytest.approx([0.5, 0.5]) and r["mean_iou"] == pytest.approx(0.5)
    assert r["pixel_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_the_test_record_carries_the_per_class_figures(tmp_path):
    from cnnc.cli import main
    from pathlib import Path
    net = str(Path(__file__).resolve().parents[3] / "examples" / "lenet5.cnn")
    assert main(["run", net, "--epochs", "1", "--limit", "256", "--out", str(tmp_path), "--quiet"]) == 0
    record = json.loads((tmp_path / "metrics.jsonl").read_text().strip().splitlines()[-1])
    m = np.array(record["confusion"])
    assert record["split"] == "test" and m.shape == (10, 10) and m.sum() == 2000
    assert np.trace(m) / m.sum() == pytest.approx(record["accuracy"])
    assert len(record["precision"]) == len(record["recall"]) == len(record["f1"]) == 10
