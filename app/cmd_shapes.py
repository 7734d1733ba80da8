"""Command line: `cnnc make-shapes DIR` — write the synthetic shapes data set as a segmentation folder.

The images and masks come from runtime/data/shapes.py; they are written in the
layout runtime/data/segmentation.py reads (docs/data.md): `DIR/train/images`,
`DIR/train/masks`, `DIR/test/...` and `DIR/classes.txt`, masks as palette PNGs
(viz/masks.py). The whole folder is written beside DIR under a temporary name
(`atomic_directory`), each file through `write_atomic`, and renamed into place
at the end, so DIR holds a complete data set or nothing; a killed run's
temporary folder is removed by the next write beside it.
"""
from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .dsl.files import atomic_directory, describe_path, write_atomic
from .dsl.source import CnncError
from .runtime.data.segmentation import CLASSES_FILE, IMAGES, MASKS
from .runtime.data.shapes import SHAPE_CLASSES, iter_shapes
from .viz.masks import mask_png

MAX_SAMPLES, MAX_SIZE = 100_000, 1024


def image_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) as grey or RGB PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format="PNG")
    return out.getvalue()


def write_split(folder: Path, samples) -> None:
    """Each (image, mask) as it comes: memory holds one sample, whatever --n says."""
    for i, (image, mask) in enumerate(samples):
        write_atomic(folder / IMAGES / f"{i:05d}.png", image_png(image), "image")
        write_atomic(folder / MASKS / f"{i:05d}.png", mask_png(mask, len(SHAPE_CLASSES)), "mask")


def write_shapes(target: str | os.PathLike, n: int, test: int, size: int, channels: int, seed: int) -> None:
    """The data set in `target` (which must not exist, or be an empty folder)."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CnncError(f"'{describe_path(target)}' already exists and is not an empty folder",
                        hint="choose a new folder; make-shapes never mixes its files with others")
    with atomic_directory(target, "data set") as staging:  # over an empty folder or none: it appears whole
        for part, (name, count) in enumerate((("train", n), ("test", test))):
            if count:
                write_split(staging / name, iter_shapes(count, size, channels, seed, part))
        write_atomic(staging / CLASSES_FILE, "".join(c + "\n" for c in SHAPE_CLASSES), "class list")


def _check(flag: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise CnncError(f"{flag} {value}: must lie between {low} and {high:,}")
    return value


def make_shapes_command(args: argparse.Namespace) -> int:
    n = _check("--n", args.n, 1, MAX_SAMPLES)
    test = _check("--test", args.test if args.test is not None else max(n // 4, 1), 0, MAX_SAMPLES)
    size = _check("--size", args.size, 8, MAX_SIZE)
    if args.channels not in (1, 3):
        raise CnncError(f"--channels {args.channels}: must be 1 (grey) or 3 (RGB)")
    seed = _check("--seed", args.seed, 0, 2**32 - 1)
    write_shapes(args.folder, n, test, size, args.channels, seed)
    print(f"{describe_path(args.folder)}: {n:,} training and {test:,} test images of {size}x{size} "
          f"({'grey' if args.channels == 1 else 'RGB'}) with masks of {len(SHAPE_CLASSES)} classes: "
          + ", ".join(f"{k} {c}" for k, c in enumerate(SHAPE_CLASSES)))
    return 0
