"""Stage 4 (viz): receptive-field pictures, read from the compiler's analysis.

`rf_svg` charts how the receptive field grows along the main path: a step
line of its size per layer (rows, and columns when they differ), the
effective stride on a second, logarithmic axis, and the input size as a
reference line. `rf_grid_svg` draws the field of one output unit over the
input grid: for unit i on an axis with size r, effective stride S and
padding P the field covers input rows -P + i·S … -P + i·S + r - 1, clipped to
the input, with the part that falls on padding shown as such. Strides are
exact fractions (transposed convolution and upsampling make them fractional);
nothing here assumes they are integers.
"""
from __future__ import annotations

import difflib
import math
import re
from fractions import Fraction

from ..compiler.analysis import FieldState
from ..compiler.driver import Compiled
from ..compiler.graph import Network, Node
from ..compiler.symbolic import is_symbolic
from ..dsl.source import CnncError
from . import style
from .figure import slabs_of
from .svg import Svg, fmt, nice_ticks, text_width
from .view import main_path

SIZE_COLOUR = "#2f6aa8"
WIDTH_COLOUR = "#3b8a3e"
STRIDE_COLOUR = "#c8731e"
FIELD_COLOUR = "#d6336c"


# --------------------------------------------------------------- the chart
def _points(net: Network, fields: dict) -> list[tuple[Node, tuple[FieldState, FieldState] | None]]:
    """One point per drawn slab of the main path (folded layers do not change the field)."""
    out = []
    for slab in slabs_of(net, main_path(net)):
        out.append((slab.nodes[0], fields.get(slab.nodes[-1].name)))
    return out


def _input_side(net: Network, axis: int) -> int | None:
    shape = next(iter(net.inputs.values()), ())
    if len(shape) != 3 or is_symbolic(shape[axis + 1]):
        return None
    return int(shape[axis + 1])


def rf_svg(compiled: Compiled) -> str:
    """The receptive field's growth along the main path, as an SVG chart."""
    net, fields = compiled.net, compiled.analysis.rf
    points = _points(net, fields)
    if not any(f is not None for _, f in points[1:]):
        raise CnncError(f"{net.name} has no spatial layer: there is no receptive field to chart",
                        hint="receptive fields need a [C, H, W] input and convolution or pooling layers")
    labels = [style.op_label(n) if n.op != "input" else f"input {n.name}" for n, _ in points]
    ref = _input_side(net, 0)
    sizes = [float(f[0].size) for _, f in points if f is not None]
    top = max(sizes + ([ref] if ref else []))
    two_axes = any(f is not None and f[0].size != f[1].size for _, f in points)

    left, right, upper = 70.0, 70.0, 74.0
    step = max(30.0, min(60.0, 900.0 / max(len(points), 1)))
    plot_w = step * (len(points) - 1) + 40
    lower = max(text_width(t, 9.5) for t in labels) * 0.72 + 40  # room for the slanted labels
    plot_h = 300.0
    svg = Svg(left + plot_w + right, upper + plot_h + lower + 30, f"{net.name} receptive field")
    x_of = lambda k: left + 20 + k * step
    yticks = nice_ticks(0, top * 1.05, 6)
    y_of = lambda v: upper + plot_h - plot_h * v / yticks[-1]

    _axes(svg, left, upper, plot_w, plot_h, yticks, y_of)
    _stride_axis(svg, points, left + plot_w, upper, plot_h, x_of)
    if ref:
        svg.line(left, y_of(ref), left + plot_w, y_of(ref), "#888", 1.0, dash="5,4")
        svg.text(left + 6, y_of(ref) - 5, f"input size {ref}", 9.5, anchor="start", fill="#666")
    _series(svg, points, 0, SIZE_COLOUR, x_of, y_of, ref, label_values=True)
    if two_axes:
        _series(svg, points, 1, WIDTH_COLOUR, x_of, y_of, _input_side(net, 1), label_values=False)
    for k, text in enumerate(labels):
        svg.text(x_of(k) + 3, upper + plot_h + 14, text, 9.5, anchor="end", rotate=-40)
    _chart_title(svg, net, points, two_axes, left)
    return svg.render()


def _axes(svg: Svg, left: float, upper: float, w: float, h: float, ticks: list[float], y_of) -> None:
    svg.rect(left, upper, w, h, "none", "#999", 0.8)
    for t in ticks:
        y = y_of(t)
        svg.line(left, y, left + w, y, "#e6e6e6", 0.8)
        svg.text(left - 6, y + 3.5, fmt(t), 9.5, anchor="end", fill="#333")
    svg.text(left - 48, upper + h / 2, "receptive field (input pixels)", 10.5, rotate=-90, fill=SIZE_COLOUR)


