"""Stage 4 (viz): arrays as pictures -- display mappings, channel grids, feature maps, kernels.

A network's values are real numbers; a picture needs 0..255. The display
mappings (`MAPPINGS`) say how, per channel, and are stated wherever a
picture is written:

- `minmax`: [min, max] of the channel is scaled to [0, 255] (a constant
  channel is 0): every map uses the full grey range, whatever its scale;
- `abs`: |x| scaled by the channel's largest |x| to [0, 255] (all zero stays
  0): the strength of a response whatever its sign, e.g. edges of both
  directions are bright;
- `clip`: x clipped to [0, 1], then times 255: for values that already are
  intensities (a blur or sharpen of an image in [0, 1]).
Values are rounded to the nearest grey level.

`grid` lays tiles out in rows; `activations_png` draws one labelled panel per
layer (name, shape, value range; its first 16 channels as a grid of min-max
mapped tiles, one value per channel as a bar chart, the input as the image)
and `kernels_png` one panel per convolution's weights (the first layer's
kernels as RGB or grey tiles, deeper ones one tile per output and input
channel on a blue-white-red scale, each panel with its colour bar). The
panels fill rows on pages of a screen's size (`_paginate`), one page per
picture. Both are pure functions of the arrays, names and shapes they are
given (the values are computed by the runtime, app/cmd_viz.py hands them
over), refuse non-finite values (`require_finite`, also asked by `cnnc
apply`) and write the layout into the PNG as a `cnnc` text chunk (JSON: the
page, the page count, each panel's name, shape, box, tile boxes and value
range), so a test or a tool can read what the picture shows.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from ..dsl.source import CnncError

MAPPINGS = {
    "minmax": "per channel, [min, max] scaled to [0, 255] (a constant channel is 0)",
    "abs": "per channel, |x| scaled by its largest |x| to [0, 255]",
    "clip": "x clipped to [0, 1], times 255",
}
BACKGROUND, INK, GAP = (255, 255, 255), (40, 40, 40), 2
MAX_FIRST_KERNELS, MAX_KERNEL_ROWS, MAX_KERNEL_COLS = 64, 16, 16


# ------------------------------------------------------------------ mappings
def to_grey(values: np.ndarray, mapping: str = "minmax") -> np.ndarray:
    """[C, H, W] (or [H, W]) real values -> uint8 of the same shape, channel by channel."""
    x = np.asarray(values, np.float64)
    require_finite(x, "the values")
    flat = x[None] if x.ndim == 2 else x
    axes = tuple(range(1, flat.ndim))
    if mapping == "minmax":
        lo, hi = flat.min(axis=axes, keepdims=True), flat.max(axis=axes, keepdims=True)
        span = hi - lo
        out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), 0.0)
    elif mapping == "abs":
        top = np.abs(flat).max(axis=axes, keepdims=True)
        out = np.abs(flat) / np.where(top > 0, top, 1)
    elif mapping == "clip":
        out = np.clip(flat, 0.0, 1.0)
    else:
        raise CnncError(f"unknown display mapping '{mapping}'", hint=f"mappings: {', '.join(MAPPINGS)}")
    grey = np.rint(out * 255).astype(np.uint8)
    return grey[0] if x.ndim == 2 else grey


def grid(tiles: Sequence[np.ndarray], columns: int | None = None, gap: int = GAP, fill: int = 255) -> np.ndarray:
    """Equal-sized uint8 tiles ([H, W] or [H, W, 3]) in rows of `columns` (default: a near square),
    `gap` pixels of `fill` between them."""
    n = len(tiles)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap) + tiles[0].shape[2:], fill, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


def png_bytes(pixels: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """uint8 [H, W] (grey) or [H, W, 3] (RGB) as PNG file bytes, with optional text chunks."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


# ------------------------------------------------------------------ pages
PAGE_W, PAGE_H = 1600, 1000  # a page of panels fits a laptop's screen; more panels go to further pages
MARGIN, LABEL_H, GAP_X, GAP_Y = 8, 20, 24, 14


