"""Stage 3 (runtime), data: what a data set is — splits of arrays, and how much of them may be read.

A `Dataset` holds `Split`s of `x` (float32 `[N, C, H, W]`, or `[N, F]` for
feature vectors) and `y` (int64 class labels or masks, or float32 targets;
for a network with several outputs, a dict of such arrays by output name —
`Targets`; `take` indexes either kind).
`as_split` makes one from a reader's raw arrays: pixel data stored as uint8
(uint16) is scaled to [0, 1], `[N, H, W]` gains a channel axis and channels-last
images are turned channels-first. Data files are untrusted input: every reader
refuses what would decode to more than `data_limit()` (CNNC_MAX_DATA, 4 GiB)
before it inflates or allocates anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError


PathLike = str | os.PathLike
Targets = np.ndarray | dict[str, np.ndarray]   # one array, or one per output of the network


def take(y: Targets, index: Any) -> Targets:
    """The samples `index` of targets of either kind."""
    return {k: v[index] for k, v in y.items()} if isinstance(y, dict) else y[index]


def first_targets(y: Targets) -> np.ndarray:
    """The targets that stand for a sample (its stratum when splitting): the only array, or the first output's."""
    return next(iter(y.values())) if isinstance(y, dict) else y


@dataclass
class Split:
    """One part of a dataset: inputs `x` and targets `y`, aligned on axis 0."""

    x: np.ndarray
    y: Targets

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.x[index], take(self.y, index))


IMAGE_SIZE = "image_size"   # meta key: the (height, width) a source of image files resized every image to


def image_size_meta(size: tuple[int, int] | None) -> dict[str, Any]:
    """The meta of a data set whose images were resized to `size` (None: read as they were): training
    records it in its checkpoints, and prediction resizes to it by default (image_policy.py)."""
    return {} if size is None else {IMAGE_SIZE: [int(size[0]), int(size[1])]}


@dataclass
class Dataset:
    """Train split plus optional test/validation splits, class names and a preprocessing record."""

    name: str                                  # "mnist10k", or the path it came from
    train: Split
    test: Split | None = None
    val: Split | None = None
    classes: list[str] | None = None           # class names, index = label
    meta: dict[str, Any] = field(default_factory=dict)  # preprocessing applied (mean/std...), IMAGE_SIZE

    def splits(self) -> list[tuple[str, Split]]:
        """The present splits as (name, split), train first."""
        named = [("train", self.train), ("validation", self.val), ("test", self.test)]
        return [(n, s) for n, s in named if s is not None]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """Float32 inputs: uint8/uint16 pixels scaled to [0, 1]; [N, H, W] gains a channel axis."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise CnncError(f"{where}: the inputs have dtype {x.dtype}, which is not numeric",
                        hint="store images and features as integer or float arrays")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(x.dtype)
    out = x.astype(np.float32) if scale is None else (x / np.float32(scale)).astype(np.float32)
    if out.ndim == 3:
        out = out[:, None]  # greyscale [N, H, W] -> [N, 1, H, W]
    elif out.ndim == 4 and out.shape[3] in (1, 3, 4) and out.shape[1] not in (1, 3, 4):
        out = out.transpose(0, 3, 1, 2)  # channels-last images, as most tools save them
    if out.ndim not in (2, 4):
        raise CnncError(f"{where}: inputs must be [N, F], [N, H, W] or [N, C, H, W], "
                        f"got shape {list(x.shape)}")
    return np.ascontiguousarray(out)


INT64_MAX = np.iinfo(np.int64).max


def _as_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Integer (and bool) targets become int64 labels; floats stay float32 targets."""
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        _refuse_huge_labels(y, where)
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        return y.astype(np.float32)
    raise CnncError(f"{where}: the labels have dtype {y.dtype}, which is not numeric",
                    hint="store labels as integers (class indices) or floats (regression targets)")


def _refuse_huge_labels(y: np.ndarray, where: str) -> None:
    """uint64 labels above the int64 range would wrap to negative numbers: name the real value."""
    if y.dtype == np.uint64 and y.size and int(y.max()) > INT64_MAX:
        raise CnncError(f"{where}: the labels hold {int(y.max())}, too large for a class index",
                        hint="number the classes from 0")


def as_split(x: np.ndarray, y: Targets, where: str) -> Split:
    """A reader's raw inputs and labels (one array, or one per output) as a `Split` (see above); `where`
    names the source in errors."""
    x = _as_images(x, where)
    y = {k: _as_targets(v, f"{where} (y_{k})") for k, v in y.items()} if isinstance(y, dict) else _as_targets(y, where)
    for name, labels in (y.items() if isinstance(y, dict) else [(None, y)]):
        if len(x) != len(labels):
            raise CnncError(f"{where}: {len(x)} inputs but {len(labels)} labels" + (f" for {name}" if name else ""),
                            hint="inputs and labels must have the same number of samples")
    return Split(x, y)


def data_limit() -> int:
    """Bytes a data set may take once decoded (env CNNC_MAX_DATA raises it); 4 GiB by default.

    Declared arrays count at float32 size at least (4 bytes a value): that is what
    training holds, so 1 GiB of uint8 pixels already counts 4 GiB.
    """
    return files.limit("data")


def require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise CnncError(f"{what} '{folder}' {state}")
