"""Augmentations: shapes, exact geometric identities, determinism, statistics, masks."""
from __future__ import annotations

import time

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.data.augment import (
    AUGMENTATIONS,
    ColorJitter,
    GaussianNoise,
    HFlip,
    RandomCrop,
    RandomResizedCrop,
    RandomRotation,
    make_augment,
)

ALL_SPECS = [("random_crop", {"padding": 3}), ("random_rotation", {"degrees": 30}),
             ("random_resized_crop", {"scale": (0.3, 1.0)}), "hflip",
             ("color_jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}),
             ("gaussian_noise", {"std": 0.05})]


def _batch(n=6, c=3, h=10, w=13, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)


def _gen(seed=0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s if isinstance(s, str) else s[0])
def test_shape_and_dtype_preserved_and_seeded(spec):
    aug = make_augment([spec])
    x = _batch()
    a, _ = aug(x, None, _gen(1))
    b, _ = aug(x, None, _gen(1))
    c, _ = aug(x, None, _gen(2))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # bit-for-bit with equal seeds
    assert not np.array_equal(a, c)
    assert not np.shares_memory(a, x)


def test_pipeline_is_reproducible_and_uses_one_generator():
    x = _batch(8)
    aug = make_augment(ALL_SPECS)
    assert len(aug) == 6
    a, _ = aug(x, None, _gen(42))
    b, _ = aug(x, None, _gen(42))
    np.testing.assert_array_equal(a, b)
    assert make_augment([])(x, None, _gen())[0] is x and make_augment(None)(x, "y", _gen())[1] == "y"


def test_hflip():
    x = _batch()
    once, _ = HFlip(p=1.0)(x, None, _gen())
    np.testing.assert_array_equal(once, x[..., ::-1])
    twice, _ = HFlip(p=1.0)(once, None, _gen())
    np.testing.assert_array_equal(twice, x)
    # With a random p, the same seed flips the same samples: applying twice is the identity.
    half = HFlip(p=0.5)
    np.testing.assert_array_equal(half(half(x, None, _gen(9))[0], None, _gen(9))[0], x)
    np.testing.assert_array_equal(HFlip(p=0.0)(x, None, _gen())[0], x)
    big = np.zeros((4000, 1, 1, 2), np.float32)
    big[..., 0] = 1.0
    flipped = HFlip(p=0.3)(big, None, _gen(5))[0][:, 0, 0, 0] == 0.0
    assert abs(flipped.mean() - 0.3) < 0.03


def test_rotation_zero_is_identity_and_ninety_is_rot90():
    x = _batch(h=11, w=11)
    np.testing.assert_allclose(RandomRotation(0)(x, None, _gen())[0], x, atol=1e-6)
    for degrees, k in ((90, 1), (-90, -1), (180, 2)):
        out, _ = RandomRotation((degrees, degrees))(x, None, _gen())
        np.testing.assert_allclose(out, np.rot90(x, k=k, axes=(2, 3)), atol=1e-5)
    even = _batch(h=8, w=8)  # the centre falls between pixels: still exact
    np.testing.assert_allclose(RandomRotation((90, 90))(even, None, _gen())[0],
                               np.rot90(even, 1, axes=(2, 3)), atol=1e-5)


def test_rotation_is_bilinear_with_zero_fill():
    x = np.ones((1, 1, 9, 9), np.float32)
    out, _ = RandomRotation((45, 45))(x, None, _gen())
    assert out[0, 0, 4, 4] == pytest.approx(1.0)  # centre keeps its value
    assert out[0, 0, 0, 0] == 0.0  # corners rotate in from outside the image
    assert 0.0 <= out.min() and out.max() <= 1.0 + 1e-6


def test_rotation_angles_stay_in_range_and_turn_counter_clockwise():
    dot = np.zeros((200, 1, 21, 21), np.float32)
    dot[:, 0, 10, 18] = 1.0  # 8 pixels right of the centre
    out, _ = RandomRotation(20)(dot, None, _gen(3))
    rows, cols = np.mgrid[0:21, 0:21]
    mass = out[:, 0].sum(axis=(1, 2))
    r = (out[:, 0] * rows).sum(axis=(1, 2)) / mass
    c = (out[:, 0] * cols).sum(axis=(1, 2)) / mass
    angles = np.degrees(np.arctan2(10 - r, c - 10))  # rows grow downwards: up is positive
    assert np.abs(angles).max() <= 20.5 and angles.std() > 8
    up, _ = RandomRotation((30, 30))(dot[:1], None, _gen())
    assert np.unravel_index(up[0, 0].argmax(), (21, 21))[0] < 10  # +30 degrees moves it up


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = _batch(n=12, c=2, h=6, w=7)
    p = 2
    out, _ = RandomCrop(padding=p)(x, None, _gen(3))
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    offsets = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if np.array_equal(padded[i, :, dy:dy + 6, dx:dx + 7], out[i])]
        assert matches, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 3  # offsets really vary between samples
    np.testing.assert_array_equal(RandomCrop(padding=0)(x, None, _gen())[0], x)


