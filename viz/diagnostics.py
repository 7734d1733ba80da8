"""Stage 4 (viz): `cnnc viz --style diagnostics --metrics FILE` — per-layer heat strips over the epochs.

From the `layers` of each epoch's record in a metrics.jsonl (compiler/metrics_format.py,
read and checked by curves.py `read_metrics`), three panels side by side, one row per
layer (named as in the `.cnn`, with its line), one cell per epoch: the weight's gradient
norm and its update-to-weight ratio on a log scale, and the share of dead (rectifiers)
or saturated (sigmoid/tanh) units on 0..1. A cell without a figure is left grey. Each
panel's colour bar gives its range. Plain SVG by our own code.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..compiler.metrics_format import LAYERS
from ..dsl.source import CnncError
from .curves import Metrics
from .svg import Svg

# (title, the figure of a layer record, log scale)
PANELS: tuple[tuple[str, Callable[[dict], float | None], bool], ...] = (
    ("gradient norm (weight, log10)", lambda r: ((r.get("params") or {}).get("weight") or {}).get("grad_norm"), True),
    ("dead or saturated units", lambda r: _units(r.get("activation") or {}), False),
    ("update ratio |dw|/|w| (log10)", lambda r: ((r.get("params") or {}).get("weight") or {}).get("update_ratio"),
     True),
)
# a sequential ramp, light to dark (viridis' stops)
RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
MISSING = "#e6e6e6"
ROW_H, LABEL_W, PANEL_GAP = 16.0, 150.0, 46.0


def _units(a: dict) -> float | None:
    return a.get("dead") if a.get("dead") is not None else a.get("saturated")


def colour(t: float) -> str:
    """The ramp at t in 0..1 (dark for 0, yellow for 1)."""
    t = min(max(t, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(t), len(RAMP) - 2)
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(RAMP[i], RAMP[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def _grid(metrics: Metrics, figure) -> tuple[list[tuple[str, int | None]], list[int], dict]:
    """The layers with the figure (in the network's order), the epochs, and (layer, epoch) -> value."""
    rows: list[tuple[str, int | None]] = []
    values: dict[tuple[str, int], float] = {}
    for e in metrics.epochs:
        for r in e.get(LAYERS) or ():
            v = figure(r)
            if v is None:
                continue
            if r["layer"] not in [name for name, _ in rows]:
                rows.append((r["layer"], r.get("line")))
            values[(r["layer"], e["epoch"])] = v
    return rows, [e["epoch"] for e in metrics.epochs], values


def diagnostics_svg(metrics: Metrics, title: str = "") -> str:
    if not any(e.get(LAYERS) for e in metrics.epochs):
        raise CnncError(f"{metrics.path}: no per-layer records to draw",
                        hint="cnnc run records them in each epoch's line of metrics.jsonl (docs/diagnostics.md)")
    epochs = [e["epoch"] for e in metrics.epochs]
    cell = max(4.0, min(26.0, 360.0 / len(epochs)))
    grids = [(name, log, *_grid(metrics, figure)) for name, figure, log in PANELS]
    grids = [g for g in grids if g[2]]
    rows = max(len(g[2]) for g in grids)
    panel_w = LABEL_W + cell * len(epochs)
    top = 70.0
    height = top + rows * ROW_H + 90
    svg = Svg(24 + len(grids) * (panel_w + PANEL_GAP), height, "per-layer diagnostics")
    svg.text(24, 28, title or f"Per-layer diagnostics — {Path(metrics.path).parent.name or metrics.path}", 15,
             anchor="start", bold=True)
    for k, (name, log, layer_rows, _, values) in enumerate(grids):
        _panel(svg, 24 + k * (panel_w + PANEL_GAP), top, name, log, layer_rows, epochs, values, cell)
    return svg.render()


def _panel(svg: Svg, x0: float, y0: float, name: str, log: bool, rows, epochs, values, cell: float) -> None:
    shown = {k: (math.log10(v) if log and v > 0 else (None if log else v)) for k, v in values.items()}
    finite = [v for v in shown.values() if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if not log:
        lo, hi = 0.0, 1.0
    elif hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    svg.text(x0, y0 - 14, name, 12, anchor="start", bold=True)
    gx = x0 + LABEL_W
    for i, (layer, line) in enumerate(rows):
        y = y0 + i * ROW_H
        svg.text(gx - 6, y + ROW_H - 4, f"{layer}" + (f" (line {line})" if line else ""), 9.5, anchor="end")
        for j, e in enumerate(epochs):
            v = shown.get((layer, e))
            fill = MISSING if v is None or not math.isfinite(v) else colour((v - lo) / (hi - lo))
            svg.rect(gx + j * cell, y, cell, ROW_H, fill, "white", 0.5)
    bottom = y0 + len(rows) * ROW_H
    step = max(1, math.ceil(len(epochs) / 8))
    for j, e in enumerate(epochs):
        if j % step == 0 or j == len(epochs) - 1:
            svg.text(gx + (j + 0.5) * cell, bottom + 12, str(e), 9)
    svg.text(gx + cell * len(epochs) / 2, bottom + 26, "epoch", 10)
    # the colour bar
    bar_w, by = min(160.0, max(80.0, cell * len(epochs))), bottom + 40
    for s in range(32):
        svg.rect(gx + s * bar_w / 32, by, bar_w / 32 + 0.3, 9, colour(s / 31))
    fmt = (lambda v: f"1e{v:.1f}") if log else (lambda v: f"{v:.0%}")
    svg.text(gx, by + 21, fmt(lo), 9, anchor="start")
    svg.text(gx + bar_w, by + 21, fmt(hi), 9, anchor="end")
