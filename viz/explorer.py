"""Stage 4 (viz): the explorer — a network as one self-contained HTML page to open, fold, click and watch.

`page_data` turns a compiled network into the page's data: every layer with
the figures of `cnnc compile --format json` (compiler/report.py, asked, not
recomputed), its label and colours from style.py (the static diagrams' one
home), its source lines and fused group; the block instances and `block * N`
repeats as a tree of foldable containers with their totals; and, when given,
what the network computes on an image (`Inside`: feature maps with the
display mapping of `cnnc apply`, kernels, top classes, a mask) and the
training curves of a metrics file, with each recorded layer's diagnostics
(viz/diagnostics.py `layer_diagnostics`: its strips over the epochs and its
histograms) for its panel. `page_html` writes the page: the data, the
vendored layout library (assets/dagre.min.js) and assets/explorer.js inline,
under a Content-Security-Policy that allows no request at all (only the
live page of `cnnc view` may fetch from its own server).

Safety: the page's HTML has no user text in it. Every name, path and string
from a `.cnn` file or a checkpoint travels in one JSON object written by
`script_json`, the one escaping function, and the script puts text into the
page only as text (`textContent`), never as markup. `iframe_html` wraps a
page for a notebook cell (`srcdoc`, the page escaped as an attribute).
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..compiler import report
from ..compiler.driver import Compiled
from ..compiler.fusion import fusable_groups
from ..compiler.graph import Network, Node
from ..compiler.symbolic import is_symbolic
from ..dsl.files import describe_path
from ..dsl.source import SourceRegistry
from . import style
from .images import MAPPINGS, grid, kernels_png, png_bytes, to_grey
from .view import item_totals

ASSETS = Path(__file__).resolve().parent / "assets"
LAYOUT_LIBRARY = "dagre.min.js"         # @dagrejs/dagre 3.1.4, MIT (assets/dagre.LICENSE)
MAX_MAPS = 16                           # feature maps shown per layer: the first 16 channels
MAP_PIXELS = 256 * 256                  # pixels of one layer's maps together; larger maps are shrunk
TOP_CLASSES = 5


# ------------------------------------------------------------------ escaping
def script_json(value: Any) -> str:
    """The one escaping function: `value` as JSON that is safe inside `<script type="application/json">`.

    `<`, `>` and `&` are written as \\u escapes, so no `</script>`, `<!--` or `]]>` can end or
    change the script element whatever a name holds; U+2028/U+2029 are escaped too (some
    parsers treat them as line ends). The result is still plain JSON, so `JSON.parse` reads the
    value back unchanged."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                        ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, escaped)
    return text


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class Inside:
    """What the network computes on one image, handed over by the caller (app/ asks the runtime):
    the input as fed [C, H, W] in [0, 1], every tensor by name, the convolution kernels
    [(layer, weight [O, I, kh, kw])] and which layer reads the image."""

    image_name: str
    image: np.ndarray
    tensors: dict[str, np.ndarray]
    kernels: Sequence[tuple[str, np.ndarray]] = ()
    first: str | None = None
    mapping: str = "minmax"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _svg_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _shrink(tile: np.ndarray, side: int) -> np.ndarray:
    """A grey uint8 map shrunk (area average) so its longer side is at most `side`."""
    h, w = tile.shape
    if max(h, w) <= side:
        return tile
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.BOX))


def maps_entry(values: np.ndarray, mapping: str) -> dict[str, Any]:
    """One tensor's maps as one PNG grid: its first MAX_MAPS channels mapped as `cnnc apply --map` maps
    them (viz/images.py `to_grey`), the tile grid so a click finds its unit, and the value range."""
    x = np.asarray(values, np.float32)
    entry: dict[str, Any] = {"shape": list(x.shape)}
    if not np.isfinite(x).all():
        entry["note"] = "holds NaN or infinite values: not drawn"
        return entry
    entry["range"] = [float(x.min()), float(x.max())] if x.size else [0.0, 0.0]
    if x.ndim == 2:                      # a signal [C, L]: each channel a strip one unit high
        x = x[:, None, :]
    if x.ndim != 3:
        return entry                     # a vector: its range is what is shown
    shown = x[:MAX_MAPS]
    side = max(8, int(math.sqrt(MAP_PIXELS / len(shown))))
    tiles = [_shrink(t, side) for t in to_grey(shown, mapping)]
    columns = math.ceil(math.sqrt(len(tiles)))
    entry.update(png=data_uri(png_bytes(grid(tiles, columns))), channels=len(tiles), columns=columns,
                 tile=list(tiles[0].shape), gap=2, mapping=mapping)
    return entry


