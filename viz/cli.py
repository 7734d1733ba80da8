"""Stage 4 (viz): `cnnc viz FILE -o OUT --style …`, the command-line front of the pictures.

The output's extension picks the format: `.dot` writes Graphviz source,
`.svg`/`.png`/`.pdf` render the graph through `dot`. The other styles are SVG
drawn by our own code; `.png`/`.pdf` of those go through `rsvg-convert` when
it is installed. Every user mistake (unknown extension, unknown layer, bad
unit, missing metrics file, missing Graphviz) is a `CnncError` with a hint.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from ..compiler.driver import Compiled
from ..dsl.source import CnncError
from .diagram import diagram, render

FORMATS = ("svg", "png", "pdf", "dot")
RSVG_HINT = ("write .svg instead, or install librsvg to convert it "
             "(apt-get install librsvg2-bin, or brew install librsvg)")


def output_format(path: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        shown = f"'.{ext}'" if ext else "no extension"
        raise CnncError(f"-o {path}: unknown output format ({shown})",
                        hint="the extension picks the format: .svg, .png, .pdf or .dot")
    return ext


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that only one style reads are an error elsewhere: silently ignoring them misleads."""
    style = args.style
    if getattr(args, "depth", None) is not None and args.depth < 0:
        raise CnncError(f"--depth {args.depth}: the depth must be 0 or more",
                        hint="--depth 0 draws every top-level block as one node")
    for flag, attr, wanted in (("--layer", "layer", "rf-grid"), ("--unit", "unit", "rf-grid"),
                               ("--metrics", "metrics", "curves")):
        if getattr(args, attr, None) is not None and style != wanted:
            raise CnncError(f"{flag} is for --style {wanted}, not --style {style}")
    if style == "curves" and not getattr(args, "metrics", None):
        raise CnncError("--style curves needs --metrics FILE",
                        hint="cnnc run writes metrics.jsonl into its --out folder, e.g. --metrics runs/LeNet5/"
                             "metrics.jsonl")


def picture(args: argparse.Namespace, compiled: Compiled, fmt: str) -> bytes:
    """The bytes of the requested picture in format `fmt`."""
    style = args.style
    if style == "graph":
        g = diagram(compiled, depth=args.depth, expand=args.expand, details=args.details,
                    rankdir=args.rankdir, fuse=args.fuse)
        return g.source.encode("utf-8") if fmt == "dot" else render(g, fmt, args.output)
    if fmt == "dot":
        raise CnncError(f"--style {style} is drawn as SVG without Graphviz: it has no .dot source",
                        hint="write .svg (or .png/.pdf), or use --style graph for .dot")
    return convert_svg(_svg(args, compiled), fmt, args.output)


def _svg(args: argparse.Namespace, compiled: Compiled) -> str:
    style = args.style
    if style == "figure":
        from .figure import figure_svg
        return figure_svg(compiled)
    if style == "rf":
        from .fields import rf_svg
        return rf_svg(compiled)
    if style == "rf-grid":
        from .fields import rf_grid_svg
        return rf_grid_svg(compiled, args.layer, args.unit)
    from .curves import curves_svg, read_metrics
    metrics = read_metrics(args.metrics)
    return curves_svg(metrics, f"{compiled.net.name}: training curves ({args.metrics})")


def convert_svg(svg: str, fmt: str, target: str) -> bytes:
    """SVG text as `fmt`; PNG and PDF need rsvg-convert (librsvg)."""
    if fmt == "svg":
        return svg.encode("utf-8")
    tool = shutil.which("rsvg-convert")
    if tool is None:
        raise CnncError(f"cannot write '{target}': converting SVG to {fmt.upper()} needs rsvg-convert",
                        hint=RSVG_HINT)
    zoom = ["--zoom", "2"] if fmt == "png" else []  # 2x pixels: sharp on slides and high-DPI screens
    try:
        done = subprocess.run([tool, "--format", fmt, *zoom], input=svg.encode("utf-8"),
                              capture_output=True, check=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", b"") or b""
        raise CnncError(f"rsvg-convert failed to write '{target}': "
                        f"{detail.decode('utf-8', 'replace').strip() or err}") from None
    return done.stdout


def viz(args: argparse.Namespace, compiled: Compiled) -> int:
    """`cnnc viz`: draw, write the file, say where it went. Returns the exit code."""
    fmt = output_format(args.output)
    _check_flags(args)
    data = picture(args, compiled, fmt)
    out = Path(args.output)
    try:
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True)
        out.write_bytes(data)
    except OSError as err:
        raise CnncError(f"cannot write '{out}': {err.strerror or err}") from None
    print(f"wrote {out} ({args.style}, {fmt})")
    return 0
