"""Stage 2 (compiler): what `cnnc compile --fuse` and `--emit numpy` print.

Thin: fuses the compiled network for inference (compiler/fusion.py), prints
each fused group with the source location of every member and what it saves
(steps, intermediate activation bytes, MACs and FLOPs), the memory plan
(planned arena against the naive sum of activations), then the usual table of
the fused graph (compiler/report.py). With `--format json` it prints the
usual JSON plus a `"fused"` object. The memory planner and the code generator
live in the runtime, which the compiler never imports: the command line
(app/cli.py) hands them in as `plan_memory` and `emit`.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

from ..dsl.source import CnncError
from . import report
from .driver import Compiled
from .fusion import Fusion, FusedGroup, analyse_fused, fuse, savings
from .symbolic import is_symbolic

WIDTH = report.WIDTH


def run(args, c: Compiled, plan_memory: Callable | None = None, emit: Callable | None = None,
        warn: Callable | None = None) -> int:
    """`cnnc compile --fuse/--emit`; `warn` prints a Diagnostic (default: plain text on stderr)."""
    fusion = fuse(c.net, "eval")
    fused = Compiled(fusion.net, analyse_fused(fusion.net, c.analysis))
    emitted = _emit(args, c, emit) if args.emit else None
    memory = _memory(c, fused, plan_memory) if args.fuse else None
    if args.format == "json":
        out = report.to_json(c)
        out["fused"] = fused_json(c, fusion, fused, memory, emitted)
        print(json.dumps(out, indent=2))
        return 0
    if args.fuse:
        for w in c.warnings:
            (warn or _warn)(w)
        print(fusion_text(c, fusion, fused, memory))
        print()
        print(report.table(fused, expand=args.expand, depth=args.depth))
    if emitted:
        print(f"wrote {emitted['module']} ({emitted['lines']} lines, functions: {', '.join(emitted['functions'])})")
        print(f"wrote {emitted['weights']} ({emitted['arrays']} arrays, {report._bytes(emitted['bytes'])}, "
              f"{emitted['source']})")
    return 0


def _warn(diagnostic) -> None:
    print(diagnostic.render(), file=sys.stderr)


def _emit(args, c: Compiled, emit: Callable | None) -> dict[str, Any]:
    if emit is None:
        raise CnncError("--emit numpy is not available here (no code generator was given)")
    if not args.output:
        raise CnncError("--emit numpy needs -o FILE.py: where to write the module",
                        hint="e.g. cnnc compile net.cnn --emit numpy -o model.py (weights go to model.npz)")
    return emit(c, args.output, getattr(args, "checkpoint", None))


def _memory(c: Compiled, fused: Compiled, plan_memory: Callable | None) -> dict[str, Any] | None:
    """Planned arena against the naive sum, per sample; None for symbolic sizes or no planner."""
    if plan_memory is None or any(is_symbolic(d) for s in c.net.shapes.values() for d in s):
        return None
    plan = plan_memory(fused.net).summary()
    plan["naive_unfused_bytes"] = plan_memory(c.net).summary()["naive_bytes"]
    return plan


# ----------------------------------------------------------------------- text
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
        lines = [f"{c.net.name}: {n} fused group{'s' if n != 1 else ''} for inference"
                 + (" (batchnorm folded into the convolution's weights and bias)"
                    if any(g.folded for g in fusion.groups) else "")]
    else:
        lines = [f"{c.net.name}: nothing to fuse (conv, linear or batchnorm followed by batchnorm or relu/relu6/"
                 "leaky_relu)"]
    if n:
        lines.append(f"  {'group':<40} {'pattern':<18} {'steps':>5} {'activations':>12} {'FLOPs':>14}")
    for g in fusion.groups:
        s = savings(c.net, c.analysis, fused.net, fused.analysis, g)
        lines.append(f"  {report._fit(g.name, 40):<40} {g.pattern:<18} {-s['steps']:>5} "
                     f"{'-' + report._bytes(s['activation_bytes']):>12} {_signed(s['flops']):>14}")
        lines += _member_lines(g)
    for s in fusion.skipped:
        lines.append(f"  not fused: {s.start} ({s.pattern}): {s.reason}" + (f"  [{s.loc}]" if s.loc else ""))
    lines.append("")
    lines += _summary(c, fusion, fused, memory)
    return "\n".join(report._wrap(line) for line in lines)


def _signed(saved: Any) -> str:
    return report._count(-saved) if saved else "0"


def _summary(c: Compiled, fusion: Fusion, fused: Compiled, memory: dict | None) -> list[str]:
    before, after = c.analysis.totals(), fused.analysis.totals()
    biasless = any(g.folded and not c.net.node(g.name).attrs["bias"] for g in fusion.groups)
    out = [f"steps        {len(c.net.layers())} -> {len(fused.net.layers())}",
           f"activations  {report._bytes(before['activation_bytes'])} -> "
           f"{report._bytes(after['activation_bytes'])} per sample (the fused-away tensors are never written)",
           f"MACs         {report._count(before['macs'])} -> {report._count(after['macs'])}",
           f"FLOPs        {report._count(before['flops'])} -> {report._count(after['flops'])}"
           + (" (a folded batchnorm's FLOP per element becomes the bias add of a conv that had none)"
              if biasless else "")]
    if memory is None:
        out.append("memory plan  n/a (symbolic sizes: bind them with --input NAME=CxHxW)")
    else:
        b = {k: report._bytes(v) for k, v in memory.items()}
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
            "saves": {k: report._num(s[k]) for k in ("steps", "activation_bytes", "macs", "flops")},
            "macs": report._num(s["macs_after"]), "flops": report._num(s["flops_after"])}


def fused_json(c: Compiled, fusion: Fusion, fused: Compiled, memory: dict | None,
               emitted: dict | None) -> dict[str, Any]:
    graph = report.to_json(fused)
    out = {"mode": fusion.mode,
           "groups": [group_json(c, fused, g) for g in fusion.groups],
           "skipped": [{"start": s.start, "pattern": s.pattern, "reason": s.reason,
                        "loc": str(s.loc) if s.loc else None} for s in fusion.skipped],
           "graph": {k: graph[k] for k in ("layers", "outputs", "totals")},
           "memory": memory}
    if emitted is not None:
        out["emitted"] = emitted
    return out
