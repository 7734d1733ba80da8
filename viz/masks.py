"""Stage 4 (viz): segmentation masks as palette PNG images.

A predicted mask is an [H, W] array of class indices; `mask_png` writes it
as an 8-bit palette PNG whose colour table is `PALETTE` (class 0 black, then
ten well-separated colours, repeating), so any image viewer shows the
classes and any image library reads the indices back exactly.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..dsl.source import CnncError

# class -> RGB; 0 is the background. Colours from the Tableau 10 set, which stay distinct in print.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def palette_for(classes: int) -> list[int]:
    """The flat RGB table for `classes` classes (colours repeat after the eleventh)."""
    return [v for c in range(classes) for v in PALETTE[c % len(PALETTE)]]


def mask_png(mask: np.ndarray, classes: int) -> bytes:
    """An [H, W] array of class indices in [0, classes) as palette PNG bytes."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise CnncError(f"a mask must be [H, W], got shape {list(mask.shape)}")
    if classes > 256:
        raise CnncError(f"a palette PNG holds at most 256 classes, the network has {classes}")
    if mask.size and (mask.min() < 0 or mask.max() >= classes):
        raise CnncError(f"mask values must lie in [0, {classes}), got {mask.min()} to {mask.max()}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(palette_for(classes))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def display_rgb(image: np.ndarray) -> np.ndarray:
    """A network input [C, H, W] (C = 1 or 3, values in [0, 1]) as uint8 [H, W, 3]: values are clipped
    to [0, 1] and scaled by 255 (rounded); a grey channel is repeated."""
    image = np.asarray(image, np.float64)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise CnncError(f"an overlay needs a grey or RGB image [1 or 3, H, W], got shape {list(image.shape)}")
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return np.round(np.clip(np.nan_to_num(rgb), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def overlay(image: np.ndarray, mask: np.ndarray, classes: int) -> np.ndarray:
    """uint8 [H, W, 3]: the image with every non-background pixel blended half and half with its
    class's palette colour (see the module docstring)."""
    rgb = display_rgb(image)
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise CnncError(f"the mask is {mask.shape[1]}x{mask.shape[0]} pixels, its image "
                        f"{rgb.shape[1]}x{rgb.shape[0]}: an overlay needs one size")
    colours = np.asarray(palette_for(classes), np.uint16).reshape(classes, 3)
    blended = ((rgb.astype(np.uint16) + colours[mask] + 1) // 2).astype(np.uint8)
    return np.where((mask > 0)[..., None], blended, rgb)


def overlay_png(image: np.ndarray, mask: np.ndarray, classes: int) -> bytes:
    """`overlay` as RGB PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(overlay(image, mask, classes)).save(out, format="PNG")
    return out.getvalue()
