"""Stage 4 (viz): training curves from the metrics.jsonl that `cnnc run` writes.

Each line is one JSON object: per epoch `{"epoch", "train_loss",
"train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}`, and at the end
`{"split": "test", "loss", "accuracy"}`; an epoch's `layers` are its per-layer records
(compiler/metrics_format.py). `read_metrics` checks every line and
names the file and line of anything malformed (a non-finite value, from a run
that diverged, is drawn as missing); the file is read through the bounded
reader (regular files only, at most CNNC_MAX_METRICS bytes, 64 MiB by default); `curves_svg` draws loss and
accuracy per epoch (train solid, validation dashed) side by side, with the
test result as a marker past the last epoch. Plain SVG by our own code.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..compiler.metrics_format import LAYERS, STEP, layers_problem, step_record_problem
from ..dsl import files
from ..dsl.source import CnncError, Loc
from .svg import Svg, fmt, nice_ticks

TRAIN_COLOUR = "#2f6aa8"
VAL_COLOUR = "#c8731e"
TEST_COLOUR = "#d6336c"
EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclass
class Metrics:
    path: str
    epochs: list[dict] = field(default_factory=list)
    test: dict | None = None
    steps: list[dict] = field(default_factory=list)    # `--watch-every K`'s step records

    def series(self, key: str) -> list[tuple[float, float]]:
        """(epoch, value) pairs where the value is a finite number."""
        return [(e["epoch"], e[key]) for e in self.epochs
                if isinstance(e.get(key), (int, float)) and math.isfinite(e[key])]


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(path: str | Path) -> Metrics:
    """Parse a metrics.jsonl file; a malformed line is a CnncError at that line."""
    if not Path(path).exists() and not Path(path).is_symlink():
        raise CnncError(f"--metrics {files.describe_path(path)}: no such file",
                        hint="cnnc run writes metrics.jsonl into its --out folder (default runs/NETWORK)")
    data = files.read_bytes(path, "metrics file", files.limit("metrics"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CnncError(f"--metrics {files.describe_path(path)}: not UTF-8 text ({err.reason} at byte "
                        f"{err.start})") from None
    metrics = Metrics(str(path))
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            _add(metrics, _parse(line, str(path), number), str(path), number)
    if not metrics.epochs:
        raise CnncError(f"{path}: no epoch records to draw",
                        hint='each epoch is a line like {"epoch": 1, "train_loss": 0.52, ...}')
    return metrics


MAX_DIGITS = 18  # an integer in a metrics file (a count, an epoch) fits int64, and a float nearly exactly


class _HugeNumber(Exception):
    pass


def _integer(text: str) -> int:
    """json's integers: refused beyond MAX_DIGITS digits, before Python converts them (a count with
    thousands of digits would be refused by Python's own limit, or overflow a float, far later)."""
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _HugeNumber(text)
    return int(text)


def _parse(line: str, path: str, number: int) -> dict:
    loc = Loc(path, number, 1)
    try:
        record = json.loads(line, parse_int=_integer)
    except json.JSONDecodeError as err:
        raise CnncError(f"malformed metrics line: {err.msg} (column {err.colno})", Loc(path, number, err.colno),
                        hint="each line must be one JSON object, as cnnc run writes them") from None
    except _HugeNumber as err:
        digits = len(str(err.args[0]).lstrip("-"))
        raise CnncError(f"malformed metrics line: an integer of {digits:,} digits (at most {MAX_DIGITS})",
                        Loc(path, number, line.find(err.args[0]) + 1)) from None
    except RecursionError:
        raise CnncError("malformed metrics line: nested too deeply", loc) from None
    if not isinstance(record, dict):
        raise CnncError(f"malformed metrics line: expected a JSON object, got {type(record).__name__}", loc)
    return record


def _add(metrics: Metrics, record: dict, path: str, number: int) -> None:
    loc = Loc(path, number, 1)
    if record.get("split") == "test":
        for key in ("loss", "accuracy"):
            if not _number(record.get(key)):
                raise CnncError(f"malformed test record: '{key}' must be a number, got {record.get(key)!r}", loc)
        metrics.test = record
        return
    if "split" in record and "epoch" not in record:
        return  # another split's summary (e.g. "val"): nothing to plot per epoch
    if STEP in record:
        if (problem := step_record_problem(record)) is not None:
            raise CnncError(f"malformed metrics line: {problem}", loc)
        metrics.steps.append(record)
        return
    epoch = record.get("epoch")
    if not _finite(epoch):
        raise CnncError("malformed metrics line: an epoch record needs a numeric 'epoch'", loc,
                        hint='expected {"epoch": 1, "train_loss": ..., "val_loss": ...} or {"split": "test", ...}')
    for key in EPOCH_KEYS:
        if not _number(record.get(key)):
            raise CnncError(f"malformed metrics line: '{key}' must be a number, got {record[key]!r}", loc)
    if LAYERS in record and (problem := layers_problem(record[LAYERS])) is not None:
        raise CnncError(f"malformed metrics line: {problem}", loc)
    metrics.epochs.append(record)


# ------------------------------------------------------------------ drawing
PANEL_W, PANEL_H = 380.0, 260.0


