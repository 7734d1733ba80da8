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
layer (name, shape, value range; its channels as a grid of min-max mapped
tiles) and `kernels_png` one panel per convolution's weights (the first
layer's kernels as RGB or grey tiles, deeper ones one tile per output and
input channel on a blue-white-red scale, each panel with its colour bar).
Both are pure functions of the arrays, names and shapes they are given (the
values are computed by the runtime, app/cmd_viz.py hands them over) and
write the layout into the PNG as a `cnnc` text chunk (JSON: each panel's
name, shape, box, tile boxes and value range), so a test or a tool can read
what the picture shows.
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
MAX_MAPS, MAX_KERNEL_ROWS, MAX_KERNEL_COLS = 64, 32, 16


# ------------------------------------------------------------------ mappings
def to_grey(values: np.ndarray, mapping: str = "minmax") -> np.ndarray:
    """[C, H, W] (or [H, W]) real values -> uint8 of the same shape, channel by channel."""
    x = np.asarray(values, np.float64)
    if not np.isfinite(x).all():
        raise CnncError("cannot show values that are NaN or infinite as grey levels",
                        hint="the weights or the input produce non-finite values; check the checkpoint")
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


# ------------------------------------------------------------------ panels
@dataclass(frozen=True)
class Panel:
    """One layer's values for the activations picture: its name, its shape, one sample's values."""

    name: str
    shape: tuple
    values: np.ndarray


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


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
    """A layer's values as [C, H, W] maps: a vector [N] is one 1 x N strip."""
    v = np.asarray(values, np.float32)
    if v.ndim == 3:
        return v
    if v.ndim == 2:
        return v[None]
    return v.reshape(1, 1, -1)


def _value_range(v: np.ndarray) -> list[float]:
    return [float(v.min()), float(v.max())]


class _Canvas:
    """Panels stacked top to bottom on a white page; records each panel's layout."""

    def __init__(self):
        self.parts: list[tuple] = []  # (y, pixels, label, x, ticks)
        self.layout: list[dict] = []
        self.y, self.width = 8, 0
        self.font, self.small = _font(), _font(11)

    def add(self, label: str, pixels: np.ndarray, record: dict, tiles: list[list[int]],
            ticks: Sequence[tuple[int, int, str]] = ()) -> None:
        """A panel: its label, then its pixels; `ticks` are texts at (x, y) of the pixels (centred on y)."""
        label_h = 20
        x0, y0 = 8, self.y + label_h
        self.parts.append((self.y, pixels, label, x0, ticks))
        h, w = pixels.shape[:2]
        record.update(label=label, box=[x0, y0, x0 + w, y0 + h], ticks=[t[2] for t in ticks],
                      tiles=[[x0 + a, y0 + b, x0 + c, y0 + d] for a, b, c, d in tiles])
        self.layout.append(record)
        self.width = max(self.width, x0 + w + 8, x0 + int(self.font.getlength(label)) + 8)
        self.y = y0 + h + 14

    def png(self, style: str) -> bytes:
        page = Image.new("RGB", (max(self.width, 64), self.y), BACKGROUND)
        draw = ImageDraw.Draw(page)
        for y, pixels, label, x, ticks in self.parts:
            draw.text((x, y + 3), label, fill=INK, font=self.font)
            tile = Image.fromarray(pixels if pixels.ndim == 3 else np.stack([pixels] * 3, axis=-1))
            page.paste(tile, (x, y + 20))
            for tx, ty, text in ticks:
                draw.text((x + tx, y + 20 + ty), text, fill=INK, font=self.small, anchor="lm")
        meta = {"style": style, "panels": self.layout}
        return png_bytes(np.asarray(page), {"cnnc": json.dumps(meta)})


def _tile_boxes(n: int, cols: int, h: int, w: int, gap: int = GAP) -> list[list[int]]:
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        boxes.append([c * (w + gap), r * (h + gap), c * (w + gap) + w, r * (h + gap) + h])
    return boxes


