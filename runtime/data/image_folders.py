"""Stage 3 (runtime), data: the source that is a folder of images with one sub-folder per class.

`load_image_folder` reads `root/<class>/*` (or `root/train/<class>/*` and
`root/test/<class>/*`) in every format Pillow reads (images.py), optionally
resized and converted to 1 or 3 channels; labels follow the sorted class-folder
names, and the pixels read count against `data_limit()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .containers import Dataset, PathLike, Split, data_limit, image_size_meta, require_dir
from .images import convert_channels, image_suffixes, read_image, resize, target_size


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(sub: Path, suffixes: frozenset[str]) -> list[Path]:
    found = sorted(p for p in sub.iterdir()
                   if not p.name.startswith(".") and p.suffix.lower() in suffixes and not p.is_dir())
    if not found:
        raise CnncError(f"class folder '{sub}' contains no images",
                        hint="remove the empty folder or add images (.png, .pgm, .jpg, ...)")
    return found


def _read_tree(folder: Path, classes: list[str], budget: list[int]) -> tuple[list[np.ndarray], list[int], list[Path]]:
    images, labels, paths = [], [], []
    suffixes = image_suffixes()
    for label, cls in enumerate(classes):
        sub = folder / cls
        if not sub.is_dir():
            continue
        for path in _image_files(sub, suffixes):
            image = read_image(path)
            budget[0] -= image.nbytes
            if budget[0] < 0:
                raise CnncError(f"image folder '{folder}' holds more than the limit of "
                                f"{files.size_text(data_limit())} of pixels (reached at '{path}')",
                                hint="set CNNC_MAX_DATA (bytes) to raise the limit")
            images.append(image)
            labels.append(label)
            paths.append(path)
    return images, labels, paths


def _check_sizes(images: list[np.ndarray], paths: list[Path]) -> None:
    h, w = images[0].shape[1:]
    for img, path in zip(images, paths):
        if img.shape[1:] != (h, w):
            raise CnncError(f"image '{path}' is {img.shape[2]}x{img.shape[1]} pixels, but "
                            f"'{paths[0]}' is {w}x{h}",
                            hint="all images of a dataset must have the same size: resize them first, "
                                 "or give images(\"dir\", size = N)")


def _channel_count(channels: Any) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise CnncError(f"images: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)


def load_image_folder(root: PathLike, size: int | Sequence[int] | None = None,
                      channels: int | None = None) -> Dataset:
    """Images in class sub-folders (`root/<class>/*` or `root/train/<class>/*` + `root/test/...`).

    Labels follow the sorted class-folder names of the training tree. `size`
    (n, or (height, width)) resizes every image with Pillow's bilinear filter
    (see `images.resize`); without it all images must already share one size.
    `channels` (1 or 3) converts every image (see `images.convert_channels`);
    without it, grey images among colour ones are promoted to RGB.
    """
    root = Path(root)
    target = None if size is None else target_size(size)
    want = _channel_count(channels)
    require_dir(root, "image folder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = root / "test" if train_dir != root and (root / "test").is_dir() else None
    classes = _class_dirs(train_dir)
    if not classes:
        raise CnncError(f"image folder '{train_dir}' has no class sub-folders",
                        hint="put the images of each class in their own sub-folder, e.g. "
                             f"{train_dir}/cat/1.png and {train_dir}/dog/1.png")
    if test_dir is not None:
        extra = sorted(set(_class_dirs(test_dir)) - set(classes))
        if extra:
            raise CnncError(f"test folder '{test_dir / extra[0]}' is a class that the training "
                            f"folder '{train_dir}' does not have",
                            hint="the test classes must be a subset of the training classes")
    budget = [data_limit()]
    parts = [_read_tree(train_dir, classes, budget)]
    if test_dir is not None:
        parts.append(_read_tree(test_dir, classes, budget))
    all_images = [img for images, _, _ in parts for img in images]
    count = want or max(img.shape[0] for img in all_images)
    parts = [([_fit(img, count, target) for img in images], labels, paths) for images, labels, paths in parts]
    _check_sizes([img for images, _, _ in parts for img in images], [p for _, _, paths in parts for p in paths])
    splits = [Split(np.stack(images), np.asarray(labels, dtype=np.int64))
              for images, labels, _ in parts if images]
    return Dataset(str(root), splits[0], splits[1] if len(splits) > 1 else None, classes=classes,
                   meta=image_size_meta(target))


def _fit(image: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    image = convert_channels(image, channels)
    return image if size is None else resize(image, size)
