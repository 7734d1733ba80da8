"""Hostile data files, made at test time: bombs are refused from their headers, fast and small.

Each bomb is a small file that declares (or inflates to) far more data than it
holds. The readers must refuse it with one line naming the file, before
allocating what it declares: the bombs run in a subprocess under a 1 GiB
address-space limit (RLIMIT_AS), which also reports the peak memory and time.
Other cases: files that are not what their name says, FIFOs, /dev/zero,
directories, palettes, labels, prediction inputs, and the resize rule checked
against filters computed by hand.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.data import array_files, images, inputs, sources
from cnnc.runtime.data.containers import Dataset, Split
from cnnc.runtime.data.targets import NetworkShapes, check_dataset
from cnnc.runtime.train.losses import get_loss

MiB = 1 << 20
MEMORY_CAP = 1 << 30  # the address-space limit the bombs run under


# ====================================================================== bomb makers

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tiny_png(width: int = 2, height: int = 2, colour: int = 0, palette: bytes | None = None,
             pixels: bytes | None = None) -> bytes:
    """A valid 8-bit PNG (grey, RGB or palette) with the given raw pixel bytes."""
    samples = {0: 1, 2: 3, 3: 1}[colour]
    raw = pixels if pixels is not None else bytes(width * height * samples)
    rows = b"".join(b"\x00" + raw[r * width * samples:(r + 1) * width * samples] for r in range(height))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
    if palette is not None:
        out += _chunk(b"PLTE", palette)
    return out + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def png_declaring(width: int, height: int) -> bytes:
    """A 2x2 PNG whose IHDR is patched to declare width x height (with a correct CRC)."""
    good = tiny_png()
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return good[:8] + ihdr + good[8 + len(ihdr):]


def zeros_deflated(n: int, wbits: int = 31) -> bytes:
    """n zero bytes, compressed (gzip by default) without ever holding them in memory."""
    c = zlib.compressobj(1, zlib.DEFLATED, wbits)
    block = bytes(16 * MiB)
    out = [c.compress(block[:min(len(block), n - i)]) for i in range(0, n, len(block))]
    return b"".join(out) + c.flush()


def idx_header(dims, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def npy_header(shape, descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def npz_with(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in members.items():
            z.writestr(name, body)
    return buf.getvalue()


def write_npz_of_zeros(path, n: int) -> None:
    """An .npz whose x member honestly holds n zero bytes (uint8), deflated: a zip bomb."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header((n,), "|u1"))
            block = bytes(16 * MiB)
            for i in range(0, n, len(block)):
                f.write(block[:min(len(block), n - i)])
        z.writestr("y.npy", npy_header((1,), "<i8") + bytes(8))


# ====================================================================== running under a memory cap

RUNNER = textwrap.dedent("""
    import json, resource, sys, time
    from cnnc.dsl.source import CnncError
    from cnnc.runtime.data import array_files, images, sources
    READERS = {"read_idx": array_files.read_idx, "load_npz": array_files.load_npz, "read_npy": array_files.read_npy,
               "read_image": images.read_image, "load_dataset": sources.load_dataset}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        READERS[sys.argv[1]](*sys.argv[2:])
        message = None
    except CnncError as err:
        message = err.message
    except MemoryError:
        message = "MemoryError"
    print(json.dumps({"message": message, "seconds": time.perf_counter() - start,
                      "grew_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
""")


