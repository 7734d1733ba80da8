"""Command line: `cnnc viz FILE -o OUT --style …`.

Checks the flags against the style (a flag only another style reads is an
error, not silently ignored), asks viz for the picture's bytes and writes
them atomically (a failed write leaves an existing file as it was). The
styles of values (activations, kernels) need the network run or its weights
read: the runtime computes those arrays here and viz only draws them.
"""
from __future__ import annotations

import argparse

from .compiler.driver import Compiled, compile_file, parse_assignment
from .dsl.files import write_atomic
from .dsl.source import CnncError
from .image_flag import resize_of
from .viz.output import PictureOptions, output_format, picture

# (flag, attribute, the styles that read it)
STYLE_FLAGS = (("--layer", "layer", ("rf-grid",)), ("--unit", "unit", ("rf-grid",)),
               ("--metrics", "metrics", ("curves", "confusion", "diagnostics", "html")),
               ("--checkpoint", "checkpoint", ("activations", "kernels", "html")),
               ("--image", "image", ("activations", "html")),
               ("--layers", "layers", ("activations", "kernels", "diagnostics")), ("--epochs", "epochs", ("diagnostics",)),
               ("--resize", "resize", ("activations", "html")), ("--page", "page", ("activations", "kernels")))


def check_flags(args: argparse.Namespace) -> None:
    style = args.style
    if args.depth is not None and args.depth < 0:
        raise CnncError(f"--depth {args.depth}: the depth must be 0 or more",
                        hint="--depth 0 draws every top-level block as one node")
    if args.style in ("activations", "kernels"):
        if args.input:
            raise CnncError(f"--input {args.input[0]}: --style {args.style} takes the sizes from the image",
                            hint="for a network of symbolic size the image's own size is used")
        if not args.output.lower().endswith(".png"):
            raise CnncError(f"-o {args.output}: --style {args.style} draws pixels and writes .png",
                            hint="give -o a name ending in .png")
    if style == "html" and not args.output.lower().endswith(".html"):
        raise CnncError(f"-o {args.output}: --style html writes one page, .html",
                        hint="give -o a name ending in .html")
    for flag, attr, wanted in STYLE_FLAGS:
        if getattr(args, attr) is not None and style not in wanted:
            either = " or ".join(filter(None, (", ".join(wanted[:-1]), wanted[-1])))
            raise CnncError(f"{flag} is for --style {either}, not --style {style}")
    if style != "graph":  # the Graphviz diagram's own options change nothing in another picture
        depth = args.depth is not None and style != "html"      # the page opens its blocks to --depth
        for flag, given in (("--depth", depth), ("--expand", args.expand),
                            ("--details", args.details), ("--rankdir", args.rankdir != "TB"), ("--fuse", args.fuse)):
            if given:
                raise CnncError(f"{flag} is for --style graph, not --style {style}")
    if args.page is not None and args.page < 1:
        raise CnncError(f"--page {args.page}: pages are numbered from 1")
    if style in ("curves", "confusion", "diagnostics") and not args.metrics:
        raise CnncError(f"--style {style} needs --metrics FILE",
                        hint="cnnc run writes metrics.jsonl into its --out folder, e.g. --metrics runs/LeNet5/"
                             "metrics.jsonl")


def _layers(args: argparse.Namespace) -> list[str] | None:
    if args.layers is None:
        return None
    names = [n.strip() for n in args.layers.split(",") if n.strip()]
    if not names:
        raise CnncError(f"--layers {args.layers!r}: name at least one layer, e.g. --layers conv1,conv2")
    return names


def _epochs(args: argparse.Namespace) -> tuple[int, ...] | None:
    if args.epochs is None:
        return None
    try:
        epochs = tuple(int(e) for e in args.epochs.split(",") if e.strip())
    except ValueError:
        raise CnncError(f"--epochs {args.epochs!r}: give epoch numbers separated by commas, e.g. --epochs 1,10,30") \
            from None
    if not epochs or min(epochs) < 1:
        raise CnncError(f"--epochs {args.epochs!r}: epochs are numbered from 1, e.g. --epochs 1,10,30")
    return epochs


