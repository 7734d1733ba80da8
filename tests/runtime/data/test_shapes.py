"""The synthetic shapes data set (runtime/data/shapes.py) and `cnnc make-shapes`: seeded, classes disjoint,
each mask region has its class's geometry and its own flat colour in the image."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main
from cnnc.runtime.data.segmentation import load_segmentation_folder
from cnnc.runtime.data.shapes import NOISE, SHAPE_CLASSES, make_shapes
from cnnc.viz.masks import PALETTE

# area / (pi * rho^2), rho the farthest pixel from the centroid: what each kind fills of its circle
FILL = {1: 1.0, 2: 2 / math.pi, 3: 3 * math.sqrt(3) / (4 * math.pi)}


def components(mask: np.ndarray):
    """Each shape of a mask: (its pixels, its classes), by 8-connectivity of the non-background pixels
    (a flood fill, written here so the test needs nothing beyond numpy)."""
    todo = mask > 0
    h, w = mask.shape
    for start in zip(*np.nonzero(todo)):
        if not todo[start]:
            continue
        pixels = np.zeros_like(todo)
        stack = [start]
        todo[start] = False
        while stack:
            i, j = stack.pop()
            pixels[i, j] = True
            for a in range(max(i - 1, 0), min(i + 2, h)):
                for b in range(max(j - 1, 0), min(j + 2, w)):
                    if todo[a, b]:
                        todo[a, b] = False
                        stack.append((a, b))
        yield pixels, set(np.unique(mask[pixels]).tolist())


def dilated(pixels: np.ndarray, steps: int) -> np.ndarray:
    """Grown by `steps` pixels along rows and columns (a 4-neighbour dilation)."""
    out = pixels.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def test_the_same_seed_gives_the_same_samples_whatever_n():
    images, masks = make_shapes(6, size=24, seed=3)
    more_images, more_masks = make_shapes(9, size=24, seed=3)
    np.testing.assert_array_equal(images, more_images[:6])
    np.testing.assert_array_equal(masks, more_masks[:6])
    assert images.shape == (6, 24, 24, 3) and images.dtype == np.uint8 and masks.shape == (6, 24, 24)
    assert not np.array_equal(make_shapes(6, size=24, seed=4)[1], masks)
    assert not np.array_equal(make_shapes(6, size=24, seed=3, part=1)[1], masks)


def test_shapes_never_touch_so_each_region_is_one_class():
    _, masks = make_shapes(60, size=32, seed=0)
    seen = set()
    for mask in masks:
        for _, classes in components(mask):
            assert len(classes) == 1, classes
            seen |= classes
    assert seen == {1, 2, 3} and masks.max() == len(SHAPE_CLASSES) - 1


def test_each_class_has_its_shapes_geometry():
    _, masks = make_shapes(40, size=64, seed=1)
    checked = 0
    for mask in masks:
        for pixels, (kind,) in components(mask):
            ys, xs = np.nonzero(pixels)
            if ys.min() == 0 or xs.min() == 0 or ys.max() == 63 or xs.max() == 63:
                continue  # cut by the border: not the whole shape
            rho = np.hypot(ys - ys.mean(), xs - xs.mean()).max() + 0.5
            fill = len(ys) / (math.pi * rho ** 2)
            nearest = min(FILL, key=lambda k: abs(FILL[k] - fill))
            assert nearest == kind, (SHAPE_CLASSES[kind], fill)
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("channels", [1, 3])
def test_the_image_shows_each_shape_in_one_colour_that_stands_out(channels):
    images, masks = make_shapes(30, size=48, channels=channels, seed=2)
    for image, mask in zip(images.astype(np.float64), masks):
        background = mask == 0
        for pixels, _ in components(mask):
            inside = image[pixels]                       # [P, C]
            assert inside.std(axis=0).max() < 2 * NOISE * 255 + 1  # one flat colour plus the noise
            ring = dilated(pixels, 2) & ~pixels & background
            if ring.sum() < 5:
                continue
            luma = (inside.mean(axis=0) * ([1] if channels == 1 else [0.299, 0.587, 0.114])).sum()
            ring_luma = (image[ring].mean(axis=0) * ([1] if channels == 1 else [0.299, 0.587, 0.114])).sum()
            assert abs(luma - ring_luma) > 0.15 * 255


def test_make_shapes_writes_the_documented_layout(tmp_path, capsys):
    target = tmp_path / "shapes"
    assert main(["make-shapes", str(target), "--n", "6", "--test", "2", "--size", "16", "--channels", "1",
                 "--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{target}: 6 training and 2 test images of 16x16 (grey) with masks of 4 classes: "
        "0 background, 1 disc, 2 square, 3 triangle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]   # no staging folder left behind
    assert (target / "classes.txt").read_text() == "background\ndisc\nsquare\ntriangle\n"
    assert sorted(p.name for p in (target / "train" / "images").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    mask = Image.open(target / "test" / "masks" / "00001.png")
    assert mask.mode == "P" and mask.getpalette()[:12] == [v for c in PALETTE[:4] for v in c]
    images, masks = make_shapes(2, size=16, channels=1, seed=5, part=1)
    np.testing.assert_array_equal(np.asarray(mask), masks[1])
    image = Image.open(target / "test" / "images" / "00001.png")
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), images[1][..., 0])
    ds = load_segmentation_folder(target)
    assert ds.classes == list(SHAPE_CLASSES) and ds.train.x.shape == (6, 1, 16, 16) and len(ds.test) == 2


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n 0: must lie between 1 and 100,000"),
    (["--channels", "2"], "--channels 2: must be 1 (grey) or 3 (RGB)"),
    (["--size", "4"], "--size 4: must lie between 8 and 1,024"),
    (["--seed", "-1"], "--seed -1: must lie between 0 and 4,294,967,295"),
])
def test_make_shapes_refuses_bad_flags(tmp_path, capsys, flags, message):
    assert main(["make-shapes", str(tmp_path / "d"), *flags]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_make_shapes_never_writes_into_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    assert main(["make-shapes", str(tmp_path / "d"), "--n", "2"]) == 1
    assert f"'{tmp_path / 'd'}' already exists and is not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert main(["make-shapes", str(tmp_path / "empty"), "--n", "2", "--size", "8"]) == 0
    assert (tmp_path / "empty" / "train" / "masks" / "00001.png").is_file()
