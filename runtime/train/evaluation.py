"""Stage 3 (runtime): how well a classifier or a segmentation network does, class by class.

`Confusion` accumulates a confusion matrix over batches (rows: the true
class, columns: the predicted one = argmax over axis 1, for `[N, K]` and
`[N, K, H, W]` outputs alike; labels equal to `ignore_index` are left out).
`report` turns it into what the trainer writes into the test record of
`metrics.jsonl`: per class precision, recall and F1 (classification), or
IoU, mean IoU and pixel accuracy (segmentation), and the class names. A class that never occurs
and is never predicted has no score (`null`), and is left out of the means;
one that occurs but is never predicted has an undefined precision and F1 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class Confusion:
    def __init__(self, classes: int, ignore_index: int | None = None):
        self.classes = classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((classes, classes), np.int64)

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        guess = np.asarray(logits).argmax(axis=1).ravel()
        truth = np.asarray(labels).reshape(-1).astype(np.int64)
        keep = (truth >= 0) & (truth < self.classes)
        if self.ignore_index is not None:
            keep &= truth != self.ignore_index
        np.add.at(self.matrix, (truth[keep], guess[keep]), 1)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [float(n / d) if d else None for n, d in zip(num, den)]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _f1(p: float | None, r: float | None) -> float | None:
    """Harmonic mean; a class never predicted (or predicted but absent) scores 0, one absent and
    never predicted has no score."""
    if p is None and r is None:
        return None
    if p is None or r is None:
        return 0.0   # the defined one is 0: no hit was possible
    return 2 * p * r / (p + r) if p + r else 0.0


def report(confusion: Confusion, dense: bool, classes: list[str] | None = None) -> dict[str, Any]:
    """The per-class figures of a confusion matrix (see the module docstring), with the class names
    when known (the pictures of the matrix label its rows with them)."""
    m = confusion.matrix
    hits, truth, guessed = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    out: dict[str, Any] = {"confusion": m.tolist()}
    if classes is not None:
        out["classes"] = list(classes)
    if dense:
        iou = _ratio(hits, truth + guessed - hits)
        out.update({"pixel_accuracy": float(hits.sum() / m.sum()) if m.sum() else None,
                    "iou": iou, "mean_iou": _mean(iou)})
        return out
    precision, recall = _ratio(hits, guessed), _ratio(hits, truth)
    f1 = [_f1(p, r) for p, r in zip(precision, recall)]
    out.update({"precision": precision, "recall": recall, "f1": f1, "macro_f1": _mean(f1)})
    return out