def require_finite(values: np.ndarray, what: str) -> None:
    """Values that a picture shows must be finite: NaN or an infinity has no colour (the one check, for
    feature maps, kernels and `cnnc apply`)."""
    if not np.isfinite(np.asarray(values)).all():
        raise CnncError(f"NaN or infinite values in {what}: there is no picture of them",
                        hint="check the checkpoint (did training diverge?) and the network's weights")


@dataclass(frozen=True)
class Panel:
    """One layer's values for the activations picture: its name, its shape, one sample's values.
    `image`: the network's input as read (values in [0, 1]), drawn as the photograph, RGB in colour."""

    name: str
    shape: tuple
    values: np.ndarray
    image: bool = False


@dataclass
class _Drawn:
    """A panel ready to place: its label, pixels (RGB), layout record, tile boxes and tick texts
    (x, y, text), all relative to the pixels' top left corner."""

    label: str
    pixels: np.ndarray
    record: dict
    tiles: list
    ticks: Sequence[tuple[int, int, str]] = ()

    def size(self, font) -> tuple[int, int]:
        h, w = self.pixels.shape[:2]
        return max(w, int(font.getlength(self.label))), LABEL_H + h


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _paginate(drawn: Sequence[_Drawn], font) -> list[list[tuple[int, int, _Drawn]]]:
    """Panels in reading order, in rows across pages of PAGE_W x PAGE_H (a panel larger than a page
    has a page of its own): per page, each panel's top left corner."""
    pages: list[list[tuple[int, int, _Drawn]]] = [[]]
    x = y = MARGIN
    row_h = 0
    for d in drawn:
        w, h = d.size(font)
        if x > MARGIN and x + w > PAGE_W - MARGIN:  # the row is full
            x, y, row_h = MARGIN, y + row_h + GAP_Y, 0
        if y > MARGIN and y + h > PAGE_H - MARGIN:  # the page is full
            pages.append([])
            x = y = MARGIN
            row_h = 0
        pages[-1].append((x, y, d))
        x += w + GAP_X
        row_h = max(row_h, h)
    return pages


def _page_png(style: str, drawn: Sequence[_Drawn], page: int) -> bytes:
    """Page `page` (from 1) of the panels, with the layout as a `cnnc` text chunk."""
    font, small = _font(), _font(11)
    pages = _paginate(drawn, font)
    if not 1 <= page <= len(pages):
        raise CnncError(f"--page {page}: the picture has {len(pages)} page{'s' * (len(pages) > 1)}",
                        hint=f"choose a page from 1 to {len(pages)}, or fewer layers with --layers")
    placed = pages[page - 1]
    footer = "" if len(pages) == 1 else f"page {page} of {len(pages)}" + (
        f"; --page {page + 1} shows the next" if page < len(pages) else "")
    width = max([x + d.size(font)[0] for x, _, d in placed] + [int(font.getlength(footer)) + MARGIN, 64]) + MARGIN
    height = max(y + d.size(font)[1] for _, y, d in placed) + MARGIN + (LABEL_H if footer else 0)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    layout = []
    for x, y, d in placed:
        draw.text((x, y + 3), d.label, fill=INK, font=font)
        canvas.paste(Image.fromarray(d.pixels), (x, y + LABEL_H))
        for tx, ty, text in d.ticks:
            draw.text((x + tx, y + LABEL_H + ty), text, fill=INK, font=small, anchor="lm")
        x0, y0 = x, y + LABEL_H
        h, w = d.pixels.shape[:2]
        layout.append(dict(d.record, label=d.label, box=[x0, y0, x0 + w, y0 + h], ticks=[t[2] for t in d.ticks],
                           tiles=[[x0 + a, y0 + b, x0 + c, y0 + e] for a, b, c, e in d.tiles]))
    if footer:
        draw.text((MARGIN, height - LABEL_H + 3), footer, fill=INK, font=small)
    meta = {"style": style, "page": page, "pages": len(pages), "panels": layout}
    return png_bytes(np.asarray(canvas), {"cnnc": json.dumps(meta)})


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 3 else np.stack([pixels] * 3, axis=-1)


