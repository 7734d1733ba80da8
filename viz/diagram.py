"""Stage 4 (viz): the Graphviz diagram of a network, built with the `graphviz` package.

One node per layer (op, key attributes, output shape; with `details`, params,
MACs and receptive field), edges labelled with tensor shapes, block instances
as nested clusters, `block * N` folded into one "×N" cluster, blocks deeper
than `depth` collapsed to one node, skip connections in their own colour,
fused conv-batchnorm-relu groups in a dashed cluster, fills by op family and a
legend. `diagram` returns the `graphviz.Digraph`; `render` runs `dot` and turns
a missing Graphviz installation into a one-line hint. The layout is read from
`view.build_view`; the compiler's graph is never touched.
"""
from __future__ import annotations

import shutil
from html import escape

import graphviz

from ..compiler.analysis import Analysis
from ..compiler.driver import Compiled
from ..compiler.graph import Network
from ..compiler.symbolic import is_symbolic
from ..dsl.source import CnncError
from . import style
from .style import FAMILY_COLOURS, FONT, TEXT_GREY
from .view import Cluster, Edge, Item, View, build_view, item_shape, item_totals

INSTALL_HINT = ("install Graphviz (apt-get install graphviz, or brew install graphviz), "
                "or write a .dot file, or use --style figure for an SVG drawn without it")


def h(text: str) -> str:
    """Escape text for a Graphviz HTML-like label."""
    return escape(str(text), quote=True)


# ------------------------------------------------------------------ labels
def _layer_label(net: Network, a: Analysis, item: Item, details: bool) -> str:
    node = item.nodes[0]
    user, op = style.layer_head(net, node)
    head = f"<B>{h(op)}</B>"
    if user:
        head = f"<I>{h(user)}</I>  " + head
    lines = [head, _small(style.shape_text(net.shapes[node.name]))]
    if details and node.op != "input":
        lines += _detail_lines(a, item, with_rf=True)
    return "<" + "<BR/>".join(lines) + ">"


def _block_label(net: Network, a: Analysis, item: Item, details: bool) -> str:
    instance = item.id[1:].rsplit(".", 1)[-1]
    head = f"<B>{h(item.block)}</B>"
    if instance != item.block:
        head += f"  <I>{h(instance)}</I>"
    params, macs = item_totals(a, item.nodes)
    lines = [head, _small(style.block_summary(len(item.nodes), params, macs)),
             _small(style.shape_text(item_shape(net, item)))]
    if details:
        lines.append(_small(f"RF {style.field_text(a.rf.get(item.out.name))}"))
    return "<" + "<BR/>".join(lines) + ">"


def _detail_lines(a: Analysis, item: Item, with_rf: bool) -> list[str]:
    params, macs = item_totals(a, item.nodes)
    parts = []
    if params:
        parts.append(f"{style.human(params)} params")
    if is_symbolic(macs) or macs:
        parts.append(f"{style.human(macs)} MACs")
    lines = [_small(" · ".join(parts))] if parts else []
    if with_rf:
        lines.append(_small(f"RF {style.field_text(a.rf.get(item.out.name))}"))
    return lines


def _small(text: str, size: int = 9, colour: str = TEXT_GREY) -> str:
    return f'<FONT POINT-SIZE="{size}" COLOR="{colour}">{h(text)}</FONT>'


def _cluster_label(c: Cluster) -> str:
    """Short on purpose: edges enter a cluster near its middle, and a wide label would sit under them."""
    if c.kind == "fused":
        return f'<<FONT COLOR="{style.FUSED_COLOUR}">fused</FONT>>'
    if c.kind == "fold":
        return f'<<B>{h(c.block)} <FONT COLOR="{style.FOLD_COLOUR}">×{c.count}</FONT></B>>'
    return f"<<B>{h(c.instance)}</B>>"


def _cluster_tooltip(c: Cluster, view: View, a: Analysis) -> str:
    """The rest goes into the tooltip (shown on hover in SVG): block name, repeats, totals."""
    if c.kind == "fused":
        return "conv → batchnorm → relu, fusable into one kernel"
    if c.kind == "fold":
        fold = view.folds[_fold_group(c, view)]
        params, macs = item_totals(a, [n for ns in fold.nodes.values() for n in ns])
        return (f"{c.instance} … {c.last}: block {c.block} repeated {c.count} times, first drawn; "
                f"all {c.count}: {style.human(params)} params, {style.human(macs)} MACs")
    return f"{c.instance}: instance of block {c.block}"


