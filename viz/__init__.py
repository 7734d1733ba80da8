"""Stage 4 (viz): pictures of networks, drawn from compiler graphs that it never changes.

`diagram` builds the Graphviz diagram and `render` runs `dot` on it;
`diagram_svg` is what notebooks show (`SVG(diagram_svg(compiled))`), falling back to
the architecture figure when Graphviz is missing. `figure_svg` draws the
LeNet-style architecture figure, `rf_svg` and `rf_grid_svg` the receptive
fields, and `curves_svg` the training curves, all as SVG by our own code.
`explorer.page_html` writes the interactive explorer page (and `explorer.iframe_html` wraps it
for a notebook cell). `picture` (viz/output.py) gives any style as a file's bytes; `cnnc viz` picks one by `--style`. Nothing here imports the
runtime's kernels.
"""
from __future__ import annotations

from .curves import curves_svg, read_metrics
from .diagram import diagram, diagram_svg, render
from .fields import rf_grid_svg, rf_svg
from .figure import figure_svg
from .view import build_view, fusion_groups, main_path

__all__ = ["build_view", "curves_svg", "diagram", "diagram_svg", "figure_svg", "fusion_groups", "main_path",
           "read_metrics", "render", "rf_grid_svg", "rf_svg"]
