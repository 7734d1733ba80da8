"""runtime/apply.py: fixed filters on real photographs against independent NumPy computations,
symbolic sizes bound from each image, checkpoints with their preprocessing, and the refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError
from cnnc.runtime.apply import COLOUR_PHOTO, GREY_PHOTO, Applier, default_image, kernel_weights

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def applier(name: str, **kw) -> Applier:
    return Applier(lambda inputs: compile_file(EXAMPLES / name, None, inputs), **kw)


def photo(path: Path) -> np.ndarray:
    """The photograph read by Pillow alone, [H, W] or [H, W, 3] in [0, 1]."""
    with Image.open(path) as img:
        return np.asarray(img, np.float64) / 255


def correlate3(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """A 3x3 cross-correlation with zero padding by slicing (what a conv layer computes)."""
    p = np.pad(img, 1)
    h, w = img.shape
    return sum(k[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))


SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)


def test_the_photographs_ship_with_the_package():
    assert photo(GREY_PHOTO).shape == (512, 512)
    assert photo(COLOUR_PHOTO).shape == (300, 451, 3)
    assert default_image(1) == GREY_PHOTO and default_image(3) == COLOUR_PHOTO


def test_sobel_on_the_camera_matches_numpy_slicing():
    got = applier("sobel.cnn").run(GREY_PHOTO).tensors["conv"]
    img = photo(GREY_PHOTO)
    p = np.pad(img, 1)  # written out: right column minus left column, the middle row counted twice
    want = (p[:-2, 2:] - p[:-2, :-2]) + 2 * (p[1:-1, 2:] - p[1:-1, :-2]) + (p[2:, 2:] - p[2:, :-2])
    assert got.shape == (1, 512, 512)
    np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_symbolic_sizes_bind_from_each_image(tmp_path):
    a = applier("mean_blur.cnn")
    small = tmp_path / "small.png"
    Image.fromarray((np.arange(35 * 23) % 251).astype(np.uint8).reshape(35, 23)).save(small)
    for path, (h, w) in ((GREY_PHOTO, (512, 512)), (small, (35, 23))):
        out = a.run(path).tensors["blur"]
        assert out.shape == (1, h, w)
        np.testing.assert_allclose(out[0], correlate3(photo(path), np.full((3, 3), 1 / 9)), atol=1e-5)


def test_a_colour_photo_is_converted_to_the_grey_input_by_luma():
    got = applier("sobel.cnn").run(COLOUR_PHOTO)
    rgb = photo(COLOUR_PHOTO)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(got.input[0], luma, atol=1e-5)
    np.testing.assert_allclose(got.tensors["conv"][0], correlate3(luma, SOBEL_X), atol=1e-4)


def test_rgb_edges_are_the_sobel_gradients_of_the_channel_mean():
    got = applier("rgb_edges.cnn").run(COLOUR_PHOTO).tensors["edges"]
    mean = photo(COLOUR_PHOTO).mean(axis=2)
    np.testing.assert_allclose(got[0], correlate3(mean, SOBEL_X), atol=1e-4)
    np.testing.assert_allclose(got[1], correlate3(mean, SOBEL_X.T), atol=1e-4)


def test_resize_then_run_a_fixed_size_network_and_its_error_without(tmp_path):
    with pytest.raises(CnncError, match=r"image '.*camera.png' is 512x512 \(HxW\), SobelX takes") :
        Applier(lambda inputs: compile_file(EXAMPLES / "sobel.cnn", None, {"img": (1, 20, 30)})).run(GREY_PHOTO)
    fixed = Applier(lambda inputs: compile_file(EXAMPLES / "sobel.cnn", None, {"img": (1, 20, 30)}),
                    resize=(20, 30))
    assert fixed.run(GREY_PHOTO).tensors["conv"].shape == (1, 20, 30)


HALVES = """# pooled and upsampled back, added to the input: H and W must be even
network Halves {
    input img: [1, H, W]
    img -> p: avgpool(2) -> u: upsample(scale = 2)
    img + u
}
"""


def test_an_image_the_constraints_refuse_names_the_constraint(tmp_path):
    net, odd = tmp_path / "halves.cnn", tmp_path / "odd.png"
    net.write_text(HALVES)
    Image.fromarray(np.zeros((7, 8), np.uint8)).save(odd)
    a = Applier(lambda inputs: compile_file(net, None, inputs))
    assert a.run(GREY_PHOTO).tensors[a.declared.net.outputs[0]].shape == (1, 512, 512)
    with pytest.raises(CnncError) as err:
        a.run(odd)
    assert err.value.message.startswith(f"image '{odd}' (1x7x8) does not fit Halves: ")
    assert "H must be a multiple of 2, and the image gives H = 7" in err.value.hint
    assert err.value.hint.endswith("resize it with --resize HxW")


def test_trainable_weights_need_a_checkpoint():
    with pytest.raises(CnncError) as err:
        applier("lenet5.cnn")
    assert err.value.message.startswith("'conv_1' has no fixed weight: without --checkpoint every weight")
    assert "--checkpoint" in err.value.hint


def test_layers_are_kept_as_extra_outputs_and_unknown_ones_suggested():
    a = applier("sobel_xy.cnn")
    names = a.tensor_names()
    assert names[0] == "img" and len(names) == 3
    out = a.run(GREY_PHOTO, ["img", names[1]]).tensors
    assert out["img"].shape == (1, 512, 512) and out[names[1]].shape == (1, 512, 512)
    with pytest.raises(CnncError, match="--layer gx.con: SobelXY has no layer 'gx.con'") as err:
        a.check_layers(["gx.con"])
    assert err.value.hint == "did you mean 'gx.conv'?"


def test_no_default_photo_for_other_channel_counts():
    with pytest.raises(CnncError, match="no image given, and the shipped photographs are grey or RGB"):
        default_image(2)


def test_kernel_weights_of_fixed_filters():
    k = kernel_weights(compile_file(EXAMPLES / "sobel_xy.cnn"))
    assert [n for n, _ in k.weights] == ["gx.conv", "gy.conv"] and k.first == "gx.conv"
    np.testing.assert_array_equal(k.weights[0][1][0, 0], SOBEL_X)
