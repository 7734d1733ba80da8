"""What the network is fed: augmentation on the images as read, then the preprocessing (torchvision's order).

Issue 20 found augmentation applied after `normalize`: brightness 1.2 turned a 0.2 pixel into 0.14
(torchvision: 0.24), crops padded with the data set's mean, noise was in normalised units. These tests
catch the batches the trainer hands its engine and compare known pixels with torchvision's formulas:
`Normalize(mean, std)(ColorJitter(brightness)(img))` is `(clamp(b · p, 0, 1) − mean) / std`, a padded
pixel of `RandomCrop` is 0 before `Normalize`, and `GaussianNoise(sigma)` adds sigma in pixel units.
"""
from __future__ import annotations

import numpy as np
import pytest

from cnnc.runtime.train.trainer import Trainer

MEAN, STD = 0.5, 0.25


def _fed(compile_src, tmp_path, augment: str, pixels: np.ndarray, preprocess=f"normalize({MEAN}, {STD})"):
    """The training batches the engine receives in one epoch, for images all made of `pixels`."""
    np.savez(tmp_path / "d.npz", x=pixels.astype(np.float32), y=np.arange(len(pixels)) % 2)
    c = compile_src(f"""
network N {{
    input x: [1, 6, 6]
    x -> flatten -> linear(2)
}}
train N {{
    data = npz("{tmp_path / 'd.npz'}")
    augment = {augment}
    preprocess = [{preprocess}]
    epochs = 1
    batch = 4
}}
""")
    t = Trainer(c, c.net.train, tmp_path / "run", progress=False, log=lambda s: None, threads=1)
    seen, real = [], t.engine.forward_backward

    def catch(xb, yb, objective, rng):
        seen.append(xb.copy())
        return real(xb, yb, objective, rng)
    t.engine.forward_backward = catch
    t.train_epoch(0)
    return np.concatenate(seen), t


def test_brightness_then_normalise_on_known_pixels(compile_src, tmp_path):
    images = np.full((8, 1, 6, 6), 0.2)
    images[:, 0, 0, 0] = 0.9                            # brightened past 1: torchvision clamps it to 1
    fed, t = _fed(compile_src, tmp_path, "[color_jitter(brightness = (1.2, 1.2))]", images)
    assert np.allclose(fed[:, 0, 1:, :], (0.2 * 1.2 - MEAN) / STD)       # -1.04, not (0.2 - m) / s * 1.2
    assert np.allclose(fed[:, 0, 0, 0], (1.0 - MEAN) / STD)
    assert t.records == [{"op": "normalize", "mean": [MEAN], "std": [STD]}]


def test_a_crop_pads_with_black_before_normalising(compile_src, tmp_path):
    fed, _ = _fed(compile_src, tmp_path, "[random_crop(padding = 2)]", np.full((8, 1, 6, 6), 0.2))
    pixel, padded = (0.2 - MEAN) / STD, (0.0 - MEAN) / STD         # not (mean - mean) / std = 0
    assert np.isclose(fed, pixel, atol=1e-6).sum() + np.isclose(fed, padded, atol=1e-6).sum() == fed.size
    assert np.isclose(fed, padded, atol=1e-6).any()


def test_noise_is_in_pixel_units(compile_src, tmp_path):
    fed, _ = _fed(compile_src, tmp_path, "[gaussian_noise(std = 0.1)]", np.full((64, 1, 6, 6), 0.2))
    noise = fed - (0.2 - MEAN) / STD
    assert noise.std() == pytest.approx(0.1 / STD, rel=0.05) and abs(noise.mean()) < 0.02


def test_statistics_are_fitted_on_the_training_split_as_read(compile_src, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 6, 6)) * 0.5
    _, t = _fed(compile_src, tmp_path, "[hflip]", images, preprocess="normalize")
    train = t.ds.train.x
    assert t.records[0]["mean"] == pytest.approx([train.mean()]) and t.records[0]["std"] == pytest.approx([train.std()])
    np.testing.assert_array_equal(train, images.astype(np.float32))     # the data set holds the samples as read
