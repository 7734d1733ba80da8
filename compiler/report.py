"""Stage 2 (compiler): what `cnnc compile` reports — the layer table, the JSON contract, fusion.

The table fits the width it is given (the command line passes the
terminal's: `COLUMNS`, else the terminal, else 100 for a file or a pipe),
shortening long names in the middle with an ellipsis (`wide=True` keeps
every name whole), and folds the repeats a program wrote
with `block(...) * N` into one summary row per extra instance group (unless
`expand=True`); `depth` collapses block instances deeper than N into one row.
The JSON follows docs/internals.md and the architecture brief's contract:
field names are stable, figures are per sample, symbolic sizes are strings.
`fusion_text` and `fused_json` report `--fuse`: each fused group with the
source location of every member and what it saves, and the memory plan.
Everything here returns text or JSON values; app/ prints them.
"""
from __future__ import annotations

import json
import textwrap
from fractions import Fraction
from typing import Any, Iterable

from .analysis import FieldState, fmt_frac
from .driver import Compiled
from .fusion import Fusion, FusedGroup, savings
from .symbolic import is_symbolic

WIDTH = 100


# ---------------------------------------------------------------------- JSON
def _num(x: Any) -> Any:
    if is_symbolic(x):
        return str(x)
    if isinstance(x, Fraction):
        return x.numerator if x.denominator == 1 else fmt_frac(x)
    return x


def _axes(rf: tuple[FieldState, ...] | None, shape: tuple) -> tuple[FieldState, ...] | None:
    """The field on the axes a user sees: a [C, L] signal's layers have a unit height, shown as L only."""
    return rf[1:] if rf is not None and len(shape) == 2 else rf


def _rf_json(rf: tuple[FieldState, ...] | None) -> dict | None:
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
                 "flops": _num(a.flops[node.name]), "rf": _rf_json(_axes(a.rf.get(node.name), net.shapes[node.name])),
                 "loc": str(node.loc) if node.loc else None}
        local = a.local_rf.get(node.name, a.rf.get(node.name))
        if local != a.rf.get(node.name):   # after a gate: where its convolutions look (docs/analysis.md)
            entry["local_rf"] = _rf_json(_axes(local, net.shapes[node.name]))
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
        "outputs": {o: {"shape": [_num(d) for d in net.shapes[o]], "rf": _rf_json(_axes(a.rf.get(o), net.shapes[o]))}
                    for o in net.outputs},
        "totals": totals,
        "warnings": [{"loc": str(w.loc) if w.loc else None, "message": w.message, "code": w.code}
                     for w in a.warnings],
    }
    if net.symbols:
        out["constraints"] = {s: {"rule": info["constraint"], "smallest": info["smallest"]}
                              for s, info in net.symbols.items()}
    return out


def totals_json(c: Compiled, names: Iterable[str]) -> dict[str, Any]:
    """Parameters, MACs and FLOPs of a set of layers (a block's totals), written as `to_json` writes figures."""
    a = c.analysis
    params, macs, flops = 0, 0, 0
    for name in names:
        params += a.layer_params.get(name, 0)
        macs, flops = macs + a.macs[name], flops + a.flops[name]
    return {"params": params, "macs": _num(macs), "flops": _num(flops)}


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
    sizes = [fmt_frac(f.size) for f in rf]
    return sizes[0] if len(set(sizes)) == 1 else "x".join(sizes)


