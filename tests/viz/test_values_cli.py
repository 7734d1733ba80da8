"""`cnnc viz --style activations|kernels`: pictures of values, read back from their layout chunk and
pixels, on the Sobel filter and on LeNet-5 trained for one epoch; flag mistakes as messages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnc.cli import main
from cnnc.runtime import checkpoint
from cnnc.runtime.apply import GREY_PHOTO
from cnnc.viz.images import read_layout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LENET, SOBEL = str(EXAMPLES / "lenet5.cnn"), str(EXAMPLES / "sobel.cnn")
LENET_LAYERS = ["x", "conv_1", "sigmoid_1", "avgpool_1", "conv_2", "sigmoid_2", "avgpool_2", "flatten",
                "linear_1", "sigmoid_3", "linear_2", "sigmoid_4", "linear_3"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """LeNet-5 after one epoch on 512 digits, and one test digit as a PNG."""
    out = tmp_path_factory.mktemp("lenet")
    assert main(["run", LENET, "--epochs", "1", "--limit", "512", "--out", str(out), "--quiet"]) == 0
    digits = np.load(Path(checkpoint.__file__).parent / "datasets" / "mnist10k.npz")
    digit = out / "digit.png"
    Image.fromarray(digits["x_test"][0].reshape(28, 28).astype(np.uint8)).save(digit)
    return out / "best.npz", digit


def test_activations_of_lenet_one_panel_per_layer(tmp_path, capsys, lenet):
    ck, digit = lenet
    target = tmp_path / "maps.png"
    code, out, err = run(capsys, "viz", LENET, "--style", "activations", "--checkpoint", ck, "--image", digit,
                         "-o", target)
    assert code == 0, err
    assert out == f"wrote {target} (activations, png)\n"
    layout = read_layout(target.read_bytes())
    panels = layout["panels"]
    assert [p["name"] for p in panels] == LENET_LAYERS
    shapes = {p["name"]: p["shape"] for p in panels}
    assert shapes["conv_1"] == [6, 28, 28] and shapes["avgpool_2"] == [16, 5, 5] and shapes["linear_3"] == [10]
    assert all(p["label"].startswith(f"{p['name']}  {'x'.join(map(str, p['shape']))}  [") for p in panels[1:])
    assert panels[0]["label"] == "x  1x28x28  the image as read" and panels[0]["kind"] == "grey"
    assert [len(p["tiles"]) for p in panels][:7] == [1, 6, 6, 6, 16, 16, 16]
    sig = next(p for p in panels if p["name"] == "sigmoid_1")
    assert 0 < sig["min"] < sig["max"] < 1
    # conv_1's values against PyTorch on the same preprocessed digit with the checkpoint's weights
    state = checkpoint.load(ck)
    (norm,) = state.preprocess
    x = (np.asarray(Image.open(digit), np.float32) / 255 - norm["mean"][0]) / norm["std"][0]
    y = torch.nn.functional.conv2d(torch.from_numpy(x[None, None]), torch.from_numpy(state.params["conv_1.weight"]),
                                   torch.from_numpy(state.params["conv_1.bias"]), padding=2).numpy()
    conv = next(p for p in panels if p["name"] == "conv_1")
    assert conv["min"] == pytest.approx(float(y.min()), abs=1e-4)
    assert conv["max"] == pytest.approx(float(y.max()), abs=1e-4)
    with Image.open(target) as img:
        assert img.size[0] >= max(p["box"][2] for p in panels) and img.size[1] >= panels[-1]["box"][3]


def test_activations_layers_choose_panels_and_unknown_ones_are_suggested(tmp_path, capsys, lenet):
    ck, digit = lenet
    target = tmp_path / "two.png"
    code, _, err = run(capsys, "viz", LENET, "--style", "activations", "--checkpoint", ck, "--image", digit,
                       "--layers", "conv_2,linear_3", "-o", target)
    assert code == 0, err
    assert [p["name"] for p in read_layout(target.read_bytes())["panels"]] == ["conv_2", "linear_3"]
    code, _, err = run(capsys, "viz", LENET, "--style", "activations", "--checkpoint", ck, "--layers", "conv2",
                       "-o", target)
    assert code == 1
    assert err.startswith("cnnc: error: --layers conv2: LeNet5 has no layer 'conv2'\n  hint: did you mean 'conv_2'?")


def test_activations_of_sobel_on_the_photo(tmp_path, capsys):
    target = tmp_path / "sobel.png"
    code, _, err = run(capsys, "viz", SOBEL, "--style", "activations", "-o", target)
    assert code == 0, err
    img_panel, conv = read_layout(target.read_bytes())["panels"]
    assert (img_panel["name"], img_panel["shape"], conv["name"], conv["shape"]) == \
        ("img", [1, 512, 512], "conv", [1, 512, 512])
    with Image.open(GREY_PHOTO) as img:
        p = np.pad(np.asarray(img, np.float64) / 255, 1)
    s = (p[:-2, 2:] - p[:-2, :-2]) + 2 * (p[1:-1, 2:] - p[1:-1, :-2]) + (p[2:, 2:] - p[2:, :-2])
    assert conv["min"] == pytest.approx(s.min(), abs=1e-5) and conv["max"] == pytest.approx(s.max(), abs=1e-5)
    x0, y0, x1, y1 = conv["tiles"][0]
    assert (x1 - x0, y1 - y0) == (192, 192)  # 512 shown at 192


def test_kernels_of_lenet(tmp_path, capsys, lenet):
    ck, _ = lenet
    target = tmp_path / "k.png"
    code, _, err = run(capsys, "viz", LENET, "--style", "kernels", "--checkpoint", ck, "-o", target)
    assert code == 0, err
    c1, c2 = read_layout(target.read_bytes())["panels"]
    params = checkpoint.load(ck).params
    assert (c1["name"], c1["kind"], len(c1["tiles"])) == ("conv_1", "grey", 6)
    assert (c2["name"], c2["kind"], len(c2["tiles"])) == ("conv_2", "diverging", 16 * 6)
    assert c1["scale"] == pytest.approx(float(np.abs(params["conv_1.weight"]).max()))
    assert c2["min"] == pytest.approx(float(params["conv_2.weight"].min()))
    assert "conv_2  16x6x5x5  scale [-" in c2["label"] and len(c2["ticks"]) == 3
    code, _, err = run(capsys, "viz", LENET, "--style", "kernels", "--checkpoint", ck, "--layers", "sigmoid_1",
                       "-o", target)
    assert code == 1 and "--layers sigmoid_1: 'sigmoid_1' has no convolution weights" in err


def test_kernels_of_sobel_without_a_checkpoint(tmp_path, capsys):
    target = tmp_path / "k.png"
    code, _, err = run(capsys, "viz", SOBEL, "--style", "kernels", "-o", target)
    assert code == 0, err
    (panel,) = read_layout(target.read_bytes())["panels"]
    assert (panel["name"], panel["kind"], panel["shape"], panel["scale"]) == ("conv", "grey", [1, 1, 3, 3], 2.0)


@pytest.mark.parametrize("argv, message", [
    (["--style", "kernels", "--image", "x.png", "-o", "k.png"], "--image is for --style activations or html, not --style kernels"),
    (["--style", "graph", "--checkpoint", "c.npz", "-o", "g.svg"],
     "--checkpoint is for --style activations, kernels or html, not --style graph"),
    (["--style", "figure", "--layers", "a", "-o", "g.svg"], "--layers is for --style activations, kernels or diagnostics"),
    (["--style", "activations", "-o", "maps.svg"], "-o maps.svg: --style activations draws pixels and writes .png"),
    (["--style", "activations", "--input", "img=1x9x9", "-o", "m.png"],
     "--input img=1x9x9: --style activations takes the sizes from the image"),
    (["--style", "activations", "--layers", ",", "-o", "m.png"], "--layers ',': name at least one layer"),
    (["--style", "figure", "--page", "2", "-o", "f.svg"], "--page is for --style activations or kernels, not --style figure"),
    (["--style", "kernels", "--page", "0", "-o", "k.png"], "--page 0: pages are numbered from 1"),
    (["--style", "kernels", "--page", "2", "-o", "k.png"], "--page 2: the picture has 1 page\n  hint: choose a page from 1 to 1"),
])
def test_flag_mistakes(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "viz", SOBEL, *argv)
    assert code == 1 and err.startswith("cnnc: error: " + message), err
    assert not list(tmp_path.iterdir())


def test_a_trainable_network_needs_a_checkpoint_for_its_kernels(tmp_path, capsys):
    code, _, err = run(capsys, "viz", LENET, "--style", "kernels", "-o", tmp_path / "k.png")
    assert code == 1 and "'conv_1' has no fixed weight: without --checkpoint" in err
