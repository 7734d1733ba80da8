"""Stage 2 (compiler): what `cnnc compile` prints — the layer table and the JSON contract.

The table fits a 100-column terminal and folds the repeats a program wrote
with `block(...) * N` into one summary row per extra instance group (unless
`expand=True`); `depth` collapses block instances deeper than N into one row.
The JSON follows docs/internals.md and the architecture brief's contract:
field names are stable, figures are per sample, symbolic sizes are strings.
"""
from __future__ import annotations

import json
import textwrap
from fractions import Fraction
from typing import Any

from .analysis import FieldState, fmt_frac
from .driver import Compiled
from .symbolic import is_symbolic

WIDTH = 100


# ---------------------------------------------------------------------- JSON
def _num(x: Any) -> Any:
    if is_symbolic(x):
        return str(x)
    if isinstance(x, Fraction):
        return x.numerator if x.denominator == 1 else fmt_frac(x)
    return x


def _rf_json(rf: tuple[FieldState, FieldState] | None) -> dict | None:
    if rf is None:
        return None
    out = {"size": [_num(f.size) for f in rf], "stride": [_num(f.stride) for f in rf],
           "padding": [_num(f.padding) for f in rf]}
    if not all(f.exact for f in rf):
        out["approximate"] = True
    return out


def to_json(c: Compiled) -> dict:
    net, a = c.net, c.analysis
    layers = []
    for node in net.layers():
        entry = {"name": node.name, "op": node.op, "inputs": list(node.inputs),
                 "shape": [_num(d) for d in net.shapes[node.name]],
                 "params": a.layer_params.get(node.name, 0), "macs": _num(a.macs[node.name]),
                 "flops": _num(a.flops[node.name]), "rf": _rf_json(a.rf.get(node.name)),
                 "loc": str(node.loc) if node.loc else None}
        if node.layer != node.op:
            entry["layer"] = node.layer
        if node.scope:
            entry["block"] = ".".join(node.scope)
        if node.shares:
            entry["shares_weights_of"] = node.shares
        layers.append(entry)
    totals = {k: _num(v) for k, v in a.totals().items()}
    out = {
        "network": net.name,
        "inputs": {k: [_num(d) for d in v] for k, v in net.inputs.items()},
        "layers": layers,
        "outputs": {o: {"shape": [_num(d) for d in net.shapes[o]], "rf": _rf_json(a.rf.get(o))}
                    for o in net.outputs},
        "totals": totals,
        "warnings": [{"loc": str(w.loc) if w.loc else None, "message": w.message, "code": w.code}
                     for w in a.warnings],
    }
    if net.symbols:
        out["constraints"] = {s: {"rule": info["constraint"], "smallest": info["smallest"]}
                              for s, info in net.symbols.items()}
    return out


def json_text(c: Compiled) -> str:
    return json.dumps(to_json(c), indent=2)


# --------------------------------------------------------------------- table
def human(n: Any) -> str:
    """1814073344 -> '1.81 G'."""
    if is_symbolic(n):
        return str(n)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _rf(rf) -> str:
    if rf is None:
        return "all"
    h, w = (fmt_frac(f.size) for f in rf)
    return h if h == w else f"{h}x{w}"


def _fit(text: str, width: int, left: bool = True) -> str:
    if len(text) > width:
        text = "…" + text[-(width - 1):] if left else text[:width - 1] + "…"
    return text


Row = tuple[str, str, str, Any, Any, str]


