"""Stage 4 (viz): the confusion matrix of a run's test split, from its metrics.jsonl.

`cnnc run` writes the test record's `confusion` (rows: the true class,
columns: the predicted one) with per-class precision, recall and F1
(runtime/train/evaluation.py). `confusion_svg` draws it as a heat map: each cell
shaded by its share of its row (so the diagonal reads as per-class recall,
whatever the class sizes), the count written in it, class names (stored with
the test record by `cnnc run`; else the train section's `classes`) on both axes, and each class's precision, recall and F1
beside its row. Plain SVG by our own code.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..dsl.files import describe_path
from ..dsl.source import CnncError
from .curves import Metrics
from .svg import Svg

CELL_MAX, CELL_MIN = 48.0, 14.0     # px per cell: big for a few classes, small for many
BLUE = (47, 106, 168)               # the convolution blue of every picture, for the darkest cell


def matrix_of(metrics: Metrics) -> list[list[int]]:
    """The test record's confusion matrix, checked: a square list of lists of counts."""
    record = metrics.test or {}
    m = record.get("confusion")
    where = describe_path(metrics.path)
    if m is None:
        raise CnncError(f"{where}: its test record has no confusion matrix",
                        hint="cnnc run writes one for classification and segmentation losses")
    ok = isinstance(m, list) and m and all(isinstance(r, list) and len(r) == len(m) for r in m) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for r in m for v in r)
    if not ok:
        raise CnncError(f"{where}: the test record's confusion is not a square matrix of counts")
    if len(m) > 1000:
        raise CnncError(f"{where}: {len(m)} classes are too many to draw (at most 1000)")
    return m


SCORES = ("precision", "recall", "f1")


def _checked_record(metrics: Metrics, n: int) -> None:
    """The test record's per-class scores are fractions (or null, undefined) and its class names
    strings, one per class: anything else is refused, not drawn."""
    where = describe_path(metrics.path)
    for key in SCORES:
        values = metrics.test.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != n or not all(
                v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values):
            raise CnncError(f"{where}: the test record's '{key}' is not a list of {n} fractions in [0, 1] (or null)")
    names = metrics.test.get("classes")
    if names is not None and (not isinstance(names, list) or len(names) != n
                              or not all(isinstance(c, str) for c in names)):
        raise CnncError(f"{where}: the test record's 'classes' is not a list of {n} names")


def class_names(metrics: Metrics, n: int, fallback: Sequence[str] | None = None) -> list[str]:
    """The names of the classes: the test record's (`cnnc run` stores them there), else `fallback`
    (the train section's `classes`) when it names every class, else the indices."""
    recorded = metrics.test.get("classes")
    if recorded is not None:
        return [str(c) for c in recorded]
    return [str(c) for c in fallback] if fallback and len(fallback) == n else [str(i) for i in range(n)]


def _shade(fraction: float) -> str:
    """White (0) to the convolution blue (1)."""
    r, g, b = (round(255 + (c - 255) * fraction) for c in BLUE)
    return f"#{r:02x}{g:02x}{b:02x}"


def _score(values: Any, i: int) -> str:
    v = values[i] if values is not None else None
    return "–" if v is None else f"{100 * v:.0f}"


def confusion_svg(metrics: Metrics, title: str = "", classes: Sequence[str] | None = None) -> str:
    """The matrix with the class names of the test record (else `classes`, else the indices)."""
    m = matrix_of(metrics)
    n = len(m)
    _checked_record(metrics, n)
    names = class_names(metrics, n, classes)
    cell = max(CELL_MIN, min(CELL_MAX, 560.0 / n))
    label_w = min(160.0, 12 + 6.5 * max(len(s) for s in names))
    left, top = 40 + label_w, 96.0
    scores = any(k in metrics.test for k in SCORES)
    width = left + n * cell + (150 if scores else 30)
    svg = Svg(width, top + n * cell + label_w + 40, "confusion matrix")
    svg.text(20, 28, title or f"Confusion matrix — {describe_path(metrics.path)}", 15, anchor="start", bold=True)
    total = sum(map(sum, m))
    correct = sum(m[i][i] for i in range(n))
    svg.text(20, 50, f"{total:,} test samples, {correct / total:.2%} on the diagonal" if total else "no samples",
             11, anchor="start")
    svg.text(left + n * cell / 2, top - 12, "predicted class", 11, italic=True)
    svg.text(18, top + n * cell / 2, "true class", 11, italic=True, rotate=-90)
    counts = n <= 30
    for i, row in enumerate(m):
        row_total = sum(row)
        y = top + i * cell
        svg.text(left - 6, y + cell / 2 + 4, names[i], min(11, cell * 0.6), anchor="end")
        for j, v in enumerate(row):
            share = v / row_total if row_total else 0.0
            svg.rect(left + j * cell, y, cell, cell, _shade(share), "#ffffff", 0.5)
            if counts and v:
                svg.text(left + (j + 0.5) * cell, y + cell / 2 + 4, f"{v:,}", min(11, cell * 0.4),
                         fill="#ffffff" if share > 0.55 else "#111")
        if scores:
            svg.text(left + n * cell + 10, y + cell / 2 + 4,
                     f"P {_score(metrics.test.get('precision'), i)}  R {_score(metrics.test.get('recall'), i)}"
                     f"  F1 {_score(metrics.test.get('f1'), i)}", min(10, cell * 0.5), anchor="start")
    for j in range(n):
        x = left + (j + 0.5) * cell
        svg.text(x, top + n * cell + 8, names[j], min(11, cell * 0.6), anchor="end", rotate=-60)
    svg.rect(left, top, n * cell, n * cell, "none", "#999", 0.8)
    return svg.render()
