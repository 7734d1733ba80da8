"""Stage 4 (viz): the architecture figure, in the style of the classic LeNet-5 picture.

Feature maps are drawn as 3-D slabs (thickness from the channel count, face
from height and width, square-root scaled so 3×224×224 and 512×7×7 both stay
visible) with their size written above (`6@28×28`) and the op that made them
below; flat tensors are thin bars. Only the main path (the longest path from
input to output) is drawn; shape-preserving layers (activations,
normalisation, dropout, adds) are folded into the slab before them, equal
consecutive layers into one group ("×3"), and every merge (a residual add, a
concat of branches) is an arc from where the paths fork to where they meet.
Long networks wrap into rows, broken only where no arc crosses. Plain SVG,
written by our own code: no external program.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..compiler.driver import Compiled
from ..compiler.graph import Network, Node
from ..compiler.symbolic import SymbolicComparison, is_symbolic
from . import style
from .svg import Svg, text_width
from .view import main_path

FOLDED_FAMILIES = ("activation", "normalisation", "regularisation")
FOLDED_OPS = ("add", "mul", "identity")
MAX_ROW = 1500.0        # px before a long network wraps
MARGIN = 24.0
ARROW_GAP = 26.0        # horizontal room for the arrow between two groups
SLAB_GAP = 5.0          # between the slabs of one group
LABEL = 11.0            # op label font size
SMALL = 9.5
SIZE_ROOM = 20.0        # above a slab: its size label


@dataclass
class Slab:
    """One tensor on the main path: the layer that made it plus the layers folded into it."""

    nodes: list[Node]
    shape: tuple
    t: float = 0.0      # thickness (channels)
    fh: float = 0.0     # face height (rows)
    d: float = 0.0      # oblique depth offset (columns)
    x: float = 0.0      # left of the front face

    @property
    def right(self) -> float:
        return self.x + self.t + self.d


@dataclass
class Group:
    slabs: list[Slab]
    label: str
    sub: str
    size: str
    x: float = 0.0      # left of the column
    width: float = 0.0  # column width
    drawn: float = 0.0  # width of the slabs themselves


@dataclass
class Arc:
    src: int            # slab indices
    dst: int
    label: str


@dataclass
class Row:
    groups: list[Group] = field(default_factory=list)
    arcs: list[Arc] = field(default_factory=list)
    y: float = 0.0      # centre line


# ------------------------------------------------------------------ scales
@dataclass(frozen=True)
class Scale:
    """Pixels per size, relative to the largest map on the path (square root: 224 and 7 both show)."""

    max_side: float
    max_channels: float
    face: float = 150.0         # the largest height or width
    thick: float = 44.0         # the most channels

    def side(self, n: float) -> float:
        return max(12.0, self.face * math.sqrt(max(n, 1.0) / self.max_side))

    def channels(self, c: float) -> float:
        return max(4.0, self.thick * math.sqrt(max(c, 1.0) / self.max_channels))

    def bar(self, n: float) -> float:
        """A flat tensor's bar: logarithmic in its length, never taller than the largest map."""
        return min(10.0 + 12.0 * math.log2(max(n, 2.0)), self.face * 1.05)


def scale_of(shapes: list[list[float]]) -> Scale:
    maps = [s for s in shapes if len(s) == 3]
    side = max((max(s[1], s[2]) for s in maps), default=1.0)
    channels = max((s[0] for s in maps), default=1.0)
    return Scale(max(side, 1.0), max(channels, 1.0))


def nominal_env(net: Network) -> dict[str, int]:
    """A size per symbol to draw with, near 64 and a multiple of the smallest valid one (labels keep symbols)."""
    env = {}
    for sym, info in net.symbols.items():
        smallest = info.get("smallest") or 1
        env[sym] = smallest * max(1, math.ceil(64 / smallest))
    return env


def number(d: Any, env: dict[str, int]) -> float:
    if not is_symbolic(d):
        return float(d)
    try:
        return float(d.evaluate(env))
    except (KeyError, ValueError, ArithmeticError, SymbolicComparison):
        return 32.0  # an expression the nominal sizes cannot evaluate: any visible size will do


def _size_slab(slab: Slab, dims: list[float], scale: Scale) -> None:
    if len(dims) == 3:
        slab.t, slab.fh, slab.d = scale.channels(dims[0]), scale.side(dims[1]), scale.side(dims[2]) * 0.35
    else:
        slab.t, slab.fh, slab.d = 7.0, scale.bar(math.prod(dims) if dims else 1.0), 4.0


