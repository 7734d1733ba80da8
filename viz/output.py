"""Stage 4 (viz): one picture of a compiled network as the bytes of a file.

`picture` draws the requested style in the requested format: `dot` writes
Graphviz source, `svg`/`png`/`pdf` of the graph go through Graphviz's `dot`;
the other styles are SVG drawn by our own code (`convert_svg`): PNG through
resvg (the `resvg-py` wheel, a core dependency: no system tool), PDF through
`rsvg-convert` when it is installed (vector), else resvg's pixels at 300 dpi
in a PDF page written by Pillow. `output_format` reads the format from a file
name. Every user mistake (unknown extension, unknown layer, bad
unit, missing metrics file, missing Graphviz) is a `CnncError` with a hint.
The command line (app/cmd_viz.py) writes the bytes.
"""
from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..compiler.driver import Compiled
from ..dsl.source import CnncError
from .diagram import diagram, render

FORMATS = ("svg", "png", "pdf", "dot")
STYLES = ("graph", "figure", "rf", "rf-grid", "curves", "confusion", "diagnostics", "activations", "kernels", "html")
# Styles of values (feature maps, weights) drawn with Pillow straight to PNG; the caller computes the values.
RASTER_STYLES = ("activations", "kernels")
PNG_ZOOM = 2.0              # PNG pixels per SVG pixel: sharp on slides and high-DPI screens
PDF_DPI = 300.0             # a PDF made without rsvg-convert: the picture's pixels at this resolution
MAX_PIXELS = 64_000_000     # a raster (256 MB as RGBA) is drawn smaller rather than larger than this


@dataclass(frozen=True)
class PictureOptions:
    """What the styles read: graph (depth, expand, details, rankdir, fuse), rf-grid (layer, unit),
    curves, confusion and diagnostics (metrics, a metrics.jsonl path; diagnostics also epochs and layers: the
    histograms' epochs and the layers drawn), activations (panels: one `images.Panel` per layer),
    kernels (kernels: (layer, weight [O, I, kh, kw]) pairs, first: the layer reading the image); both
    of these draw page `page` of their panels."""

    depth: int | None = None
    expand: bool = False
    details: bool = False
    rankdir: str = "TB"
    fuse: bool = False
    layer: str | None = None
    unit: str | None = None
    metrics: str | None = None
    epochs: tuple[int, ...] | None = None
    layers: tuple[str, ...] | None = None
    panels: tuple = ()
    kernels: tuple = ()
    first: str | None = None
    page: int = 1


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
    if style == "diagnostics":
        from .curves import read_metrics
        from .diagnostics import diagnostics_svg
        return diagnostics_svg(read_metrics(options.metrics),
                               f"{compiled.net.name}: per-layer diagnostics ({options.metrics})", options.epochs,
                               list(options.layers) if options.layers is not None else None)
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
        return activations_png(options.panels, options.page)
    return kernels_png(options.kernels, options.first, options.page)


def convert_svg(svg: str, fmt: str, target: str) -> bytes:
    """SVG text as `fmt`: PNG rasterised by resvg; PDF as vectors by rsvg-convert when installed,
    else resvg's pixels at PDF_DPI on a page of the picture's size."""
    if fmt == "svg":
        return svg.encode("utf-8")
    tool = shutil.which("rsvg-convert") if fmt == "pdf" else None
    if tool is not None:
        return _rsvg_pdf(tool, svg, target)
    width, height = svg_size(svg)
    zoom = PNG_ZOOM if fmt == "png" else PDF_DPI / 96  # an SVG pixel is 1/96 inch
    zoom = min(zoom, math.sqrt(MAX_PIXELS / max(width * height, 1.0)))
    png = rasterise(svg, zoom, target)
    if fmt == "png":
        return png
    with Image.open(io.BytesIO(png)) as image:
        page = io.BytesIO()
        image.convert("RGB").save(page, "PDF", resolution=96 * zoom, quality=95, subsampling=0)
    return page.getvalue()


def svg_size(svg: str) -> tuple[float, float]:
    """The width and height (pixels) of the SVG's root element, as viz/svg.py writes them."""
    root = re.search(r"<svg\b[^>]*>", svg)
    size = [re.search(rf'\b{k}="([0-9.]+)"', root.group(0)) if root else None for k in ("width", "height")]
    return (float(size[0].group(1)), float(size[1].group(1))) if all(size) else (1000.0, 1000.0)


def rasterise(svg: str, zoom: float, target: str) -> bytes:
    """PNG bytes of SVG text, drawn by resvg (fonts from the system, as a browser's)."""
    import resvg_py
    try:
        return bytes(resvg_py.svg_to_bytes(svg_string=svg, zoom=zoom, background="#ffffff"))
    except ValueError as err:
        raise CnncError(f"cannot draw '{target}': resvg refused the picture ({err})") from None


def _rsvg_pdf(tool: str, svg: str, target: str) -> bytes:
    try:
        done = subprocess.run([tool, "--format", "pdf"], input=svg.encode("utf-8"),
                              capture_output=True, check=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", b"") or b""
        raise CnncError(f"rsvg-convert failed to write '{target}': "
                        f"{detail.decode('utf-8', 'replace').strip() or err}") from None
    return done.stdout
