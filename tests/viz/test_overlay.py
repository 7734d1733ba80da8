"""`cnnc predict -o DIR --overlay`: each input blended with its predicted mask (viz/masks.py `overlay`),
parsed back from the PNG and checked pixel by pixel against the documented rule."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main
from cnnc.dsl.source import CnncError
from cnnc.viz.masks import PALETTE, overlay, overlay_png


def test_overlay_blends_class_pixels_half_and_half_and_keeps_the_background():
    image = np.full((1, 2, 3), 100 / 255, np.float32)
    image[0, 1, 2] = 1.7       # clipped to 255
    image[0, 0, 0] = -0.2      # clipped to 0
    mask = np.array([[0, 1, 2], [0, 0, 2]])
    png = Image.open(io.BytesIO(overlay_png(image, mask, 3)))
    assert png.mode == "RGB" and png.size == (3, 2)
    rgb = np.asarray(png)
    assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[1, 0]) == (100, 100, 100)   # background: the image
    assert tuple(rgb[1, 1]) == (100, 100, 100)
    # class 1 is (31, 119, 180): (100 + 31 + 1) // 2, (100 + 119 + 1) // 2, (100 + 180 + 1) // 2
    assert tuple(rgb[0, 1]) == (66, 110, 140)
    # class 2 is (255, 127, 14) over 100 and over the clipped 255
    assert tuple(rgb[0, 2]) == (178, 114, 57) and tuple(rgb[1, 2]) == (255, 191, 135)


def test_overlay_of_a_colour_image():
    image = np.zeros((3, 1, 2), np.float32)
    image[:, 0, 1] = [1.0, 0.0, 0.5]   # 0.5 * 255 = 127.5, rounded to 128
    out = overlay(image, np.array([[0, 3]]), 4)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == ((255 + 44 + 1) // 2, (0 + 160 + 1) // 2, (128 + 44 + 1) // 2)


@pytest.mark.parametrize("image, mask, message", [
    (np.zeros((2, 4, 4)), np.zeros((4, 4), int), r"an overlay needs a grey or RGB image \[1 or 3, H, W\]"),
    (np.zeros((1, 4, 4)), np.zeros((2, 4), int), "the mask is 4x2 pixels, its image 4x4"),
])
def test_overlay_refuses_what_it_cannot_draw(image, mask, message):
    with pytest.raises(CnncError, match=message):
        overlay(image, mask, 2)


SEG = """network Seg {{
    input x: [1, 16, 16]
    x -> conv(8, 3, pad = 1) -> relu -> conv(4, 3, pad = 1)
}}
train Seg {{
    data = segmentation("{root}")
    loss = pixel_cross_entropy
    preprocess = normalize
    epochs = 1
    batch = 4
}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overlay")
    assert main(["make-shapes", str(tmp / "shapes"), "--n", "8", "--test", "3", "--size", "16",
                 "--channels", "1", "--seed", "4"]) == 0
    net = tmp / "seg.cnn"
    net.write_text(SEG.format(root=tmp / "shapes"))
    assert main(["run", str(net), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp, net, tmp / "run" / "last.npz"


def check_overlay(overlay_path, mask_path, image: np.ndarray) -> None:
    """The written overlay against the written mask and the grey input (uint8 [H, W]), by the rule."""
    got = np.asarray(Image.open(overlay_path))
    mask = np.asarray(Image.open(mask_path))
    assert got.shape == (*image.shape, 3) and got.dtype == np.uint8
    grey = np.repeat(image[..., None].astype(int), 3, axis=2)
    expected = np.where((mask > 0)[..., None], (grey + np.asarray(PALETTE[:4])[mask] + 1) // 2, grey)
    np.testing.assert_array_equal(got, expected)


def test_predict_writes_overlays_of_input_files(trained, capsys):
    tmp, net, ckpt = trained
    capsys.readouterr()
    inputs = [tmp / "shapes" / "test" / "images" / f"0000{i}.png" for i in range(2)]
    out = tmp / "files"
    assert main(["predict", str(net), str(ckpt), *map(str, inputs), "-o", str(out), "--overlay"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].endswith(f"-> {out / 'mask_0001.png'}, {out / 'overlay_0001.png'}")
    for i, path in enumerate(inputs):
        check_overlay(out / f"overlay_{i:04d}.png", out / f"mask_{i:04d}.png", np.asarray(Image.open(path)))


def test_predict_overlays_the_test_split_as_read_not_as_normalised(trained, capsys):
    tmp, net, ckpt = trained
    out = tmp / "split"
    assert main(["predict", str(net), str(ckpt), "-o", str(out), "--overlay", "--limit", "3"]) == 0
    for i in range(3):
        image = np.asarray(Image.open(tmp / "shapes" / "test" / "images" / f"0000{i}.png"))
        check_overlay(out / f"overlay_{i:04d}.png", out / f"mask_{i:04d}.png", image)


def test_overlay_needs_an_output_folder(trained, capsys):
    _, net, ckpt = trained
    assert main(["predict", str(net), str(ckpt), "--overlay"]) == 1
    assert "--overlay: needs -o DIR, the folder the overlays (and masks) are written to" in capsys.readouterr().err


def test_overlay_needs_a_dense_output(tmp_path, write, capsys):
    net = write("""network C {
    input x: [1, 8, 8]
    x -> conv(2, 3) -> flatten -> linear(3)
}
train C {
    data = synthetic(n = 8, classes = 3)
    epochs = 1
}
""")
    assert main(["run", str(net), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", str(net), str(tmp_path / "run" / "last.npz"), "-o", str(tmp_path / "o"),
                 "--overlay"]) == 1
    assert "--overlay: only a segmentation network's masks can be overlaid" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