# ------------------------------------------------------------------ model
def _folds_into(net: Network, node: Node, slab: Slab) -> bool:
    same = style.shape_text(net.shapes[node.name]) == style.shape_text(slab.shape)
    return same and (style.family(node) in FOLDED_FAMILIES or node.op in FOLDED_OPS)


def slabs_of(net: Network, path: list[Node]) -> list[Slab]:
    slabs: list[Slab] = []
    for node in path:
        if slabs and node.op != "input" and _folds_into(net, node, slabs[-1]):
            slabs[-1].nodes.append(node)
        else:
            slabs.append(Slab([node], net.shapes[node.name]))
    return slabs


def _main_label(net: Network, slab: Slab) -> str:
    node = slab.nodes[0]
    ins = [net.shapes[i] for i in node.inputs]
    return style.op_label(node, ins[0][0] if ins and ins[0] else None, bool(ins) and len(ins[0]) == 2)


def _sub_label(slabs: list[Slab]) -> str:
    words = dict.fromkeys(style.short_label(n) for s in slabs for n in s.nodes[1:])
    return " · ".join(words)


def groups_of(net: Network, slabs: list[Slab]) -> list[Group]:
    """Consecutive slabs with the same op and shape share one label ('conv 3×3, 64 ×4')."""
    groups: list[Group] = []
    for slab in slabs:
        label, size = _main_label(net, slab), style.maps_text(slab.shape)
        last = groups[-1] if groups else None
        if last and last.size == size and _main_label(net, last.slabs[0]) == label and slab.nodes[0].op != "input":
            last.slabs.append(slab)
        else:
            groups.append(Group([slab], label, "", size))
    for g in groups:
        g.sub = _sub_label(g.slabs)
        if len(g.slabs) > 1:
            g.label += f"  ×{len(g.slabs)}"
    return groups


def arcs_of(net: Network, path: list[Node], slabs: list[Slab]) -> tuple[list[Arc], list[str]]:
    """An arc per (fork, merge) pair of slabs; notes for merges with no fork on the path."""
    slab_of = {n.name: i for i, s in enumerate(slabs) for n in s.nodes}
    on_path = {n.name: i for i, n in enumerate(path)}
    found: dict[tuple[int, int], list[list[Node]]] = {}
    notes = []
    for i, node in enumerate(path[1:], 1):
        for src in dict.fromkeys(node.inputs):
            if src == path[i - 1].name:
                continue
            fork, branch = _fork(net, src, on_path)
            if fork is None:
                notes.append(f"'{node.name}' also reads '{src}', which does not branch off the main path (not drawn)")
                continue
            a, b = slab_of[fork], slab_of[node.name]
            if a != b:
                found.setdefault((a, b), []).append(branch)
    return [Arc(a, b, _arc_label(branches)) for (a, b), branches in found.items()], notes


def _fork(net: Network, src: str, on_path: dict[str, int]) -> tuple[str | None, list[Node]]:
    """The latest main-path ancestor of `src`, and the off-path layers between them."""
    if src in on_path:
        return src, []
    seen, stack, forks = {src}, [src], []
    while stack:
        name = stack.pop()
        for p in net.node(name).inputs:
            if p in on_path:
                forks.append(p)
            elif p not in seen:
                seen.add(p)
                stack.append(p)
    if not forks:
        return None, []
    branch = [n for n in net.order() if n.name in seen]
    return max(forks, key=on_path.__getitem__), branch


def _arc_label(branches: list[list[Node]]) -> str:
    if len(branches) > 1:
        return f"{len(branches)} branches"
    branch = branches[0]
    if not branch:
        return "skip"
    weighty = [n for n in branch if style.family(n) in ("convolution", "pooling") or n.op == "linear"]
    if 0 < len(weighty) <= 2:
        return " → ".join(style.op_label(n) for n in weighty)
    return f"{len(branch)} layers"


# ------------------------------------------------------------------ layout
def _measure(group: Group) -> None:
    group.drawn = sum(s.t for s in group.slabs) + SLAB_GAP * (len(group.slabs) - 1) + group.slabs[-1].d
    texts = [text_width(group.label, LABEL, bold=True), text_width(group.sub, SMALL),
             text_width(group.size, SMALL)]
    group.width = max(group.drawn, *texts) + 10