def test_random_resized_crop_full_box_is_identity_and_boxes_obey_limits():
    x = _batch(h=9, w=9)
    out, _ = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, None, _gen())
    np.testing.assert_allclose(out, x, atol=1e-6)
    aug = RandomResizedCrop(scale=(0.2, 0.6), ratio=(0.5, 2.0))
    top, left, bh, bw = aug._boxes(500, 20, 30, _gen(4))
    assert np.all((top >= 0) & (left >= 0) & (top + bh <= 20) & (left + bw <= 30))
    area = bh * bw / 600
    assert area.min() > 0.15 and area.max() < 0.7  # scale range, up to rounding
    ratio = bw / bh
    assert ratio.min() > 0.4 and ratio.max() < 2.3
    # A constant image stays constant whatever the crop: interpolation weights sum to one.
    const = np.full((5, 1, 8, 8), 0.7, np.float32)
    np.testing.assert_allclose(RandomResizedCrop()(const, None, _gen())[0], 0.7, rtol=1e-6)


def test_color_jitter():
    x = _batch(n=50) * np.float32(0.6)   # dark enough that no factor reaches 1 (torchvision clamps there)
    out, _ = ColorJitter(brightness=0.5)(x, None, _gen(1))
    factor = out / x
    per_sample = factor.reshape(50, -1)
    np.testing.assert_allclose(per_sample, np.broadcast_to(per_sample[:, :1], per_sample.shape),
                               rtol=1e-5)  # one factor per image
    assert per_sample.min() >= 0.5 - 1e-6 and per_sample.max() <= 1.5 + 1e-6
    bright, _ = ColorJitter(brightness=(1.5, 1.5))(_batch(), None, _gen())
    assert bright.max() == 1.0 and bright.min() >= 0    # clamped to [0, 1], as torchvision's _blend
    grey = np.repeat(_batch(c=1), 3, axis=1)  # an RGB image with equal channels has no saturation
    np.testing.assert_allclose(ColorJitter(saturation=0.9)(grey, None, _gen())[0], grey, atol=1e-6)
    np.testing.assert_allclose(ColorJitter(hue=0.5)(grey, None, _gen())[0], grey, atol=1e-6)  # nor a hue
    mono = 0.25 + _batch(c=1) * np.float32(0.5)   # far enough from 0 and 1 that no contrast clamps
    contrast, _ = ColorJitter(contrast=0.8)(mono, None, _gen(2))
    np.testing.assert_allclose(contrast.mean(axis=(1, 2, 3)), mono.mean(axis=(1, 2, 3)), rtol=1e-5)
    assert not np.allclose(contrast, mono)
    with pytest.raises(CnncError) as e:  # saturation of a grey image would be a silent no-op
        ColorJitter(saturation=0.5)(mono, None, _gen())
    assert e.value.message == "augmentation color_jitter: saturation needs RGB images, the data has 1 channel"