def _fit(text: str, width: int) -> str:
    """`text` in `width` columns: shortened in the middle with an ellipsis, so both the start of a
    name (its block) and its end (the layer) stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


Row = tuple[str, str, str, Any, Any, str]


def _rows(c: Compiled, expand: bool, depth: int | None) -> list[Row]:
    net, a = c.net, c.analysis
    rows: list[Row] = []
    folded: dict[str, list] = {}
    collapsed: dict[str, list] = {}
    order: list[tuple[str, Any]] = []
    for node in net.layers():
        rf = _axes(a.rf.get(node.name), net.shapes[node.name])
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


def _fit_widths(longest: list[int], room: int) -> list[int]:
    """Column widths for name, op, output, params, MACs in `room` columns: the figures whole, the
    op and output at most 14 and 16; then the column with the most to spare gives up a column at a
    time (the name down to 12, the op to 8, the output last, to 10) until the row fits."""
    widths = [longest[0], min(longest[1], 14), min(longest[2], 16), longest[3], longest[4]]
    least = {0: 12, 1: 8}
    while sum(widths) > room:
        spare = {i: widths[i] - least[i] for i in least if widths[i] > least[i]}
        if not spare:
            if widths[2] <= 10:
                break
            widths[2] -= 1
            continue
        widths[max(spare, key=spare.get)] -= 1
    return widths


def table(c: Compiled, expand: bool = False, depth: int | None = None, width: int = WIDTH,
          wide: bool = False) -> str:
    """The layer table in `width` columns (long names shortened in the middle), or with `wide` every
    name, op and shape whole, each column as wide as its longest entry."""
    net, a = c.net, c.analysis
    head = ("layer", "op", "output", "params", "MACs", "RF")
    rows = [(name, "input", _shape(shape), "", "", "1") for name, shape in net.inputs.items()]
    rows += _rows(c, expand, depth)
    longest = [max(len(_count(r[i]) if i in (3, 4) else str(r[i])) for r in [head, *rows]) for i in range(6)]
    widths = longest[:5] if wide else _fit_widths(longest, width - 5 - 6)
    lines = [f"{net.name}  ({net.source})", ""]

    def fmt(row) -> str:
        name, op, shape, params, macs, rf = row
        cells = [name, op, shape] if wide else [_fit(t, w) for t, w in zip((name, op, shape), widths)]
        return (f"{cells[0]:<{widths[0]}} {cells[1]:<{widths[1]}} {cells[2]:<{widths[2]}} "
                f"{_count(params):>{widths[3]}} {_count(macs):>{widths[4]}} {rf:>6}").rstrip()

    rule = "─" * (sum(widths) + 5 + 6)
    lines += [fmt(head), rule, *(fmt(r) for r in rows), rule]
    lines += [_wrap(line, max(width, 40)) for line in summary_lines(c)]
    return "\n".join(lines)


def summary_lines(c: Compiled) -> list[str]:
    """The totals under the table (parameters, MACs, FLOPs, memory, outputs, constraints), one per line;
    the explorer page (viz/explorer.py) shows the same lines at its top."""
    net, a = c.net, c.analysis
    lines: list[str] = []
    t = a.totals()
    lines.append(f"parameters   {_count(t['params'])} ({human(t['params'])}), trainable "
                 f"{_count(t['trainable_params'])}" + (f", fixed {_count(t['non_trainable_params'])}"
                                                        if t["non_trainable_params"] else "")
                 + (f"; buffers {_count(t['buffers'])}" if t["buffers"] else ""))
    lines.append(f"param size   {param_megabytes(t['params'])} (float32, 4 bytes a parameter; torchinfo's "
                 "\"Params size (MB)\")")
    lines.append(f"MACs         {_count(t['macs'])}" + ("" if is_symbolic(t["macs"]) else f" ({human(t['macs'])})"))
    lines.append(f"FLOPs        {_count(t['flops'])}" + ("" if is_symbolic(t["flops"]) else f" ({human(t['flops'])})"))
    lines.append(f"memory       activations {fmt_bytes(t['activation_bytes'])} per sample (float32)")
    lines.append(f"             kept for backward {fmt_bytes(t['train_saved_bytes'])}")
    lines.append(f"             inference peak {fmt_bytes(t['inference_peak_bytes'])}")
    for o in net.outputs:
        field = _rf(_axes(a.rf.get(o), net.shapes[o]))
        lines.append(f"output       {o}: {_shape(net.shapes[o])}, receptive field {field}")
    for s, info in net.symbols.items():
        rule = info["constraint"] or f"{s} may be any size"
        smallest = f"; smallest valid {s} = {info['smallest']}" if info["smallest"] else ""
        lines.append(f"constraint   {rule}{smallest}")
    return lines


def param_megabytes(params: Any) -> str:
    """The parameters' size as float32, in MB of 10^6 bytes as torchinfo prints it (ResNet-50: 102.23 MB)."""
    if is_symbolic(params):
        return f"4 x {params} B"
    return f"{params * 4 / 1e6:,.2f} MB"


def _wrap(line: str, width: int = WIDTH) -> str:
    """Long summary lines (symbolic totals) continue on indented lines."""
    if len(line) <= width:
        return line
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=" " * 13, break_on_hyphens=False))


def fmt_bytes(n: Any) -> str:
    if n is None:
        return "n/a (symbolic)"
    if is_symbolic(n):
        return f"{n} B"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


# ------------------------------------------------ fusion (cnnc compile --fuse)
def _member_lines(g: FusedGroup) -> list[str]:
    """Each member's op and file:line:col, wrapped between members (never inside one)."""
    parts = [f"{op} {loc or '?'}" for op, loc in zip(g.ops, g.locs)]
    if g.skip:
        parts.append(f"(residual: {g.skip})")
    lines, current = [], []
    for part in parts:
        if current and 6 + len(", ".join(current + [part])) > WIDTH:
            lines.append(" " * 6 + ", ".join(current) + ",")
            current = []
        current.append(part)
    lines.append(" " * 6 + ", ".join(current))
    return lines


