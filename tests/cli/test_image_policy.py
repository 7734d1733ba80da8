"""One image policy (runtime/data/image_policy.py) for every command that feeds images to a network.

Each command that reads images — predict, apply, evaluate, viz --style activations and the explorer
page's --image — is run on an image that fits, on one that needs `--resize` (given), and on one it
refuses: the same message, in the same axis order (HxW), with the same hint. A checkpoint trained
with `images(size = ...)` records that size, and it is every command's default.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnc.cli import main
from cnnc.runtime.checkpoint import load

NET = """# a tiny colour classifier of 8x8 images
network Tiny {{
    input x: [3, 8, 8]
    x -> conv(2, 3, pad = 1) -> relu -> flatten -> linear(2)
}}
train Tiny {{
    data      = {data}
    epochs    = 1
    batch     = 4
    loss      = cross_entropy
    optimizer = sgd(lr = 0.01)
}}
"""


def _folder(root, height, width, n=4):
    rng = np.random.default_rng(height * 100 + width)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two trained checkpoints of Tiny: one from images(size = 8) (the size recorded), one from an
    .npz of 8x8 arrays (no size recorded); folders and single images of 8x8 and of 12x10 (HxW)."""
    d = tmp_path_factory.mktemp("policy")
    big, small = _folder(d / "big", 12, 10), _folder(d / "small", 8, 8)
    resized_net = d / "resized.cnn"
    resized_net.write_text(NET.format(data=f'images("{big}", size = 8)'))
    plain_net = d / "plain.cnn"
    plain_net.write_text(NET.format(data="mnist10k"))
    rng = np.random.default_rng(0)
    np.savez(d / "arrays.npz", x=rng.random((16, 3, 8, 8), dtype=np.float32), y=np.arange(16) % 2)
    for net, out, data in ((resized_net, "r", []), (plain_net, "p", ["--data", str(d / "arrays.npz")])):
        assert main(["run", str(net), "--out", str(d / out), "--quiet", *data]) == 0
    return {"dir": d, "net": str(plain_net), "resized_net": str(resized_net),
            "recorded": str(d / "r" / "last.npz"), "plain": str(d / "p" / "last.npz"),
            "fits": str(small / "test" / "a" / "0.png"), "big": str(big / "test" / "a" / "0.png"),
            "small_dir": str(small), "big_dir": str(big)}


def test_images_size_is_recorded_in_the_checkpoint(setup):
    assert load(setup["recorded"]).image_size == (8, 8)
    assert load(setup["plain"]).image_size is None


def _command(name, s, image, checkpoint, tmp_path):
    """The argv of command `name` on one image (or its folder, for evaluate)."""
    if name == "predict":
        return ["predict", s["net"], checkpoint, image]
    if name == "apply":
        return ["apply", s["net"], image, "--checkpoint", checkpoint, "--layer", "conv", "--grid",
                "-o", str(tmp_path / "a.png")]
    if name == "evaluate":
        folder = s["small_dir"] if image == s["fits"] else s["big_dir"]
        return ["evaluate", s["net"], checkpoint, "--data", folder]
    if name == "activations":
        return ["viz", s["net"], "--style", "activations", "--image", image, "--checkpoint", checkpoint,
                "-o", str(tmp_path / "v.png")]
    return ["viz", s["net"], "--style", "html", "--image", image, "--checkpoint", checkpoint,
            "-o", str(tmp_path / "v.html")]


COMMANDS = ["predict", "apply", "evaluate", "activations", "html"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_an_image_that_fits(name, setup, tmp_path, capsys):
    assert main(_command(name, setup, setup["fits"], setup["plain"], tmp_path)) == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_resizes_with_the_flag(name, setup, tmp_path, capsys):
    assert main(_command(name, setup, setup["big"], setup["plain"], tmp_path) + ["--resize", "8x8"]) == 0, \
        capsys.readouterr().err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_resizes_to_the_recorded_training_size_by_default(name, setup, tmp_path, capsys):
    assert main(_command(name, setup, setup["big"], setup["recorded"], tmp_path)) == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_with_one_message(name, setup, tmp_path, capsys):
    capsys.readouterr()
    assert main(_command(name, setup, setup["big"], setup["plain"], tmp_path)) == 1
    err = capsys.readouterr().err
    subject = f"data '{setup['big_dir']}' (train split): its images are" if name == "evaluate" else \
        f"image '{setup['big']}' is"
    assert err == f"cnnc: error: {subject} 12x10 (HxW), Tiny takes 8x8\n  hint: add --resize 8x8\n"
    assert not list(tmp_path.iterdir())        # nothing written


@pytest.mark.parametrize("name", COMMANDS)
def test_a_resize_the_network_cannot_take_is_refused_before_any_image_is_read(name, setup, tmp_path, capsys):
    capsys.readouterr()
    assert main(_command(name, setup, setup["big"], setup["plain"], tmp_path) + ["--resize", "10x12"]) == 1
    assert capsys.readouterr().err == "cnnc: error: --resize 10x12: Tiny takes 8x8 (HxW)\n  hint: give --resize 8x8\n"


def test_predict_gives_the_same_probabilities_for_a_resized_image_as_for_the_image_resized_by_hand(setup, tmp_path,
                                                                                                    capsys):
    from cnnc.runtime.data.images import read_image, resize
    by_hand = tmp_path / "by_hand.npy"
    np.save(by_hand, resize(read_image(setup["big"]), (8, 8)))
    capsys.readouterr()
    assert main(["predict", setup["net"], setup["recorded"], setup["big"], str(by_hand), "--top", "2"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.split(": ", 1)[1] == second.split(": ", 1)[1]
