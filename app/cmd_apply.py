"""Command line: `cnnc apply FILE [IMAGE...] -o OUT.png` -- a network's output on photographs, as images.

The runtime (runtime/apply.py) runs the network and returns arrays; viz
(viz/images.py) maps them to grey levels and grids; this module names the
files, checks them before any work is done (never over an input, never
through a link) and writes each atomically.

File names: `-o OUT.png` is the name when the run makes one picture; with
several, OUT's stem gets `-IMAGE` (several images), `-TENSOR` (several
tensors, e.g. two outputs) and `-cK` (channel K, without `--grid`) suffixes.
Without `-o`, OUT is `NETWORK.png` in the current folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .compiler.driver import compile_file, parse_assignment
from .dsl.files import check_output, describe_path, write_atomic
from .dsl.source import CnncError
from .image_flag import resize_of
from .runtime.apply import Applier, default_image
from .viz.images import grid, png_bytes, require_finite, to_grey


def _check_flags(args: argparse.Namespace) -> None:
    if args.input:
        raise CnncError(f"--input {args.input[0]}: cnnc apply binds the input's size from each image",
                        hint="use --resize HxW to feed the network another size")
    if args.output is not None and Path(args.output).suffix.lower() != ".png":
        raise CnncError(f"-o {args.output}: cnnc apply writes PNG images; give a name ending in .png")


def _names(out: Path, images: list[str], tensors: list[str], channels: list[dict[str, int]], grid_: bool):
    """(image index, tensor, channel or None) -> output path, by the rule in the module docstring;
    `channels[i][t]` is tensor t's channel count for image i."""
    stems = [Path(p).stem for p in images]
    if len(set(stems)) < len(stems):
        stems = [f"{i + 1}-{s}" for i, s in enumerate(stems)]
    names = {}
    for i, stem in enumerate(stems):
        for t in tensors:
            count = channels[i][t]
            per_channel = [None] if grid_ or count == 1 else list(range(count))
            for c in per_channel:
                parts = ([stem] if len(images) > 1 else []) + ([t] if len(tensors) > 1 else []) + \
                        ([f"c{c}"] if c is not None and count > 1 else [])
                name = out.stem + "".join(f"-{p}" for p in parts) + out.suffix
                names[i, t, c] = out.with_name(name)
    return names


def _channels(compiled, tensor: str) -> int:
    """A tensor's channel count, from the compiled network (refused here when it is no image)."""
    shape = compiled.net.shapes[tensor]
    if len(shape) != 3:
        raise CnncError(f"'{tensor}' has shape {'x'.join(map(str, shape))}, not an image [C, H, W]",
                        hint="choose a layer before the flatten or global pooling with --layer NAME")
    return int(shape[0])


def _spatial(values: np.ndarray, tensor: str) -> np.ndarray:
    if values.ndim != 3:
        shape = "x".join(map(str, values.shape))
        raise CnncError(f"'{tensor}' has shape {shape}, not an image [C, H, W]",
                        hint="choose a layer before the flatten or global pooling with --layer NAME")
    require_finite(values, f"'{tensor}'")
    return values


def apply(args: argparse.Namespace) -> int:
    """Check everything first (flags, every image from its header, its memory, every output name),
    then run the images one at a time: each image's pictures are written before the next is read."""
    _check_flags(args)
    params = dict(parse_assignment(s) for s in args.params)
    allow = set(args.allow)

    def compile_(inputs):
        return compile_file(args.file, args.network, inputs, params, allow)

    applier = Applier(compile_, args.checkpoint, resize_of(args))
    tensors = [args.layer] if args.layer else list(applier.declared.net.outputs)
    applier.check_layers(tensors)
    shipped = not args.images
    images = list(args.images) or [str(default_image(applier.channels))]
    out = Path(args.output) if args.output else Path(f"{applier.declared.net.name}.png")
    inputs = [args.file, *images] + ([args.checkpoint] if args.checkpoint else [])
    check_output(out, "image", inputs)  # before any work: a bad -o fails fast
    compiled = [applier.check(path, tensors, shipped) for path in images]
    channels = [{t: _channels(c, t) for t in tensors} for c in compiled]
    names = _names(out, images, tensors, channels, args.grid)
    for path in names.values():
        check_output(path, "image", inputs)
    for i, path in enumerate(images):
        result = applier.run(path, tensors, shipped)
        for t in tensors:
            grey = to_grey(_spatial(result.tensors[t], t), args.map)
            for c in ([None] if args.grid or len(grey) == 1 else range(len(grey))):
                pixels = grid(list(grey)) if c is None else grey[c]
                write_atomic(names[i, t, c], png_bytes(pixels), "image", inputs=inputs)
            _report(result, t, names, i, args)
        del result        # memory holds one image's tensors, never all of them
    return 0


def _report(result, tensor: str, names: dict, i: int, args: argparse.Namespace) -> None:
    values = result.tensors[tensor]
    written = [describe_path(p) for (k, t, _), p in names.items() if k == i and t == tensor]
    shape = "x".join(map(str, values.shape))
    where = written[0] if len(written) == 1 else f"{written[0]} ... {written[-1]} ({len(written)} files)"
    print(f"{describe_path(result.image)} -> {tensor} {shape}, values [{values.min():.4g}, {values.max():.4g}], "
          f"--map {args.map}: wrote {where}")