def _stride_axis(svg: Svg, points: list, x_right: float, upper: float, h: float, x_of) -> None:
    """Effective stride on a log2 axis at the right; fractions (after upsampling) go below 1."""
    strides = [f[0].stride for _, f in points if f is not None]
    lo = min(0, math.floor(math.log2(min(strides))))
    hi = max(1, math.ceil(math.log2(max(strides))))
    y_of = lambda s: upper + h - h * (math.log2(s) - lo) / (hi - lo)
    for e in range(lo, hi + 1):
        value = Fraction(2) ** e
        svg.text(x_right + 6, y_of(value) + 3.5, style.frac(value), 9.5, anchor="start", fill=STRIDE_COLOUR)
    svg.text(x_right + 50, upper + h / 2, "effective stride (log scale)", 10.5, rotate=90, fill=STRIDE_COLOUR)
    pts = []
    for k, (_, f) in enumerate(points):
        if f is None:
            break
        y = y_of(f[0].stride)
        if pts:
            pts.append((x_of(k), pts[-1][1]))
        pts.append((x_of(k), y))
    if len(pts) > 1:
        svg.polyline(pts, STRIDE_COLOUR, 1.4, dash="4,3")


def _series(svg: Svg, points: list, axis: int, colour: str, x_of, y_of, ref: int | None,
            label_values: bool) -> None:
    """A step line of the field size; after global pooling, hollow markers at 'whole input'."""
    line: list[tuple[float, float]] = []
    for k, (_, f) in enumerate(points):
        if f is None:
            if ref:
                svg.circle(x_of(k), y_of(ref), 3.5, "white", colour, 1.4)
                if label_values:
                    svg.text(x_of(k), y_of(ref) - 8, "all", 8.5, fill=colour)
            continue
        state = f[axis]
        y = y_of(float(state.size))
        if line:
            line.append((x_of(k), line[-1][1]))
        line.append((x_of(k), y))
        svg.circle(x_of(k), y, 3.0, colour if state.exact else "white", colour, 1.3)
        if label_values:
            svg.text(x_of(k), y - 8, style.frac(state.size), 8.5, fill=colour)
    if len(line) > 1:
        svg.polyline(line, colour, 1.8)


def _chart_title(svg: Svg, net: Network, points: list, two_axes: bool, left: float) -> None:
    svg.text(left, 26, f"{net.name}: receptive field along the main path", 15, anchor="start", bold=True)
    keys = [("field size (rows)" if two_axes else "field size", SIZE_COLOUR, "")]
    if two_axes:
        keys.append(("field size (columns)", WIDTH_COLOUR, ""))
    keys.append(("effective stride", STRIDE_COLOUR, "4,3"))
    x = left
    for text, colour, dash in keys:
        svg.line(x, 46, x + 22, 46, colour, 1.8, dash=dash)
        svg.text(x + 27, 50, text, 10, anchor="start")
        x += 40 + text_width(text, 10)
    notes = []
    if any(f is not None and not (f[0].exact and f[1].exact) for _, f in points):
        notes.append("hollow: approximate, after transposed convolution or upsampling")
    if any(f is None for _, f in points[1:]):
        notes.append("'all': after global pooling or flatten each unit sees the whole input")
    if notes:
        svg.text(x + 6, 50, "; ".join(notes), 9.5, anchor="start", fill="#666")


# ---------------------------------------------------------------- the grid
def default_layer(net: Network, fields: dict) -> Node:
    """The last layer of the main path that still has a spatial field."""
    for node in reversed(main_path(net)):
        if node.op != "input" and fields.get(node.name) is not None and len(net.shapes[node.name]) == 3:
            return node
    raise CnncError(f"no layer of {net.name} has a spatial receptive field",
                    hint="receptive fields need a [C, H, W] input and convolution or pooling layers")


def find_layer(net: Network, name: str) -> Node:
    if name in net.graph:
        return net.node(name)
    names = list(net.graph.nodes)
    # Numbered siblings first ('conv' -> 'conv_1'), then whatever difflib finds closest.
    close = list(dict.fromkeys([n for n in names if re.fullmatch(re.escape(name) + r"_\d+", n)][:2]
                               + difflib.get_close_matches(name, names, n=2)))[:2]
    if close:
        hint = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    else:
        hint = "`cnnc compile FILE` lists the layer names"
    raise CnncError(f"--layer {name}: {net.name} has no layer of that name", hint=hint)


def parse_unit(text: str) -> tuple[int, int]:
    parts = text.replace(" ", "").split(",")
    try:
        i, j = (int(p) for p in parts)
    except ValueError:
        raise CnncError(f"--unit {text}: expected two integers I,J (row, column), e.g. --unit 3,4") from None
    return i, j


