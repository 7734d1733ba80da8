"""Issue 22: a hostile mirror, crafted archives and checkpoints, sizes beyond reason, hostile figures.

Downloads of the standard data sets meet a mirror on 127.0.0.1 (tests/runtime/
mirror_server.py) that trickles one byte every 2 s, sends a body that never
ends or declares a size that is not the published one, or a `file:` mirror
whose file is a FIFO: each is one clear error naming the file and the mirror,
with nothing left in the cache. The CIFAR archive, the checkpoint the torch
export's generated loader reads and the ONNX export of a huge input are
refused from their headers or declared sizes, inside a 3 GB address space
(torch and ONNX Runtime reserve more address space than cnnc alone). Counts
and scores of thousands of digits and NaN weights give one-line errors, not
tracebacks.
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
import textwrap

import numpy as np
import pytest

from hostile_harness import MEMORY_3GB, PEAK_BYTES, Result, refused, run_python
from hostile_inputs import craft_checkpoint, deflate_bomb, gzip_bomb, npy_header, zip_bytes
from mirror_server import Server, endless, trickle

MNIST_IMAGES = "train-images-idx3-ubyte.gz"
PUBLISHED = 9_912_422  # its published size (runtime/data/standard.py)


@pytest.fixture
def mirror():
    server = Server()
    server.routes[f"/mnist/{MNIST_IMAGES}"] = bytes(PUBLISHED)
    yield server
    server.close()


def download(scratch, mirror_url: str, timeout: float = 60, **env: str):
    """`cnnc run` on `data = mnist` (Tiny cannot train on it; the download comes first)."""
    scratch.tiny()
    return scratch.run("run", "tiny.cnn", "--data", "mnist", "--out", "r", timeout=timeout,
                       env={"CNNC_DATA_MIRROR": mirror_url, "CNNC_DATA": str(scratch.path("cache")), **env})


def without_progress(result: Result) -> Result:
    """The result without the download's progress lines (`downloading ...`, `downloaded ...`), which
    come before the diagnostic on stderr."""
    kept = [line for line in result.err.splitlines(keepends=True) if not line.startswith(("downloading ", "downloaded "))]
    return Result(result.args, result.status, result.stdout, "".join(kept).encode())


def assert_cache_empty(scratch) -> None:
    kept = [p for p in scratch.path("cache").rglob("*") if not p.is_dir()] if scratch.path("cache").exists() else []
    assert kept == [], f"the cache kept {kept}"


def test_a_mirror_trickling_a_byte_every_2_s_is_cut(scratch, mirror):
    mirror.hostile[f"/mnist/{MNIST_IMAGES}"] = trickle(2.0)
    result = without_progress(download(scratch, mirror.url, CNNC_MAX_DOWNLOAD_STALL="3"))
    refused(result, scratch, outputs=["cache"])
    first = result.err.splitlines()[0]
    assert f"'{MNIST_IMAGES}' from {mirror.url}/mnist/{MNIST_IMAGES}" in first
    assert re.search(r": \d bytes arrived in 3 s \(0\.\d bytes/s\), below the minimum rate of 1\.0 KiB/s", first), first
    assert_cache_empty(scratch)


@pytest.mark.parametrize("declare, reason", [
    (None, f"it sends more than the published {PUBLISHED:,} bytes"),
    (1 << 40, f"it declares 1,099,511,627,776 bytes, the published file has {PUBLISHED:,}"),
    (PUBLISHED - 1, f"it declares {PUBLISHED - 1:,} bytes, the published file has {PUBLISHED:,}"),
], ids=["endless", "declares-1-TiB", "declares-one-byte-less"])
def test_a_body_longer_or_shorter_than_published_is_refused(scratch, mirror, declare, reason):
    mirror.hostile[f"/mnist/{MNIST_IMAGES}"] = endless(declare)
    result = without_progress(download(scratch, mirror.url))
    refused(result, scratch, outputs=["cache"])
    assert result.err.splitlines()[0].endswith(reason), result.err
    assert_cache_empty(scratch)


def test_a_fifo_in_a_file_mirror_is_refused_without_blocking(scratch):
    folder = scratch.path("mirror/mnist")
    folder.mkdir(parents=True)
    os.mkfifo(folder / MNIST_IMAGES)
    result = without_progress(download(scratch, scratch.path("mirror").as_uri(), timeout=10))
    refused(result, scratch, outputs=["cache"])
    assert "is not a regular file" in result.err.splitlines()[0]
    assert_cache_empty(scratch)


# ------------------------------------------------------------------ the CIFAR archive
def tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


# The archive's digests are the published ones in real use, so a crafted archive never reaches the
# unpacker; here the table is patched to list the crafted file, as if the publisher's were hostile.
PATCHED_RUN = textwrap.dedent("""
    import hashlib, resource, sys
    from dataclasses import replace
    from cnnc.runtime.data import standard
    body = open("mirror/cifar10/cifar-10-binary.tar.gz", "rb").read()
    listed = standard.RemoteFile("cifar-10-binary.tar.gz", len(body), hashlib.sha256(body).hexdigest(),
                                 hashlib.md5(body).hexdigest())
    standard.STANDARD["cifar10"] = replace(standard.STANDARD["cifar10"], files=(listed,))
    del body
    from cnnc.cli import main
    code = main(["run", "tiny.cnn", "--data", "cifar10", "--out", "r"])
    print(__PEAK__)
    sys.exit(code)
