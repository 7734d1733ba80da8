"""Stage 3 (runtime): batch data augmentation in NumPy, reproducible from an explicit RNG.

Each augmentation is a callable `aug(x, y, rng) -> (x, y)` over a whole batch
`x: [N, C, H, W]`: every random choice is drawn, batch-wide and in a fixed
order, from the `np.random.Generator` it is given, so equal seeds give
bit-identical batches. Augmentation runs on the images as read, in [0, 1],
before any preprocessing (the trainer normalises afterwards, as torchvision's
transforms do), so a padded or rotated-in pixel is black (0) and a noise std
is in pixel units. Geometric transforms compute one source coordinate
per output pixel and gather with vectorised bilinear interpolation (zeros
outside the image for crops and rotations, edge-clamped for resizing). When
the targets hold per-pixel masks `[N, H, W]` (segmentation; for a network with
several outputs, any output's), the same geometric transform is applied to
them with nearest-neighbour sampling and 0 (background) where the image is
padded; an image target of the input's size (an autoencoder's) moves as its
input does; other targets pass through, and photometric transforms change
the inputs only (a denoising autoencoder's targets stay clean). `color_jitter` is torchvision's: each
factor blends towards black, the mean grey or the grey image, the hue turns
round the colour wheel, and the result is clamped to [0, 1] after each step.
`make_augment(specs)` builds a pipeline from names or
`(name, kwargs)` pairs registered in `AUGMENTATIONS`; the names and options
are those the train vocabulary declares (compiler/train_vocab.py `AUGMENT`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...compiler.train_vocab import AUGMENT
from ...dsl.source import CnncError, did_you_mean

Batch = tuple[np.ndarray, "np.ndarray | None"]

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114])


# ====================================================================== helpers

def _require_images(x: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise CnncError(f"augmentation {name} needs image batches [N, C, H, W], "
                        f"the data has shape {list(x.shape)}",
                        hint="use only gaussian_noise on feature vectors")


def _is_mask(y: np.ndarray | None, x: np.ndarray) -> bool:
    return y is not None and y.ndim == 3 and y.shape == (x.shape[0],) + x.shape[2:]


def _is_image(y: np.ndarray | None, x: np.ndarray) -> bool:
    return y is not None and y.ndim == 4 and y.shape[0] == x.shape[0] and y.shape[2:] == x.shape[2:]


def _moved(y: Any, x: np.ndarray, mask: Callable[[np.ndarray], np.ndarray],
           image: Callable[[np.ndarray], np.ndarray]) -> Any:
    """The targets after a geometric transform of their images: a per-pixel mask moved by `mask`
    (nearest neighbour), an image target (an autoencoder's) by `image`, as its input; other targets
    as they are. One array, or one per output."""
    def one(v: np.ndarray) -> np.ndarray:
        return mask(v) if _is_mask(v, x) else image(v) if _is_image(v, x) else v
    return {k: one(v) for k, v in y.items()} if isinstance(y, dict) else one(y)


def _range(value: float | Sequence[float], name: str, centre: float = 0.0) -> tuple[float, float]:
    """A scalar v means [centre - v, centre + v]; a pair is taken as given."""
    if np.ndim(value) == 0:
        v = float(value)
        if v < 0:
            raise CnncError(f"augmentation {name}: expects a non-negative value, got {v}")
        return centre - v, centre + v
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise CnncError(f"augmentation {name}: range ({lo}, {hi}) is empty")
    return lo, hi


def _bilinear(x: np.ndarray, sy: np.ndarray, sx: np.ndarray, zero_outside: bool) -> np.ndarray:
    """Sample x [N, C, H, W] at float coordinates sy, sx [N, Ho, Wo] -> [N, C, Ho, Wo]."""
    n, _, h, w = x.shape
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = (sy - y0).astype(x.dtype), (sx - x0).astype(x.dtype)
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    batch = np.arange(n)[:, None, None]
    out = np.zeros((n,) + sy.shape[1:] + (x.shape[1],), dtype=x.dtype)
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + dy, x0 + dx
        if zero_outside:  # a corner outside the image contributes zero, not an edge pixel
            weight = weight * ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))
        # Advanced indices around a slice put the gathered axes first: [N, Ho, Wo, C].
        out += x[batch, :, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)] * weight[..., None]
    return out.transpose(0, 3, 1, 2).copy()


def _nearest_mask(y: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Nearest-neighbour sample of masks y [N, H, W] at sy, sx; 0 outside the image."""
    n, h, w = y.shape
    yi, xi = np.floor(sy + 0.5).astype(np.intp), np.floor(sx + 0.5).astype(np.intp)
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    picked = y[np.arange(n)[:, None, None], np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return np.where(inside, picked, 0).astype(y.dtype)


# ====================================================================== geometric

class RandomCrop:
    """Zero-pad by `padding` on every side, then crop back to H x W at a random offset."""

    name = "random_crop"

    def __init__(self, padding: int = 4) -> None:
        if int(padding) < 0:
            raise CnncError(f"augmentation random_crop: padding must be >= 0, got {padding}")
        self.padding = int(padding)

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        _require_images(x, self.name)
        p, (n, _, h, w) = self.padding, x.shape
        offsets = rng.integers(0, 2 * p + 1, size=(2, n))
        if p == 0:
            return x.copy(), y
        rows = np.arange(n)

        def crop(a: np.ndarray) -> np.ndarray:
            pad = [(0, 0)] * (a.ndim - 2) + [(p, p), (p, p)]
            windows = sliding_window_view(np.pad(a, pad), (h, w), axis=(-2, -1))
            # windows[n, ..., oy, ox] is the H x W crop at offset (oy, ox) of sample n.
            if a.ndim == 4:
                return windows[rows, :, offsets[0], offsets[1]].copy()
            return windows[rows, offsets[0], offsets[1]].copy()

        return crop(x), _moved(y, x, crop, crop)


class RandomRotation:
    """Rotate each image about its centre by a uniform angle in [-degrees, degrees] (CCW > 0)."""

    name = "random_rotation"

    def __init__(self, degrees: float | Sequence[float] = 15.0) -> None:
        self.low, self.high = _range(degrees, self.name)

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        _require_images(x, self.name)
        n, _, h, w = x.shape
        theta = np.deg2rad(rng.uniform(self.low, self.high, n))[:, None, None]
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        oy, ox = np.mgrid[0:h, 0:w].astype(np.float64)
        dy, dx = oy[None] - cy, ox[None] - cx
        # Inverse map: the output pixel at offset (dy, dx) reads the source rotated back.
        cos, sin = np.cos(theta), np.sin(theta)
        sy = cy + cos * dy + sin * dx
        sx = cx - sin * dy + cos * dx
        out = _bilinear(x, sy, sx, zero_outside=True)
        return out, _moved(y, x, lambda m: _nearest_mask(m, sy, sx), lambda t: _bilinear(t, sy, sx, True))


class RandomResizedCrop:
    """torchvision's RandomResizedCrop: random area/aspect box, resized back to H x W bilinearly."""

    name = "random_resized_crop"
    attempts = 10

    def __init__(self, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise CnncError(f"augmentation random_resized_crop: scale must satisfy "
                            f"0 < low <= high <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise CnncError(f"augmentation random_resized_crop: ratio must satisfy "
                            f"0 < low <= high, got {self.ratio}")

    def _boxes(self, n: int, h: int, w: int,
               rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(top, left, height, width) per sample: first valid of 10 tries, else a centre crop."""
        area = rng.uniform(*self.scale, size=(n, self.attempts)) * h * w
        aspect = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]),
                                    size=(n, self.attempts)))
        bw = np.round(np.sqrt(area * aspect)).astype(np.int64)
        bh = np.round(np.sqrt(area / aspect)).astype(np.int64)
        ok = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
        pick = ok.argmax(axis=1)
        rows = np.arange(n)
        bh, bw = bh[rows, pick], bw[rows, pick]
        found = ok.any(axis=1)
        # Fallback (no valid try): the largest centred box whose aspect lies within ratio.
        if w / h < self.ratio[0]:
            fh, fw = int(round(w / self.ratio[0])), w
        elif w / h > self.ratio[1]:
            fh, fw = h, int(round(h * self.ratio[1]))
        else:
            fh, fw = h, w
        bh, bw = np.where(found, bh, fh), np.where(found, bw, fw)
        top = np.where(found, rng.integers(0, h - bh + 1), (h - bh) // 2)
        left = np.where(found, rng.integers(0, w - bw + 1), (w - bw) // 2)
        return top, left, bh, bw

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        _require_images(x, self.name)
        n, _, h, w = x.shape
        top, left, bh, bw = (v[:, None, None].astype(np.float64) for v in self._boxes(n, h, w, rng))
        oy, ox = np.mgrid[0:h, 0:w].astype(np.float64)
        # Half-pixel centres (align_corners=False), clamped to the box: edge replication.
        sy = np.clip(top + (oy[None] + 0.5) * bh / h - 0.5, top, top + bh - 1)
        sx = np.clip(left + (ox[None] + 0.5) * bw / w - 0.5, left, left + bw - 1)
        out = _bilinear(x, sy, sx, zero_outside=False)
        return out, _moved(y, x, lambda m: _nearest_mask(m, sy, sx), lambda t: _bilinear(t, sy, sx, False))


class HFlip:
    """Mirror each image left-right with probability p."""

    name = "hflip"

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise CnncError(f"augmentation hflip: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        _require_images(x, self.name)
        flip = rng.random(x.shape[0]) < self.p
        out = np.where(flip[:, None, None, None], x[..., ::-1], x)
        return out, _moved(y, x, lambda m: np.where(flip[:, None, None], m[..., ::-1], m),
                           lambda t: np.where(flip[:, None, None, None], t[..., ::-1], t))


# ====================================================================== photometric

def _factors(spread: tuple[float, float] | None, n: int, rng: np.random.Generator,
             dtype: np.dtype) -> np.ndarray | None:
    if spread is None:
        return None
    return rng.uniform(spread[0], spread[1], n).astype(dtype)[:, None, None, None]


class ColorJitter:
    """torchvision's ColorJitter on images in [0, 1]: random brightness, contrast, saturation (RGB) and
    hue (RGB) factors, each result clamped to [0, 1].

    A scalar s draws a factor from [max(0, 1 - s), 1 + s] (hue: a shift from [-s, s] turns of the
    colour wheel); a pair (low, high) draws from it. The order is fixed (brightness, contrast,
    saturation, hue; torchvision draws a random order), so results depend on the seed alone.
    """

    name = "color_jitter"

    def __init__(self, brightness: float | Sequence[float] = 0.0,
                 contrast: float | Sequence[float] = 0.0,
                 saturation: float | Sequence[float] = 0.0,
                 hue: float | Sequence[float] = 0.0) -> None:
        self.spreads = {k: self._spread(v, k) for k, v in
                        (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))}
        self.spreads["hue"] = None if np.ndim(hue) == 0 and float(hue) == 0.0 else _range(hue, f"{self.name} hue")

    def _spread(self, value: Any, what: str) -> tuple[float, float] | None:
        if np.ndim(value) == 0 and float(value) == 0.0:
            return None
        lo, hi = _range(value, f"{self.name} {what}", centre=1.0)
        return max(0.0, lo), hi

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        _require_images(x, self.name)
        n, c = x.shape[:2]
        for what in ("saturation", "hue"):
            if self.spreads[what] is not None and c != 3:
                raise CnncError(f"augmentation color_jitter: {what} needs RGB images, the data has {c} "
                                f"channel{'s' if c != 1 else ''}", hint=f"drop {what} for grey images")
        out = x
        b = _factors(self.spreads["brightness"], n, rng, x.dtype)
        if b is not None:  # blend towards black
            out = _clamped(out * b)
        k = _factors(self.spreads["contrast"], n, rng, x.dtype)
        if k is not None:  # blend towards the image's mean grey level
            grey = _grey(out) if c == 3 else out
            mean = grey.mean(axis=(1, 2, 3), keepdims=True)
            out = _clamped(k * out + (1 - k) * mean)
        s = _factors(self.spreads["saturation"], n, rng, x.dtype)
        if s is not None:  # blend towards the greyscale image
            out = _clamped(s * out + (1 - s) * _grey(out))
        h = _factors(self.spreads["hue"], n, rng, x.dtype)
        if h is not None:  # turn round the colour wheel
            out = _shift_hue(out, h)
        return (out if out is not x else x.copy()).astype(x.dtype, copy=False), y


def _clamped(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 1)


def _grey(x: np.ndarray) -> np.ndarray:
    return np.tensordot(x, _LUMA.astype(x.dtype), axes=([1], [0]))[:, None]


def _shift_hue(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """RGB [N, 3, H, W] in [0, 1] with each sample's hue turned by `shift` [N, 1, 1, 1] turns
    (torchvision's adjust_hue: RGB -> HSV, h = (h + shift) mod 1, HSV -> RGB)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, minc = x.max(axis=1), x.min(axis=1)
    span = maxc - minc
    flat = span == 0
    sat = span / np.where(flat, 1, maxc)
    div = np.where(flat, 1, span)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hue = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = np.fmod(hue / 6.0 + 1.0, 1.0)
    hue = (hue + shift[:, 0]) % 1.0
    sector = np.floor(hue * 6.0)
    f = hue * 6.0 - sector
    sector = sector.astype(np.int64) % 6
    v = maxc
    p = np.clip(v * (1 - sat), 0, 1)
    q = np.clip(v * (1 - sat * f), 0, 1)
    t = np.clip(v * (1 - sat * (1 - f)), 0, 1)
    # table[channel, sector, N, H, W]; each pixel takes its sector's row
    table = np.stack([np.stack(row) for row in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))])
    return np.take_along_axis(table, sector[None, None], axis=1)[:, 0].transpose(1, 0, 2, 3).astype(x.dtype)


class GaussianNoise:
    """Add N(0, std^2) noise to every value (works on any input shape)."""

    name = "gaussian_noise"

    def __init__(self, std: float = 0.1) -> None:
        if std < 0:
            raise CnncError(f"augmentation gaussian_noise: std must be >= 0, got {std}")
        self.std = float(std)

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        noise = rng.standard_normal(x.shape, dtype=dtype)
        return (x + dtype.type(self.std) * noise).astype(dtype, copy=False), y


# ====================================================================== pipeline

AUGMENTATIONS: dict[str, type] = {
    cls.name: cls for cls in (RandomCrop, RandomRotation, RandomResizedCrop, HFlip,
                              ColorJitter, GaussianNoise)
}


class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps

    def __call__(self, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator) -> Batch:
        for step in self.steps:
            x, y = step(x, y, rng)
        return x, y

    def __len__(self) -> int:
        return len(self.steps)


def _build(spec: Any) -> Any:
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping) and "name" in spec:
        kwargs = dict(spec)
        name = kwargs.pop("name")
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], Mapping):
        name, kwargs = spec[0], dict(spec[1])
    else:
        raise CnncError(f"cannot read augmentation spec {spec!r}",
                        hint="write a name, or (name, {options})")
    cls = AUGMENTATIONS.get(name)
    if cls is None:
        raise CnncError(f"unknown augmentation '{name}'",
                        hint=did_you_mean(str(name), AUGMENTATIONS, "known: " + ", ".join(AUGMENTATIONS)))
    allowed = AUGMENT.entries[name].names
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise CnncError(f"augmentation '{name}' has no option '{unknown[0]}'",
                        hint="its options: " + ", ".join(allowed))
    return cls(**kwargs)


def make_augment(specs: Sequence[Any] | None) -> Compose:
    """A pipeline from specs such as ["hflip", ("random_crop", {"padding": 4})]."""
    return Compose([_build(spec) for spec in (specs or [])])