def _rows(groups: list[Group], arcs: list[Arc], slabs: list[Slab]) -> list[Row]:
    """Rows of about equal width (about MAX_ROW px), broken where no arc crosses.

    An arc may leave from the last slab of a row: that tensor is the one carried
    to the next row, so the arc is drawn from where the connector enters it.
    """
    index = {id(s): i for i, s in enumerate(slabs)}
    last_slab = [index[id(g.slabs[-1])] for g in groups]
    breakable = [k for k in range(len(groups) - 1)
                 if not any(a.src < last_slab[k] < a.dst for a in arcs)]
    cum, total = [], 0.0
    for g in groups:
        total += g.width + ARROW_GAP
        cum.append(total)
    count = max(1, round(total / MAX_ROW))  # a short overflow stays on one row
    cuts: list[int] = []
    for r in range(1, count):
        options = [k for k in breakable if not cuts or k > cuts[-1]]
        best = min(options, key=lambda k: abs(cum[k] - r * total / count), default=None)
        if best is not None and abs(cum[best] - r * total / count) < 0.4 * total / count:
            cuts.append(best)  # else no break near the target: a lopsided row would look worse than a long one
    rows, start = [], 0
    for cut in cuts + [len(groups) - 1]:
        row = Row(groups[start:cut + 1])
        ids = {index[id(s)] for g in row.groups for s in g.slabs}
        row.arcs = [a for a in arcs if a.dst in ids]
        rows.append(row)
        start = cut + 1
    return rows


def _place_row(row: Row, x0: float) -> float:
    x = x0
    for g in row.groups:
        g.x = x
        sx = x + (g.width - g.drawn) / 2
        for s in g.slabs:
            s.x = sx
            sx += s.t + SLAB_GAP
        x += g.width + ARROW_GAP
    return x - ARROW_GAP


def _top(slab: Slab, y: float) -> float:
    return y - slab.fh / 2 - slab.d


def _up(row: Row) -> float:
    """Room above the centre line: slabs, their size labels, and the arcs over them."""
    up = max(s.fh / 2 + s.d for g in row.groups for s in g.slabs) + SIZE_ROOM
    if row.arcs:
        up += max(_arc_heights(row).values()) + 14
    return up


def _down(row: Row) -> float:
    return max(s.fh / 2 for g in row.groups for s in g.slabs)


def _arc_heights(row: Row) -> dict[int, float]:
    """Longer arcs fly higher, so nested skips (U-Net) never cross."""
    spans = sorted({a.dst - a.src for a in row.arcs})
    return {i: 16.0 + 12.0 * spans.index(a.dst - a.src) for i, a in enumerate(row.arcs)}


# ------------------------------------------------------------------ drawing
def _draw_slab(svg: Svg, slab: Slab, y: float) -> None:
    fill, border = style.colours(slab.nodes[0])
    if slab.nodes[0].op == "input":
        fill, border = "#f7f7f7", "#333333"
    x, t, h, d = slab.x, slab.t, slab.fh, slab.d
    top, bottom = y - h / 2, y + h / 2
    svg.polygon([(x, top), (x + d, top - d), (x + t + d, top - d), (x + t, top)], _shade(fill, 1.08), border, 0.8)
    svg.polygon([(x + t, top), (x + t + d, top - d), (x + t + d, bottom - d), (x + t, bottom)],
                _shade(fill, 0.86), border, 0.8)
    svg.rect(x, top, t, h, fill, border, 0.9)


