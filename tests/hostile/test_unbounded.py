"""Issue 9, class 4: unbounded reads.

Decompression bombs (a gzipped IDX, an .npz, a PNG, a checkpoint) that are
small on disk and huge inflated or declared, and files that never end
(/dev/zero) or never answer (a FIFO). cnnc must refuse each from its header
or its type, before inflating or reading: under the harness's 1.5 GiB memory
limit "out of memory" is a failure, and so is a timeout.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from hostile_harness import refused
from hostile_inputs import (deflate_bomb, meta_array, npy_bytes, npy_header, png_bomb, write_gzip_idx_bomb,
                            write_npz_bomb, zip_bytes)

FIFO_TIMEOUT = 5.0  # a fixed reader refuses a FIFO at once; the old one blocks until killed


def assert_bounded(result) -> None:
    assert "out of memory" not in result.err, f"the bomb was inflated until memory ran out\n{result}"


def test_import_of_dev_zero_is_refused(scratch):
    scratch.write("net.cnn", 'import "/dev/zero"\n')
    result = scratch.run("check", "net.cnn")
    refused(result, scratch)
    assert_bounded(result)


def test_import_of_a_fifo_does_not_block(scratch):
    os.mkfifo(scratch.path("pipe.cnn"))
    scratch.write("net.cnn", 'import "pipe.cnn"\n')
    refused(scratch.run("check", "net.cnn", timeout=FIFO_TIMEOUT), scratch)


def test_metrics_from_dev_zero_is_refused(scratch):
    scratch.tiny()
    result = scratch.run("viz", "tiny.cnn", "--style", "curves", "--metrics", "/dev/zero", "-o", "c.svg")
    refused(result, scratch)
    assert_bounded(result)


def test_predict_on_dev_zero_is_refused(scratch, checkpoint):
    scratch.tiny()
    result = scratch.run("predict", "tiny.cnn", "best.npz", "/dev/zero")
    refused(result, scratch)
    assert_bounded(result)


def test_data_from_a_fifo_does_not_block(scratch):
    scratch.tiny()
    os.mkfifo(scratch.path("data.npz"))
    refused(scratch.run("run", "tiny.cnn", "--data", "data.npz", "--out", "r", timeout=FIFO_TIMEOUT), scratch)


@pytest.mark.parametrize("name, write", [("mnist", write_gzip_idx_bomb), ("bomb.npz", write_npz_bomb)],
                         ids=["gzip-idx-bomb", "npz-declaring-a-huge-shape"])
def test_data_bombs_are_refused_from_their_headers(scratch, name, write):
    scratch.tiny()
    write(scratch.path(name))
    result = scratch.run("run", "tiny.cnn", "--data", name, "--out", "r")
    refused(result, scratch)
    assert_bounded(result)


def test_png_declaring_20000_by_20000_is_refused_in_predict(scratch, checkpoint):
    scratch.tiny()
    scratch.write("bomb.png", png_bomb())
    result = scratch.run("predict", "tiny.cnn", "best.npz", "bomb.png")
    refused(result, scratch)
    assert_bounded(result)


def test_png_bomb_in_an_image_folder_is_refused(scratch):
    scratch.tiny()
    for cls in ("a", "b"):
        scratch.write(f"images/{cls}/ok.pgm", b"P5 8 8 255\n" + bytes(64))
    scratch.write("images/a/bomb.png", png_bomb())
    result = scratch.run("run", "tiny.cnn", "--data", "images", "--out", "r")
    refused(result, scratch)
    assert_bounded(result)


def test_checkpoint_with_a_huge_member_is_refused(scratch):
    scratch.tiny()
    meta = npy_bytes(meta_array({"epoch": 1}))
    header = npy_header((10 ** 6, 1000, 1000), "<f4")
    scratch.write("bomb.npz", zip_bytes([
        ("__meta__.npy", deflate_bomb(meta, 0), len(meta), zlib.crc32(meta)),
        ("param/huge.npy", deflate_bomb(header, 64 << 20), len(header) + (64 << 20), 0),
    ]))
    result = scratch.run("predict", "tiny.cnn", "bomb.npz")
    refused(result, scratch)
    assert_bounded(result)


def test_npy_input_declaring_a_huge_shape_is_refused(scratch, checkpoint):
    scratch.tiny()
    scratch.write("x.npy", npy_header((10 ** 6, 1, 8, 8), "<f4") + np.zeros(64, np.float32).tobytes())
    result = scratch.run("predict", "tiny.cnn", "best.npz", "x.npy")
    refused(result, scratch)
    assert_bounded(result)
