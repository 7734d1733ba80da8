"""End-to-end `cnnc apply`: pictures written from real photographs, compared with independent
NumPy computations through the stated display mapping, and every refusal as a one-line message."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main
from cnnc.runtime.apply import COLOUR_PHOTO, GREY_PHOTO

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SOBEL, SOBEL_XY, RGB_EDGES = (str(EXAMPLES / f) for f in ("sobel.cnn", "sobel_xy.cnn", "rgb_edges.cnn"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def grey(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img)


def sobel_x(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, 1)
    return (p[:-2, 2:] - p[:-2, :-2]) + 2 * (p[1:-1, 2:] - p[1:-1, :-2]) + (p[2:, 2:] - p[2:, :-2])


def minmax(x: np.ndarray) -> np.ndarray:
    return np.rint((x - x.min()) / (x.max() - x.min()) * 255)


def close_grey(got: np.ndarray, want: np.ndarray) -> None:
    """Equal grey levels, up to float32 rounding at a .5 boundary."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_sobel_without_an_image_uses_the_shipped_photo(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "apply", SOBEL)
    assert code == 0, err
    assert out == (f"{GREY_PHOTO} -> conv 1x512x512, values [-3.373, 3.718], --map minmax: wrote SobelX.png\n")
    with Image.open(GREY_PHOTO) as img:
        camera = np.asarray(img, np.float64) / 255
    close_grey(grey(tmp_path / "SobelX.png"), minmax(sobel_x(camera)))


@pytest.mark.parametrize("mapping", ["abs", "clip"])
def test_the_other_mappings_on_the_photo(tmp_path, capsys, mapping):
    out = tmp_path / f"{mapping}.png"
    code, _, err = run(capsys, "apply", SOBEL, GREY_PHOTO, "-o", out, "--map", mapping)
    assert code == 0, err
    with Image.open(GREY_PHOTO) as img:
        s = sobel_x(np.asarray(img, np.float64) / 255)
    want = np.rint(np.abs(s) / np.abs(s).max() * 255) if mapping == "abs" else np.rint(np.clip(s, 0, 1) * 255)
    close_grey(grey(out), want)