# ------------------------------------------------------------------ feature maps
MAX_MAPS = 16       # channels drawn per layer (a 4 x 4 grid); the label gives the layer's count
MAX_BARS = 384      # columns of a bar chart; more values share a column, drawn as their range
BAR_H = 96
POSITIVE, NEGATIVE, AXIS = (47, 106, 168), (200, 115, 30), (150, 150, 150)


def _tile_scale(h: int, w: int, small: int = 48, large: int = 192) -> tuple[int, int]:
    """A readable tile size: small maps enlarged by a whole factor, large ones shrunk to `large`."""
    side = max(h, w)
    if side < small:
        k = math.ceil(small / side)
        return h * k, w * k
    if side > large:
        return max(1, round(h * large / side)), max(1, round(w * large / side))
    return h, w


def _resized(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if tile.shape[:2] == size:
        return tile
    enlarge = size[0] >= tile.shape[0]
    return np.asarray(Image.fromarray(tile).resize((size[1], size[0]),
                                                   Image.NEAREST if enlarge else Image.BILINEAR))


def _as_maps(values: np.ndarray) -> np.ndarray:
    """A layer's values as [C, H, W] maps ([C, L] signals as one C x L map)."""
    v = np.asarray(values, np.float32)
    return v if v.ndim == 3 else v[None]


def _one_value_per_channel(values: np.ndarray) -> bool:
    """A vector [F], or maps of one pixel each (a global pool's [C, 1, 1]): drawn as a bar chart."""
    v = np.asarray(values)
    return v.ndim == 1 or v.ndim >= 2 and math.prod(v.shape[1:]) == 1


def bar_chart(values: np.ndarray) -> tuple[np.ndarray, list, list]:
    """One bar per value from a zero line (blue up, orange down), on one scale for all; past MAX_BARS
    values a column shows the range of the values it holds. The pixels, one box per column, and
    the scale's ticks (x, y, text)."""
    v = np.asarray(values, np.float64).ravel()
    per = math.ceil(len(v) / MAX_BARS)
    columns = math.ceil(len(v) / per)
    lows = np.array([v[i * per:(i + 1) * per].min() for i in range(columns)])
    highs = np.array([v[i * per:(i + 1) * per].max() for i in range(columns)])
    bar = max(1, min(12, 384 // columns))
    top, bottom = max(float(highs.max()), 0.0), min(float(lows.min()), 0.0)
    span = (top - bottom) or 1.0
    row = lambda value: int(round((top - value) / span * (BAR_H - 1)))  # noqa: E731
    zero = row(0.0)
    out = np.full((BAR_H, columns * bar, 3), 255, np.uint8)
    boxes = []
    for i, (lo, hi) in enumerate(zip(lows, highs)):
        x = i * bar
        gap = 1 if bar > 3 else 0
        if hi > 0:
            out[row(hi):zero + 1, x:x + bar - gap] = POSITIVE
        if lo < 0:
            out[zero:row(lo) + 1, x:x + bar - gap] = NEGATIVE
        boxes.append([x, 0, x + bar, BAR_H])
    out[zero, :] = AXIS
    width = out.shape[1]
    ticks = [(width + 4, row(top), f"{top:.3g}"), (width + 4, zero, "0")] + \
        ([(width + 4, row(bottom), f"{bottom:.3g}")] if bottom < 0 else [])
    framed = np.full((BAR_H, width + 60, 3), 255, np.uint8)
    framed[:, :width] = out
    return framed, boxes, ticks


def _maps_panel(panel: Panel) -> _Drawn:
    maps = _as_maps(panel.values)
    lo, hi = _value_range(maps)
    shape = "x".join(map(str, panel.shape))
    record = {"name": panel.name, "shape": list(panel.shape), "min": lo, "max": hi, "channels": len(maps)}
    if panel.image:
        colour = maps.shape[0] == 3
        pixels = np.rint(np.clip(maps, 0, 1) * 255).astype(np.uint8)
        size = _tile_scale(*maps.shape[1:], small=128, large=256)
        tile = _resized(pixels.transpose(1, 2, 0) if colour else pixels[0], size)
        return _Drawn(f"{panel.name}  {shape}  the image as read{', RGB' if colour else ''}", _rgb(tile),
                      dict(record, mapping="clip", kind="rgb" if colour else "grey"),
                      [[0, 0, tile.shape[1], tile.shape[0]]])
    if _one_value_per_channel(panel.values):
        pixels, boxes, ticks = bar_chart(panel.values)
        per = math.ceil(np.size(panel.values) / MAX_BARS)
        more = f", a bar per {per} values (their range)" if per > 1 else ""
        return _Drawn(f"{panel.name}  {shape}  [{lo:.3g}, {hi:.3g}]{more}", pixels,
                      dict(record, mapping="bars", kind="bars"), boxes, ticks)
    shown = maps[:MAX_MAPS]
    size = _tile_scale(*shown.shape[1:], large=192 if len(shown) <= 4 else 96)
    tiles = [_resized(t, size) for t in to_grey(shown, "minmax")]
    cols = _columns(len(tiles), size[1])
    more = f", {len(shown)} of {len(maps)} channels" if len(maps) > len(shown) else ""
    return _Drawn(f"{panel.name}  {shape}  [{lo:.3g}, {hi:.3g}]{more}", _rgb(grid(tiles, cols)),
                  dict(record, mapping="minmax", kind="maps"), _tile_boxes(len(tiles), cols, *size))


def _value_range(v: np.ndarray) -> list[float]:
    return [float(v.min()), float(v.max())]


def _tile_boxes(n: int, cols: int, h: int, w: int, gap: int = GAP) -> list[list[int]]:
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        boxes.append([c * (w + gap), r * (h + gap), c * (w + gap) + w, r * (h + gap) + h])
    return boxes


def _columns(n: int, tile_w: int, width: int = PAGE_W - 2 * MARGIN) -> int:
    return max(1, min(n, math.ceil(math.sqrt(n)) if n > 1 else 1, width // (tile_w + GAP)))


def activations_png(panels: Sequence[Panel], page: int = 1) -> bytes:
    """One panel per layer, labelled 'name  CxHxW  [min, max]': its first MAX_MAPS channels as min-max
    mapped tiles, one value per channel (a vector, a global pool's output) as a bar chart, the input
    as the image; the panels in rows on pages of a screen's size (page `page`)."""
    for panel in panels:
        require_finite(panel.values, f"'{panel.name}'")
    return _page_png("activations", [_maps_panel(p) for p in panels], page)


# ------------------------------------------------------------------ kernels
def diverging(values: np.ndarray, top: float) -> np.ndarray:
    """Values in [-top, top] -> RGB uint8: blue (negative), white (0), red (positive)."""
    t = np.clip(np.asarray(values, np.float64) / (top if top > 0 else 1.0), -1.0, 1.0)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    r = 1.0 - 0.8 * neg
    g = 1.0 - 0.8 * np.maximum(pos, neg)
    b = 1.0 - 0.8 * pos
    return np.rint(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _signed_grey(values: np.ndarray, top: float) -> np.ndarray:
    """Values in [-top, top] -> uint8 with 0 at mid grey (128)."""
    t = np.clip(np.asarray(values, np.float64) / (top if top > 0 else 1.0), -1.0, 1.0)
    return np.rint((t + 1) * 127.5).astype(np.uint8)


def _colour_bar(top: float, kind: str, height: int) -> np.ndarray:
    ramp = np.linspace(top, -top, max(height, 16))[:, None].repeat(12, axis=1)
    if kind == "diverging":
        return diverging(ramp, top)
    grey = _signed_grey(ramp, top)
    return np.stack([grey] * 3, axis=-1)


def _with_bar(pixels: np.ndarray, bar: np.ndarray, top: float) -> tuple[np.ndarray, list]:
    """The tiles with the colour bar to their right, and the bar's tick labels (x, y, text)."""
    h = max(pixels.shape[0], bar.shape[0])
    x = pixels.shape[1] + 10
    out = np.full((h, x + bar.shape[1] + 60, 3), 255, np.uint8)
    out[:pixels.shape[0], :pixels.shape[1]] = pixels if pixels.ndim == 3 else pixels[..., None]
    out[:bar.shape[0], x:x + bar.shape[1]] = bar
    tx, last = x + bar.shape[1] + 4, bar.shape[0] - 1
    ticks = [(tx, 6, f"{top:.3g}"), (tx, last // 2, "0"), (tx, last - 6, f"{-top:.3g}")]
    return out, ticks


def kernels_png(layers: Sequence[tuple[str, np.ndarray]], first: str | None = None, page: int = 1) -> bytes:
    """One panel per convolution weight [O, I, kh, kw]. The layer named `first` (the one reading the
    image) shows each output's kernel as one tile: RGB when I = 3, grey when I = 1; every other layer
    shows a tile per (output, input) pair, rows = outputs, on a blue-white-red scale. Every panel's
    scale is symmetric, [-m, m] with m its largest |weight|, drawn as a bar beside it. The panels in
    rows on pages of a screen's size (page `page`)."""
    drawn = []
    for name, weight in layers:
        require_finite(weight, f"the weights of '{name}'")
        drawn.append(_kernel_panel(name, np.asarray(weight, np.float64), name == first))
    return _page_png("kernels", drawn, page)


def _kernel_panel(name: str, w: np.ndarray, first: bool) -> _Drawn:
    o, i, kh, kw = w.shape
    top = float(np.abs(w).max())
    size = _tile_scale(kh, kw, small=24, large=96)
    if first and i in (1, 3):
        kind = "grey" if i == 1 else "rgb"
        shown = w[:MAX_FIRST_KERNELS]
        raw = [_signed_grey(k[0], top) if i == 1 else _signed_grey(k.transpose(1, 2, 0), top) for k in shown]
        tiles = [_resized(t, _tile_scale(kh, kw, small=48, large=96)) for t in raw]
        size = tiles[0].shape[:2]
        cols = _columns(len(tiles), size[1], 800)
        pixels = grid(tiles, cols)
        note = f"one tile per output{', RGB' if i == 3 else ''}" + (f", {len(shown)} of {o}" if o > len(shown) else "")
    else:
        kind = "diverging"
        shown = w[:MAX_KERNEL_ROWS, :MAX_KERNEL_COLS]
        tiles = [_resized(diverging(shown[r, c], top), size)
                 for r in range(shown.shape[0]) for c in range(shown.shape[1])]
        cols = shown.shape[1]
        pixels = grid(tiles, cols, fill=150)
        note = f"rows: {shown.shape[0]} of {o} outputs, columns: {shown.shape[1]} of {i} inputs"
    bar = _colour_bar(top, "grey" if kind != "diverging" else "diverging", max(size[0] * 2, 96))
    label = f"{name}  {o}x{i}x{kh}x{kw}  scale [-{top:.3g}, {top:.3g}]  ({note})"
    record = {"name": name, "shape": [o, i, kh, kw], "kind": kind, "scale": top,
              "min": float(w.min()), "max": float(w.max())}
    panel, ticks = _with_bar(pixels, bar, top)
    return _Drawn(label, panel, record, _tile_boxes(len(tiles), cols, *size), ticks)


def read_layout(data: bytes) -> dict:
    """The `cnnc` layout chunk of a picture written here (for tests and tools)."""
    with Image.open(io.BytesIO(data)) as img:
        return json.loads(img.text["cnnc"])
