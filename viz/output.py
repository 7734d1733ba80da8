"""Stage 4 (viz): one picture of a compiled network as the bytes of a file.

`picture` draws the requested style in the requested format: `dot` writes
Graphviz source, `svg`/`png`/`pdf` of the graph go through Graphviz's `dot`;
the other styles are SVG drawn by our own code, and their `png`/`pdf` go
through `rsvg-convert` when it is installed. `output_format` reads the format
from a file name. Every user mistake (unknown extension, unknown layer, bad
unit, missing metrics file, missing Graphviz) is a `CnncError` with a hint.
The command line (app/cmd_viz.py) writes the bytes.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..compiler.driver import Compiled
from ..dsl.source import CnncError
from .diagram import diagram, render

FORMATS = ("svg", "png", "pdf", "dot")
STYLES = ("graph", "figure", "rf", "rf-grid", "curves", "confusion", "activations", "kernels", "html")
# Styles of values (feature maps, weights) drawn with Pillow straight to PNG; the caller computes the values.
RASTER_STYLES = ("activations", "kernels")
RSVG_HINT = ("write .svg instead, or install librsvg to convert it "
             "(apt-get install librsvg2-bin, or brew install librsvg)")


@dataclass(frozen=True)
class PictureOptions:
    """What the styles read: graph (depth, expand, details, rankdir, fuse), rf-grid (layer, unit),
    curves and confusion (metrics, a metrics.jsonl path), activations (panels: one `images.Panel` per layer),
    kernels (kernels: (layer, weight [O, I, kh, kw]) pairs, first: the layer reading the image)."""

    depth: int | None = None
    expand: bool = False
    details: bool = False
    rankdir: str = "TB"
    fuse: bool = False
    layer: str | None = None
    unit: str | None = None
    metrics: str | None = None
    panels: tuple = ()
    kernels: tuple = ()
    first: str | None = None


def output_format(path: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        shown = f"'.{ext}'" if ext else "no extension"
        raise CnncError(f"-o {path}: unknown output format ({shown})",
                        hint="the extension picks the format: .svg, .png, .pdf or .dot")
    return ext


def picture(compiled: Compiled, style: str, fmt: str, options: PictureOptions = PictureOptions(),
            target: str = "") -> bytes:
    """The bytes of the requested picture in format `fmt` (`target` names the file in messages)."""
    if style == "graph":
        g = diagram(compiled, depth=options.depth, expand=options.expand, details=options.details,
                    rankdir=options.rankdir, fuse=options.fuse)
        return g.source.encode("utf-8") if fmt == "dot" else render(g, fmt, target)
    if style in RASTER_STYLES:
        return _raster(style, fmt, options, target)
    if style == "html":  # the explorer page: app/cmd_view.py builds it (it may run the network)
        raise CnncError("--style html writes a page, not a picture", hint="give -o a name ending in .html")
    if fmt == "dot":
        raise CnncError(f"--style {style} is drawn as SVG without Graphviz: it has no .dot source",
                        hint="write .svg (or .png/.pdf), or use --style graph for .dot")
    return convert_svg(_svg(compiled, style, options), fmt, target)


def _svg(compiled: Compiled, style: str, options: PictureOptions) -> str:
    if style == "figure":
        from .figure import figure_svg
        return figure_svg(compiled)
    if style == "rf":
        from .fields import rf_svg
        return rf_svg(compiled)
    if style == "rf-grid":
        from .fields import rf_grid_svg
        return rf_grid_svg(compiled, options.layer, options.unit)
    if style == "curves":
        from .curves import curves_svg, read_metrics
        metrics = read_metrics(options.metrics)
        return curves_svg(metrics, f"{compiled.net.name}: training curves ({options.metrics})")
    if style == "confusion":
        from .confusion import confusion_svg
        from .curves import read_metrics
        train = compiled.net.train
        return confusion_svg(read_metrics(options.metrics), f"{compiled.net.name}: confusion on the test split",
                             train.classes if train is not None else None)
    raise CnncError(f"unknown style '{style}'", hint=f"styles: {', '.join(STYLES)}")


def _raster(style: str, fmt: str, options: PictureOptions, target: str) -> bytes:
    from .images import activations_png, kernels_png
    if fmt != "png":
        raise CnncError(f"cannot write '{target}': --style {style} draws pixels, written as .png",
                        hint="give -o a name ending in .png")
    if style == "activations":
        return activations_png(options.panels)
    return kernels_png(options.kernels, options.first)


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
