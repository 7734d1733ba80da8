"""Issue 9, class 8: internal errors (exit 70) that must be one-line user errors.

Each input here once made cnnc print "internal error" (or a traceback). Each
must give one diagnostic and exit 1 (2 for command-line usage), touching no
file.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from hostile_harness import EXAMPLES, TINY, refused, run_cli, succeeded
from hostile_inputs import (craft_checkpoint, idx_header, long_literal, nested_ifs, nested_parens, npy_bytes,
                            pickled_npz, png_bytes)



# ------------------------------------------------------------------ sources
@pytest.mark.parametrize("source", [
    pytest.param(nested_ifs(1000), id="1000-nested-ifs"),
    pytest.param(long_literal(5000), id="5000-digit-literal"),
])
def test_deep_or_huge_source_is_a_user_error(scratch, source):
    scratch.write("net.cnn", source)
    refused(scratch.run("check", "net.cnn"), scratch)


def test_redundant_parentheses_however_deep_are_just_parentheses(scratch):
    scratch.write("net.cnn", nested_parens(1000))  # linear((((…4…)))): a valid program
    result = scratch.run("check", "net.cnn")
    succeeded(result, scratch)
    assert "N is valid" in result.out


@pytest.mark.parametrize("path", [
    pytest.param("a" * 5000 + ".cnn", id="too-long"),
    pytest.param("a\x00b.cnn", id="nul"),
    pytest.param("loop.cnn", id="symlink-loop"),
])
def test_bad_import_path_is_a_user_error(scratch, path):
    os.symlink("loop2.cnn", scratch.path("loop.cnn"))
    os.symlink("loop.cnn", scratch.path("loop2.cnn"))
    scratch.write("net.cnn", f'import "{path}"\n')
    refused(scratch.run("check", "net.cnn"), scratch)


def test_infinite_step_size_is_a_user_error(scratch):
    scratch.write("net.cnn", TINY.replace("seed       = 0", "seed       = 0\n    schedule   = step(step_size = 1e400)"))
    refused(scratch.run("run", "net.cnn", "--out", "r"), scratch)


def test_negative_synthetic_size_is_a_user_error(scratch):
    scratch.write("net.cnn", TINY.replace("n = 64", "n = -5"))
    refused(scratch.run("run", "net.cnn", "--out", "r"), scratch)


# ------------------------------------------------------------------ data files
def test_idx_of_rank_255_is_a_user_error(scratch):
    scratch.tiny()
    scratch.write("mnist/train-images-idx3-ubyte", idx_header(0x08, (1,) * 255) + b"\x00")
    scratch.write("mnist/train-labels-idx1-ubyte", idx_header(0x08, (1,)) + b"\x00")
    refused(scratch.run("run", "tiny.cnn", "--data", "mnist", "--out", "r"), scratch)


def test_png_with_a_ragged_palette_is_a_user_error(scratch, checkpoint):
    scratch.tiny()  # a PLTE chunk of 7 bytes: not a whole number of RGB entries
    scratch.write("bad.png", png_bytes(np.ones((8, 8), np.uint8), palette=b"\x00\x00\x00\xff\xff\xff\x01"))
    refused(scratch.run("predict", "tiny.cnn", "best.npz", "bad.png"), scratch)


# ------------------------------------------------------------------ predict inputs
@pytest.mark.parametrize("name, data", [
    pytest.param("s.npy", npy_bytes(np.array(["a", "b"])), id="string-npy"),
    pytest.param("z.npy", npy_bytes(np.float32(1.0)), id="0-d-npy"),
    pytest.param("e.npy", npy_bytes(np.zeros((0, 1, 8, 8), np.float32)), id="empty-npy"),
])
def test_predict_on_a_bad_array_is_a_user_error(scratch, checkpoint, name, data):
    scratch.tiny()
    scratch.write(name, data)
    refused(scratch.run("predict", "tiny.cnn", "best.npz", name), scratch)


def test_predict_on_an_empty_npz_is_a_user_error(scratch, checkpoint):
    scratch.tiny()
    np.savez(scratch.path("empty.npz"))
    refused(scratch.run("predict", "tiny.cnn", "best.npz", "empty.npz"), scratch)


def test_predict_on_images_of_mixed_sizes_is_a_user_error(scratch, checkpoint):
    scratch.tiny()
    scratch.write("a.png", png_bytes(np.zeros((8, 8), np.uint8)))
    scratch.write("b.png", png_bytes(np.zeros((9, 8), np.uint8)))
    refused(scratch.run("predict", "tiny.cnn", "best.npz", "a.png", "b.png"), scratch)


# ------------------------------------------------------------------ checkpoints
def _resume_case(scratch, trained_run, **craft):
    scratch.tiny()
    shutil.copytree(trained_run, scratch.path("r"))
    craft_checkpoint(trained_run / "last.npz", scratch.path("r/last.npz"), **craft)
    return scratch.run("run", "tiny.cnn", "--out", "r", "--resume", "--epochs", "3", "--quiet")


@pytest.mark.parametrize("craft", [
    pytest.param({"drop_meta": ("epoch",)}, id="missing-epoch"),
    pytest.param({"meta_changes": {"epoch": "two"}}, id="text-epoch"),
    pytest.param({"meta_changes": {"best": "high"}}, id="text-best"),
    pytest.param({"meta_changes": {"bad_epochs": [1]}}, id="list-bad-epochs"),
])
def test_resume_from_crafted_metadata_is_a_user_error(scratch, trained_run, craft):
    refused(_resume_case(scratch, trained_run, **craft), scratch)


def test_checkpoint_with_string_parameters_is_a_user_error(scratch, trained_run):
    scratch.tiny()
    arrays = np.load(trained_run / "best.npz")
    changes = {k: np.full(arrays[k].shape, "w") for k in arrays.files if k.startswith("param/")}
    craft_checkpoint(trained_run / "best.npz", scratch.path("bad.npz"), array_changes=changes)
    refused(scratch.run("predict", "tiny.cnn", "bad.npz"), scratch)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "pickled"])
def test_broken_checkpoint_is_a_user_error(scratch, trained_run, kind):
    scratch.tiny()
    good = (trained_run / "best.npz").read_bytes()
    if kind == "pickled":
        pickled_npz(scratch.path("bad.npz"))
    else:
        scratch.write("bad.npz", {"empty": b"", "text": b"weights = 1\n", "truncated": good[:len(good) // 2]}[kind])
    refused(scratch.run("predict", "tiny.cnn", "bad.npz"), scratch)


# ------------------------------------------------------------------ metrics, flags, outputs
def test_curves_of_metrics_with_infinities_do_not_crash(scratch):
    scratch.tiny()
    scratch.write("m.jsonl", '{"epoch": Infinity, "train_loss": 1.0}\n{"epoch": 1, "train_loss": -Infinity}\n')
    result = scratch.run("viz", "tiny.cnn", "--style", "curves", "--metrics", "m.jsonl", "-o", "c.svg")
    if result.status == 0:
        succeeded(result, scratch, outputs=("c.svg",))
    else:
        refused(result, scratch)


def test_out_that_is_a_file_is_a_user_error(scratch):
    scratch.tiny()
    scratch.write("afile", "not a folder\n")
    refused(scratch.run("run", "tiny.cnn", "--out", "afile"), scratch)


def test_negative_compile_depth_is_refused(scratch):
    scratch.tiny()
    refused(scratch.run("compile", "tiny.cnn", "--depth", "-3"), scratch, status=(1, 2))


def test_negative_viz_depth_is_refused(scratch):
    scratch.tiny()
    refused(scratch.run("viz", "tiny.cnn", "--depth", "-3", "-o", "g.dot"), scratch, status=(1, 2))


def test_stdout_to_a_full_device_is_one_line(scratch):
    with open("/dev/full", "wb") as full:  # (--allow all: lenet's warning would come first)
        result = run_cli(["compile", EXAMPLES / "lenet5.cnn", "--allow", "all"], scratch.root, stdout=full)
    refused(result)


def test_broken_pipe_is_quiet(scratch):
    scratch.tiny()
    proc = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    result = run_cli(["compile", EXAMPLES / "resnet152.cnn"],
                     scratch.root, stdout=proc.stdin)
    proc.stdin.close()
    proc.wait()
    assert result.status in (0, 1) and "Traceback" not in result.err, str(result)


def test_image_folder_of_mixed_sizes_is_a_user_error(scratch):
    scratch.tiny()
    scratch.write("images/a/1.png", png_bytes(np.zeros((8, 8), np.uint8)))
    scratch.write("images/b/1.png", png_bytes(np.zeros((8, 9), np.uint8)))
    refused(scratch.run("run", "tiny.cnn", "--data", "images", "--out", "r"), scratch)


@pytest.mark.parametrize("text", [
    pytest.param('{"epoch": 1, "train_loss": 0.5, "pad": "' + "x" * 2_000_000 + '"\n{"epoch": 2,\n',
                 id="2MB-line"),
    pytest.param("epoch 1: loss 0.5\n", id="not-json"),
    pytest.param('{"epoch": 1, "train_loss": NaN}\n{"epoch": 2, "train_loss": 0.5}\n', id="nan-token"),
])
def test_hostile_metrics_file_is_one_error_or_a_picture(scratch, text):
    scratch.tiny()
    scratch.write("m.jsonl", text)
    result = scratch.run("viz", "tiny.cnn", "--style", "curves", "--metrics", "m.jsonl", "-o", "c.svg")
    if result.status == 0:
        succeeded(result, scratch, outputs=("c.svg",))
    else:
        refused(result, scratch)
