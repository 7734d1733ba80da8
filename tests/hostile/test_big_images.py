"""Issue 22, item 12: big images and many of them, under a 3 GB address-space cap.

An 8000x8000 PNG (80 KB, inside CNNC_MAX_IMAGE) is refused from its header by
`apply` and `viz --style activations` with one located line naming what it
would take (the activations limit, CNNC_MAX_ACTIVATIONS); `apply --resize
65535x65535` is refused before any image is read; `apply` holds one image's
results at a time, and `make-shapes` one sample, so their peak memory does not
grow with the number of items.
"""
from __future__ import annotations

import resource
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hostile_harness import EXAMPLES, PEAK_BYTES, Result, assert_clean_output, child_env, refused

CAP = 3 << 30   # bytes of address space: the 3 GB
PEAK = ("import sys; from cnnc.cli import main; code = main(sys.argv[1:]); "
        f"print('peak', ({PEAK_BYTES}) // 1024, file=sys.stderr); sys.exit(code)")


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def run_capped(scratch, *args) -> tuple[Result, int]:
    """`cnnc ARGS` under the 3 GB cap; the result and the process's peak resident memory in KiB."""
    if scratch.before is None:
        scratch.freeze()
    done = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], cwd=scratch.root, env=child_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=300, preexec_fn=_cap)
    err = done.stderr.decode("utf-8", "replace")
    peak = int(err.rsplit("peak ", 1)[1].split()[0]) if "peak " in err else 0
    stderr = done.stderr.rsplit(b"peak ", 1)[0] if b"peak " in done.stderr else done.stderr
    return Result(list(map(str, args)), done.returncode, done.stdout, stderr), peak


def _png(path, side):
    pixels = (np.indices((side, side)).sum(axis=0) % 256).astype(np.uint8)
    Image.fromarray(pixels).save(path, optimize=True)
    return path


def test_an_8000_square_png_is_refused_by_apply_from_its_header(scratch):
    _png(scratch.path("big.png"), 8000)
    result, _ = run_capped(scratch, "apply", EXAMPLES / "sobel.cnn", "big.png", "-o", "out.png")
    refused(result, scratch)
    assert result.err.startswith("cnnc: error: image 'big.png' (8000x8000, HxW): running SobelX on it takes about "
                                 "3.6 GiB"), result.err
    assert "more than the limit of 1.0 GiB" in result.err and "CNNC_MAX_ACTIVATIONS" in result.err


def test_an_8000_square_png_is_refused_by_the_activations_style(scratch):
    big = _png(scratch.path("big.png"), 8000)
    result, _ = run_capped(scratch, "viz", EXAMPLES / "sobel.cnn", "--style", "activations", "--image", big,
                           "-o", "act.png")
    refused(result, scratch)
    assert "running SobelX on it takes about" in result.err and "CNNC_MAX_ACTIVATIONS" in result.err


def test_a_huge_resize_is_refused_before_any_image_is_read(scratch):
    small = _png(scratch.path("small.png"), 64)
    result, _ = run_capped(scratch, "apply", EXAMPLES / "sobel.cnn", small, "--resize", "65535x65535",
                           "-o", "out.png")
    refused(result, scratch)
    assert result.err.startswith("cnnc: error: --resize 65535x65535: the resized image would take 16.0 GiB "
                                 "(float32), more than the limit of 256.0 MiB"), result.err


def test_a_raised_limit_lets_a_big_image_through(scratch):
    """The limit is the only thing in the way: raised, a 2000x2000 image runs (well inside the cap)."""
    _png(scratch.path("mid.png"), 2000)
    scratch.freeze()
    done = subprocess.run([sys.executable, "-m", "cnnc", "apply", str(EXAMPLES / "sobel.cnn"), "mid.png",
                           "-o", "out.png"], cwd=scratch.root, capture_output=True, text=True,
                          env=child_env({"CNNC_MAX_ACTIVATIONS": str(40 << 20)}), timeout=120, preexec_fn=_cap)
    assert done.returncode == 1 and "more than the limit of 40.0 MiB" in done.stderr
    result, _ = run_capped(scratch, "apply", EXAMPLES / "sobel.cnn", "mid.png", "-o", "out.png")
    assert result.status == 0, result.err
    assert Image.open(scratch.path("out.png")).size == (2000, 2000)


@pytest.mark.slow
def test_apply_holds_one_image_at_a_time(scratch):
    for i in range(6):
        _png(scratch.path(f"p{i}.png"), 1000)
    one, one_peak = run_capped(scratch, "apply", EXAMPLES / "sobel.cnn", "p0.png", "-o", "one.png")
    six, six_peak = run_capped(scratch, "apply", EXAMPLES / "sobel.cnn", *[f"p{i}.png" for i in range(6)],
                               "-o", "six.png")
    assert one.status == six.status == 0, six.err
    assert_clean_output(six)
    assert len(list(scratch.root.glob("six-p*.png"))) == 6
    # each image's results were kept to the end before (about 75 MB more per image of 1000x1000)
    assert six_peak < one_peak + 30 * 1024, (one_peak, six_peak)


@pytest.mark.slow
def test_make_shapes_holds_one_sample_at_a_time(scratch):
    few, few_peak = run_capped(scratch, "make-shapes", "few", "--n", "2", "--test", "0", "--size", "1024")
    many, many_peak = run_capped(scratch, "make-shapes", "many", "--n", "8", "--test", "0", "--size", "1024")
    assert few.status == many.status == 0, many.err
    assert len(list(scratch.path("many").glob("train/images/*.png"))) == 8
    # 6 more RGB samples of 1024x1024 with masks held at once would be 24 MB more
    assert many_peak < few_peak + 8 * 1024, (few_peak, many_peak)
