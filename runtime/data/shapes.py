"""Stage 3 (runtime): a small synthetic segmentation data set — shapes on textured backgrounds.

`make_shapes` draws images with one to `max_shapes` shapes each — discs,
squares and triangles, the squares and triangles turned by a random angle —
on a background of a random gradient, a random stripe texture and noise, and
the mask that goes with each: class 0 background, 1 disc, 2 square, 3
triangle (`SHAPE_CLASSES`). The class is the shape's kind only: a shape's
colour is random (dark or bright, so it stands out from the mid-grey
background, with a random hue in colour), its size and turn are random, and
shapes never touch (a one-pixel gap), so every mask pixel of a shape has that
shape's flat colour (plus the noise) and nothing else does. Everything comes
from `numpy.random.default_rng([seed, part, index])`: the same seed gives the
same images, and sample i does not depend on how many samples are drawn.
`cnnc make-shapes` writes them in the layout of segmentation.py.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

SHAPE_CLASSES = ("background", "disc", "square", "triangle")
_LUMA = np.array([0.299, 0.587, 0.114])
NOISE = 0.03            # standard deviation of the noise over the whole image (in [0, 1] units)
_PLACEMENT_TRIES = 30   # attempts to place a shape without touching the others; then it is skipped


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    return yy.astype(np.float64), xx.astype(np.float64)


def _convex(yy: np.ndarray, xx: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the convex polygon `corners` ([K, 2] of (y, x), counter-clockwise
    in (x, y)): on the inner side of every edge."""
    inside = np.ones(yy.shape, bool)
    for (y0, x0), (y1, x1) in zip(corners, np.roll(corners, -1, axis=0)):
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside


def shape_mask(kind: str, size: int, cy: float, cx: float, r: float, turn: float) -> np.ndarray:
    """The [size, size] pixels of one shape: a disc of radius r, or a square / triangle whose corners lie
    on the circle of radius r, turned by `turn` radians."""
    yy, xx = _grid(size)
    if kind == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    corners = {"square": 4, "triangle": 3}[kind]
    angles = turn + 2 * np.pi * np.arange(corners) / corners
    return _convex(yy, xx, np.stack([cy + r * np.sin(angles), cx + r * np.cos(angles)], axis=1))


def _grown(mask: np.ndarray) -> np.ndarray:
    """The mask and its 8 neighbours (a one-pixel dilation)."""
    out = mask.copy()
    padded = np.pad(mask, 1)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Luminance [size, size] around mid-grey: a gradient plus stripes of random angle and period."""
    yy, xx = _grid(size)
    gy, gx = rng.uniform(-0.15, 0.15, 2) / size
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
    phase = 2 * np.pi * (yy * np.sin(angle) + xx * np.cos(angle)) / period
    return (rng.uniform(0.42, 0.58) + gy * (yy - size / 2) + gx * (xx - size / 2)
            + rng.uniform(0.03, 0.08) * np.sin(phase + rng.uniform(0, 2 * np.pi)))


def _colour(rng: np.random.Generator, channels: int) -> np.ndarray:
    """A dark (luminance 0.05-0.25) or bright (0.75-0.95) colour; in RGB with a random hue of that luminance."""
    luminance = rng.uniform(0.05, 0.25) if rng.random() < 0.5 else rng.uniform(0.75, 0.95)
    if channels == 1:
        return np.array([luminance])
    hue = rng.uniform(0, 1, 3)
    return np.clip(luminance + 0.6 * (hue - _LUMA @ hue), 0, 1)


def make_sample(rng: np.random.Generator, size: int, channels: int, max_shapes: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 [size, size, channels]) and its mask (uint8 [size, size])."""
    tint = np.ones(channels) if channels == 1 else rng.uniform(0.85, 1.15, channels)
    image = _background(rng, size)[..., None] * tint
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = int(rng.integers(1, len(SHAPE_CLASSES)))
        for _ in range(_PLACEMENT_TRIES):
            r = rng.uniform(0.14, 0.26) * size
            cy, cx = rng.uniform(r * 0.7, size - 1 - r * 0.7, 2)
            pixels = shape_mask(SHAPE_CLASSES[kind], size, cy, cx, r, rng.uniform(0, 2 * np.pi))
            if pixels.sum() >= 4 and not (pixels & _grown(mask > 0)).any():
                mask[pixels] = kind
                image[pixels] = _colour(rng, channels)
                break
    image = image + NOISE * rng.standard_normal(image.shape)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def iter_shapes(n: int, size: int = 32, channels: int = 3, seed: int = 0, part: int = 0,
                max_shapes: int = 3) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The samples of `make_shapes` one at a time (image [size, size, channels], mask [size, size]):
    what writes them to disk holds one sample, never the set."""
    for i in range(n):
        yield make_sample(np.random.default_rng([seed, part, i]), size, channels, max_shapes)


def make_shapes(n: int, size: int = 32, channels: int = 3, seed: int = 0, part: int = 0,
                max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (uint8 [n, size, size, channels]) and masks (uint8 [n, size, size], see SHAPE_CLASSES).

    `part` separates streams (0 train, 1 test): sample i of a part is the same whatever `n` is.
    """
    samples = list(iter_shapes(n, size, channels, seed, part, max_shapes))
    images = np.stack([image for image, _ in samples]) if samples else np.zeros((0, size, size, channels), np.uint8)
    masks = np.stack([mask for _, mask in samples]) if samples else np.zeros((0, size, size), np.uint8)
    return images, masks