def _chosen(args: argparse.Namespace) -> dict:
    """What the diagnostics style draws of the metrics: the histograms' epochs and the layers."""
    layers = _layers(args)
    return {"epochs": _epochs(args), "layers": tuple(layers) if layers is not None else None}


def _values(args: argparse.Namespace, compiled: Compiled) -> dict:
    """The arrays the activations and kernels styles draw, computed by the runtime."""
    from .runtime.apply import Applier, default_image, kernel_weights
    from .viz.images import Panel
    layers = _layers(args)
    if args.style == "kernels":
        kernels = kernel_weights(compiled, args.checkpoint)
        drawn = [name for name, _ in kernels.weights]
        if layers:
            for name in layers:
                if name not in drawn:
                    _unknown_kernel(name, drawn, compiled)
            kernels_ = [(n, w) for n, w in kernels.weights if n in layers]
        else:
            kernels_ = kernels.weights
        return {"kernels": tuple(kernels_), "first": kernels.first}
    params = dict(parse_assignment(s) for s in args.params)
    applier = Applier(lambda inputs: compile_file(args.file, args.network, inputs, params, set(args.allow)),
                      args.checkpoint, resize_of(args))
    names = layers or applier.tensor_names()
    applier.check_layers(names, "--layers")
    image = args.image or str(default_image(applier.channels))
    result = applier.run(image, names, shipped=args.image is None)   # the image policy, as cnnc apply
    # the input is drawn as the image was read (before preprocessing): the photograph, in colour if RGB
    return {"panels": tuple(Panel(n, tuple(v.shape), result.input if n == applier.input_name else v,
                                  image=n == applier.input_name) for n, v in result.tensors.items())}


def _page(args: argparse.Namespace, compiled: Compiled) -> int:
    """The explorer page (app/cmd_view.py builds it: the network, and run on the image when asked)."""
    from .cmd_view import check_flags as check_view_flags, html_bytes
    check_view_flags(args)
    data = html_bytes(args, compiled)
    inputs = [args.file] + [p for p in (args.metrics, args.checkpoint, args.image) if p]
    write_atomic(args.output, data, "page", inputs=inputs)
    print(f"wrote {args.output} (html, {len(data) / 1024:.0f} KiB)")
    return 0


def _pages(png: bytes) -> str:
    """', page 1 of 3' when the panels take several pages."""
    from .viz.images import read_layout
    layout = read_layout(png)
    return f", page {layout['page']} of {layout['pages']}" if layout["pages"] > 1 else ""


def _unknown_kernel(name: str, drawn: list[str], compiled: Compiled) -> None:
    from .dsl.source import did_you_mean
    known = [n.name for n in compiled.net.layers()]
    why = "has no convolution weights" if name in known else "is not a layer of " + compiled.net.name
    raise CnncError(f"--layers {name}: '{name}' {why}",
                    hint=did_you_mean(name, drawn, f"layers with kernels: {', '.join(drawn) or 'none'}"))


def viz(args: argparse.Namespace, compiled: Compiled) -> int:
    """Draw, write the file, say where it went."""
    check_flags(args)
    if args.style == "html":
        return _page(args, compiled)
    fmt = output_format(args.output)
    values = _values(args, compiled) if args.style in ("activations", "kernels") else {}
    chosen = _chosen(args) if args.style == "diagnostics" else {}
    options = PictureOptions(depth=args.depth, expand=args.expand, details=args.details, rankdir=args.rankdir,
                             fuse=args.fuse, layer=args.layer, unit=args.unit, metrics=args.metrics,
                             page=args.page or 1, **values, **chosen)
    data = picture(compiled, args.style, fmt, options, args.output)
    inputs = [args.file] + [p for p in (args.metrics, args.checkpoint, args.image) if p]
    write_atomic(args.output, data, "picture", inputs=inputs)
    print(f"wrote {args.output} ({args.style}, {fmt}{_pages(data) if values else ''})")
    return 0