def _fold_group(c: Cluster, view: View) -> str:
    if c.key.startswith("fold:"):
        return c.key[5:]
    return next(g for g, f in view.folds.items() if f.instances.get(0) == c.key)


# ------------------------------------------------------------------ graph
def diagram(compiled: Compiled, depth: int | None = None, expand: bool = False, details: bool = False,
            rankdir: str = "TB", fuse: bool = False) -> graphviz.Digraph:
    """The network as a `graphviz.Digraph` (see the module docstring)."""
    net, a = compiled.net, compiled.analysis
    view = build_view(net, depth=depth, expand=expand, fuse=fuse)
    g = graphviz.Digraph(net.name, graph_attr=_graph_attrs(compiled, rankdir, view),
                         node_attr={"fontname": FONT, "fontsize": "11", "shape": "box",
                                    "style": "rounded,filled", "margin": "0.12,0.05", "height": "0.3"},
                         edge_attr={"fontname": FONT, "fontsize": "8", "fontcolor": TEXT_GREY,
                                    "color": "#4a4a4a", "arrowsize": "0.6"})
    bodies = {key: graphviz.Digraph(name=_cluster_id(key)) for key in view.clusters}
    for item in view.items.values():
        target = bodies[item.clusters[-1]] if item.clusters else g
        target.node(item.id, **_node_attrs(net, a, item, details))
    _nest_clusters(g, bodies, view, a)
    for e in view.edges:
        g.edge(e.src, e.dst, **_edge_attrs(e))
    return g


def _graph_attrs(compiled: Compiled, rankdir: str, view: View) -> dict[str, str]:
    net, totals = compiled.net, compiled.analysis.totals()
    inputs = ", ".join(f"{k} {style.shape_text(s)}" for k, s in net.inputs.items())
    summary = f"{style.totals_text(totals)} · input {inputs}"
    title = ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
             f'<TR><TD><FONT POINT-SIZE="15"><B>{h(net.name)}</B></FONT></TD></TR>'
             f"<TR><TD>{_small(summary, 10)}</TD></TR>"
             f"<TR><TD>{_legend(view, 3 if rankdir == 'TB' else 5)}</TD></TR></TABLE>>")
    return {"rankdir": rankdir, "fontname": FONT, "fontsize": "14", "label": title, "labelloc": "t",
            "nodesep": "0.35", "ranksep": "0.28", "newrank": "true", "compound": "true",
            "pad": "0.2", "bgcolor": "white"}


def _cluster_id(key: str) -> str:
    return "cluster_" + key.replace(":", "_")


def _node_attrs(net: Network, a: Analysis, item: Item, details: bool) -> dict[str, str]:
    if item.kind == "block":
        fill, border = style.BLOCK_COLOURS
        # A double border marks a collapsed block (dot does not clip edges at box3d nodes:
        # they would run through the label).
        return {"label": _block_label(net, a, item, details), "shape": "box", "style": "filled",
                "peripheries": "2", "fillcolor": fill, "color": border}
    node = item.nodes[0]
    fill, border = style.colours(node)
    attrs = {"label": _layer_label(net, a, item, details), "fillcolor": fill, "color": border}
    if node.op == "input" or node.name in net.outputs:
        attrs["penwidth"] = "2"
    return attrs


def _nest_clusters(g: graphviz.Digraph, bodies: dict[str, graphviz.Digraph], view: View,
                   a: Analysis) -> None:
    """Attach clusters innermost first: `subgraph()` copies a body, so children must be complete."""
    depth_of = {k: _depth(view, k) for k in view.clusters}
    for key in sorted(view.clusters, key=lambda k: -depth_of[k]):
        c, body = view.clusters[key], bodies[key]
        body.attr(**_cluster_attrs(c, view, a, depth_of[key]))
        (bodies[c.parent] if c.parent else g).subgraph(body)


def _depth(view: View, key: str) -> int:
    d, c = 0, view.clusters[key]
    while c.parent is not None:
        d, c = d + 1, view.clusters[c.parent]
    return d