def test_symbolic_sizes_from_two_images_and_a_file_per_image(tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray((np.arange(17 * 40) % 256).astype(np.uint8).reshape(17, 40)).save(small)
    code, out, err = run(capsys, "apply", SOBEL, GREY_PHOTO, small, "-o", tmp_path / "e.png")
    assert code == 0, err
    assert grey(tmp_path / "e-camera.png").shape == (512, 512)
    assert grey(tmp_path / "e-small.png").shape == (17, 40)
    assert "-> conv 1x17x40" in out and "wrote " + str(tmp_path / "e-small.png") in out


def test_two_channels_one_file_each_or_one_grid(tmp_path, capsys):
    code, out, err = run(capsys, "apply", RGB_EDGES, COLOUR_PHOTO, "-o", tmp_path / "edges.png", "--map", "abs")
    assert code == 0, err
    a, b = grey(tmp_path / "edges-c0.png"), grey(tmp_path / "edges-c1.png")
    assert a.shape == b.shape == (300, 451) and a.max() == b.max() == 255
    assert "(2 files)" in out
    code, _, err = run(capsys, "apply", RGB_EDGES, COLOUR_PHOTO, "-o", tmp_path / "grid.png", "--map", "abs", "--grid")
    g = grey(tmp_path / "grid.png")
    assert g.shape == (300, 451 * 2 + 2)  # side by side, a 2-pixel white gap
    assert np.array_equal(g[:, :451], a) and np.array_equal(g[:, 453:], b) and (g[:, 451:453] == 255).all()


def test_two_outputs_get_their_names(tmp_path, capsys):
    code, out, err = run(capsys, "apply", SOBEL_XY, GREY_PHOTO, "-o", tmp_path / "xy.png")
    assert code == 0, err
    gx, gy = grey(tmp_path / "xy-gx.conv.png"), grey(tmp_path / "xy-gy.conv.png")
    assert not np.array_equal(gx, gy)


def test_layer_picks_an_intermediate_tensor(tmp_path, capsys):
    code, out, err = run(capsys, "apply", SOBEL, GREY_PHOTO, "--layer", "img", "--map", "clip",
                         "-o", tmp_path / "in.png")
    assert code == 0, err
    with Image.open(GREY_PHOTO) as img:
        assert np.array_equal(grey(tmp_path / "in.png"), np.asarray(img))  # the input, as it was


def test_resize_for_a_fixed_size_network(tmp_path, capsys):
    code, out, err = run(capsys, "apply", SOBEL, GREY_PHOTO, "--input", "img=1x20x30")
    assert code == 1 and "--input img=1x20x30: cnnc apply binds the input's size from each image" in err
    code, out, err = run(capsys, "apply", SOBEL, GREY_PHOTO, "--resize", "20x30", "-o", tmp_path / "r.png")
    assert code == 0, err
    assert grey(tmp_path / "r.png").shape == (20, 30)


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lenet")
    assert main(["run", str(EXAMPLES / "lenet5.cnn"), "--epochs", "1", "--limit", "512", "--out", str(out),
                 "--quiet"]) == 0
    return out


def test_a_trained_network_with_its_checkpoint(tmp_path, capsys, lenet_run):
    code, out, err = run(capsys, "apply", EXAMPLES / "lenet5.cnn", GREY_PHOTO, "--checkpoint",
                         lenet_run / "best.npz", "--resize", "28x28", "--layer", "conv_1", "--grid",
                         "-o", tmp_path / "c1.png")
    assert code == 0, err
    g = grey(tmp_path / "c1.png")
    assert g.shape == (2 * 28 + 2, 3 * 28 + 4)  # 6 channels: 3 columns, 2 rows
    assert "-> conv_1 6x28x28" in out


@pytest.mark.parametrize("argv, message", [
    (["{lenet}", "{camera}", "--checkpoint", "{ck}"], "image '{camera}' is 512x512 (HxW), LeNet5 takes 28x28\n"
                                          "  hint: add --resize 28x28"),
    (["{lenet}", "--checkpoint", "{ck}", "--resize", "28x28"], "'linear_3' has shape 10, not an image [C, H, W]"),
    (["{lenet}"], "'conv_1' has no fixed weight: without --checkpoint every weight must be given"),
    (["{sobel}", "--layer", "cnv"], "--layer cnv: SobelX has no layer 'cnv'\n  hint: did you mean 'conv'?"),
    (["{sobel}", "--resize", "big"], "--resize big: expected HxW (height x width)"),
    (["{sobel}", "-o", "out.jpg"], "-o out.jpg: cnnc apply writes PNG images"),
    (["{two}"], "no image given, and the shipped photographs are grey or RGB: the input takes 2 channels"),
    (["{sobel}", "{camera}", "{grey}"], "'{grey}' is not an image cnnc can read"),
    (["{huge}", "{camera}"], "NaN or infinite values in 'conv': there is no picture of them"),
])
def test_errors_are_one_line_messages(tmp_path, capsys, lenet_run, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    two = tmp_path / "two.cnn"
    two.write_text("# two channels\nnetwork Two {\n    input x: [2, H, W]\n    x -> conv(1, 1, bias = false, "
                   "trainable = false, weights = [[[[1]], [[1]]]])\n}\n")
    (tmp_path / "text.png").write_text("not a picture")
    huge = tmp_path / "huge.cnn"  # 4 x 1e38 overflows float32
    huge.write_text("# overflow\nnetwork Huge {\n    input x: [1, H, W]\n    x -> conv(1, 2, bias = false, "
                    "trainable = false, weights = [[1e38, 1e38], [1e38, 1e38]])\n}\n")
    subst = {"{lenet}": str(EXAMPLES / "lenet5.cnn"), "{ck}": str(lenet_run / "best.npz"), "{sobel}": SOBEL,
             "{camera}": str(GREY_PHOTO), "{two}": str(two), "{grey}": str(tmp_path / "text.png"), "{huge}": str(huge)}
    for k, v in subst.items():
        argv = [a.replace(k, v) for a in argv]
        message = message.replace(k, v)
    code, out, err = run(capsys, "apply", *argv)
    assert code == 1
    assert err.startswith("cnnc: error: " + message), err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.png.*"))  # no temporary file left


def test_never_over_an_input(tmp_path, capsys):
    target = tmp_path / "photo.png"
    target.write_bytes(Path(GREY_PHOTO).read_bytes())
    before = target.read_bytes()
    code, out, err = run(capsys, "apply", SOBEL, target, "-o", target)
    assert code == 1
    assert f"image '{target}' is also an input of this command; it would be overwritten" in err
    assert target.read_bytes() == before and out == ""
