"""Command line: `cnnc viz FILE -o OUT --style …`.

Checks the flags against the style (a flag only another style reads is an
error, not silently ignored), asks viz for the picture's bytes and writes
them atomically (a failed write leaves an existing file as it was).
"""
from __future__ import annotations

import argparse

from .compiler.driver import Compiled
from .dsl.files import write_atomic
from .dsl.source import CnncError
from .viz.output import PictureOptions, output_format, picture

STYLE_FLAGS = (("--layer", "layer", "rf-grid"), ("--unit", "unit", "rf-grid"), ("--metrics", "metrics", "curves"))


def check_flags(args: argparse.Namespace) -> None:
    style = args.style
    if args.depth is not None and args.depth < 0:
        raise CnncError(f"--depth {args.depth}: the depth must be 0 or more",
                        hint="--depth 0 draws every top-level block as one node")
    for flag, attr, wanted in STYLE_FLAGS:
        if getattr(args, attr) is not None and style != wanted:
            raise CnncError(f"{flag} is for --style {wanted}, not --style {style}")
    if style == "curves" and not args.metrics:
        raise CnncError("--style curves needs --metrics FILE",
                        hint="cnnc run writes metrics.jsonl into its --out folder, e.g. --metrics runs/LeNet5/"
                             "metrics.jsonl")


def viz(args: argparse.Namespace, compiled: Compiled) -> int:
    """Draw, write the file, say where it went."""
    fmt = output_format(args.output)
    check_flags(args)
    options = PictureOptions(depth=args.depth, expand=args.expand, details=args.details, rankdir=args.rankdir,
                             fuse=args.fuse, layer=args.layer, unit=args.unit, metrics=args.metrics)
    data = picture(compiled, args.style, fmt, options, args.output)
    inputs = [args.file] + ([args.metrics] if args.metrics else [])
    write_atomic(args.output, data, "picture", inputs=inputs)
    print(f"wrote {args.output} ({args.style}, {fmt})")
    return 0
