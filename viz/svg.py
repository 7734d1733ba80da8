"""Stage 4 (viz): a small SVG writer for the pictures viz draws without Graphviz.

`Svg` collects shapes (rectangles, polygons, paths, lines, text) and writes a
standalone SVG 1.1 document with an arrow marker and a white background.
`text_width` estimates how wide a label is in DejaVu Sans / Helvetica, which
is what the layouts need to keep labels from overlapping; `nice_ticks` picks
round axis values. No external program is involved.
"""
from __future__ import annotations

import math
from html import escape

from .style import SVG_FONT

# Advance widths (in em) of DejaVu Sans; everything not listed counts as 0.62 em.
_NARROW = {**dict.fromkeys("ijl|!.,:;'", 0.28), **dict.fromkeys("frt()[]/ ", 0.36), "I": 0.3}
_WIDE = {**dict.fromkeys("mwMW@", 0.92), **dict.fromkeys("×…—⟶→", 0.84), **dict.fromkeys("ABCDEGHKNOQRUV", 0.74)}


def text_width(text: str, size: float, bold: bool = False) -> float:
    w = sum(_NARROW.get(ch, _WIDE.get(ch, 0.62)) for ch in text) * size
    return w * (1.08 if bold else 1.0)


def fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if not float(x).is_integer() else str(int(x))


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    if not math.isfinite(raw) or raw <= 0:  # a range beyond float (a diverged run's 1e308 losses)
        return [0.0, 1.0]
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi - step * 1e-6:
        ticks.append(round(t, 10))
    return ticks


class Svg:
    """An SVG document being drawn; coordinates in pixels, y down."""

    def __init__(self, width: float, height: float, title: str = ""):
        self.width, self.height, self.title = width, height, title
        self.parts: list[str] = []
        self.markers: dict[str, str] = {}

    # ------------------------------------------------------------- shapes
    def rect(self, x: float, y: float, w: float, h: float, fill: str = "none", stroke: str = "none",
             width: float = 1.0, rx: float = 0.0, dash: str = "", opacity: float = 1.0) -> None:
        extra = f' rx="{fmt(rx)}"' if rx else ""
        self.parts.append(f'<rect x="{fmt(x)}" y="{fmt(y)}" width="{fmt(max(w, 0))}" height="{fmt(max(h, 0))}"'
                          f"{extra}{self._paint(fill, stroke, width, dash, opacity)}/>")

    def polygon(self, points: list[tuple[float, float]], fill: str = "none", stroke: str = "none",
                width: float = 1.0, opacity: float = 1.0) -> None:
        pts = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in points)
        self.parts.append(f'<polygon points="{pts}"{self._paint(fill, stroke, width, "", opacity)} '
                          'stroke-linejoin="round"/>')

    def polyline(self, points: list[tuple[float, float]], stroke: str = "#333", width: float = 1.0,
                 dash: str = "", arrow: str = "") -> None:
        pts = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in points)
        self.parts.append(f'<polyline points="{pts}"{self._paint("none", stroke, width, dash, 1.0)}'
                          f'{self._arrow(arrow, stroke)} stroke-linejoin="round"/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#333", width: float = 1.0,
             dash: str = "", arrow: str = "") -> None:
        self.polyline([(x1, y1), (x2, y2)], stroke, width, dash, arrow)

    def path(self, d: str, stroke: str = "#333", width: float = 1.0, fill: str = "none", dash: str = "",
             arrow: str = "", opacity: float = 1.0) -> None:
        self.parts.append(f'<path d="{d}"{self._paint(fill, stroke, width, dash, opacity)}'
                          f"{self._arrow(arrow, stroke)}/>")

    def circle(self, cx: float, cy: float, r: float, fill: str = "#333", stroke: str = "none",
               width: float = 1.0) -> None:
        self.parts.append(f'<circle cx="{fmt(cx)}" cy="{fmt(cy)}" r="{fmt(r)}"'
                          f'{self._paint(fill, stroke, width, "", 1.0)}/>')

    def text(self, x: float, y: float, text: str, size: float = 11, anchor: str = "middle",
             fill: str = "#111", bold: bool = False, italic: bool = False, rotate: float = 0.0) -> None:
        attrs = f' x="{fmt(x)}" y="{fmt(y)}" font-size="{fmt(size)}" text-anchor="{anchor}" fill="{fill}"'
        if bold:
            attrs += ' font-weight="bold"'
        if italic:
            attrs += ' font-style="italic"'
        if rotate:
            attrs += f' transform="rotate({fmt(rotate)} {fmt(x)} {fmt(y)})"'
        self.parts.append(f"<text{attrs}>{escape(text)}</text>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    # ------------------------------------------------------------- output
    def render(self) -> str:
        w, h = math.ceil(self.width), math.ceil(self.height)
        defs = "".join(self.markers.values())
        head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" '
                f'viewBox="0 0 {w} {h}" font-family="{SVG_FONT}">\n')
        title = f"<title>{escape(self.title)}</title>\n" if self.title else ""
        return (head + title + (f"<defs>{defs}</defs>\n" if defs else "")
                + f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>\n'
                + "\n".join(self.parts) + "\n</svg>\n")

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _paint(fill: str, stroke: str, width: float, dash: str, opacity: float) -> str:
        out = f' fill="{fill}" stroke="{stroke}"'
        if stroke != "none":
            out += f' stroke-width="{fmt(width)}"'
        if dash:
            out += f' stroke-dasharray="{dash}"'
        if opacity < 1.0:
            out += f' opacity="{opacity:.2f}"'
        return out

    def _arrow(self, kind: str, colour: str) -> str:
        """A marker per colour: SVG 1.1 markers cannot inherit the line's stroke."""
        if not kind:
            return ""
        ident = "arrow-" + colour.lstrip("#")
        if ident not in self.markers:
            self.markers[ident] = (
                f'<marker id="{ident}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                f'markerHeight="7" orient="auto-start-reverse" markerUnits="userSpaceOnUse">'
                f'<path d="M0,1 L10,5 L0,9 z" fill="{colour}"/></marker>')
        return f' marker-end="url(#{ident})"'
