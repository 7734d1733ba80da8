"""Stage 4 (viz): `cnnc viz --style diagnostics --metrics FILE` — per-layer heat strips over the epochs.

From the `layers` of each epoch's record in a metrics.jsonl (compiler/metrics_format.py,
read and checked by curves.py `read_metrics`), three panels side by side, one row per
layer (named as in the `.cnn`, with its line), one cell per epoch: the weight's gradient
norm and its update-to-weight ratio on a log scale, and the share of dead (rectifiers)
or saturated (sigmoid/tanh) units on 0..1. A cell without a figure is left grey. Each
panel's colour bar gives its range.

Below them, the layers' histograms (the records' `histograms`) at chosen epochs
(`--epochs`, by default the first, the middle and the last), one outline per
epoch overlaid in a cell: the weight's values, its gradient at the epoch's last
step, and the activation's outputs on the probe; each cell's x axis spans the
drawn epochs' values, its y axis the density (a bin's share of the values over
its width: each outline encloses the same area, whatever range its epoch spans). `--layers` keeps
only the named layers. Plain SVG by our own code.

`layer_diagnostics` draws the same for one layer at a time, narrow enough for the
explorer's side panel (viz/explorer.py embeds it): its strips, coloured on the
range of every layer, with the last epoch's figures written beside them, and its
histograms at the first, middle and last epoch, one below the other.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Collection

from ..compiler.metrics_format import LAYERS
from ..dsl.source import CnncError, did_you_mean
from .curves import Metrics
from .svg import Svg, text_width

# (title, the short title of one layer's picture from its last record, the figure of a layer record, log scale)
PANELS: tuple[tuple[str, Callable[[dict], str], Callable[[dict], float | None], bool], ...] = (
    ("gradient norm (weight, log10)", lambda r: "gradient norm",
     lambda r: ((r.get("params") or {}).get("weight") or {}).get("grad_norm"), True),
    ("dead or saturated units",
     lambda r: "dead units" if (r.get("activation") or {}).get("dead") is not None else "saturated units",
     lambda r: _units(r.get("activation") or {}), False),
    ("update ratio |dw|/|w| (log10)", lambda r: "update ratio |dw|/|w|",
     lambda r: ((r.get("params") or {}).get("weight") or {}).get("update_ratio"), True),
)
# a sequential ramp, light to dark (viridis' stops)
RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
MISSING = "#e6e6e6"
ROW_H, LABEL_W, PANEL_GAP = 16.0, 150.0, 46.0
# the histograms' columns: (title, the histogram of a layer record's `histograms`)
HISTOGRAM_COLUMNS: tuple[tuple[str, Callable[[dict], dict | None]], ...] = (
    ("weights (weight)", lambda h: (h.get("params") or {}).get("weight")),
    ("gradients (weight, last step)", lambda h: (h.get("gradients") or {}).get("weight")),
    ("activation (probe)", lambda h: h.get("activation")),
)
CELL_W, CELL_H, CELL_GAP = 190.0, 58.0, 26.0


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


def diagnostics_svg(metrics: Metrics, title: str = "", epochs: tuple[int, ...] | None = None,
                    layers: list[str] | None = None) -> str:
    """The heat strips and the histograms at `epochs` (flag `--epochs`) of `layers` (`--layers`; all by default)."""
    if not any(e.get(LAYERS) for e in metrics.epochs):
        raise CnncError(f"{metrics.path}: no per-layer records to draw",
                        hint="cnnc run records them in each epoch's line of metrics.jsonl (docs/diagnostics.md)")
    if layers is not None:
        metrics = _only_layers(metrics, layers)
    all_epochs = [e["epoch"] for e in metrics.epochs]
    chosen = _chosen_epochs(metrics, epochs)
    cell = max(4.0, min(26.0, 360.0 / len(all_epochs)))
    grids = [(name, log, *_grid(metrics, figure)) for name, _, figure, log in PANELS]
    grids = [g for g in grids if g[2]]
    rows = max((len(g[2]) for g in grids), default=0)
    panel_w = LABEL_W + cell * len(all_epochs)
    top = 70.0
    hist_rows = _histogram_rows(metrics, chosen)
    hist_top = top + rows * ROW_H + (110 if grids else 0)
    width = max(24 + len(grids) * (panel_w + PANEL_GAP),
                24 + LABEL_W + len(HISTOGRAM_COLUMNS) * (CELL_W + CELL_GAP) if hist_rows else 0)
    height = hist_top + (50 + len(hist_rows) * (CELL_H + 22) + 20 if hist_rows else 0)
    svg = Svg(width, height, "per-layer diagnostics")
    svg.text(24, 28, title or f"Per-layer diagnostics — {Path(metrics.path).parent.name or metrics.path}", 15,
             anchor="start", bold=True)
    for k, (name, log, layer_rows, _, values) in enumerate(grids):
        _panel(svg, 24 + k * (panel_w + PANEL_GAP), top, name, log, layer_rows, all_epochs, values, cell)
    if hist_rows:
        _histograms(svg, 24, hist_top, hist_rows, chosen)
    return svg.render()


def _only_layers(metrics: Metrics, names: list[str]) -> Metrics:
    recorded = list(dict.fromkeys(r["layer"] for e in metrics.epochs for r in e.get(LAYERS) or ()))
    for name in names:
        if name not in recorded:
            raise CnncError(f"--layers {name}: {metrics.path} has no records of '{name}'",
                            hint=did_you_mean(name, recorded, f"recorded layers: {', '.join(recorded)}"))
    epochs = [{**e, LAYERS: [r for r in e.get(LAYERS) or () if r["layer"] in names]} for e in metrics.epochs]
    return Metrics(metrics.path, epochs, metrics.test)


def _chosen_epochs(metrics: Metrics, epochs: tuple[int, ...] | None) -> list[int]:
    """The epochs whose histograms are drawn: those asked for, or the first, middle and last recorded."""
    have = [e["epoch"] for e in metrics.epochs if any(r.get("histograms") for r in e.get(LAYERS) or ())]
    if epochs is None:
        return sorted({have[0], have[len(have) // 2], have[-1]}) if have else []
    for e in epochs:
        if e not in have:
            span = f"epochs {have[0]} to {have[-1]}" if have else "no histograms"
            raise CnncError(f"--epochs {e}: {metrics.path} has {span}",
                            hint="histograms are recorded for every epoch of a run (docs/diagnostics.md)")
    return sorted(set(epochs))


def _histogram_rows(metrics: Metrics, chosen: list[int]) -> list[tuple[str, int | None, list[list]]]:
    """(layer, line, per column the (epoch, histogram) pairs) of the layers with any histogram at `chosen`."""
    rows: dict[str, tuple[str, int | None, list[list]]] = {}
    for e in metrics.epochs:
        if e["epoch"] not in chosen:
            continue
        for r in e.get(LAYERS) or ():
            for k, (_, pick) in enumerate(HISTOGRAM_COLUMNS):
                h = pick(r.get("histograms") or {})
                if h is not None and sum(h["counts"]):
                    row = rows.setdefault(r["layer"], (r["layer"], r.get("line"), [[] for _ in HISTOGRAM_COLUMNS]))
                    row[2][k].append((e["epoch"], h))
    return _pair_activations(list(rows.values()))


def _pair_activations(rows):
    """A layer with weights and the activation after it on its line share a row (`conv_1 · relu_1`)."""
    out = []
    for row in rows:
        if out and row[1] is not None and out[-1][1] == row[1] and not row[2][0] and not row[2][1] \
                and not out[-1][2][2]:
            name, line, columns = out.pop()
            row = (f"{name} · {row[0]}", line, [*columns[:2], row[2][2]])
        out.append(row)
    return out


def _epoch_colour(i: int, n: int) -> str:
    return colour(0.8 * i / max(n - 1, 1))     # (the ramp's yellow end is too light on white)


def _histograms(svg: Svg, x0: float, y0: float, rows, chosen: list[int]) -> None:
    svg.text(x0, y0, "Histograms at epochs " + ", ".join(map(str, chosen)), 13, anchor="start", bold=True)
    lx = x0 + LABEL_W + 4
    for i, e in enumerate(chosen):     # the legend
        svg.line(lx, y0 + 14, lx + 18, y0 + 14, _epoch_colour(i, len(chosen)), 2.5)
        svg.text(lx + 22, y0 + 18, f"epoch {e}", 10, anchor="start")
        lx += 80
    top = y0 + 46
    for k, (name, _) in enumerate(HISTOGRAM_COLUMNS):
        svg.text(x0 + LABEL_W + k * (CELL_W + CELL_GAP) + CELL_W / 2, top - 8, name, 11, bold=True)
    for j, (layer, line, columns) in enumerate(rows):
        y = top + j * (CELL_H + 22)
        svg.text(x0 + LABEL_W - 8, y + CELL_H / 2 + 4, layer + (f" (line {line})" if line else ""), 9.5,
                 anchor="end")
        for k, pairs in enumerate(columns):
            if pairs:
                _histogram_cell(svg, x0 + LABEL_W + k * (CELL_W + CELL_GAP), y, pairs, chosen)


def _histogram_cell(svg: Svg, x: float, y: float, pairs, chosen: list[int], cw: float = CELL_W,
                    ch: float = CELL_H) -> None:
    """The histograms of one layer and column, one outline per epoch on a shared value axis (a cw x ch box)."""
    lo = min(h["lo"] for _, h in pairs)
    hi = max(h["hi"] for _, h in pairs)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5, hi + 0.5
    # densities (a bin's share over its width), so that epochs whose values span other ranges (their bins
    # other widths) compare: each outline encloses the same area
    spike = (hi - lo) / 100      # the width drawn for a histogram of equal values
    densities = [[c / sum(h["counts"]) / ((h["hi"] - h["lo"]) / len(h["counts"]) if h["hi"] > h["lo"] else spike)
                  for c in h["counts"]] for _, h in pairs]
    top = max(max(d) for d in densities)
    sx = lambda v: x + (v - lo) / (hi - lo) * cw
    svg.rect(x, y, cw, ch, "#fafafa", "#cccccc", 0.6)
    for (epoch, h), density in zip(pairs, densities):
        n = len(h["counts"])
        if h["hi"] > h["lo"]:
            edges = [h["lo"] + (h["hi"] - h["lo"]) * b / n for b in range(n + 1)]
        else:       # all values equal: one narrow bar at the value
            edges = [h["lo"] - spike / 2, h["lo"] + spike / 2] + [h["lo"]] * (n - 1)
        points = [(sx(edges[0]), y + ch)]
        for b in range(n):
            top_y = y + ch - density[b] / top * (ch - 4)
            points += [(sx(edges[b]), top_y), (sx(edges[b + 1]), top_y)]
            if h["hi"] <= h["lo"]:
                break
        points.append((points[-1][0], y + ch))
        svg.polyline(points, _epoch_colour(chosen.index(epoch), len(chosen)), 1.4)
    svg.text(x, y + ch + 12, f"{lo:.3g}", 9, anchor="start")
    svg.text(x + cw, y + ch + 12, f"{hi:.3g}", 9, anchor="end")
    if lo < 0 < hi:
        svg.line(sx(0.0), y, sx(0.0), y + ch, "#999999", 0.6, dash="2,2")
        svg.text(sx(0.0), y + ch + 12, "0", 9)


def _scale(values: dict, log: bool) -> tuple[dict, float, float]:
    """The values as drawn (log10 on a log panel, None where there is none to draw) and the colour
    range: 0..1 for a share, the drawn values' span on a log scale."""
    shown = {k: (math.log10(v) if log and v > 0 else (None if log else v)) for k, v in values.items()}
    finite = [v for v in shown.values() if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if not log:
        lo, hi = 0.0, 1.0
    elif hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return shown, lo, hi


def _panel(svg: Svg, x0: float, y0: float, name: str, log: bool, rows, epochs, values, cell: float) -> None:
    shown, lo, hi = _scale(values, log)
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


# ------------------------------------------------------------------ one layer (the explorer's panel)
LAYER_W = 380.0             # the explorer's side panel (420 px less its padding and scroll bar) shows it at 1:1
LAYER_LABEL_W, LAYER_VALUE_W, LAYER_PAD = 112.0, 84.0, 6.0
STRIP_H, STRIP_PITCH = 13.0, 34.0
LAYER_CELL_H, LAYER_HIST_PITCH = 40.0, 78.0


def layer_diagnostics(metrics: Metrics, names: Collection[str] | None = None) -> dict[str, dict]:
    """Each recorded layer's own diagnostics (of `names` only, when given), for the explorer's panel.

    name -> {"svg": a picture LAYER_W wide: its strips over the epochs, coloured on the range of every
    layer as in `diagnostics_svg` (so two layers' colours compare), with the figure of the last epoch
    written beside each and the range under it; then its histograms at the first, middle and last epoch,
    one outline per epoch}, "columns": the strips' {title, log} and "rows": their figures per epoch,
    [epoch, figure, ...] (None where an epoch has none), for the exact values. A layer whose records
    hold no figure of a strip and no histogram has no entry."""
    epochs = [e["epoch"] for e in metrics.epochs]
    chosen = _chosen_epochs(metrics, None)
    scales = []
    for _, short, figure, log in PANELS:
        _, _, values = _grid(metrics, figure)
        scales.append((short, log, values, *_scale(values, log)))
    records: dict[str, list[tuple[int, dict]]] = {}
    for e in metrics.epochs:
        for r in e.get(LAYERS) or ():
            if names is None or r["layer"] in names:
                records.setdefault(r["layer"], []).append((e["epoch"], r))
    out = {}
    for name, recs in records.items():
        strips = [s for s in scales if any((name, e) in s[2] for e in epochs)]
        columns = [(title, [(e, h) for e, r in recs if e in chosen
                            and (h := pick(r.get("histograms") or {})) is not None and sum(h["counts"])])
                   for title, pick in HISTOGRAM_COLUMNS]
        columns = [c for c in columns if c[1]]
        if not strips and not columns:
            continue
        last = recs[-1][1]
        out[name] = {
            "svg": _layer_svg(name, last, epochs, [(s[0](last), *s[1:]) for s in strips], columns, chosen),
            "columns": [{"title": s[0](last), "log": s[1]} for s in strips],
            "rows": [[e, *(s[2].get((name, e)) for s in strips)] for e in epochs
                     if any((name, e) in s[2] for s in strips)]}
    return out


def _figure_text(value: float | None, log: bool) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if log else f"{value:.1%}"


def _layer_svg(name: str, last: dict, epochs: list[int], strips, columns, chosen: list[int]) -> str:
    """One layer's strips (short title, log, values, shown, lo, hi) and histogram `columns` (title, pairs)."""
    hist_top = 40.0 + len(strips) * STRIP_PITCH + (14.0 if strips else -16.0)
    height = hist_top + (22 + len(columns) * LAYER_HIST_PITCH if columns else 0) + 4
    svg = Svg(LAYER_W, height, f"{name}: training diagnostics")
    line = last.get("line")
    title = f"{name} ({last['op']}" + (f", line {line})" if line else ")")
    svg.text(LAYER_PAD, 15, title, 11.5, anchor="start", bold=True)
    span = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}–{epochs[-1]}"
    if text_width(title, 11.5, True) + text_width(span, 9.5) + 12 < LAYER_W - 2 * LAYER_PAD:   # (a long name: no span)
        svg.text(LAYER_W - LAYER_PAD, 15, span, 9.5, anchor="end", fill="#555555")
    if strips:
        gx = LAYER_PAD + LAYER_LABEL_W
        cell = min(22.0, (LAYER_W - gx - LAYER_PAD - LAYER_VALUE_W) / len(epochs))
        step = max(1, math.ceil(14 / cell))       # an epoch number every 14 px or more
        for j, e in enumerate(epochs):
            if j == len(epochs) - 1 or (j % step == 0 and len(epochs) - 1 - j >= step):
                svg.text(gx + (j + 0.5) * cell, 35, str(e), 8.5, fill="#555555")
        vx = gx + cell * len(epochs) + 6
        svg.text(vx, 35, f"epoch {epochs[-1]}", 8.5, anchor="start", fill="#555555")
        for k, (title, log, values, shown, lo, hi) in enumerate(strips):
            y = 40 + k * STRIP_PITCH
            svg.text(gx - 6, y + 10, title, 9.5, anchor="end")
            for j, e in enumerate(epochs):
                v = shown.get((name, e))
                fill = MISSING if v is None or not math.isfinite(v) else colour((v - lo) / (hi - lo))
                svg.rect(gx + j * cell, y, cell, STRIP_H, fill, "white", 0.5)
            svg.text(vx, y + 10, _figure_text(values.get((name, epochs[-1])), log), 9.5, anchor="start", bold=True)
            ends = (f"{10 ** lo:.2g}", f"{10 ** hi:.2g}") if log else ("0%", "100%")
            if cell * len(epochs) >= sum(text_width(t, 8) for t in ends) + 12:     # the colour range at its ends
                svg.text(gx, y + STRIP_H + 9, ends[0], 8, anchor="start", fill="#666666")
                svg.text(gx + cell * len(epochs), y + STRIP_H + 9, ends[1], 8, anchor="end", fill="#666666")
            else:                                                                  # a short strip: as one text
                svg.text(gx, y + STRIP_H + 9, f"{ends[0]} to {ends[1]}", 8, anchor="start", fill="#666666")
        note_y = 40 + len(strips) * STRIP_PITCH - 2
        svg.text(LAYER_PAD, note_y, "colour: dark low, yellow high, on the range of every layer (under each strip)",
                 8, anchor="start", fill="#666666")
    if columns:
        svg.text(LAYER_PAD, hist_top + 12, "histograms", 10.5, anchor="start", bold=True)
        lx = LAYER_PAD + 78
        for i, e in enumerate(chosen):
            svg.line(lx, hist_top + 8, lx + 16, hist_top + 8, _epoch_colour(i, len(chosen)), 2.5)
            svg.text(lx + 20, hist_top + 12, f"epoch {e}", 9.5, anchor="start")
            lx += 72
        for k, (title, pairs) in enumerate(columns):
            y = hist_top + 22 + k * LAYER_HIST_PITCH
            svg.text(LAYER_PAD, y + 12, title, 9.5, anchor="start")
            _histogram_cell(svg, LAYER_PAD, y + 17, pairs, chosen, LAYER_W - 2 * LAYER_PAD, LAYER_CELL_H)
    return svg.render()
