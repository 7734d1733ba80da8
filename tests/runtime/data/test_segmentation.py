"""Segmentation folders (runtime/data/segmentation.py): the layout read back pixel-exact, every refusal
with its message and the file it names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main
from cnnc.dsl.source import CnncError
from cnnc.runtime.data import sources
from cnnc.runtime.data.segmentation import is_segmentation_folder, load_segmentation_folder
from cnnc.viz.masks import mask_png

RNG = np.random.default_rng(0)


def write_sample(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray, palette: bool = True) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    if palette:
        (folder / "masks" / f"{stem}.png").write_bytes(mask_png(mask, int(mask.max()) + 1))
    else:
        Image.fromarray(mask.astype(np.uint8), mode="L").save(folder / "masks" / f"{stem}.png")


def sample(h: int = 6, w: int = 5, channels: int = 3, classes: int = 3):
    shape = (h, w, channels) if channels == 3 else (h, w)
    return RNG.integers(0, 256, shape).astype(np.uint8), RNG.integers(0, classes, (h, w)).astype(np.uint8)


def flat_folder(tmp_path: Path, n: int = 3, **kw) -> tuple[Path, list]:
    samples = [sample(**kw) for _ in range(n)]
    for i, (image, mask) in enumerate(samples):
        write_sample(tmp_path / "seg", f"s{i}", image, mask, palette=i % 2 == 0)
    return tmp_path / "seg", samples


def test_a_flat_folder_reads_back_pixel_exact(tmp_path):
    root, samples = flat_folder(tmp_path)
    assert is_segmentation_folder(root)
    ds = load_segmentation_folder(root)
    assert ds.test is None and ds.classes is None
    assert ds.train.x.dtype == np.float32 and ds.train.x.shape == (3, 3, 6, 5)
    assert ds.train.y.dtype == np.int64 and ds.train.y.shape == (3, 6, 5)
    for i, (image, mask) in enumerate(samples):  # palette (even) and grey (odd) masks alike
        np.testing.assert_array_equal(ds.train.x[i], image.transpose(2, 0, 1) / np.float32(255))
        np.testing.assert_array_equal(ds.train.y[i], mask)


def test_train_and_test_folders_and_class_names(tmp_path):
    root = tmp_path / "seg"
    train = [sample(channels=1) for _ in range(2)]
    test = [sample(channels=1)]
    for i, (image, mask) in enumerate(train):
        write_sample(root / "train", f"b{i}", image, mask)
    write_sample(root / "test", "a", *test[0])
    (root / "classes.txt").write_text("sky\n  road \n\ncar\n")
    ds = sources.load_dataset(root)   # the `path` entry and --data recognise the layout
    assert ds.classes == ["sky", "road", "car"]
    assert ds.train.x.shape == (2, 1, 6, 5) and ds.test.x.shape == (1, 1, 6, 5)
    np.testing.assert_array_equal(ds.train.y[1], train[1][1])   # name order: b0, b1
    np.testing.assert_array_equal(ds.test.y[0], test[0][1])


def test_size_resizes_images_bilinearly_and_masks_by_nearest_neighbour(tmp_path):
    root = tmp_path / "seg"
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 2
    write_sample(root, "a", np.full((4, 4, 3), 200, np.uint8), mask)
    ds = load_segmentation_folder(root, size=(8, 2), channels=1)
    assert ds.train.x.shape == (1, 1, 8, 2) and ds.train.y.shape == (1, 8, 2)
    np.testing.assert_array_equal(ds.train.y[0], np.tile([0, 2], (8, 1)))  # no class 1 made up between 0 and 2
    np.testing.assert_allclose(ds.train.x[0], 200 / 255, rtol=1e-6)


def test_grey_images_among_colour_ones_become_rgb(tmp_path):
    root = tmp_path / "seg"
    grey, mask = sample(channels=1)
    write_sample(root, "a", grey, mask)
    write_sample(root, "b", *sample())
    ds = load_segmentation_folder(root)
    assert ds.train.x.shape[1] == 3
    np.testing.assert_array_equal(ds.train.x[0][2], grey / np.float32(255))


def _refusal(call) -> str:
    with pytest.raises(CnncError) as e:
        call()
    return e.value.message


def test_an_image_without_its_mask_is_named(tmp_path):
    root, _ = flat_folder(tmp_path)
    (root / "masks" / "s1.png").unlink()
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"image '{root / 'images' / 's1.png'}' has no mask: expected '{root / 'masks' / 's1.png'}'")


def test_a_mask_without_its_image_is_named(tmp_path):
    root, _ = flat_folder(tmp_path)
    (root / "images" / "s2.png").unlink()
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"mask '{root / 'masks' / 's2.png'}' has no image of the same name in '{root / 'images'}'")


def test_two_files_of_one_name_are_refused(tmp_path):
    root, _ = flat_folder(tmp_path)
    Image.fromarray(sample()[0]).save(root / "images" / "s0.bmp")
    message = _refusal(lambda: load_segmentation_folder(root))
    assert message.startswith(f"image '{root / 'images' / 's0.png'}' and '{root / 'images' / 's0.bmp'}' share a name")


def test_a_mask_of_another_size_is_named(tmp_path):
    root, _ = flat_folder(tmp_path)
    (root / "masks" / "s1.png").write_bytes(mask_png(np.zeros((6, 4), np.uint8), 3))
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"mask '{root / 'masks' / 's1.png'}' is 4x6 pixels, its image '{root / 'images' / 's1.png'}' is 5x6")


def test_images_of_different_sizes_are_named(tmp_path):
    root, _ = flat_folder(tmp_path, n=1)
    write_sample(root, "s9", *sample(h=7))
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"image '{root / 'images' / 's9.png'}' is 5x7 pixels, but '{root / 'images' / 's0.png'}' is 5x6")


def test_a_class_past_classes_txt_is_named(tmp_path):
    root, _ = flat_folder(tmp_path, classes=2)
    (root / "classes.txt").write_text("a\nb\n")
    mask = np.zeros((6, 5), np.uint8)
    mask[3, 3] = 2
    (root / "masks" / "s1.png").write_bytes(mask_png(mask, 3))
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"mask '{root / 'masks' / 's1.png'}' holds class 2, but there are only 2 classes (0 to 1)")


@pytest.mark.parametrize("content, message", [
    (b"", "names no classes"),
    (b"cat\ndog\ncat\n", "names 'cat' twice (the second time as class 2)"),
    (b"\xff\xfe", "is not UTF-8 text"),
])
def test_a_bad_class_list_is_named(tmp_path, content, message):
    root, _ = flat_folder(tmp_path)
    (root / "classes.txt").write_bytes(content)
    assert _refusal(lambda: load_segmentation_folder(root)) == f"class list '{root / 'classes.txt'}' {message}"


@pytest.mark.parametrize("which", ["images", "masks"])
def test_a_corrupt_png_is_named(tmp_path, which):
    root, _ = flat_folder(tmp_path)
    path = root / which / "s1.png"
    path.write_bytes(path.read_bytes()[:60])
    message = _refusal(lambda: load_segmentation_folder(root))
    kind = "image" if which == "images" else "mask"
    assert message.startswith(f"{kind} '{path}' is corrupt"), message


def test_a_colour_mask_is_refused(tmp_path):
    root, _ = flat_folder(tmp_path)
    Image.fromarray(sample()[0]).save(root / "masks" / "s0.png")
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"mask '{root / 'masks' / 's0.png'}' is a RGB image; a mask holds one class index per pixel")


def test_a_test_folder_without_masks_is_refused(tmp_path):
    root = tmp_path / "seg"
    write_sample(root / "train", "a", *sample())
    (root / "test" / "images").mkdir(parents=True)
    assert _refusal(lambda: load_segmentation_folder(root)) == (
        f"test folder '{root / 'test'}' needs both images/ and masks/")


def test_a_folder_without_the_layout_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    assert not is_segmentation_folder(tmp_path)
    assert _refusal(lambda: load_segmentation_folder(tmp_path)) == (
        f"segmentation folder '{tmp_path}' has neither images/ + masks/ nor train/images/ + train/masks/")


SEG_NET = """network Seg {{
    input x: [3, 6, 5]
    x -> conv({classes}, 3, pad = 1)
}}
train Seg {{
    data = segmentation("{root}")
    loss = pixel_cross_entropy
    epochs = 1
    batch = 2
}}
"""


def test_the_train_entry_checks_masks_against_the_network_naming_the_file(tmp_path, capsys):
    root, _ = flat_folder(tmp_path, classes=3)
    mask = np.zeros((6, 5), np.uint8)
    mask[0, 0] = 3
    (root / "masks" / "s2.png").write_bytes(mask_png(mask, 4))
    net = tmp_path / "seg.cnn"
    net.write_text(SEG_NET.format(classes=3, root=root))
    assert main(["run", str(net), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"mask '{root / 'masks' / 's2.png'}' holds class 3, but there are only 3 classes (0 to 2)" in err
    net.write_text(SEG_NET.format(classes=4, root=root))
    assert main(["run", str(net), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (root / "classes.txt").write_text("a\nb\nc\n")
    assert main(["run", str(net), "--out", str(tmp_path / "run2"), "--quiet"]) == 1
    assert (f"class list '{root / 'classes.txt'}' names 3 classes, the network has 4 outputs per pixel"
            in capsys.readouterr().err)


def test_data_flag_reads_the_layout(tmp_path, capsys):
    root, _ = flat_folder(tmp_path, classes=2)
    net = tmp_path / "seg.cnn"
    net.write_text(SEG_NET.format(classes=2, root="elsewhere"))
    assert main(["run", str(net), "--data", str(root), "--out", str(tmp_path / "run")]) == 0
    assert f"3 training samples from {root}" in capsys.readouterr().out