def _kernels_uri(name: str, weight: np.ndarray, first: str | None) -> str:
    return data_uri(kernels_png([(name, weight)], first))


def _prediction(net: Network, inside: Inside) -> dict[str, Any] | None:
    """Top classes of a classifier's output (softmax unless the network ends in one), or the mask of a
    dense output, for the first output."""
    out = net.outputs[0]
    if out not in inside.tensors:
        return None
    y = np.asarray(inside.tensors[out], np.float64)
    if not np.isfinite(y).all():
        return None
    names = list(net.train.classes) if net.train is not None and net.train.classes else None
    if y.ndim == 1:
        p = y if net.node(out).op == "softmax" else np.exp(y - y.max()) / np.exp(y - y.max()).sum()
        top = np.argsort(-p, kind="stable")[:TOP_CLASSES]
        return {"kind": "classes", "output": out,
                "top": [{"index": int(i), "name": names[i] if names and i < len(names) else str(int(i)),
                         "p": float(p[i])} for i in top]}
    if y.ndim == 3 and y.shape[0] > 1 and y.shape[1:] == inside.image.shape[1:]:
        from .masks import mask_png
        classes = y.shape[0]
        mask = np.argmax(y, axis=0)
        if classes <= 256:
            shares = np.bincount(mask.ravel(), minlength=classes) / mask.size
            return {"kind": "mask", "output": out, "png": data_uri(mask_png(mask, classes)),
                    "shares": [{"index": k, "name": names[k] if names and k < len(names) else str(k),
                                "share": float(s)} for k, s in enumerate(shares) if s > 0]}
    return None


def inside_data(c: Compiled, inside: Inside) -> dict[str, Any]:
    from .masks import display_rgb
    image = np.asarray(inside.image, np.float32)
    rgb = display_rgb(image) if image.ndim == 3 and image.shape[0] in (1, 3) else None
    maps = {name: maps_entry(v, inside.mapping) for name, v in inside.tensors.items()}
    return {"image": describe_path(inside.image_name), "size": list(image.shape[1:]),
            "png": data_uri(png_bytes(rgb)) if rgb is not None else None,
            "mapping": inside.mapping, "mapping_text": MAPPINGS[inside.mapping],
            "maps": maps, "kernels": {name: _kernels_uri(name, w, inside.first) for name, w in inside.kernels},
            "prediction": _prediction(c.net, inside)}


def metrics_data(c: Compiled, path: str) -> dict[str, Any]:
    """The training curves (and the confusion matrix when the test record has one) as SVG pictures, and
    `layers`: each layer of the network that has per-layer records, its own diagnostics for its panel."""
    from .confusion import confusion_svg
    from .curves import curves_svg, read_metrics
    from .diagnostics import layer_diagnostics
    metrics = read_metrics(path)
    out = {"file": describe_path(path), "epochs": len(metrics.epochs),
           "curves": _svg_uri(curves_svg(metrics, f"{c.net.name}: training curves"))}
    if metrics.test and metrics.test.get("confusion") is not None:
        classes = c.net.train.classes if c.net.train is not None else None
        out["confusion"] = _svg_uri(confusion_svg(metrics, f"{c.net.name}: confusion on the test split", classes))
    # Only the layers with records (by the names of the .cnn, which are the page's), and none for a file
    # without them. The cost, base64 included: about 12 KiB for a layer with weights (two strips, weights
    # and gradients at three epochs) and 7 KiB for an activation, at a few epochs; each epoch adds about
    # 0.15 KiB per strip to the picture and 25 bytes per figure to the numbers. LeNet-5's 9 layers:
    # 89 KiB after 4 epochs, 150 KiB after 30.
    layers = layer_diagnostics(metrics, {node.name for node in c.net.order()})
    if layers:
        out["layers"] = {name: {"svg": _svg_uri(d["svg"]), "columns": d["columns"], "rows": d["rows"]}
                         for name, d in layers.items()}
    return out