def _shade(colour: str, factor: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    f = (lambda c: min(255, int(c + (255 - c) * (factor - 1) * 4))) if factor > 1 else (lambda c: int(c * factor))
    return f"#{f(r):02x}{f(g):02x}{f(b):02x}"


def _draw_group(svg: Svg, g: Group, y: float, down: float) -> None:
    for s in g.slabs:
        _draw_slab(svg, s, y)
    cx = g.x + g.width / 2
    top = min(_top(s, y) for s in g.slabs)
    svg.text(cx, top - 6, g.size, SMALL, fill="#222")
    svg.text(cx, y + down + 16, g.label, LABEL, bold=True)
    if g.sub:
        svg.text(cx, y + down + 30, g.sub, SMALL, fill=style.TEXT_GREY)


def _draw_arrows(svg: Svg, row: Row) -> None:
    for a, b in zip(row.groups, row.groups[1:]):
        x1 = max(s.right for s in a.slabs) + 4
        x2 = b.slabs[0].x - 4
        svg.line(x1, row.y, x2, row.y, "#444", 1.2, arrow="end")


def _draw_arcs(svg: Svg, row: Row, slabs: list[Slab]) -> None:
    """Each merge: an arc from above the fork's slab to above the merge's slab, clear of the sizes."""
    heights = _arc_heights(row)
    mine = {id(s) for g in row.groups for s in g.slabs}
    tops = {i: _top(slabs[i], row.y) - SIZE_ROOM for a in row.arcs for i in (a.src, a.dst)
            if id(slabs[i]) in mine}
    ceiling = min(tops.values(), default=row.y)
    entry = row.groups[0].slabs[0].x - 14  # where the connector from the previous row comes down
    for i, arc in enumerate(row.arcs):
        a, b = slabs[arc.src], slabs[arc.dst]
        x1, x2 = (a.x + (a.t + a.d) / 2, b.x + (b.t + b.d) / 2) if id(a) in mine else (entry, b.x + (b.t + b.d) / 2)
        y1, y2, apex = tops.get(arc.src, ceiling), tops[arc.dst], ceiling - heights[i]
        svg.path(f"M{x1:.1f},{y1:.1f} C{x1:.1f},{apex:.1f} {x2:.1f},{apex:.1f} {x2:.1f},{y2:.1f}",
                 style.SKIP_COLOUR, 1.3, arrow="end")
        if arc.label and arc.label != "skip":
            # The curve's highest point lies a quarter of the way from apex to ends.
            peak = 0.25 * min(y1, y2) + 0.75 * apex
            svg.text((x1 + x2) / 2, peak - 4, arc.label, 8.5, fill=style.SKIP_COLOUR)


def _draw_turn(svg: Svg, upper: Row, lower: Row, y_mid: float) -> None:
    """The arrow from the end of one row to the start of the next."""
    last = upper.groups[-1]
    x1 = max(s.right for s in last.slabs) + 4
    x2 = lower.groups[0].slabs[0].x
    svg.polyline([(x1, upper.y), (x1 + 12, upper.y), (x1 + 12, y_mid), (x2 - 14, y_mid),
                  (x2 - 14, lower.y), (x2 - 4, lower.y)], "#444", 1.2, arrow="end")


def figure_svg(compiled: Compiled) -> str:
    """The architecture figure of the main path, as an SVG document."""
    net = compiled.net
    path = main_path(net)
    slabs = slabs_of(net, path)
    env = nominal_env(net)
    dims = [[number(d, env) for d in s.shape] for s in slabs]
    scale = scale_of(dims)
    for s, d in zip(slabs, dims):
        _size_slab(s, d, scale)
    groups = groups_of(net, slabs)
    for g in groups:
        _measure(g)
    arcs, notes = arcs_of(net, path, slabs)
    rows = _rows(groups, arcs, slabs)
    width = max(_place_row(r, MARGIN + 16) for r in rows) + MARGIN + 16

    y = MARGIN + 40  # title and subtitle
    bottoms = []
    for r in rows:
        r.y = y + _up(r)
        bottoms.append(r.y + _down(r) + 40)
        y = bottoms[-1] + 18
    height = y + 8 + 16 * (1 + len(notes))

    svg = Svg(width, height, f"{net.name} architecture")
    _title(svg, compiled, width)
    for k, r in enumerate(rows):
        for g in r.groups:
            _draw_group(svg, g, r.y, _down(r))
        _draw_arrows(svg, r)
        _draw_arcs(svg, r, slabs)
        if k + 1 < len(rows):
            _draw_turn(svg, r, rows[k + 1], bottoms[k] + 6)
    _footer(svg, net, path, arcs, notes, env, height)
    return svg.render()


def _title(svg: Svg, compiled: Compiled, width: float) -> None:
    net, totals = compiled.net, compiled.analysis.totals()
    svg.text(MARGIN, MARGIN + 14, net.name, 17, anchor="start", bold=True)
    inputs = ", ".join(f"{k} {style.maps_text(s)}" for k, s in net.inputs.items())
    svg.text(MARGIN, MARGIN + 32, f"{style.totals_text(totals)} · input {inputs}", 11, anchor="start",
             fill=style.TEXT_GREY)


def _footer(svg: Svg, net: Network, path: list[Node], arcs: list[Arc], notes: list[str],
            env: dict[str, int], height: float) -> None:
    layers = len(net.layers())
    drawn = len([n for n in path if n.op != "input"])
    parts = []
    if drawn < layers:
        parts.append(f"main path: {drawn} of {layers} layers")
    if arcs:
        parts.append(f"{len(arcs)} merge{'s' if len(arcs) != 1 else ''} drawn as arcs from fork to merge")
    parts.append("sizes on a square-root scale")
    if env:
        parts.append("drawn at " + ", ".join(f"{k} = {v}" for k, v in env.items()))
    text = "; ".join(parts)
    y = height - 12 - 16 * len(notes)
    svg.text(MARGIN, y, text, 9.5, anchor="start", fill=style.TEXT_GREY)
    for k, note in enumerate(notes):
        svg.text(MARGIN, y + 16 * (k + 1), note, 9.5, anchor="start", fill=style.TEXT_GREY)
