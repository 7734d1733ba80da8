"""Command line: `cnnc evaluate FILE CHECKPOINT... [--member FILE CHECKPOINT]... [--combine mean|vote]`,
and the members of an ensemble `cnnc predict` combines.

Builds the members (checkpoints of FILE's network, compiled with the common
flags, and `--member` checkpoints of other files, each compiled for the
network its checkpoint names) and prints each member's scores beside the
ensemble's (runtime/select/ensemble.py does the work).
"""
from __future__ import annotations

import argparse

from .compiler.driver import Compiled, compile_file, network_names
from .dsl.files import describe_path
from .dsl.source import CnncError
from .image_flag import resize_of


def members(args: argparse.Namespace, compiled: Compiled, checkpoints: list[str]):
    """Checkpoints of the main file's network, then every `--member FILE CHECKPOINT`."""
    from .runtime import checkpoint
    from .runtime.select.ensemble import Member
    out = [Member(compiled, path, f"checkpoint {describe_path(path)}") for path in checkpoints]
    for file, path in args.member or ():
        flag = f"--member {describe_path(file)} {describe_path(path)}"
        try:
            recorded = checkpoint.load(path).network
            name = recorded if recorded in network_names(file) else None
            other = compile_file(file, name)
        except CnncError as err:
            raise CnncError(f"{flag}: {err.message}", hint=err.hint) from None
        out.append(Member(other, path, flag))
    return out


def evaluate(args: argparse.Namespace, compiled: Compiled) -> int:
    from .runtime.select.ensemble import evaluate_ensemble
    group = members(args, compiled, list(args.checkpoints))
    if len(group) < 2 and args.combine is not None:
        raise CnncError(f"--combine {args.combine}: an ensemble needs two or more checkpoints")
    how = args.combine or "mean"
    r = evaluate_ensemble(group, how, args.data, resize_of(args))
    what = f"an ensemble of {len(group)} ({'averaged probabilities' if how == 'mean' else 'majority vote'})" \
        if len(group) > 1 else "one checkpoint"
    print(f"{compiled.net.name}: {what} on the {r.split} split of {describe_path(r.data)} ({r.samples:,} samples)")
    macro = "mean IoU" if any(len(m.compiled.net.shapes[m.compiled.net.outputs[0]]) == 3 for m in group) \
        else "macro F1"
    rows = r.rows if len(group) > 1 else r.rows[:1]
    width = max(len("member"), *(len(row.name) for row in rows))
    print(f"{'member':<{width}}  {'accuracy':>9}  {'loss':>8}  {macro:>9}")
    for row in rows:
        loss = f"{row.loss:.4f}" if row.loss is not None else "-"
        mac = f"{row.macro:.4f}" if row.macro is not None else "-"
        print(f"{row.name:<{width}}  {row.accuracy:>9.2%}  {loss:>8}  {mac:>9}")
    return 0