def _concrete(net: Network, node: Node) -> tuple[tuple[int, int], tuple[int, int]]:
    """(input H, W) and (output H, W) as ints, or an error asking for --input."""
    source = next((i for i in net.inputs if i == node.name or i in _ancestors(net, node.name)), None)
    shape_in = net.inputs[source] if source else ()
    shape_out = net.shapes[node.name]
    if len(shape_in) != 3 or len(shape_out) != 3:
        raise CnncError(f"'{node.name}' has no spatial receptive field over a [C, H, W] input")
    if any(is_symbolic(d) for d in (*shape_in[1:], *shape_out[1:])):
        raise CnncError(f"the input size of {net.name} is symbolic ({style.shape_text(shape_in)})",
                        hint=f"bind it to draw the grid, e.g. --input {source}="
                             f"{'x'.join(str(d) if not is_symbolic(d) else '64' for d in shape_in)}")
    return (int(shape_in[1]), int(shape_in[2])), (int(shape_out[1]), int(shape_out[2]))


def _ancestors(net: Network, name: str) -> set[str]:
    import networkx as nx
    return nx.ancestors(net.graph, name)


def _unit(text: str | None, out_hw: tuple[int, int], node: Node) -> tuple[int, int]:
    if text is None:
        return (out_hw[0] - 1) // 2, (out_hw[1] - 1) // 2
    i, j = parse_unit(text)
    if not (0 <= i < out_hw[0] and 0 <= j < out_hw[1]):
        raise CnncError(f"--unit {i},{j}: '{node.name}' has {out_hw[0]}×{out_hw[1]} units",
                        hint=f"rows go from 0 to {out_hw[0] - 1}, columns from 0 to {out_hw[1] - 1}")
    return i, j


def field_span(state: FieldState, index: int) -> tuple[Fraction, Fraction]:
    """First and last input row (or column) unit `index` sees: -P + i·S … -P + i·S + r - 1."""
    start = -state.padding + index * state.stride
    return start, start + state.size - 1


def rf_grid_svg(compiled: Compiled, layer: str | None = None, unit: str | None = None) -> str:
    """The field of one unit of `layer` (default: the last spatial layer, centre unit) over the input."""
    net, fields = compiled.net, compiled.analysis.rf
    node = find_layer(net, layer) if layer else default_layer(net, fields)
    if fields.get(node.name) is None:
        hint = f"try --layer {default_layer(net, fields).name}"
        raise CnncError(f"'{node.name}' has no spatial receptive field: after global pooling or flatten "
                        "each unit sees the whole input", hint=hint)
    in_hw, out_hw = _concrete(net, node)
    i, j = _unit(unit, out_hw, node)
    rows, cols = (field_span(fields[node.name][a], k) for a, k in ((0, i), (1, j)))
    return _draw_grid(net, node, fields[node.name], (i, j), in_hw, rows, cols)


def _draw_grid(net: Network, node: Node, rf: tuple[FieldState, FieldState], ij: tuple[int, int],
               in_hw: tuple[int, int], rows: tuple, cols: tuple) -> str:
    (h, w), (r0, r1), (c0, c1) = in_hw, rows, cols
    lo_r, hi_r = min(0.0, float(r0)), max(h - 1.0, float(r1))
    lo_c, hi_c = min(0.0, float(c0)), max(w - 1.0, float(c1))
    cell = min(18.0, 560.0 / max(hi_r - lo_r + 1, hi_c - lo_c + 1))
    ox, oy = 60.0 - lo_c * cell, 120.0 - lo_r * cell  # pixel (0, 0) at (ox, oy)
    width = max(60 + (hi_c - lo_c + 1) * cell + 60, 640)
    svg = Svg(width, 120 + (hi_r - lo_r + 1) * cell + 110, f"receptive field of {node.name}")
    X = lambda c: ox + c * cell
    Y = lambda r: oy + r * cell

    # The whole view (input plus padding the field reaches): padding hatched grey.
    svg.rect(X(lo_c), Y(lo_r), (hi_c - lo_c + 1) * cell, (hi_r - lo_r + 1) * cell, "#efefef", "none")
    svg.raw(_hatch(X(lo_c), Y(lo_r), (hi_c - lo_c + 1) * cell, (hi_r - lo_r + 1) * cell, cell))
    svg.rect(X(0), Y(0), w * cell, h * cell, "white", "none")
    _grid_lines(svg, h, w, cell, X, Y)
    svg.rect(X(0), Y(0), w * cell, h * cell, "none", "#333", 1.4)

    # The field: translucent over padding, stronger where it covers real pixels.
    fx, fy, fw, fh = X(float(c0)), Y(float(r0)), float(c1 - c0 + 1) * cell, float(r1 - r0 + 1) * cell
    svg.rect(fx, fy, fw, fh, FIELD_COLOUR, "none", opacity=0.12)
    cr0, cr1, cc0, cc1 = max(float(r0), 0), min(float(r1), h - 1), max(float(c0), 0), min(float(c1), w - 1)
    if cr0 <= cr1 and cc0 <= cc1:
        svg.rect(X(cc0), Y(cr0), (cc1 - cc0 + 1) * cell, (cr1 - cr0 + 1) * cell, FIELD_COLOUR, "none", opacity=0.25)
    svg.rect(fx, fy, fw, fh, "none", FIELD_COLOUR, 2.0)
    centre_r, centre_c = (float(r0) + float(r1)) / 2, (float(c0) + float(c1)) / 2
    svg.circle(X(centre_c) + cell / 2, Y(centre_r) + cell / 2, max(2.5, min(cell / 3, 5)), FIELD_COLOUR)

    _grid_axes(svg, h, w, cell, X, Y, Y(lo_r), X(lo_c))
    _grid_text(svg, net, node, rf, ij, in_hw, rows, cols, (cr0, cr1, cc0, cc1), Y(hi_r + 1) + 40)
    return svg.render()


