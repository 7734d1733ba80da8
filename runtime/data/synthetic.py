"""Stage 3 (runtime), data: small synthetic data sets for smoke tests, generated from a seed.

Classes (a blob and stripes whose place and angle name the class; bursts of a
class's frequency for `[C, L]` signals), segmentation (shapes and their masks)
and regression (a linear map with a mild nonlinearity); `load_synthetic(name,
options)` checks the counts it is given. Every draw comes from an explicit
seed, so the same options give the same data.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...dsl.source import CnncError
from .containers import Dataset, Split


def synthetic_classes(n_train: int = 512, n_test: int = 128, num_classes: int = 4,
                      shape: Sequence[int] = (1, 16, 16), noise: float = 0.2,
                      seed: int = 0) -> Dataset:
    """K classes: a Gaussian blob at a class-specific place, striped at a class-specific angle.

    Positions jitter by up to a pixel and noise is added, so a small conv net has
    to use local spatial patterns (not single pixels) to reach high accuracy.
    """
    if len(shape) == 2:
        return _synthetic_signals(n_train, n_test, num_classes, shape, noise, seed)
    c, h, w = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % num_classes)
    angle = 2 * np.pi * y / num_classes
    cy = (h - 1) / 2 + h / 4 * np.sin(angle) + rng.uniform(-1, 1, n)
    cx = (w - 1) / 2 + w / 4 * np.cos(angle) + rng.uniform(-1, 1, n)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    sigma = max(h, w) / 6
    blob = np.exp(-(dy ** 2 + dx ** 2) / (2 * sigma ** 2))
    stripe_dir = (np.pi * y / num_classes)[:, None, None]
    stripes = 0.5 + 0.5 * np.cos(2 * np.pi / 4 * (dy * np.sin(stripe_dir) + dx * np.cos(stripe_dir)))
    pattern = blob * (0.4 + 0.6 * stripes) * rng.uniform(0.8, 1.2, (n, 1, 1))
    # Channels see the same pattern with class-dependent gains, so colour carries signal too.
    gains = 0.6 + 0.4 * np.cos(2 * np.pi * (y[:, None] + np.arange(c)[None]) / max(2, num_classes))
    x = pattern[:, None] * gains[:, :, None, None] + noise * rng.standard_normal((n, c, h, w))
    x = x.astype(np.float32)
    return Dataset("synthetic_classes", Split(x[:n_train], y[:n_train].astype(np.int64)),
                   Split(x[n_train:], y[n_train:].astype(np.int64)),
                   classes=[f"class{k}" for k in range(num_classes)])


def _shape_mask(kind: int, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:  # disk
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 1:  # square
        return (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    return np.abs(yy - cy) + np.abs(xx - cx) <= r  # diamond


def synthetic_segmentation(n_train: int = 96, n_test: int = 32, num_classes: int = 3,
                           shape: Sequence[int] = (1, 32, 32), max_shapes: int = 3,
                           noise: float = 0.1, seed: int = 0) -> Dataset:
    """Noisy images with disks/squares/diamonds and per-pixel masks [N, H, W] (0 = background).

    Class k >= 1 uses shape (k - 1) % 3 and its own brightness, so both local
    texture and shape tell the classes apart.
    """
    c, h, w = (int(s) for s in shape)
    if num_classes < 2:
        raise CnncError("synthetic_segmentation needs at least 2 classes (background + one shape)")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    masks = np.zeros((n, h, w), np.int64)
    for i in range(n):  # a handful of shapes per image: the loop is over shapes, not pixels
        for _ in range(rng.integers(1, max_shapes + 1)):
            k = int(rng.integers(1, num_classes))
            r = rng.uniform(0.12, 0.22) * min(h, w)
            cy, cx = rng.uniform(r, h - 1 - r), rng.uniform(r, w - 1 - r)
            masks[i][_shape_mask((k - 1) % 3, h, w, cy, cx, r)] = k
    brightness = np.linspace(0.0, 1.0, num_classes)
    gains = np.linspace(1.0, 0.7, c)
    x = brightness[masks][:, None] * gains[None, :, None, None]
    x = (x + noise * rng.standard_normal((n, c, h, w))).astype(np.float32)
    names = ["background"] + [f"shape{k}" for k in range(1, num_classes)]
    return Dataset("synthetic_segmentation", Split(x[:n_train], masks[:n_train]),
                   Split(x[n_train:], masks[n_train:]), classes=names)


def _synthetic_signals(n_train: int, n_test: int, num_classes: int, shape: Sequence[int], noise: float,
                       seed: int) -> Dataset:
    """[C, L] signals for 1-D networks: class k is a burst of a class-specific frequency at a random
    place (each channel with its own phase), plus noise, so a conv net must find a local pattern."""
    c, length = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % num_classes)
    t = np.arange(length, dtype=np.float64)
    centre = rng.uniform(0.25, 0.75, n)[:, None] * length
    envelope = np.exp(-((t[None] - centre) ** 2) / (2 * (length / 8) ** 2))
    cycles = (2 + 2 * y)[:, None, None] * (2 * np.pi / length)
    phase = rng.uniform(0, 2 * np.pi, (n, c, 1))
    x = envelope[:, None] * np.sin(cycles * t[None, None] + phase) + noise * rng.standard_normal((n, c, length))
    x = x.astype(np.float32)
    return Dataset("synthetic_classes", Split(x[:n_train], y[:n_train].astype(np.int64)),
                   Split(x[n_train:], y[n_train:].astype(np.int64)),
                   classes=[f"class{k}" for k in range(num_classes)])


def synthetic_regression(n_train: int = 512, n_test: int = 128, features: int = 8,
                         targets: int = 1, noise: float = 0.05, seed: int = 0) -> Dataset:
    """x ~ N(0, 1) [N, F]; y = x @ W + b + a mild nonlinearity + noise, float32 [N, T]."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.standard_normal((n, features))
    weights = rng.standard_normal((features, targets)) / np.sqrt(features)
    bias = rng.standard_normal(targets) * 0.1
    y = x @ weights + bias + 0.1 * np.tanh(x[:, :1]) + noise * rng.standard_normal((n, targets))
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Dataset("synthetic_regression", Split(x[:n_train], y[:n_train]),
                   Split(x[n_train:], y[n_train:]))


SYNTHETIC = {
    "synthetic_classes": synthetic_classes,
    "synthetic_segmentation": synthetic_segmentation,
    "synthetic_regression": synthetic_regression,
}


# Options of the synthetic sets that count something, with their least allowed value.
_SYNTHETIC_COUNTS = {"n_train": 1, "n_test": 0, "num_classes": 2, "features": 1, "targets": 1,
                     "max_shapes": 1}


def load_synthetic(name: str, options: dict[str, Any]) -> Dataset:
    """The synthetic set `name` with `options`, whose counts must be whole numbers in range."""
    for key, least in _SYNTHETIC_COUNTS.items():
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < least):
            raise CnncError(f"data source '{name}': {key} must be a whole number of at least {least}, "
                            f"got {value!r}")
    try:
        return SYNTHETIC[name](**options)
    except TypeError as e:
        raise CnncError(f"data source '{name}': {e}") from None
