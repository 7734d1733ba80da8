"""Stage 3 (runtime): segmentation data sets in a folder — images and their masks, paired by name.

The layout (docs/data.md):

    DIR/images/NAME.png     an image (any format Pillow reads)
    DIR/masks/NAME.png      its mask: one class index per pixel, 8-bit grey or palette PNG
    DIR/classes.txt         optional: one class name per line, in index order

or `DIR/train/{images,masks}` plus an optional `DIR/test/{images,masks}`. An
image and its mask share the file name's stem and the size. Every file is
read through the bounded readers of images.py; every mismatch (a
missing mask, a mask without an image, two files with one stem, a size
mismatch, a class index past the class count) is a one-line `CnncError`
naming the file at fault. Masks become int64 `[N, H, W]` labels, images float32
`[N, C, H, W]` as in an image-classification folder (`size` resizes images
bilinearly and masks with the nearest neighbour, `channels` converts).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .containers import Dataset, Split, data_limit, image_size_meta
from .images import convert_channels, image_suffixes, read_image, read_mask, resize, resize_mask, target_size

IMAGES, MASKS, CLASSES_FILE = "images", "masks", "classes.txt"
MAX_CLASSES = 256          # a mask PNG holds 8-bit indices
_CLASSES_BYTES = files.MiB


def _has_pair(folder: Path) -> bool:
    return (folder / IMAGES).is_dir() and (folder / MASKS).is_dir()


def is_segmentation_folder(path: str | Path) -> bool:
    """Whether `path` has the layout above (`images/` + `masks/`, or `train/images/` + `train/masks/`)."""
    folder = Path(path)
    return folder.is_dir() and (_has_pair(folder) or _has_pair(folder / "train"))


def read_class_names(path: Path) -> list[str]:
    """classes.txt: one non-empty, distinct name per line (surrounding blanks and empty lines ignored)."""
    shown = files.describe_path(path)
    try:
        text = files.read_bytes(path, "class list", _CLASSES_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise CnncError(f"class list '{shown}' is not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise CnncError(f"class list '{shown}' names no classes", hint="write one class name per line")
    if len(names) > MAX_CLASSES:
        raise CnncError(f"class list '{shown}' names {len(names)} classes; masks hold at most {MAX_CLASSES}")
    seen: set[str] = set()
    for number, name in enumerate(names, 1):
        if name in seen:
            raise CnncError(f"class list '{shown}' names '{files.describe_path(name)}' twice "
                            f"(the second time as class {number - 1})")
        seen.add(name)
    return names


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    """The image files of `folder` by stem; two files with one stem are refused."""
    suffixes = image_suffixes()
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise CnncError(f"{what} '{files.describe_path(path)}' and '{files.describe_path(found[path.stem])}' "
                            "share a name; each sample needs exactly one",
                            hint="rename or remove one of them")
        found[path.stem] = path
    return found


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of one split folder, in name order; every image needs its mask and back."""
    images, masks = _by_stem(folder / IMAGES, "image"), _by_stem(folder / MASKS, "mask")
    if not images:
        raise CnncError(f"segmentation folder '{files.describe_path(folder / IMAGES)}' contains no images")
    for stem, path in images.items():
        if stem not in masks:
            raise CnncError(f"image '{files.describe_path(path)}' has no mask: expected "
                            f"'{files.describe_path(folder / MASKS / (stem + '.png'))}'",
                            hint="every image needs a mask of the same name in masks/")
    for stem, path in masks.items():
        if stem not in images:
            raise CnncError(f"mask '{files.describe_path(path)}' has no image of the same name in "
                            f"'{files.describe_path(folder / IMAGES)}'")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _read_pair(image_path: Path, mask_path: Path, classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    image, mask = read_image(image_path), read_mask(mask_path)
    if image.shape[1:] != mask.shape:
        raise CnncError(f"mask '{files.describe_path(mask_path)}' is {mask.shape[1]}x{mask.shape[0]} pixels, "
                        f"its image '{files.describe_path(image_path)}' is {image.shape[2]}x{image.shape[1]}",
                        hint="a mask must have its image's size")
    if classes is not None and mask.size and int(mask.max()) >= classes:
        raise CnncError(f"mask '{files.describe_path(mask_path)}' holds class {int(mask.max())}, but there are "
                        f"only {classes} classes (0 to {classes - 1})",
                        hint="fix the mask, or name every class in classes.txt / give the network more outputs")
    return image, mask


class _Reader:
    """Reads split folders against one budget (CNNC_MAX_DATA), one class count, one size and channel count."""

    def __init__(self, classes: int | None, size: tuple[int, int] | None, channels: int | None):
        self.classes, self.size, self.channels = classes, size, channels
        self.budget = data_limit()
        self.first: tuple[Path, tuple[int, int]] | None = None   # the size every image must share

    def split(self, folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
        images, masks = [], []
        for image_path, mask_path in _pairs(folder):
            image, mask = _read_pair(image_path, mask_path, self.classes)
            self.budget -= image.nbytes + mask.size * 8
            if self.budget < 0:
                raise CnncError(f"segmentation folder '{files.describe_path(folder)}' holds more than the limit "
                                f"of {files.size_text(data_limit())} (reached at '{files.describe_path(image_path)}')",
                                hint="set CNNC_MAX_DATA (bytes) to raise the limit")
            if self.size is not None:
                image, mask = resize(image, self.size), resize_mask(mask, self.size)
            self._check_size(image_path, mask.shape)
            images.append(image)
            masks.append(mask)
        return images, masks

    def _check_size(self, path: Path, shape: tuple[int, ...]) -> None:
        if self.first is None:
            self.first = (path, (shape[0], shape[1]))
        elif shape != self.first[1]:
            (h, w), other = self.first[1], self.first[0]
            raise CnncError(f"image '{files.describe_path(path)}' is {shape[1]}x{shape[0]} pixels, but "
                            f"'{files.describe_path(other)}' is {w}x{h}",
                            hint="all images of a data set must have one size: resize them first, "
                                 "or give segmentation(\"dir\", size = N)")


def _stack(images: list[np.ndarray], masks: list[np.ndarray], channels: int) -> Split:
    x = np.stack([convert_channels(image, channels) for image in images]).astype(np.float32)
    return Split(x, np.stack(masks).astype(np.int64))


def load_segmentation_folder(root: str | Path, size: int | Sequence[int] | None = None,
                             channels: int | None = None, classes: int | None = None) -> Dataset:
    """The data set of a segmentation folder (layout in the module docstring).

    The class count is classes.txt's length when there is one, else `classes`
    (the network's outputs) when given; a mask index at or past it is refused
    naming the mask. Without `channels`, grey images among colour ones become RGB.
    """
    root = Path(root)
    if not is_segmentation_folder(root):
        state = "does not exist" if not root.exists() else "has neither images/ + masks/ nor train/images/ + " \
                                                            "train/masks/"
        raise CnncError(f"segmentation folder '{files.describe_path(root)}' {state}",
                        hint="see docs/data.md for the layout, or make one with `cnnc make-shapes DIR`")
    names = read_class_names(root / CLASSES_FILE) if (root / CLASSES_FILE).is_file() else None
    if names is not None and classes is not None and len(names) != classes:
        raise CnncError(f"class list '{files.describe_path(root / CLASSES_FILE)}' names {len(names)} classes, "
                        f"the network has {classes} outputs per pixel",
                        hint="one output per class: change the network's class count or the list")
    reader = _Reader(len(names) if names is not None else classes,
                     None if size is None else target_size(size), _channel_count(channels))
    split_dirs = [root] if _has_pair(root) else [root / "train"] + _test_folder(root)
    parts = [reader.split(folder) for folder in split_dirs]
    count = reader.channels or max(image.shape[0] for images, _ in parts for image in images)
    splits = [_stack(images, masks, count) for images, masks in parts]
    return Dataset(str(root), splits[0], splits[1] if len(splits) > 1 else None, classes=names,
                   meta=image_size_meta(reader.size))


def _test_folder(root: Path) -> list[Path]:
    """[root/test] when it is there; a test folder without images/ and masks/ is refused, not skipped."""
    test = root / "test"
    if not test.is_dir():
        return []
    if not _has_pair(test):
        raise CnncError(f"test folder '{files.describe_path(test)}' needs both {IMAGES}/ and {MASKS}/")
    return [test]


def _channel_count(channels: Any) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise CnncError(f"segmentation: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)