def run_capped(function: str, *args, env: dict[str, str] | None = None) -> dict:
    """The data reader <function>(*args) in a subprocess limited to MEMORY_CAP bytes of address space."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    proc = subprocess.run([sys.executable, "-c", RUNNER, function, *map(str, args)], capture_output=True,
                          text=True, timeout=120, preexec_fn=cap, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_fast_refusal(result: dict, message: str) -> None:
    assert result["message"] == message
    assert result["seconds"] < 2.0, result
    assert result["grew_mib"] < 24, result  # nothing near what the file declares (>= 128 MiB) was allocated


# ====================================================================== IDX

def test_gzip_idx_declaring_huge_dims_is_refused_from_its_header(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((60000, 10000, 10000))))
    result = run_capped("read_idx", path)
    assert_fast_refusal(result, f"IDX file '{path}' declares (as float32) 22351.7 GiB of data, more than "
                                "the limit of 4.0 GiB")


def test_gzip_idx_with_a_second_member_of_zeros_inflates_no_further(tmp_path):
    path = tmp_path / "bomb.gz"
    # Header in one gzip member, 128 MiB of zeros in a second one (gzip allows several members).
    path.write_bytes(gzip.compress(idx_header((10, 10))) + zeros_deflated(128 * MiB))
    assert path.stat().st_size < 1 * MiB
    result = run_capped("read_idx", path)
    assert_fast_refusal(result, f"IDX file '{path}' is longer than its header says")


def test_single_gzip_stream_longer_than_its_header(tmp_path):
    path = tmp_path / "long.gz"
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [c.compress(idx_header((10, 10)))]
    block = bytes(16 * MiB)
    parts += [c.compress(block) for _ in range(8)]  # 128 MiB of zeros in the same stream
    path.write_bytes(b"".join(parts) + c.flush())
    assert path.stat().st_size < 1 * MiB
    result = run_capped("read_idx", path)
    assert_fast_refusal(result, f"IDX file '{path}' is longer than its header says")


@pytest.mark.parametrize("header, expected", [
    (bytes([0, 0, 8, 255]) + bytes(4 * 255), "declares rank 255; cnnc reads IDX arrays of rank 1 to 4"),
    (idx_header((0xFFFFFFFF, 0xFFFFFFFF)), "declares 16.0 EiB"),
    (idx_header((1000, 28, 28)), "is truncated: the header promises [1000, 28, 28] values of 1 byte(s), "
                                 "the file holds 0 data bytes"),
])
def test_idx_headers_that_lie(tmp_path, header, expected):
    for gz in (False, True):
        path = tmp_path / ("h.gz" if gz else "h")
        path.write_bytes(gzip.compress(header) if gz else header)
        with pytest.raises(CnncError) as e:
            array_files.read_idx(path)
        message = e.value.message
        assert message.startswith(f"IDX file '{path}' ") and "\n" not in message
        if expected.startswith("declares 16"):
            assert "of data, more than the limit of" in message
        else:
            assert message == f"IDX file '{path}' {expected}"


# ====================================================================== npz

def test_npz_member_declaring_a_huge_shape_is_refused_before_inflating(tmp_path):
    path = tmp_path / "huge.npz"
    path.write_bytes(npz_with({"x.npy": npy_header((100000, 100000)) + bytes(64),
                               "y.npy": npy_header((2,), "<i8") + bytes(16)}))
    result = run_capped("load_npz", path)
    assert_fast_refusal(result, f"'{path}' declares (as float32) 74.5 GiB of data, more than the limit "
                                "of 4.0 GiB")


def test_npz_zip_bomb_is_refused_from_declared_sizes(tmp_path):
    path = tmp_path / "bomb.npz"
    write_npz_of_zeros(path, 128 * MiB)
    assert path.stat().st_size < 2 * MiB
    result = run_capped("load_npz", path, env={"CNNC_MAX_DATA": str(16 * MiB)})
    assert_fast_refusal(result, f"'{path}' (member 'x.npy') inflates to 128.0 MiB of data, more than the "
                                "limit of 16.0 MiB")
    # Under the member-size limit, the uint8 array still counts at float32 size: 4 x 8 MiB.
    small = tmp_path / "small.npz"
    write_npz_of_zeros(small, 8 * MiB)
    result = run_capped("load_npz", small, env={"CNNC_MAX_DATA": str(16 * MiB)})
    assert_fast_refusal(result, f"'{small}' declares (as float32) 32.0 MiB of data, more than the limit of "
                                "16.0 MiB")


def test_npz_refusals_name_the_file(tmp_path):
    cases = {
        "text.npz": (b"hello, I am text", "data file '{p}' is not an .npz archive"),
        "empty.npz": (npz_with({}), "'{p}' is an empty .npz archive (it holds no arrays)"),
        "pickle.npz": (npz_with({"x.npy": npy_header((2,), "|O") + b"\x80\x04N."}),
                       "'{p}' (array 'x') holds Python objects (pickled arrays); cnnc reads plain numeric "
                       "arrays only"),
        "other.npz": (npz_with({"x.txt": b"1 2 3"}), "'{p}' holds 'x.txt', which is not an .npy array"),
        "short.npz": (npz_with({"x.npy": npy_header((4,), "<f4") + bytes(8)}),
                      "'{p}' (array 'x') is truncated: its header promises [4] values of 4 byte(s), "
                      "it holds 8 data bytes"),
        "header.npz": (npz_with({"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n"}),
                       "'{p}' (array 'x') is not a readable .npy array"),
    }
    for name, (raw, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(CnncError) as e:
            sources.load_dataset(path)
        assert e.value.message.startswith(expected.format(p=path)), (name, e.value.message)
        assert "\n" not in e.value.message


def test_npz_fortran_order_and_all_dtypes_read_back(tmp_path):
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    y = np.array([1, 0], np.uint16)
    np.savez_compressed(tmp_path / "f.npz", x=x, y=y)
    ds = array_files.load_npz(tmp_path / "f.npz")
    np.testing.assert_array_equal(ds.train.x[:, 0], x)
    np.testing.assert_array_equal(ds.train.y, [1, 0])


# ====================================================================== images

def test_png_declaring_20000_squared_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(20000, 20000))
    result = run_capped("read_image", path)
    assert result["message"].startswith(f"image '{path}' declares too many pixels (Image size (400000000 "
                                        "pixels) exceeds limit")
    assert_fast_refusal(result, result["message"])


def test_png_over_the_image_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(png_declaring(9000, 9000))
    result = run_capped("read_image", path)
    assert_fast_refusal(result, f"image '{path}' declares 9000x9000 pixels (309.0 MiB decoded), more "
                                "than the limit of 256.0 MiB")
    small = tmp_path / "small.png"
    small.write_bytes(tiny_png(64, 64))
    assert images.read_image(small).shape == (1, 64, 64)
    monkeypatch.setenv("CNNC_MAX_IMAGE", "10000")  # the limit is on the decoded float32 array
    with pytest.raises(CnncError) as e:
        images.read_image(small)
    assert e.value.message == (f"image '{small}' declares 64x64 pixels (16.0 KiB decoded), more than the "
                               "limit of 9.8 KiB")


@pytest.mark.parametrize("palette, pixels, expected", [
    (None, bytes([0, 1, 1, 0]), "is a palette image without a valid palette (0 palette bytes)"),
    (bytes(7), bytes([0, 1, 1, 0]), "is a palette image without a valid palette (7 palette bytes)"),
    (bytes(6), bytes([0, 5, 1, 0]), "is corrupt: a pixel uses palette entry 5, the palette has 2"),
    (bytes(800), bytes(4), "is corrupt or unsupported (invalid palette size)"),
])
def test_bad_palettes_are_one_line_errors(tmp_path, palette, pixels, expected):
    path = tmp_path / "p.png"
    path.write_bytes(tiny_png(2, 2, colour=3, palette=palette, pixels=pixels))
    with pytest.raises(CnncError) as e:
        images.read_image(path)
    assert e.value.message == f"image '{path}' {expected}"


def test_good_palette_is_looked_up_as_rgb(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(tiny_png(2, 1, colour=3, palette=bytes([10, 20, 30, 255, 0, 128]), pixels=bytes([1, 0])))
    np.testing.assert_allclose(images.read_image(path)[:, 0],
                               np.array([[255, 10], [0, 20], [128, 30]]) / 255.0, atol=1e-7)


# ====================================================================== files that are not files

@pytest.mark.parametrize("reader", [images.read_image, array_files.read_idx, array_files.load_npz,
                                    sources.load_dataset, array_files.read_npy], ids=lambda f: f.__name__)
def test_devices_fifos_and_directories_are_refused(tmp_path, reader):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)  # no writer: a blocking open would hang for ever
    for path, expected in ((fifo, "is not a regular file (a device, pipe or socket)"),
                           ("/dev/zero", "is not a regular file (a device, pipe or socket)")):
        with pytest.raises(CnncError) as e:
            reader(path)
        assert e.value.message.endswith(f"'{path}' {expected}"), e.value.message
    if reader is not sources.load_dataset:  # a directory is an image or IDX folder to load_dataset
        with pytest.raises(CnncError) as e:
            reader(tmp_path)
        assert e.value.message.endswith(f"'{tmp_path}' is a directory, not a file")


def test_dev_zero_given_to_load_dataset_fails_fast_under_a_memory_cap():
    result = run_capped("load_dataset", "/dev/zero")
    assert_fast_refusal(result, "data file '/dev/zero' is not a regular file (a device, pipe or socket)")


# ====================================================================== labels

def test_uint64_labels_report_their_real_value(tmp_path):
    huge = 2 ** 64 - 1
    np.savez(tmp_path / "u.npz", x=np.zeros((2, 3)), y=np.array([0, huge], np.uint64))
    with pytest.raises(CnncError) as e:
        array_files.load_npz(tmp_path / "u.npz")
    assert e.value.message == f"{tmp_path / 'u.npz'}: the labels hold {huge}, too large for a class index"
    ds = Dataset("d.npz", Split(np.zeros((2, 3), np.float32), np.array([3, 2 ** 63 + 5], np.uint64)))
    with pytest.raises(CnncError) as e:
        check_dataset(ds, NetworkShapes((3,), (10,)), get_loss("cross_entropy"))
    assert e.value.message == ("data 'd.npz' (train split): labels must lie in [0, 10), the data has "
                               f"label(s) {2 ** 63 + 5}")
    ds = Dataset("d.npz", Split(np.zeros((2, 3), np.float32), np.array([1e30, -2.0])))
    with pytest.raises(CnncError) as e:
        check_dataset(ds, NetworkShapes((3,), (10,)), get_loss("cross_entropy"))
    assert e.value.message == ("data 'd.npz' (train split): labels must lie in [0, 10), the data has "
                               f"label(s) -2 to {int(1e30)}")


# ====================================================================== image folders: size and channels

def _write_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    path.write_bytes(tiny_png(w, h, colour, pixels=pixels.astype(np.uint8).tobytes()))


def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BILINEAR as documented: a triangle filter, widened by the scale when shrinking,
    pixel centres aligned, weights cut at the border and renormalised. Computed here by hand."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        for j in range(n_in):
            weights[i, j] = max(0.0, 1.0 - abs(j + 0.5 - centre) / support)
        weights[i] /= weights[i].sum()
    return weights


def test_bilinear_weights_by_hand_are_the_textbook_ones():
    # Halving: every output averages 4 inputs with weights 1/8, 3/8, 3/8, 1/8 (cut at the edges).
    w = _bilinear_weights(8, 4)
    np.testing.assert_allclose(w[1, 1:5], [1 / 8, 3 / 8, 3 / 8, 1 / 8])
    np.testing.assert_allclose(w[0, :3], [3 / 7, 3 / 7, 1 / 7])


def test_resize_matches_the_filter_computed_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (8, 12), dtype=np.uint8)
    _write_png(tmp_path / "a" / "1.png", image)
    for size, (h, w) in ((4, (4, 4)), ((4, 6), (4, 6)), ((16, 24), (16, 24)), ((5, 7), (5, 7))):
        ds = sources.load_dataset(tmp_path, size=size)
        assert ds.train.x.shape == (1, 1, h, w)
        expected = _bilinear_weights(8, h) @ (image / 255.0) @ _bilinear_weights(12, w).T
        np.testing.assert_allclose(ds.train.x[0, 0], expected, atol=1e-5)


def test_resize_keeps_constants_and_averages_a_checkerboard(tmp_path):
    _write_png(tmp_path / "a" / "c.png", np.full((6, 10, 3), (200, 50, 0)))
    board = (np.indices((8, 8)).sum(0) % 2) * 255
    _write_png(tmp_path / "b" / "k.png", board)
    ds = sources.load_dataset(tmp_path, size=(3, 4))
    assert ds.train.x.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(ds.train.x[0], np.array([200, 50, 0])[:, None, None] / 255 * np.ones((3, 4)),
                               atol=1e-6)
    only_board = tmp_path / "board"
    _write_png(only_board / "k" / "k.png", board)
    halved = sources.load_dataset(only_board, size=4).train.x[0, 0]
    # Inside, the 1/8 3/8 3/8 1/8 taps cover two light and two dark pixels per axis: exactly 0.5.
    np.testing.assert_allclose(halved[1:3, 1:3], 0.5, atol=1e-6)


def test_channels_option_converts(tmp_path):
    _write_png(tmp_path / "a" / "c.png", np.full((2, 2, 3), (200, 50, 10)))
    _write_png(tmp_path / "b" / "g.png", np.full((2, 2), 70))
    grey = sources.load_dataset(tmp_path, channels=1).train.x
    assert grey.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(grey[0], (0.299 * 200 + 0.587 * 50 + 0.114 * 10) / 255, atol=1e-6)
    np.testing.assert_allclose(grey[1], 70 / 255, atol=1e-7)
    rgb = sources.load_dataset(tmp_path, channels=3).train.x
    assert rgb.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(rgb[1], 70 / 255, atol=1e-7)


def test_folder_options_are_checked(tmp_path):
    _write_png(tmp_path / "a" / "1.png", np.zeros((4, 4)))
    _write_png(tmp_path / "a" / "2.png", np.zeros((5, 4)))
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == (f"image '{tmp_path / 'a' / '2.png'}' is 4x5 pixels, but "
                               f"'{tmp_path / 'a' / '1.png'}' is 4x4")
    assert "size = N" in e.value.hint
    assert sources.load_dataset(tmp_path, size=3).train.x.shape == (2, 1, 3, 3)
    for options, expected in (
            ({"colour": 1}, f"data source '{tmp_path}' (an image folder) takes only size, channels, "
                            "got ['colour']"),
            ({"size": 0}, "images: size must lie between 1 and 65535 pixels, got 0"),
            ({"size": (2, 3, 4)}, "images: size must be a positive whole number or (height, width), "
                                  "got (2, 3, 4)"),
            ({"size": 2.5}, "images: size must be a positive whole number or (height, width), got 2.5"),
            ({"channels": 2}, "images: channels must be 1 (grey) or 3 (RGB), got 2")):
        with pytest.raises(CnncError) as e:
            sources.load_dataset(tmp_path, **options)
        assert e.value.message == expected
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path / "d.npz", size=4)
    assert e.value.message == f"data source '{tmp_path / 'd.npz'}' (an .npz archive) takes no options, got ['size']"
    with pytest.raises(CnncError) as e:
        sources.load_dataset("synthetic_classes", n_train=-5)
    assert e.value.message == "data source 'synthetic_classes': n_train must be a whole number of at least 1, got -5"


# ====================================================================== prediction inputs

def test_load_inputs_reads_images_and_arrays(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _write_png(tmp_path / "a.png", a)
    np.save(tmp_path / "b.npy", np.stack([a, a]))  # a batch [N, H, W] of uint8
    np.savez(tmp_path / "c.npz", x=(a / 255.0).astype(np.float32)[None])  # one sample [1, H, W]
    x = inputs.load_inputs([tmp_path / "a.png", tmp_path / "b.npy", tmp_path / "c.npz"], (1, 3, 4))
    assert x.shape == (4, 1, 3, 4) and x.dtype == np.float32
    for sample in x:
        np.testing.assert_allclose(sample[0], a / 255.0, atol=1e-7)
    np.testing.assert_array_equal(inputs.load_inputs([str(tmp_path / "a.png")]), x[:1])


def test_load_inputs_refusals_name_the_file(tmp_path):
    _write_png(tmp_path / "g.png", np.zeros((3, 4)))
    _write_png(tmp_path / "big.png", np.zeros((5, 4)))
    _write_png(tmp_path / "rgb.png", np.zeros((3, 4, 3)))
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    np.save(tmp_path / "z.npy", np.array(3.0))
    np.save(tmp_path / "e.npy", np.zeros((0, 3, 4)))
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    np.save(tmp_path / "w.npy", np.zeros((2, 7)))
    (tmp_path / "n.npz").write_bytes(npz_with({}))
    p = lambda name: tmp_path / name  # noqa: E731
    cases = [
        (["s.npy"], None, f"'{p('s.npy')}' holds an array of dtype <U1, which is not numeric"),
        (["z.npy"], None, f"'{p('z.npy')}' holds a single number (a 0-d array), not samples"),
        (["e.npy"], None, f"'{p('e.npy')}' holds an empty array of shape [0, 3, 4]"),
        (["o.npy"], None, f"array file '{p('o.npy')}' holds Python objects (pickled arrays); cnnc reads "
                          "plain numeric arrays only"),
        (["n.npz"], None, f"'{p('n.npz')}' is an empty .npz archive (it holds no arrays)"),
        (["g.png", "big.png"], None, f"image '{p('big.png')}' is 4x5 pixels with 1 channel, but "
                                     f"'{p('g.png')}' is 4x3 with 1 channel"),
        (["rgb.png"], (1, 3, 4), f"image '{p('rgb.png')}' is a colour image (3 channels), the network "
                                 "expects 1 channel"),
        (["big.png"], (1, 3, 4), f"image '{p('big.png')}' is 4x5 pixels, the network expects 4x3"),
        (["w.npy"], (1, 3, 4), f"'{p('w.npy')}' holds an array of shape [2, 7]; the network expects "
                               "[1, 3, 4] per sample (one sample, or a batch [N, ...])"),
        (["/dev/zero"], None, "image '/dev/zero' is not a regular file (a device, pipe or socket)"),
    ]
    for names, shape, expected in cases:
        paths = [n if n.startswith("/") else p(n) for n in names]
        with pytest.raises(CnncError) as e:
            inputs.load_inputs(paths, shape)
        assert e.value.message == expected


# ====================================================================== the real command line

CLI_NET = """
network Tiny {
    input x: [1, 4, 4]
    x -> flatten -> linear(2)
}
train Tiny {
    data   = synthetic(n = 16, classes = 2)
    epochs = 1
    batch  = 8
    loss   = cross_entropy
}
"""


def test_cli_refuses_hostile_data_and_inputs_in_one_line(tmp_path, write, capsys):
    from cnnc.cli import main
    net = write(CLI_NET)
    out = tmp_path / "run"
    assert main(["run", str(net), "--out", str(out), "--quiet", "--allow", "all"]) == 0
    capsys.readouterr()
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    huge = tmp_path / "huge.npz"
    huge.write_bytes(npz_with({"x.npy": npy_header((100000, 100000)), "y.npy": npy_header((2,), "<i8")}))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    odd = tmp_path / "odd.png"
    _write_png(odd, np.zeros((5, 4)))
    runs = [(["run", str(net), "--data", str(p), "--out", str(tmp_path / "r2"), "--allow", "all"], str(p))
            for p in (fifo, text, huge, "/dev/zero")]
    runs += [(["predict", str(net), str(out / "last.npz"), str(p), "--allow", "all"], str(p))
             for p in (bomb, odd, "/dev/zero", text)]
    for argv, named in runs:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
        assert err.startswith("error: ") or "error" in err.splitlines()[0], err