def fusion_text(c: Compiled, fusion: Fusion, fused: Compiled, memory: dict | None) -> str:
    n = len(fusion.groups)
    if n:
        folded = [what for what, yes in (("batchnorm", any(g.folded for g in fusion.groups)),
                                         ("affine", any("affine" in g.ops for g in fusion.groups))) if yes]
        lines = [f"{c.net.name}: {n} fused group{'s' if n != 1 else ''} for inference"
                 + (f" ({' and '.join(folded)} folded into the weights and biases)" if folded else "")]
    else:
        lines = [f"{c.net.name}: nothing to fuse (conv, linear or batchnorm followed by batchnorm, affine or "
                 "relu/relu6/leaky_relu)"]
    if n:
        lines.append(f"  {'group':<40} {'pattern':<18} {'steps':>5} {'activations':>12} {'FLOPs':>14}")
    for g in fusion.groups:
        s = savings(c.net, c.analysis, fused.net, fused.analysis, g)
        lines.append(f"  {_fit(g.name, 40):<40} {g.pattern:<18} {-s['steps']:>5} "
                     f"{'-' + fmt_bytes(s['activation_bytes']):>12} {_signed(s['flops']):>14}")
        lines += _member_lines(g)
    for s in fusion.skipped:
        lines.append(f"  not fused: {s.start} ({s.pattern}): {s.reason}" + (f"  [{s.loc}]" if s.loc else ""))
    lines.append("")
    lines += _summary(c, fusion, fused, memory)
    return "\n".join(_wrap(line) for line in lines)


def _signed(saved: Any) -> str:
    return _count(-saved) if saved else "0"


def _summary(c: Compiled, fusion: Fusion, fused: Compiled, memory: dict | None) -> list[str]:
    before, after = c.analysis.totals(), fused.analysis.totals()
    biasless = any(g.folded and not c.net.node(g.name).attrs["bias"] for g in fusion.groups)
    out = [f"steps        {len(c.net.layers())} -> {len(fused.net.layers())}",
           f"activations  {fmt_bytes(before['activation_bytes'])} -> "
           f"{fmt_bytes(after['activation_bytes'])} per sample (the fused-away tensors are never written)",
           f"MACs         {_count(before['macs'])} -> {_count(after['macs'])}",
           f"FLOPs        {_count(before['flops'])} -> {_count(after['flops'])}"
           + (" (a folded batchnorm's FLOP per element becomes the bias add of a conv that had none)"
              if biasless else "")]
    if memory is None:
        out.append("memory plan  n/a (symbolic sizes: bind them with --input NAME=CxHxW)")
    else:
        b = {k: fmt_bytes(v) for k, v in memory.items()}
        out.append(f"memory plan  naive {b['naive_unfused_bytes']} unfused, {b['naive_bytes']} fused; planned arena "
                   f"{b['planned_bytes']} (lower bound {b['lower_bound_bytes']}) per sample, inputs excluded")
    return out


# ----------------------------------------------------------------------- JSON
def group_json(c: Compiled, fused: Compiled, g: FusedGroup) -> dict[str, Any]:
    s = savings(c.net, c.analysis, fused.net, fused.analysis, g)
    return {"name": g.name, "op": g.op, "pattern": g.pattern, "folded_batchnorm": g.folded,
            "members": [{"name": m, "op": op, "loc": str(loc) if loc else None}
                        for m, op, loc in zip(g.members, g.ops, g.locs)],
            "residual": g.skip,
            "saves": {k: _num(s[k]) for k in ("steps", "activation_bytes", "macs", "flops")},
            "macs": _num(s["macs_after"]), "flops": _num(s["flops_after"])}


def fused_json(c: Compiled, fusion: Fusion, fused: Compiled, memory: dict | None,
               emitted: dict | None) -> dict[str, Any]:
    graph = to_json(fused)
    out = {"mode": fusion.mode,
           "groups": [group_json(c, fused, g) for g in fusion.groups],
           "skipped": [{"start": s.start, "pattern": s.pattern, "reason": s.reason,
                        "loc": str(s.loc) if s.loc else None} for s in fusion.skipped],
           "graph": {k: graph[k] for k in ("layers", "outputs", "totals")},
           "memory": memory}
    if emitted is not None:
        out["emitted"] = emitted
    return out