def _grid_lines(svg: Svg, h: int, w: int, cell: float, X, Y) -> None:
    """Every pixel when cells are big enough to see; otherwise every 2^k pixels."""
    every = 1
    while cell * every < 6:
        every *= 2
    for r in range(0, h + 1, every):
        svg.line(X(0), Y(r), X(w), Y(r), "#d9d9d9", 0.6)
    for c in range(0, w + 1, every):
        svg.line(X(c), Y(0), X(c), Y(h), "#d9d9d9", 0.6)


def _grid_axes(svg: Svg, h: int, w: int, cell: float, X, Y, top: float, left: float) -> None:
    """Pixel indices along the top and left edges of the view (outside any padding)."""
    for k in _index_ticks(w):
        svg.text(X(k) + cell / 2, top - 6, str(k), 9, fill="#444")
    for k in _index_ticks(h):
        svg.text(left - 6, Y(k) + cell / 2 + 3, str(k), 9, anchor="end", fill="#444")


def _index_ticks(n: int) -> list[int]:
    """Round indices plus the last one, unless the last would crowd its neighbour."""
    ticks = sorted({int(t) for t in nice_ticks(0, n - 1, 6) if 0 <= t <= n - 1})
    step = ticks[1] - ticks[0] if len(ticks) > 1 else n
    if n - 1 - ticks[-1] >= step / 2:
        ticks.append(n - 1)
    elif ticks[-1] != n - 1 and len(ticks) > 1:
        ticks[-1] = n - 1
    return ticks


def _hatch(x: float, y: float, w: float, h: float, cell: float) -> str:
    """Diagonal lines over the padding (the input is painted white over them)."""
    gap = max(6.0, cell)
    lines, k = [], -h
    while k < w:
        lines.append(f"M{x + k:.1f},{y + h:.1f} L{x + k + h:.1f},{y:.1f}")
        k += gap
    return (f'<clipPath id="pad-clip"><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"/></clipPath>'
            f'<path d="{" ".join(lines)}" stroke="#cfcfcf" stroke-width="0.8" clip-path="url(#pad-clip)"/>')


def _grid_text(svg: Svg, net: Network, node: Node, rf: tuple, ij: tuple[int, int], in_hw: tuple,
               rows: tuple, cols: tuple, clipped: tuple, y_below: float) -> None:
    i, j = ij
    svg.text(20, 28, f"{net.name}: receptive field of unit ({i}, {j}) of '{node.name}'", 15,
             anchor="start", bold=True)
    shape = style.shape_text(net.shapes[node.name])
    svg.text(20, 48, f"{style.op_label(node)} → {shape};  input {in_hw[0]}×{in_hw[1]} "
             "(hatched: padding)", 10.5, anchor="start", fill=style.TEXT_GREY)
    f = style.frac
    lines = [f"rows {f(rows[0])} … {f(rows[1])}  (size {f(rf[0].size)}, stride {f(rf[0].stride)}, "
             f"padding {f(rf[0].padding)})",
             f"columns {f(cols[0])} … {f(cols[1])}  (size {f(rf[1].size)}, stride {f(rf[1].stride)}, "
             f"padding {f(rf[1].padding)})"]
    cr0, cr1, cc0, cc1 = clipped
    if cr0 <= cr1 and cc0 <= cc1:
        lines.append(f"on the input: rows {fmt(cr0)} … {fmt(cr1)}, columns {fmt(cc0)} … {fmt(cc1)}")
    for k, text in enumerate(lines):
        svg.text(20, 70 + 15 * k, text, 10.5, anchor="start", fill="#222")
    if not (rf[0].exact and rf[1].exact):
        svg.text(20, y_below, "approximate: this layer follows a transposed convolution or upsampling "
                 "(fractional stride)", 10, anchor="start", fill="#666")