def _cluster_attrs(c: Cluster, view: View, a: Analysis, depth: int) -> dict[str, str]:
    base = {"label": _cluster_label(c), "tooltip": _cluster_tooltip(c, view, a), "fontname": FONT,
            "fontsize": "11", "labeljust": "l", "margin": "8"}
    if c.kind == "fused":
        return {**base, "style": "dashed,rounded", "color": style.FUSED_COLOUR, "penwidth": "1.2"}
    fill = style.CLUSTER_FILLS[min(depth, len(style.CLUSTER_FILLS) - 1)]
    if c.kind == "fold":
        return {**base, "style": "rounded,filled", "fillcolor": fill, "color": style.FOLD_COLOUR, "penwidth": "2"}
    return {**base, "style": "rounded,filled", "fillcolor": fill, "color": "#9aa5b1"}


def _edge_attrs(e: Edge) -> dict[str, str]:
    attrs = {"label": style.shape_text(e.shape)}
    if e.skip:
        # A skip keeps its rank constraint (it still points forward) but pulls nothing into line.
        attrs.update(color=style.SKIP_COLOUR, fontcolor=style.SKIP_COLOUR, penwidth="1.6", weight="0")
    elif e.main:
        attrs["weight"] = "4"
    return attrs


def _legend_entries(view: View) -> list[tuple[str, str, str]]:
    """(swatch cell attributes, swatch text, meaning) for what this drawing uses."""
    families = {style.family(n) for item in view.items.values() if item.kind == "layer" for n in item.nodes}
    entries = []
    for fam in style.FAMILY_ORDER:
        if fam in families:
            fill, border = FAMILY_COLOURS[fam]
            entries.append((f'BGCOLOR="{fill}" COLOR="{border}"', "", fam))
    if any(i.kind == "block" for i in view.items.values()):
        entries.append(('BGCOLOR="white" COLOR="#444444"', "", "collapsed block"))
    if view.folds:
        entries.append((f'COLOR="{style.FOLD_COLOUR}"', "", "repeated block ×N"))
    if any(e.skip for e in view.edges):
        entries.append(('BORDER="0"', f'<FONT COLOR="{style.SKIP_COLOUR}" POINT-SIZE="12"><B>⟶</B></FONT>', "skip connection"))
    if any(c.kind == "fused" for c in view.clusters.values()):
        entries.append((f'STYLE="dashed" COLOR="{style.FUSED_COLOUR}"', "", "fused group"))
    return entries


def _legend(view: View, per_row: int) -> str:
    """The legend as an HTML table: it rides in the graph's title, so it never displaces a node."""
    cells = []
    for attrs, swatch, text in _legend_entries(view):
        if "BORDER=" not in attrs:
            attrs += ' BORDER="1"'
        size = 'WIDTH="22" HEIGHT="12" FIXEDSIZE="TRUE"' if not swatch else 'WIDTH="22"'
        cells.append(f'<TD {attrs} {size}>{swatch}</TD>'
                     f'<TD ALIGN="LEFT">{_small(text, 9, "#222222")}</TD>')
    rows = ["<TR>" + "".join(cells[i:i + per_row]) + "</TR>" for i in range(0, len(cells), per_row)]
    return ('<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1" ID="legend">'
            + "".join(rows) + "</TABLE>")


# ----------------------------------------------------------------- output
def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(g: graphviz.Digraph, fmt: str, target: str = "") -> bytes:
    """Run `dot`; a missing Graphviz becomes a CnncError with a one-line hint."""
    what = f"'{target}'" if target else f"a {fmt.upper()} file"
    if not dot_available():
        raise CnncError(f"cannot write {what}: the Graphviz program 'dot' is not installed", hint=INSTALL_HINT)
    src = g
    if fmt == "png":
        src = g.copy()
        src.attr(dpi="144")  # crisp on slides and in print; vector formats ignore it
    try:
        return src.pipe(format=fmt, quiet=True)  # dot's layout warnings are not the user's concern
    except graphviz.ExecutableNotFound:
        raise CnncError(f"cannot write {what}: the Graphviz program 'dot' is not installed",
                        hint=INSTALL_HINT) from None
    except graphviz.CalledProcessError as err:
        detail = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise CnncError(f"Graphviz failed to draw {what}: {detail[-1] if detail else err}") from None


def diagram_svg(compiled: Compiled) -> str:
    """SVG for notebooks: the Graphviz diagram, or the architecture figure without Graphviz."""
    try:
        return render(diagram(compiled), "svg").decode("utf-8")
    except CnncError:
        from .figure import figure_svg
        return figure_svg(compiled)