def _rows(c: Compiled, expand: bool, depth: int | None) -> list[Row]:
    net, a = c.net, c.analysis
    rows: list[Row] = []
    folded: dict[str, list] = {}
    collapsed: dict[str, list] = {}
    order: list[tuple[str, Any]] = []
    for node in net.layers():
        rf = a.rf.get(node.name)
        params, macs = a.layer_params.get(node.name, 0), a.macs[node.name]
        if not expand and node.repeat and node.repeat[1] > 0:
            group, i, n = node.repeat
            key = f"{group}*"
            if key not in folded:
                folded[key] = [group, n, 0, 0, None, 0]
                order.append(("fold", key))
            f = folded[key]
            f[2] += params
            f[3] = f[3] + macs
            f[4] = net.shapes[node.name]
            f[5] += 1
            continue
        if depth is not None and len(node.scope) > depth:
            key = ".".join(node.scope[:depth + 1])
            if key not in collapsed:
                collapsed[key] = [key, 0, 0, None, None, node.scope[depth]]
                order.append(("collapse", key))
            col = collapsed[key]
            col[1] += params
            col[2] = col[2] + macs
            col[3] = net.shapes[node.name]
            col[4] = rf
            continue
        order.append(("layer", (node, params, macs, rf)))
    for kind, item in order:
        if kind == "layer":
            node, params, macs, rf = item
            rows.append((node.name, node.layer, _shape(net.shapes[node.name]), params, macs, _rf(rf)))
        elif kind == "fold":
            group, n, params, macs, shape, count = folded[item]
            rows.append((f"  … {n - 1} more × {group.rsplit('.', 1)[-1].rsplit('_', 1)[0]}",
                         f"({count} layers)", _shape(shape), params, macs, ""))
        else:
            key, params, macs, shape, rf, _ = collapsed[item]
            block = key.rsplit(".", 1)[-1]
            rows.append((key, f"{block.rsplit('_', 1)[0]} (block)", _shape(shape), params, macs, _rf(rf)))
    return rows


def table(c: Compiled, expand: bool = False, depth: int | None = None) -> str:
    net, a = c.net, c.analysis
    widths = (32, 14, 16, 11, 14)
    head = ("layer", "op", "output", "params", "MACs", "RF")
    lines = [f"{net.name}  ({net.source})", ""]

    def fmt(row) -> str:
        name, op, shape, params, macs, rf = row
        return (f"{_fit(name, widths[0]):<{widths[0]}} {_fit(op, widths[1], False):<{widths[1]}} "
                f"{_fit(shape, widths[2], False):<{widths[2]}} {_fit(_count(params), widths[3]):>{widths[3]}} "
                f"{_fit(_count(macs), widths[4]):>{widths[4]}} {rf:>6}")

    lines.append(fmt(head))
    lines.append("─" * (sum(widths) + 5 + 6))
    for name, shape in net.inputs.items():
        lines.append(fmt((name, "input", _shape(shape), "", "", "1")))
    for row in _rows(c, expand, depth):
        lines.append(fmt(row))
    lines.append("─" * (sum(widths) + 5 + 6))
    t = a.totals()
    lines.append(f"parameters   {_count(t['params'])} ({human(t['params'])}), trainable "
                 f"{_count(t['trainable_params'])}" + (f", fixed {_count(t['non_trainable_params'])}"
                                                        if t["non_trainable_params"] else "")
                 + (f"; buffers {_count(t['buffers'])}" if t["buffers"] else ""))
    lines.append(f"MACs         {_count(t['macs'])}" + ("" if is_symbolic(t["macs"]) else f" ({human(t['macs'])})"))
    lines.append(f"FLOPs        {_count(t['flops'])}" + ("" if is_symbolic(t["flops"]) else f" ({human(t['flops'])})"))
    lines.append(f"memory       activations {_bytes(t['activation_bytes'])} per sample (float32)")
    lines.append(f"             kept for backward {_bytes(t['train_saved_bytes'])}")
    lines.append(f"             inference peak {_bytes(t['inference_peak_bytes'])}")
    for o in net.outputs:
        lines.append(f"output       {o}: {_shape(net.shapes[o])}, receptive field {_rf(a.rf.get(o))}")
    for s, info in net.symbols.items():
        rule = info["constraint"] or f"{s} may be any size"
        smallest = f"; smallest valid {s} = {info['smallest']}" if info["smallest"] else ""
        lines.append(f"constraint   {rule}{smallest}")
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str) -> str:
    """Long summary lines (symbolic totals) continue on indented lines."""
    if len(line) <= WIDTH:
        return line
    return "\n".join(textwrap.wrap(line, WIDTH, subsequent_indent=" " * 13, break_on_hyphens=False))


def _bytes(n: Any) -> str:
    if n is None:
        return "n/a (symbolic)"
    if is_symbolic(n):
        return f"{n} B"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
