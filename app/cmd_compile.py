"""Command line: `cnnc check` and `cnnc compile` (table, JSON, `--fuse`, `--emit numpy`).

The compiler checks and analyses; the runtime plans memory and generates
code; compiler/report.py turns the results into text or JSON. This module
only wires them to the flags and prints.
"""
from __future__ import annotations

import argparse
import json
import shutil
from typing import Any, Callable, Sequence

from .dsl.files import describe_path
from .dsl.source import CnncError, Diagnostic
from .compiler import report
from .compiler.driver import Compiled, compile_file, network_names, parse_assignment, parse_shape
from .compiler.fusion import analyse_fused, fuse
from .compiler.symbolic import is_symbolic


def compile_args(args: argparse.Namespace, network: str | None = None, train: Sequence = ()) -> Compiled:
    """Compile the file the flags name (`--input`, `--set`, `--allow`), its train section resolved with
    the `train` flags over it (cmd_run.py `train_flags`)."""
    inputs = dict(parse_shape(s) for s in args.input)
    params = dict(parse_assignment(s) for s in args.params)
    return compile_file(args.file, network or args.network, inputs, params, set(args.allow),
                        train_layers=[train] if train else ())


def check(args: argparse.Namespace, warn: Callable[[Diagnostic], None]) -> int:
    """Check the chosen network, or every network the file defines."""
    names = [args.network] if args.network else network_names(args.file) or [None]
    for name in names:
        c = compile_args(args, name)
        for w in c.warnings:
            warn(w)
        n = len(c.warnings)
        print(f"{args.file}: {c.net.name} is valid ({len(c.net.layers())} layers"
              + (f", {n} warning{'s' if n != 1 else ''}" if n else "") + ")")
    return 0


def compile_(args: argparse.Namespace, warn: Callable[[Diagnostic], None]) -> int:
    _check_flags(args)
    c = compile_args(args)
    if args.fuse or args.emit:
        return _fused(args, c, warn)
    if args.format == "json":
        print(report.json_text(c))
        return 0
    for w in c.warnings:
        warn(w)
    print(report.table(c, expand=args.expand, depth=args.depth, width=table_width(), wide=args.wide))
    return 0


def table_width() -> int:
    """The terminal's width (COLUMNS wins, as shutil.get_terminal_size has it); 100 for a file or a pipe."""
    return shutil.get_terminal_size((report.WIDTH, 24)).columns


def _check_flags(args: argparse.Namespace) -> None:
    if args.depth is not None and args.depth < 0:
        raise CnncError(f"--depth {args.depth}: the depth must be 0 or more",
                        hint="--depth 0 shows every top-level block as one row")
    if args.output and not args.emit:
        raise CnncError(f"-o {args.output}: only --emit writes a file",
                        hint="add --emit numpy, or print the table and redirect it (> table.txt)")
    if args.checkpoint and not args.emit:
        raise CnncError(f"--checkpoint {args.checkpoint}: only --emit reads weights",
                        hint="add --emit numpy -o model.py")
    if args.raw and not args.checkpoint:
        raise CnncError("--raw: leaves out the preprocessing a checkpoint recorded, and no --checkpoint is given",
                        hint="add --emit numpy -o model.py --checkpoint CK.npz")
    if args.emit and not args.output:
        raise CnncError("--emit numpy needs -o FILE.py: where to write the module",
                        hint="e.g. cnnc compile net.cnn --emit numpy -o model.py (weights go to model.npz)")


def _fused(args: argparse.Namespace, c: Compiled, warn: Callable[[Diagnostic], None]) -> int:
    """`--fuse` and/or `--emit`: fuse for inference, plan memory, generate code, report."""
    fusion = fuse(c.net, "eval")
    fused = Compiled(fusion.net, analyse_fused(fusion.net, c.analysis))
    emitted = None
    if args.emit:
        from .runtime.export import codegen
        emitted = codegen.emit(c, args.output, args.checkpoint, raw=args.raw)
    memory = _memory(c, fused) if args.fuse else None
    if args.format == "json":
        out = report.to_json(c)
        out["fused"] = report.fused_json(c, fusion, fused, memory, emitted)
        print(json.dumps(out, indent=2))
        return 0
    if args.fuse:
        for w in c.warnings:
            warn(w)
        print(report.fusion_text(c, fusion, fused, memory))
        print()
        print(report.table(fused, expand=args.expand, depth=args.depth, width=table_width(), wide=args.wide))
    if emitted:
        module, weights = describe_path(emitted["module"]), describe_path(emitted["weights"])
        print(f"wrote {module} ({emitted['lines']} lines, functions: {', '.join(emitted['functions'])})")
        print(f"wrote {weights} ({emitted['arrays']} arrays, {report.fmt_bytes(emitted['bytes'])}, "
              f"{describe_path(emitted['source'])})")
        if emitted["preprocess"]:
            print(f"the module {emitted['preprocess']}")
    return 0


def _memory(c: Compiled, fused: Compiled) -> dict[str, Any] | None:
    """Planned arena against the naive sum, per sample; None for symbolic sizes."""
    if any(is_symbolic(d) for s in c.net.shapes.values() for d in s):
        return None
    from .runtime.memory_plan import plan_memory
    plan = plan_memory(fused.net).summary()
    plan["naive_unfused_bytes"] = plan_memory(c.net).summary()["naive_bytes"]
    return plan