def curves_svg(metrics: Metrics, title: str = "") -> str:
    """Loss and accuracy per epoch, train and validation, with the test result marked."""
    panels = [("loss", "train_loss", "val_loss", "loss")]
    if metrics.series("train_accuracy") or metrics.series("val_accuracy") or \
            (metrics.test and _finite(metrics.test.get("accuracy"))):
        panels.append(("accuracy", "train_accuracy", "val_accuracy", "accuracy"))
    left, gap, top = 64.0, 84.0, 86.0
    width = left + len(panels) * PANEL_W + (len(panels) - 1) * gap + 40
    svg = Svg(width, top + PANEL_H + 70, "training curves")
    svg.text(left, 28, title or f"Training curves — {Path(metrics.path).parent.name or metrics.path}", 15,
             anchor="start", bold=True)
    _legend(svg, left, 52, metrics)
    for k, (name, train, val, test_key) in enumerate(panels):
        x0 = left + k * (PANEL_W + gap)
        _panel(svg, metrics, name, train, val, test_key, x0, top)
    return svg.render()


def _legend(svg: Svg, x: float, y: float, metrics: Metrics) -> None:
    entries = [("train", TRAIN_COLOUR, "")]
    if metrics.series("val_loss") or metrics.series("val_accuracy"):
        entries.append(("validation", VAL_COLOUR, "6,4"))
    for text, colour, dash in entries:
        svg.line(x, y - 4, x + 24, y - 4, colour, 2.0, dash=dash)
        svg.text(x + 30, y, text, 10.5, anchor="start")
        x += 110
    if metrics.test and any(_finite(metrics.test.get(k)) for k in ("loss", "accuracy")):
        svg.circle(x + 8, y - 4, 4.5, TEST_COLOUR)
        svg.text(x + 18, y, "test (after training)", 10.5, anchor="start")


def _panel(svg: Svg, m: Metrics, name: str, train: str, val: str, test_key: str, x0: float, y0: float) -> None:
    series = [(m.series(train), TRAIN_COLOUR, ""), (m.series(val), VAL_COLOUR, "6,4")]
    test = m.test.get(test_key) if m.test else None
    test = test if _finite(test) else None  # a diverged run's test loss is not drawn
    values = [v for s, _, _ in series for _, v in s] + ([test] if test is not None else [])
    epochs = [e for s, _, _ in series for e, _ in s] or [e["epoch"] for e in m.epochs]
    lo_e, hi_e = min(epochs), max(epochs)
    room = max(1.0, (hi_e - lo_e) * 0.25) if test is not None else 0.0  # past the last epoch: the test marker
    x_hi = hi_e + room
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if name == "accuracy" and hi <= 1.0:
        lo, hi = min(lo, max(0.0, lo - 0.05)), 1.0
    else:
        lo = 0.0 if lo >= 0 and lo < 0.5 * hi else lo
    yticks = nice_ticks(lo, hi, 5)
    xticks = [t for t in nice_ticks(lo_e, hi_e, min(8, max(1, int(hi_e - lo_e)))) if lo_e <= t <= hi_e]
    X = lambda e: x0 + PANEL_W * ((e - lo_e) / (x_hi - lo_e) if x_hi > lo_e else 0.5)

    def Y(v: float) -> float:  # clamped just outside the panel: a 1e308 loss stays a finite coordinate
        y = y0 + PANEL_H - PANEL_H * ((v - yticks[0]) / (yticks[-1] - yticks[0]))
        return min(max(y, y0 - 8), y0 + PANEL_H + 8) if math.isfinite(y) else y0 - 8
    svg.rect(x0, y0, PANEL_W, PANEL_H, "none", "#999", 0.8)
    for t in yticks:
        svg.line(x0, Y(t), x0 + PANEL_W, Y(t), "#e8e8e8", 0.8)
        svg.text(x0 - 6, Y(t) + 3.5, f"{round(t, 6):g}", 9.5, anchor="end")
    for t in xticks:
        svg.text(X(t), y0 + PANEL_H + 15, fmt(t), 9.5)
    svg.text(x0 + PANEL_W / 2, y0 + PANEL_H + 34, "epoch", 10.5)
    svg.text(x0, y0 - 10, name, 12, anchor="start", bold=True)
    for points, colour, dash in series:
        if len(points) > 1:
            svg.polyline([(X(e), Y(v)) for e, v in points], colour, 2.0, dash=dash)
        for e, v in points:
            svg.circle(X(e), Y(v), 2.4, colour)
    if test is not None:
        _test_marker(svg, X(hi_e + room * 0.65), Y(test), [Y(s[-1][1]) for s, _, _ in series if s],
                     f"test {_value(test, name)}", y0)


def _test_marker(svg: Svg, x: float, y: float, ends: list[float], text: str, top: float) -> None:
    """The test result past the last epoch, labelled on the side away from the curves' ends."""
    svg.line(x, top, x, top + PANEL_H, "#f0c4d4", 1.0, dash="3,3")
    svg.circle(x, y, 5.0, TEST_COLOUR)
    above = sum(e < y for e in ends) <= len(ends) / 2 and y - 14 > top + 6
    svg.text(x, y - 10 if above else y + 19, text, 10, fill=TEST_COLOUR, bold=True)


def _value(v: float, name: str) -> str:
    return f"{100 * v:.2f}%" if name == "accuracy" and 0 <= v <= 1 else f"{v:.4g}"