# ------------------------------------------------------------------ the graph
def _source(loc) -> dict[str, Any] | None:
    if loc is None:
        return None
    return {"loc": str(loc), "text": SourceRegistry.line(loc.file, loc.line)}


def _attr_text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"fixed array {style.shape_text(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_attr_text(v) for v in value) + ")"
    return str(value)


def _share(part: Any, whole: Any) -> float | None:
    if is_symbolic(part) or is_symbolic(whole) or not whole:
        return None
    return float(part) / float(whole)


def _containers_of(node: Node) -> list[tuple[str, str, int]]:
    """(container id, kind, scope level) from the outermost in: each block instance, and the repeat
    group (`block * N`) that holds a repeated instance."""
    level_of_repeat = None
    if node.repeat is not None and node.repeat[2] > 1:
        level_of_repeat = len(node.repeat[0].split("."))
    chain = []
    for level in range(1, len(node.scope) + 1):
        if level == level_of_repeat:
            chain.append(("r:" + node.repeat[0], "repeat", level))
        chain.append(("b:" + ".".join(node.scope[:level]), "block", level))
    if level_of_repeat == len(node.scope) + 1:       # a repeated plain layer
        chain.append(("r:" + node.repeat[0], "repeat", level_of_repeat))
    return chain


def _container(node: Node, kind: str, level: int) -> dict[str, Any]:
    """A block instance or a repeat group, as its first layer `node` sees it at scope `level`: names,
    label (the static diagram's) and the source line of its call."""
    call = node.call_chain[level - 1][1] if len(node.call_chain) >= level else None
    src = [s for s in [_source(call)] if s]
    if kind == "repeat":
        block = node.scope_blocks[level - 1] if level <= len(node.scope_blocks) else (node.layer or node.op)
        count = node.repeat[2]
        return {"kind": kind, "block": block, "count": count, "label": f"{block} ×{count}", "sub": "", "src": src}
    instance, block = node.scope[level - 1], node.scope_blocks[level - 1]
    return {"kind": kind, "block": block, "instance": instance, "label": block,
            "sub": instance if instance != block else "", "src": src}


def graph_data(c: Compiled, contract: dict) -> dict[str, Any]:
    """Layers, containers and edges of the page (see the module docstring); `contract` is `report.to_json(c)`."""
    net = c.net
    entries = {e["name"]: e for e in contract["layers"]}
    totals = contract["totals"]
    fused = {m: g for g in fusable_groups(net) for m in g.members}
    layers: dict[str, dict] = {}
    containers: dict[str, dict] = {}
    top: list[str] = []
    for node in net.order():
        chain = _containers_of(node)
        parent = None
        for cid, kind, level in chain:
            if cid not in containers:
                containers[cid] = {"id": cid, "parent": parent, "children": [], "members": [],
                                   **_container(node, kind, level)}
                (containers[parent]["children"] if parent else top).append(cid)
            containers[cid]["members"].append(node.name)
            parent = cid
        (containers[parent]["children"] if parent else top).append(node.name)
        layers[node.name] = _layer(c, node, entries.get(node.name), contract, fused.get(node.name), parent)
    for cid, box in containers.items():
        members = box.pop("members")
        out = members[-1]
        box.update(report.totals_json(c, [m for m in members if m in entries]), layers=len(members), out=out,
                   shape=layers[out]["shape"], shape_text=layers[out]["shape_text"],
                   summary=style.block_summary(len(members), *item_totals(c.analysis, [net.node(m) for m in members])))
        box["share"] = {"macs": _share(box["macs"], totals["macs"]), "params": _share(box["params"], totals["params"])}
        if box["kind"] == "block":
            box["path"] = cid[2:]
    edges = [[src, node.name] for node in net.order() for src in dict.fromkeys(node.inputs)]
    return {"layers": layers, "containers": containers, "top": top, "edges": edges,
            "order": [n.name for n in net.order()], "outputs": list(net.outputs)}