""").replace("__PEAK__", PEAK_BYTES)


@pytest.mark.parametrize("member, message", [
    ("cifar-10-batches-bin/data_batch_1.bin", "declares 5,368,709,120 bytes, more than the 30,730,000 bytes it has"),
    ("cifar-10-batches-bin/junk.bin", "inflates to more than 176.8 MiB, more than the members it should hold"),
], ids=["an-expected-member", "another-member"])
def test_a_5_mb_archive_inflating_to_5_gib_fails_early_in_bounded_memory(scratch, member, message):
    scratch.tiny()
    scratch.write("mirror/cifar10/cifar-10-binary.tar.gz", gzip_bomb(tar_header(member, 5 << 30), 5 << 30))
    scratch.freeze()
    result = without_progress(run_python(PATCHED_RUN, scratch.root, memory=MEMORY_3GB, timeout=240, env={
        "CNNC_DATA_MIRROR": scratch.path("mirror").as_uri(), "CNNC_DATA": str(scratch.path("cache"))}))
    refused(result, scratch, outputs=["cache/cifar10/cifar-10-binary.tar.gz", "cache"])
    assert message in result.err.splitlines()[0]
    assert int(result.out.split()[-1]) < 400 << 20, "more than 400 MB to refuse the archive"
    assert [p.name for p in scratch.path("cache").rglob("*") if p.is_file()] == ["cifar-10-binary.tar.gz"]


# ------------------------------------------------------------------ exports
LOAD = textwrap.dedent("""
    import importlib.util, resource, sys
    spec = importlib.util.spec_from_file_location("generated", "tiny_torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for path in sys.argv[1:]:
        try:
            mod.load_cnnc_checkpoint(path)
            print("loaded")
        except ValueError as err:
            print("refused:", err)
        print(__PEAK__)
""").replace("__PEAK__", PEAK_BYTES)


@pytest.mark.slow
def test_the_generated_torch_loader_refuses_a_checkpoint_bomb_from_its_header(scratch, checkpoint):
    """2.7 MB checkpoints whose conv.weight member inflates to 2.7 GB: the generated loader refuses each
    after its header (a shape the model does not have; the right shape, but more bytes than the header
    declares), in less memory than one such member, and still loads a real checkpoint."""
    pytest.importorskip("torch")
    scratch.tiny()
    exported = scratch.run("export", "tiny.cnn", "--to", "torch", "-o", "tiny_torch.py", "--checkpoint", "best.npz",
                           memory=MEMORY_3GB, timeout=120)
    assert exported.status == 0, exported
    inflated, expected = 2_700_000_000, []
    for name, shape in (("huge.npz", (675_000_000,)), ("lies.npz", (4, 1, 3, 3))):
        header = npy_header(shape, "<f4")
        scratch.write(name, zip_bytes([
            ("__meta__.npy", deflate_bomb(b"{}", 0), 2, 0),
            ("param/conv.weight.npy", deflate_bomb(header, inflated), len(header) + inflated, 0),
        ]))
        expected.append(f"member 'param/conv.weight.npy' declares {len(header) + 144} bytes of array but holds "
                        f"{len(header) + inflated}" if name == "lies.npz" else
                        "param/conv.weight.npy has shape [675000000], Tiny needs [4, 1, 3, 3]")
    result = run_python(LOAD, scratch.root, memory=MEMORY_3GB, timeout=240, args=["huge.npz", "lies.npz", "best.npz"])
    assert result.status == 0, result
    said = result.out.splitlines()
    assert said[0::2] == [f"refused: {expected[0]}", f"refused: {expected[1]}", "loaded"], result
    assert int(said[3]) < 1 << 30, "the loader read the bomb"


@pytest.mark.slow
def test_onnx_export_of_a_huge_input_is_refused_before_any_weight(scratch):
    pytest.importorskip("onnx")
    scratch.write("big.cnn", "network Big {\n    input x: [1, H, W]\n    x -> flatten -> linear(10)\n}\n")
    result = scratch.run("export", "big.cnn", "--to", "onnx", "--input", "x=1x8000x8000", "-o", "big.onnx",
                         memory=MEMORY_3GB, timeout=60)
    refused(result, scratch)
    assert "the ONNX model of 'Big' would hold 2.6 GB of weights; cnnc writes models up to 2 GB" in result.err


# ------------------------------------------------------------------ pictures
EPOCH = '{"epoch": 1, "train_loss": 0.5}\n'


@pytest.mark.parametrize("test", [
    '"confusion": [[%s, %s], [1, 2]]' % ("9" * 4300, "9" * 4300),
    '"confusion": [[1, 0], [0, 1]], "precision": [1%s, 0.5]' % ("0" * 400),
    '"confusion": [[1, 0], [0, 1]], "precision": [1e400, 0.5]',
], ids=["counts-summing-to-4301-digits", "a-precision-of-10**400", "a-precision-of-inf"])
def test_confusion_with_numbers_beyond_reason_is_one_located_error(scratch, test):
    scratch.tiny()
    scratch.write("metrics.jsonl", EPOCH + '{"split": "test", "loss": 0.5, %s}\n' % test)
    result = scratch.run("viz", "tiny.cnn", "--style", "confusion", "--metrics", "metrics.jsonl", "-o", "c.svg")
    refused(result, scratch)
    assert re.match(r"(metrics\.jsonl:2:\d+: error: malformed metrics line: an integer of [\d,]+ digits|"
                    r"cnnc: error: metrics\.jsonl: the test record's 'precision' is not a list of 2 fractions)",
                    result.err), result.err


@pytest.mark.parametrize("style", ["kernels", "activations"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_by_every_picture_of_values(scratch, checkpoint, style, bad):
    scratch.tiny()
    weight = np.full((4, 1, 3, 3), bad, np.float32)
    craft_checkpoint(checkpoint, scratch.path("bad.npz"), array_changes={"param/conv.weight": weight})
    result = scratch.run("viz", "tiny.cnn", "--style", style, "--checkpoint", "bad.npz", "-o", "p.png")
    refused(result, scratch, outputs=["bad.npz"])
    what = "the weights of 'conv'" if style == "kernels" else "'conv'"
    assert result.err.startswith(f"cnnc: error: NaN or infinite values in {what}: there is no picture of them")
