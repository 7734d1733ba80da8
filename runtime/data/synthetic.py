"""Stage 3 (runtime), data: small synthetic data sets for smoke tests, generated from a seed.

Classes (a blob and stripes whose place and angle name the class; bursts of a
class's frequency for `[C, L]` signals), segmentation (shapes and their masks),
regression (a linear map with a mild nonlinearity; for images, denoising: the
clean pattern is the target of the noisy one) and, for a network with several
outputs, the same blob images with a target per output (its class, its box);
`load_synthetic(name, options)` checks the counts it is given. Every draw comes from an explicit
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
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    clean, y, _ = _blobs(n, num_classes, shape, rng)
    x = (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)
    return Dataset("synthetic_classes", Split(x[:n_train], y[:n_train].astype(np.int64)),
                   Split(x[n_train:], y[n_train:].astype(np.int64)),
                   classes=[f"class{k}" for k in range(num_classes)])


def _blobs(n: int, num_classes: int, shape: Sequence[int], rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n clean class patterns [N, C, H, W] (float64), their classes [N] and each blob's box [N, 4]
    (top, left, bottom, right of its 2-sigma square, as fractions of the image)."""
    c, h, w = (int(s) for s in shape)
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
    box = np.stack([(cy - 2 * sigma) / h, (cx - 2 * sigma) / w, (cy + 2 * sigma) / h, (cx + 2 * sigma) / w], 1)
    return pattern[:, None] * gains[:, :, None, None], y, box


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


def _resized(images: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Images [N, C, H, W] at another per-sample shape: nearest-neighbour rows and columns, channels
    averaged then repeated (a target an image-to-image network can learn from its input)."""
    c, h, w = (int(s) for s in shape)
    rows = np.arange(h) * images.shape[2] // h
    cols = np.arange(w) * images.shape[3] // w
    grey = images.mean(axis=1, keepdims=True)[:, :, rows][:, :, :, cols]
    return np.repeat(grey, c, axis=1) if c != images.shape[1] else images[:, :, rows][:, :, :, cols]


def _image_targets(clean: np.ndarray, box: np.ndarray, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A regression target of `shape` for each blob image: the clean image itself (resized when the
    shape differs), its box (4 values) or its centre (2), else a fixed linear map of the image."""
    if len(shape) == 3:
        return _resized(clean, shape)
    size = int(np.prod(shape))
    if size == 4:
        return box.reshape((-1, *shape))
    if size == 2:
        return ((box[:, :2] + box[:, 2:]) / 2).reshape((-1, *shape))
    coarse = _resized(clean, (clean.shape[1], min(8, clean.shape[2]), min(8, clean.shape[3]))).reshape(len(clean), -1)
    weights = rng.standard_normal((coarse.shape[1], size)) / np.sqrt(coarse.shape[1])
    return (coarse @ weights).reshape((-1, *shape))


def synthetic_image_regression(n_train: int = 256, n_test: int = 64, shape: Sequence[int] = (1, 16, 16),
                               target_shape: Sequence[int] = (1, 16, 16), noise: float = 0.2,
                               seed: int = 0) -> Dataset:
    """Images with real-valued targets: a noisy blob image whose target is the clean one (denoising;
    resized when the output's shape differs), or for a flat output its box, centre or a linear map."""
    if len(shape) != 3:
        raise CnncError(f"synthetic regression data for an image output is made of images, but the input is "
                        f"{list(shape)}", hint="give an .npz with the inputs and their targets (docs/data.md)")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    clean, _, box = _blobs(n, 4, shape, rng)
    x = (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)
    y = _image_targets(clean, box, target_shape, rng).astype(np.float32)
    return Dataset("synthetic_regression", Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:]))


def synthetic_outputs(n_train: int = 256, n_test: int = 64, shape: Sequence[int] = (1, 16, 16),
                      outputs: dict[str, tuple[str, Sequence[int]]] | None = None, num_classes: int | None = None,
                      noise: float = 0.2, seed: int = 0) -> Dataset:
    """Blob images with a target per output (`outputs`: name -> (target kind, shape)): class labels
    for a classifier head, the blob's box, centre or clean image for a regression head."""
    outputs = outputs or {}
    if len(shape) != 3:
        raise CnncError(f"synthetic data for a network with several outputs is made of images, but its input is "
                        f"{list(shape)}", hint="give an .npz with the inputs and a target array per output "
                                                "(x_train, y_train_NAME: docs/data.md)")
    heads = {name: shp for name, (kind, shp) in outputs.items() if kind == "class"}
    counts = {int(shp[0]) for shp in heads.values()} | ({num_classes} if num_classes else set())
    if len(counts) > 1:
        raise CnncError(f"synthetic data: the class outputs ({', '.join(heads)}) have different class counts "
                        f"{sorted(counts)}", hint="give them the same number of classes")
    k = counts.pop() if counts else 4
    if k < 2:
        raise CnncError("synthetic data needs at least 2 classes")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    clean, labels, box = _blobs(n, k, shape, rng)
    x = (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)
    y: dict[str, np.ndarray] = {}
    for name, (kind, shp) in outputs.items():
        if kind == "class":
            y[name] = labels.astype(np.int64)
        elif kind == "real":
            y[name] = _image_targets(clean, box, shp, rng).astype(np.float32)
        else:
            raise CnncError(f"synthetic data has no {kind.replace('_', ' ')} targets for output '{name}' "
                            "of a network with several outputs",
                            hint="its outputs take class labels (cross_entropy) or real values (mse, smooth_l1)")
    return Dataset("synthetic_outputs", Split(x[:n_train], {o: v[:n_train] for o, v in y.items()}),
                   Split(x[n_train:], {o: v[n_train:] for o, v in y.items()}))


SYNTHETIC = {
    "synthetic_classes": synthetic_classes,
    "synthetic_segmentation": synthetic_segmentation,
    "synthetic_regression": synthetic_regression,
}
# Generated for a network's shapes only (the train vocabulary's `synthetic`), never by a name: runtime/data/sources.py.
FITTED = {"synthetic_image_regression": synthetic_image_regression, "synthetic_outputs": synthetic_outputs}


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
        return {**SYNTHETIC, **FITTED}[name](**options)
    except TypeError as e:
        raise CnncError(f"data source '{name}': {e}") from None