def _layer(c: Compiled, node: Node, entry: dict | None, contract: dict, group, parent: str | None) -> dict[str, Any]:
    """A layer's record: its entry of the compile JSON (an input has none: it is its own field, size 1),
    and how it is drawn, where it was written, its fused group, its share of the network's cost."""
    net, totals = c.net, contract["totals"]
    fill, border = style.colours(node)
    user, op_text = style.layer_head(net, node)
    shape = net.shapes[node.name]
    out: dict[str, Any] = entry.copy() if entry is not None else {
        "name": node.name, "op": "input", "inputs": [], "shape": contract["inputs"][node.name],
        "params": 0, "macs": 0, "flops": 0, "rf": None, "loc": str(node.loc) if node.loc else None}
    out.update(label=op_text, user_label=user, shape_text=style.shape_text(shape), family=style.family(node),
               fill=fill, border=border, io=node.op == "input" or node.name in net.outputs, parent=parent,
               attrs=[[k, _attr_text(v)] for k, v in node.attrs.items()],
               src=[s for s in [_source(node.loc)] + [_source(loc) for _, loc in reversed(node.call_chain)] if s],
               share={"macs": _share(out["macs"], totals["macs"]), "params": _share(out["params"], totals["params"])})
    if entry is None:
        out["rf"] = {"size": [1] * (len(shape) - 1), "stride": [1] * (len(shape) - 1),
                     "padding": [0] * (len(shape) - 1)} if len(shape) > 1 else None
    if group is not None:
        out["fused"] = {"name": group.name, "pattern": group.pattern, "members": list(group.members)}
    return out


def style_data() -> dict[str, Any]:
    """The colours of style.py the script draws with."""
    return {"families": {k: list(v) for k, v in style.FAMILY_COLOURS.items()}, "block": list(style.BLOCK_COLOURS),
            "skip": style.SKIP_COLOUR, "fold": style.FOLD_COLOUR, "fused": style.FUSED_COLOUR,
            "grey": style.TEXT_GREY, "clusters": list(style.CLUSTER_FILLS), "font": style.SVG_FONT}


def page_data(c: Compiled, inside: Inside | None = None, metrics: str | None = None,
              depth: int | None = None) -> dict[str, Any]:
    """Everything the page shows, as one JSON-able value (`depth`: blocks open down to that depth)."""
    contract = report.to_json(c)
    data = {"network": c.net.name, "source": describe_path(c.net.source), "summary": report.summary_lines(c),
            "totals": contract["totals"], "inputs": contract["inputs"],
            "warnings": [{"loc": w["loc"], "message": w["message"]} for w in contract["warnings"]],
            "style": style_data(), "depth": depth or 0, **graph_data(c, contract)}
    if inside is not None:
        data["inside"] = inside_data(c, inside)
    if metrics is not None:
        data["metrics"] = metrics_data(c, metrics)
    return data


# ------------------------------------------------------------------ the page
def _asset(name: str) -> str:
    text = (ASSETS / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "<!--" in text:
        raise AssertionError(f"assets/{name} would end its script element early")
    return text


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def page_html(c: Compiled | None = None, *, data: dict | None = None, inside: Inside | None = None,
              metrics: str | None = None, depth: int | None = None, live: bool = False) -> str:
    """The explorer as one HTML page: opens from file:// and makes no request (`live`: it also polls
    the server it came from, as `cnnc view` serves it). Give a compiled network, or its `data`."""
    if data is None:
        data = page_data(c, inside, metrics, depth)
    scripts = [_asset(LAYOUT_LIBRARY), _asset("explorer.js")]
    css = _asset("explorer.css")
    policy = ("default-src 'none'; img-src data:; style-src " + _sha256(css) + "; script-src "
              + " ".join(_sha256(s) for s in scripts) + ("; connect-src 'self'" if live else "")
              + "; base-uri 'none'; form-action 'none'")
    body = _asset("explorer.html")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "<title>cnnc explorer</title>\n"
            f"<style>{css}</style></head>\n<body data-live=\"{'1' if live else '0'}\">\n{body}\n"
            f'<script type="application/json" id="cnnc-data">{script_json(data)}</script>\n'
            + "".join(f"<script>{s}</script>\n" for s in scripts) + "</body></html>\n")


def iframe_html(page: str, height: int = 640) -> str:
    """A page for a notebook cell: an iframe whose `srcdoc` is the page, escaped as an attribute value;
    `sandbox="allow-scripts"` runs the page's script in an opaque origin, away from the notebook's."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
            f'style="width: 100%; height: {int(height)}px; border: 1px solid #ddd"></iframe>')


__all__ = ["Inside", "iframe_html", "page_data", "page_html", "script_json"]