def test_gaussian_noise_statistics_and_any_shape():
    x = np.zeros((64, 3, 32, 32), np.float32)
    noise = GaussianNoise(std=0.2)(x, None, _gen(0))[0]
    assert noise.dtype == np.float32
    assert abs(noise.mean()) < 0.002 and noise.std() == pytest.approx(0.2, rel=0.01)
    feats = np.ones((10, 4), np.float64)
    out, _ = GaussianNoise(0.1)(feats, None, _gen())
    assert out.shape == (10, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(GaussianNoise(0.0)(feats, None, _gen())[0], feats)


MASK_SPECS = [("random_crop", {"padding": 3}), ("random_rotation", {"degrees": (90, 90)}),
              ("random_rotation", {"degrees": 40}), ("random_resized_crop", {"scale": (0.3, 1.0)}),
              ("hflip", {"p": 0.5})]


@pytest.mark.parametrize("spec", MASK_SPECS, ids=lambda s: f"{s[0]}-{s[1]}")
def test_masks_follow_the_geometry(spec):
    n, h, w = 8, 12, 12
    rows, cols = np.mgrid[0:h, 0:w]
    # Image channels hold each pixel's own (row, col) plus a constant 1; the mask holds the same
    # position as one integer (0 is reserved for "outside"). Bilinear sampling of a linear ramp is
    # exact, so after any transform the image says precisely where each output pixel was sampled,
    # and the nearest-neighbour mask must name a pixel within half a pixel of that point.
    x = np.broadcast_to(np.stack([rows, cols, np.ones((h, w))]).astype(np.float32), (n, 3, h, w)).copy()
    masks = np.broadcast_to(rows * w + cols + 1, (n, h, w)).copy()
    out, out_masks = make_augment([spec])(x, masks, _gen(11))
    assert out_masks.shape == masks.shape and out_masks.dtype == masks.dtype
    inside = np.isclose(out[:, 2], 1.0, atol=1e-5)  # all four bilinear neighbours were in the image
    assert inside.mean() > 0.3
    src_row, src_col = np.divmod(out_masks - 1, w)
    assert np.all(out_masks[inside] > 0)
    assert np.abs(src_row - out[:, 0])[inside].max() <= 0.5 + 1e-4
    assert np.abs(src_col - out[:, 1])[inside].max() <= 0.5 + 1e-4
    if spec[0] in ("random_crop", "hflip") or spec[1].get("degrees") == (90, 90):
        np.testing.assert_allclose(src_row[inside], out[:, 0][inside], atol=1e-5)  # integer moves
    assert not np.array_equal(out_masks, masks)  # something really moved
    labels = np.arange(n)
    assert make_augment([spec])(x, labels, _gen())[1] is labels  # class labels pass through


def test_photometric_leaves_masks_alone():
    masks = np.ones((2, 4, 4), np.int64)
    aug = make_augment(["gaussian_noise", ("color_jitter", {"brightness": 0.2})])
    _, out = aug(_batch(2, h=4, w=4), masks, _gen())
    assert out is masks


def test_vectorised_speed():
    x = _batch(n=256, h=32, w=32)
    aug = make_augment(ALL_SPECS)
    start = time.perf_counter()
    aug(x, None, _gen())
    assert time.perf_counter() - start < 2.0  # per-pixel Python loops would take minutes


def test_refusals():
    assert set(AUGMENTATIONS) == {"random_crop", "random_rotation", "random_resized_crop", "hflip",
                                  "color_jitter", "gaussian_noise"}
    with pytest.raises(CnncError) as e:
        make_augment(["hflp"])
    assert e.value.message == "unknown augmentation 'hflp'" and e.value.hint == "did you mean 'hflip'?"
    with pytest.raises(CnncError) as e:
        make_augment([("random_crop", {"pad": 4})])
    assert e.value.message == "augmentation 'random_crop' has no option 'pad'"
    assert e.value.hint == "its options: padding"
    with pytest.raises(CnncError) as e:
        make_augment(["hflip"])(np.zeros((3, 5)), None, _gen())
    assert e.value.message == "augmentation hflip needs image batches [N, C, H, W], the data has shape [3, 5]"
    with pytest.raises(CnncError) as e:
        make_augment([("hflip", {"p": 2})])
    assert e.value.message == "augmentation hflip: p must lie in [0, 1], got 2"
    with pytest.raises(CnncError) as e:
        make_augment([("random_resized_crop", {"scale": (0.5, 0.2)})])
    assert "scale must satisfy 0 < low <= high <= 1" in e.value.message
    with pytest.raises(CnncError) as e:
        make_augment([42])
    assert e.value.message == "cannot read augmentation spec 42"


def test_hue_turns_the_colour_wheel_as_colorsys_does():
    """torchvision's adjust_hue: RGB -> HSV, h + shift mod 1, HSV -> RGB; Python's colorsys is the reference."""
    import colorsys
    from cnnc.runtime.data.augment import _shift_hue
    rng = np.random.default_rng(5)
    x = rng.random((3, 3, 4, 5))
    x[0, :, 0, 0] = 0.5                                      # a grey pixel has no hue to turn
    x[1, :, 1, 1] = (0.9, 0.9, 0.2)                          # ties between the largest channels
    shift = np.array([0.1, -0.3, 0.45]).reshape(3, 1, 1, 1)
    out = _shift_hue(x, shift)
    for n, i, j in np.ndindex(3, 4, 5):
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j])
        np.testing.assert_allclose(out[n, :, i, j], colorsys.hsv_to_rgb((h + shift[n, 0, 0, 0]) % 1, s, v),
                                   atol=1e-12)
    with pytest.raises(CnncError) as e:
        ColorJitter(hue=0.2)(_batch(c=1), None, _gen())
    assert e.value.message == "augmentation color_jitter: hue needs RGB images, the data has 1 channel"


def test_image_targets_move_with_their_images_and_keep_their_pixels_clean():
    """An autoencoder's targets (the input itself): a crop or flip moves them as it moves the input;
    noise and colour change the input only."""
    x = _batch(n=4, c=1)
    moved, target = make_augment([("random_crop", {"padding": 2}), ("hflip", {"p": 0.5})])(x, x.copy(), _gen(3))
    np.testing.assert_array_equal(moved, target)
    noisy, clean = make_augment([("gaussian_noise", {"std": 0.3})])(x, x.copy(), _gen(3))
    np.testing.assert_array_equal(clean, x)
    assert not np.array_equal(noisy, x)
