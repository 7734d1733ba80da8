"""Stage 3 (runtime), data: the inputs given to `cnnc predict` — image files and `.npy`/`.npz` arrays.

`load_inputs` reads each file (images.py for images, array_files.py for
arrays), shapes it against the network's per-sample input when it is given,
and refuses, naming the file, what does not fit or is not finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .array_files import read_npy, read_npz
from .containers import PathLike
from .image_policy import ImagePolicy
from .images import image_shape, read_image
from .targets import counted, shape_text


def _same_shape(have: Sequence[int], expected: Sequence[Any]) -> bool:
    """Shapes agree; symbolic (non-int) dimensions of `expected` match anything."""
    return len(have) == len(expected) and all(
        not isinstance(e, (int, np.integer)) or int(e) == h for h, e in zip(have, expected))


def _input_array(path: PathLike, shown: str) -> np.ndarray:
    """The numeric array of an .npy file, or of an .npz archive's "x" (else its first) array."""
    if Path(path).suffix.lower() == ".npz":
        arrays = read_npz(path)
        arr = arrays["x"] if "x" in arrays else next(iter(arrays.values()))
    else:
        arr = read_npy(path)
    if arr.dtype.kind not in "biuf":
        raise CnncError(f"'{shown}' holds an array of dtype {arr.dtype}, which is not numeric",
                        hint="save the inputs as integer or float arrays")
    if arr.ndim == 0:
        raise CnncError(f"'{shown}' holds a single number (a 0-d array), not samples",
                        hint="save the inputs as one sample or a batch [N, ...]")
    if arr.size == 0:
        raise CnncError(f"'{shown}' holds an empty array of shape {list(arr.shape)}")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype)
    return arr.astype(np.float32) if scale is None else (arr / np.float32(scale)).astype(np.float32)


def _array_batch(arr: np.ndarray, sample_shape: Sequence[Any], shown: str) -> np.ndarray:
    """One sample or a batch shaped [N, *sample_shape]; a grey network also takes [H, W] / [N, H, W]."""
    shape = tuple(sample_shape)
    grey = len(shape) == 3 and shape[0] == 1
    if _same_shape(arr.shape, shape):
        return arr[None]
    if _same_shape(arr.shape[1:], shape):
        return arr
    if grey and _same_shape(arr.shape, shape[1:]):
        return arr[None, None]
    if grey and _same_shape(arr.shape[1:], shape[1:]):
        return arr[:, None]
    if len(shape) == 3 and arr.ndim == 4 and _same_shape(arr.shape[1:], shape[1:] + shape[:1]):
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # channels-last, as most tools save
    raise CnncError(f"'{shown}' holds an array of shape {shape_text(arr.shape)}; the network expects "
                    f"{shape_text(shape)} per sample (one sample, or a batch [N, ...])")


def _image_sample(image: np.ndarray, sample_shape: Sequence[Any], shown: str) -> np.ndarray:
    """An image checked against the sample shape as it is (no image policy: see load_inputs)."""
    shape = tuple(sample_shape)
    if len(shape) != 3:
        raise CnncError(f"image '{shown}': the network takes inputs of shape {shape_text(shape)}, not images")
    if not _same_shape(image.shape[:1], shape[:1]):
        kind = {1: "a grey image (1 channel)", 3: "a colour image (3 channels)"}.get(image.shape[0])
        raise CnncError(f"image '{shown}' is {kind}, the network expects {counted(shape[0], 'channel')}",
                        hint="convert the image to " + ("greyscale" if shape[0] == 1 else "RGB") + " first")
    if not _same_shape(image.shape[1:], shape[1:]):
        raise CnncError(f"image '{shown}' is {image.shape[2]}x{image.shape[1]} pixels, the network "
                        f"expects {shape[2]}x{shape[1]}", hint="resize the image first")
    return image


def load_inputs(paths: Sequence[PathLike], sample_shape: Sequence[Any] | None = None,
                images: ImagePolicy | None = None) -> np.ndarray:
    """Samples for `cnnc predict` from image files and `.npy`/`.npz` arrays: float32 [N, ...].

    Images are read by `read_image` ([C, H, W] in [0, 1]); arrays hold one
    sample or a batch (uint8 scaled by 1/255, uint16 by 1/65535). With
    `sample_shape` (the network's per-sample input) every file is checked and
    shaped against it; without it, all files must agree with each other.
    Every refusal is one line naming the file. With `images` (the network's image
    policy, image_policy.py) image files are converted and resized by it, and
    every image is checked from its header before the first is decoded.
    """
    if not paths:
        raise CnncError("no input files given")
    if images is not None:
        for path in paths:
            if Path(path).suffix.lower() not in (".npy", ".npz"):
                images.input_shape(image_shape(path), files.describe_path(path))
    batches: list[tuple[np.ndarray, str, bool]] = []
    for path in paths:
        shown = files.describe_path(path)
        is_array = Path(path).suffix.lower() in (".npy", ".npz")
        if is_array:
            batch = _input_array(path, shown)
            if sample_shape is not None:
                batch = _array_batch(batch, sample_shape, shown)
        else:
            if images is not None:
                batch = images.read(path)[None]
            else:
                image = read_image(path)
                batch = (image if sample_shape is None else _image_sample(image, sample_shape, shown))[None]
        batches.append((batch, shown, is_array))
    _check_input_shapes(batches)
    x = np.concatenate([b for b, _, _ in batches]).astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = next(shown for b, shown, _ in batches if not np.isfinite(b).all())
        raise CnncError(f"'{bad}' holds NaN or infinite values")
    return x


def _check_input_shapes(batches: list[tuple[np.ndarray, str, bool]]) -> None:
    first, first_name, _ = batches[0]
    for batch, shown, is_array in batches[1:]:
        if batch.shape[1:] == first.shape[1:]:
            continue
        if not is_array and not batches[0][2] and batch.ndim == first.ndim == 4:
            raise CnncError(f"image '{shown}' is {batch.shape[3]}x{batch.shape[2]} pixels with "
                            f"{counted(batch.shape[1], 'channel')}, but '{first_name}' is "
                            f"{first.shape[3]}x{first.shape[2]} with {counted(first.shape[1], 'channel')}",
                            hint="all inputs must have the same size")
        raise CnncError(f"'{shown}' holds samples of shape {shape_text(batch.shape[1:])}, but '{first_name}' "
                        f"holds {shape_text(first.shape[1:])}", hint="all inputs must have the same shape")
