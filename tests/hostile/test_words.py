"""Issue 9, class 9: clean but wrong words.

The message is one line and exits 1, but says the wrong thing: a text file is
"pickled", a uint64 label shows as -1, a form feed shifts the quoted line; or
a bad value is accepted silently. Each must be refused (or accepted) with the
right words.
"""
from __future__ import annotations

import numpy as np
import pytest

from hostile_harness import TINY, refused, succeeded



def test_text_named_npz_data_is_not_called_pickled(scratch):
    scratch.tiny()
    scratch.write("data.npz", "just some text\n")
    result = scratch.run("run", "tiny.cnn", "--data", "data.npz", "--out", "r")
    refused(result, scratch)
    assert "pickle" not in result.err, str(result)


def test_text_named_npy_input_is_not_called_pickled(scratch, checkpoint):
    scratch.tiny()
    scratch.write("x.npy", "just some text\n")
    result = scratch.run("predict", "tiny.cnn", "best.npz", "x.npy")
    refused(result, scratch)
    assert "pickle" not in result.err, str(result)


def test_text_named_npz_checkpoint_is_not_called_pickled(scratch):
    scratch.tiny()
    scratch.write("c.npz", "just some text\n")
    result = scratch.run("predict", "tiny.cnn", "c.npz")
    refused(result, scratch)
    assert "pickle" not in result.err, str(result)


def test_uint64_label_is_shown_as_its_value(scratch):
    scratch.tiny()
    y = np.array([0, 1, 2, 2 ** 64 - 1], np.uint64)
    x = np.random.default_rng(0).random((4, 1, 8, 8), np.float32)
    np.savez(scratch.path("d.npz"), x_train=x, y_train=y)
    result = scratch.run("run", "tiny.cnn", "--data", "d.npz", "--out", "r")
    refused(result, scratch)
    assert str(2 ** 64 - 1) in result.err and "-1" not in result.err, str(result)


def test_negative_label_is_refused_with_its_value(scratch):
    scratch.tiny()
    x = np.random.default_rng(0).random((4, 1, 8, 8), np.float32)
    np.savez(scratch.path("d.npz"), x_train=x, y_train=np.array([0, 1, -3, 2]))
    result = scratch.run("run", "tiny.cnn", "--data", "d.npz", "--out", "r")
    refused(result, scratch)
    assert "-3" in result.err, str(result)


def test_negative_pgm_pixel_is_refused(scratch, checkpoint):
    scratch.tiny()
    scratch.write("x.pgm", "P2\n8 8\n255\n" + " ".join(["-5"] + ["0"] * 63) + "\n")
    refused(scratch.run("predict", "tiny.cnn", "best.npz", "x.pgm"), scratch)


@pytest.mark.parametrize("breaker", [
    pytest.param("\f", id="form-feed"),
    pytest.param("\x85", id="U+0085"),
    pytest.param("\u2028", id="U+2028"),
    pytest.param("\v", id="vertical-tab"),
])
def test_odd_line_breaks_do_not_shift_the_quoted_line(scratch, breaker):
    scratch.write("net.cnn", f"# a comment with a{breaker}break\nnetwork N {{\n    input x: [1, 8, 8]\n"
                             "    x -> nosuchop\n}\n")
    result = scratch.run("check", "net.cnn")
    refused(result, scratch)
    assert result.err.startswith("net.cnn:4:"), str(result)
    assert "x -> nosuchop" in result.err, f"the quoted line is not line 4\n{result}"


def test_utf8_bom_is_accepted(scratch):
    scratch.write("net.cnn", "\ufeff" + TINY)
    succeeded(scratch.run("check", "net.cnn"), scratch)


@pytest.mark.parametrize("layer", [
    pytest.param("batchnorm(eps = 1e400 - 1e400)", id="batchnorm-eps-nan"),
    pytest.param("leaky_relu(slope = 1e400 - 1e400)", id="leaky-slope-nan"),
])
def test_nan_attribute_is_refused(scratch, layer):
    scratch.write("net.cnn", TINY.replace("-> relu ->", f"-> {layer} ->"))
    result = scratch.run("check", "net.cnn")
    refused(result, scratch)
    assert result.err.startswith("net.cnn:3:"), str(result)


def test_unknown_allow_name_is_refused(scratch):
    scratch.tiny()
    refused(scratch.run("check", "tiny.cnn", "--allow", "no-such-lint"), scratch, status=(1, 2))


def test_output_without_emit_is_refused(scratch):
    scratch.tiny()
    refused(scratch.run("compile", "tiny.cnn", "-o", "model.py"), scratch, status=(1, 2))


@pytest.mark.parametrize("flags", [
    pytest.param(["--lr", "nan"], id="lr-nan"),
    pytest.param(["--lr", "inf"], id="lr-inf"),
    pytest.param(["--lr", "1e400"], id="lr-1e400"),
    pytest.param(["--limit", "0"], id="limit-0"),
    pytest.param(["--limit", "-4"], id="limit-negative"),
    pytest.param(["--epochs", "-1"], id="epochs-negative"),
    pytest.param(["--threads", "0"], id="threads-0"),
])
def test_bad_run_flag_is_refused(scratch, flags):
    scratch.tiny()
    refused(scratch.run("run", "tiny.cnn", "--out", "r", "--quiet", *flags), scratch, status=(1, 2))