def _columns(n: int, tile_w: int, width: int = 1200) -> int:
    return max(1, min(n, math.ceil(math.sqrt(n)) if n > 1 else 1, width // (tile_w + GAP)))


def activations_png(panels: Sequence[Panel]) -> bytes:
    """One panel per layer, labelled 'name  CxHxW  [min, max]'; its channels as min-max mapped tiles."""
    canvas = _Canvas()
    for panel in panels:
        maps = _as_maps(panel.values)
        shown = maps[:MAX_MAPS]
        size = _tile_scale(*shown.shape[1:])
        if np.ndim(panel.values) == 1:  # a vector: a strip of cells, tall enough to see
            n = maps.shape[-1]
            size = (16, n * math.ceil(192 / n) if n < 192 else min(n, 480))
        tiles = [_resized(t, size) for t in to_grey(shown, "minmax")]
        cols = _columns(len(tiles), size[1])
        lo, hi = _value_range(maps)
        more = f", first {len(shown)} of {len(maps)} channels" if len(maps) > len(shown) else ""
        label = f"{panel.name}  {'x'.join(map(str, panel.shape))}  [{lo:.3g}, {hi:.3g}]{more}"
        record = {"name": panel.name, "shape": list(panel.shape), "min": lo, "max": hi,
                  "channels": len(maps), "mapping": "minmax"}
        canvas.add(label, grid(tiles, cols), record, _tile_boxes(len(tiles), cols, *size))
    return canvas.png("activations")


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


def kernels_png(layers: Sequence[tuple[str, np.ndarray]], first: str | None = None) -> bytes:
    """One panel per convolution weight [O, I, kh, kw]. The layer named `first` (the one reading the
    image) shows each output's kernel as one tile: RGB when I = 3, grey when I = 1; every other layer
    shows a tile per (output, input) pair, rows = outputs, on a blue-white-red scale. Every panel's
    scale is symmetric, [-m, m] with m its largest |weight|, drawn as a bar beside it."""
    canvas = _Canvas()
    for name, weight in layers:
        w = np.asarray(weight, np.float64)
        o, i, kh, kw = w.shape
        top = float(np.abs(w).max())
        size = _tile_scale(kh, kw, small=48, large=96)
        if name == first and i in (1, 3):
            kind = "grey" if i == 1 else "rgb"
            shown = w[:MAX_MAPS]
            raw = [_signed_grey(k[0], top) if i == 1 else _signed_grey(k.transpose(1, 2, 0), top) for k in shown]
            tiles = [_resized(t, size) for t in raw]
            cols = _columns(len(tiles), size[1], 800)
            pixels, bar = grid(tiles, cols), _colour_bar(top, "grey", max(size[0] * 2, 96))
            note = "one tile per output, RGB" if i == 3 else "one tile per output"
        else:
            kind = "diverging"
            shown = w[:MAX_KERNEL_ROWS, :MAX_KERNEL_COLS]
            tiles = [_resized(diverging(shown[r, c], top), size)
                     for r in range(shown.shape[0]) for c in range(shown.shape[1])]
            cols = shown.shape[1]
            pixels, bar = grid(tiles, cols, fill=150), _colour_bar(top, "diverging", max(size[0] * 2, 96))
            note = f"rows: {shown.shape[0]} of {o} outputs, columns: {shown.shape[1]} of {i} inputs"
        label = f"{name}  {o}x{i}x{kh}x{kw}  scale [-{top:.3g}, {top:.3g}]  ({note})"
        record = {"name": name, "shape": [o, i, kh, kw], "kind": kind, "scale": top,
                  "min": float(w.min()), "max": float(w.max())}
        panel, ticks = _with_bar(pixels, bar, top)
        canvas.add(label, panel, record, _tile_boxes(len(tiles), cols, *size), ticks)
    return canvas.png("kernels")


def read_layout(data: bytes) -> dict:
    """The `cnnc` layout chunk of a picture written here (for tests and tools)."""
    with Image.open(io.BytesIO(data)) as img:
        return json.loads(img.text["cnnc"])
