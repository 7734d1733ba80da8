"""Data sources written for real in tmp_path, read back pixel-exact; checks and refusals."""
from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.data import array_files, batching, image_folders, images, sources, splits, standard, synthetic
from cnnc.runtime import preprocess
from cnnc.runtime.data.containers import Dataset, Split
from cnnc.runtime.data.targets import NetworkShapes, check_dataset
from cnnc.runtime.train.losses import get_loss, make_loss

RNG = np.random.default_rng(7)


# ====================================================================== writers used by the tests

def idx_bytes(arr: np.ndarray) -> bytes:
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[arr.dtype.str[1:]]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, gz=False):
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_row(row: bytes, prior: bytes, bpp: int, kind: int) -> bytes:
    """Forward PNG filter, straight from the specification (independent of the decoder)."""
    out = bytearray()
    for i, value in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out.append((value - pred) % 256)
    return bytes(out)


def _pack_row(values: np.ndarray, depth: int) -> bytes:
    if depth == 16:
        return values.astype(">u2").tobytes()
    if depth == 8:
        return values.astype(np.uint8).tobytes()
    bits = "".join(format(int(v), f"0{depth}b") for v in values)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(pixels: np.ndarray, colour: int, depth: int = 8, filters=(0, 1, 2, 3, 4),
              palette: np.ndarray | None = None, interlace: int = 0) -> bytes:
    """A tiny PNG encoder: pixels [H, W, S] (or [H, W] indices for palettes)."""
    h, w = pixels.shape[:2]
    samples = pixels.reshape(h, w, -1).shape[2]
    bpp = max(1, depth * samples // 8)
    rows = [_pack_row(pixels[r].reshape(-1), depth) for r in range(h)]
    prior = bytes(len(rows[0]))
    body = b""
    for r, row in enumerate(rows):
        kind = filters[r % len(filters)]
        body += bytes([kind]) + _filter_row(row, prior, bpp, kind)
        prior = row
    packed = zlib.compress(body)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace))
    if palette is not None:
        out += _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    out += _chunk(b"tEXt", b"Comment\x00made by the test")  # ancillary chunks are skipped
    half = len(packed) // 2  # image data split over two IDAT chunks
    return out + _chunk(b"IDAT", packed[:half]) + _chunk(b"IDAT", packed[half:]) + _chunk(b"IEND", b"")


def pnm_bytes(pixels: np.ndarray, binary: bool, maxval: int = 255) -> bytes:
    h, w = pixels.shape[:2]
    colour = pixels.ndim == 3
    magic = (b"P6" if colour else b"P5") if binary else (b"P3" if colour else b"P2")
    header = magic + b"\n# a comment line\n" + f"{w} {h}\n# another\n{maxval}\n".encode()
    if binary:
        return header + pixels.astype(">u2" if maxval > 255 else np.uint8).tobytes()
    return header + "\n".join(" ".join(str(int(v)) for v in row) for row in pixels.reshape(h, -1)).encode()


# ====================================================================== mnist10k and synthetic sets

def test_mnist10k_has_the_documented_shapes_and_classes():
    ds = sources.load_dataset("mnist10k")
    assert ds.train.x.shape == (8000, 1, 28, 28) and ds.test.x.shape == (2000, 1, 28, 28)
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert ds.train.x.min() == 0.0 and ds.train.x.max() == 1.0
    assert set(np.unique(ds.train.y)) == set(range(10)) == set(np.unique(ds.test.y))
    assert ds.classes == [str(i) for i in range(10)]
    # The stored bytes are k/255 exactly.
    assert np.allclose(ds.train.x * 255, np.round(ds.train.x * 255), atol=1e-4)


def test_synthetic_classes_are_learnable_and_seeded():
    ds = synthetic.synthetic_classes(n_train=400, n_test=200, num_classes=4, shape=(3, 12, 12), seed=3)
    assert ds.train.x.shape == (400, 3, 12, 12) and ds.train.x.dtype == np.float32
    assert np.bincount(ds.train.y, minlength=4).min() > 80
    # A nearest-class-mean classifier already separates them: the pattern is class-dependent.
    means = np.stack([ds.train.x[ds.train.y == k].mean(0) for k in range(4)])
    dist = ((ds.test.x[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert (dist.argmin(1) == ds.test.y).mean() > 0.9
    again = synthetic.synthetic_classes(n_train=400, n_test=200, num_classes=4, shape=(3, 12, 12), seed=3)
    np.testing.assert_array_equal(again.train.x, ds.train.x)
    other = synthetic.synthetic_classes(n_train=400, n_test=200, num_classes=4, shape=(3, 12, 12), seed=4)
    assert not np.array_equal(other.train.x, ds.train.x)


def test_synthetic_segmentation_masks_match_images():
    ds = sources.load_dataset("synthetic_segmentation", n_train=20, n_test=5, num_classes=4, seed=1)
    x, m = ds.train.x, ds.train.y
    assert x.shape == (20, 1, 32, 32) and m.shape == (20, 32, 32) and m.dtype == np.int64
    assert set(np.unique(m)) <= {0, 1, 2, 3} and (m > 0).any(axis=(1, 2)).all()
    # Brightness rises with the class index, so per-class mean intensity is ordered.
    levels = [x[:, 0][m == k].mean() for k in range(4) if (m == k).any()]
    assert levels == sorted(levels)


def test_synthetic_regression_is_nearly_linear():
    ds = synthetic.synthetic_regression(n_train=300, n_test=100, features=5, targets=2, seed=0)
    assert ds.train.x.shape == (300, 5) and ds.train.y.shape == (300, 2) and ds.train.y.dtype == np.float32
    a = np.c_[ds.train.x, np.ones(300)]
    coef, *_ = np.linalg.lstsq(a, ds.train.y, rcond=None)
    residual = ds.train.y - a @ coef
    assert 1 - residual.var() / ds.train.y.var() > 0.9


# ====================================================================== IDX

@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    suffix = ".gz" if gz else ""
    imgs = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    labels = RNG.integers(0, 10, 6).astype(np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", imgs, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", imgs[:2], gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels[:2], gz)
    ds = sources.load_dataset(tmp_path)
    assert ds.train.x.shape == (6, 1, 5, 4)
    np.testing.assert_array_equal(np.round(ds.train.x[:, 0] * 255).astype(np.uint8), imgs)
    np.testing.assert_array_equal(ds.train.y, labels.astype(np.int64))
    np.testing.assert_array_equal(ds.test.y, labels[:2])


def test_idx_other_dtypes_and_explicit_files(tmp_path):
    for arr in (RNG.standard_normal((3, 4)).astype(np.float32), RNG.integers(-5, 5, (2, 3, 2)).astype(np.int32),
                RNG.standard_normal(4), RNG.integers(-100, 100, 7).astype(np.int16)):
        back = array_files.read_idx(write_idx(tmp_path / "a.idx", arr))
        assert back.dtype == arr.dtype.newbyteorder("=")
        np.testing.assert_array_equal(back, arr)
    # Kaggle-style names and a lone train pair, passed explicitly.
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    write_idx(tmp_path / "train-images.idx3-ubyte", x)
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.arange(4, dtype=np.uint8), gz=True)
    ds = array_files.load_idx(tmp_path / "train-images.idx3-ubyte", tmp_path / "train-labels.idx1-ubyte")
    assert ds.test is None and ds.train.x.shape == (4, 3)
    np.testing.assert_array_equal(ds.train.x, x)  # float data is not rescaled


def test_idx_refusals(tmp_path):
    good = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    cases = {
        "magic": (b"\x01\x00\x08\x03" + good[4:], "is not an IDX file (bad header 01 00 08 03)"),
        "dtype": (b"\x00\x00\x07\x03" + good[4:], "is not an IDX file (bad header 00 00 07 03)"),
        "header": (good[:9], "is truncated inside its header"),
        "short": (good[:-1], "is truncated: the header promises [2, 3, 3] values of 1 byte(s), "
                             "the file holds 17 data bytes"),
        "long": (good + b"\x00", "is longer than its header says"),
    }
    for name, (raw, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(CnncError) as e:
            array_files.read_idx(path)
        assert str(path) in e.value.message and expected in e.value.message, name
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(CnncError) as e:
        array_files.read_idx(tmp_path / "bad.gz")
    assert e.value.message.startswith(f"IDX file '{tmp_path / 'bad.gz'}' is a corrupt or truncated gzip file")
    with pytest.raises(CnncError) as e:
        array_files.read_idx(tmp_path / "missing")
    assert e.value.message == f"IDX file '{tmp_path / 'missing'}' does not exist"


def test_idx_folder_refusals(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == f"IDX folder '{tmp_path}' has no train labels file"
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == (f"IDX files '{tmp_path / 'train-images-idx3-ubyte'}' (3 images) and "
                               f"'{tmp_path / 'train-labels-idx1-ubyte'}' (4 labels) do not match")


# ====================================================================== npz

def test_npz_layouts(tmp_path):
    x = RNG.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)  # channels-last, as most tools save
    np.savez(tmp_path / "a.npz", x_train=x, y_train=np.arange(5), x_test=x[:2], y_test=np.arange(2))
    ds = sources.load_dataset(tmp_path / "a.npz")
    assert ds.train.x.shape == (5, 3, 6, 7) and ds.test.x.shape == (2, 3, 6, 7)
    np.testing.assert_array_equal(np.round(ds.train.x * 255).astype(np.uint8), x.transpose(0, 3, 1, 2))
    feats = RNG.standard_normal((4, 9)).astype(np.float64)
    targets = RNG.standard_normal((4, 2))
    np.savez(tmp_path / "b.npz", x=feats, y=targets)
    ds = array_files.load_npz(tmp_path / "b.npz")
    assert ds.test is None and ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.float32
    np.testing.assert_array_equal(ds.train.x, feats.astype(np.float32))
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.array([0, 1, 1], np.uint8))
    ds = array_files.load_npz(tmp_path / "c.npz")
    assert ds.train.x.shape == (3, 1, 8, 8) and ds.train.y.dtype == np.int64


def test_npz_refusals(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(CnncError) as e:
        array_files.load_npz(tmp_path / "obj.npz")
    assert e.value.message.endswith("holds Python objects (pickled arrays); cnnc reads plain numeric "
                                    "arrays only")
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 2)), labels=np.zeros(2))
    with pytest.raises(CnncError) as e:
        array_files.load_npz(tmp_path / "keys.npz")
    assert e.value.message == (f"'{tmp_path / 'keys.npz'}' has arrays ['images', 'labels'], but cnnc "
                               "needs x_train and y_train (optionally x_test and y_test), or x and y "
                               "(y_train_NAME, y_NAME per output NAME)")
    np.savez(tmp_path / "n.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(CnncError) as e:
        array_files.load_npz(tmp_path / "n.npz")
    assert e.value.message == f"{tmp_path / 'n.npz'}: 3 inputs but 2 labels"
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CnncError) as e:
        array_files.load_npz(tmp_path / "junk.npz")
    assert e.value.message.startswith(f"'{tmp_path / 'junk.npz'}' is not a readable .npz file")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path / "notes.txt")
    assert e.value.message == f"data file '{tmp_path / 'notes.txt'}' is not an .npz archive"
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path / "nowhere")
    assert e.value.message == f"data source '{tmp_path / 'nowhere'}' does not exist"
    assert "mnist10k" in e.value.hint
    with pytest.raises(CnncError) as e:
        sources.load_dataset("mnist10k", seed=1)
    assert e.value.message == "data source 'mnist10k' takes no options, got ['seed']"


# ====================================================================== PNG

PNG_CASES = {
    # name: (colour type, bit depth, pixel array, palette)
    "grey8": (0, 8, RNG.integers(0, 256, (5, 7, 1)), None),
    "grey16": (0, 16, RNG.integers(0, 65536, (4, 3, 1)), None),
    "grey4": (0, 4, RNG.integers(0, 16, (3, 5, 1)), None),
    "grey1": (0, 1, RNG.integers(0, 2, (4, 11, 1)), None),
    "rgb8": (2, 8, RNG.integers(0, 256, (6, 5, 3)), None),
    "rgb16": (2, 16, RNG.integers(0, 65536, (3, 4, 3)), None),
    "grey_alpha": (4, 8, RNG.integers(0, 256, (5, 4, 2)), None),
    "rgba": (6, 8, RNG.integers(0, 256, (5, 6, 4)), None),
    "palette8": (3, 8, RNG.integers(0, 6, (5, 5)), RNG.integers(0, 256, (6, 3))),
    "palette2": (3, 2, RNG.integers(0, 4, (3, 7)), RNG.integers(0, 256, (4, 3))),
}


def _expected_png(case) -> np.ndarray:
    """What read_image must return, from the pixel values the test encoder wrote: [C, H, W] in [0, 1]."""
    colour, depth, pixels, palette = case
    if palette is not None:
        return (palette[pixels] / 255.0).transpose(2, 0, 1)
    if colour in (4, 6):
        pixels = pixels[..., :-1]  # alpha is dropped
    if colour in (2, 6) and depth == 16:
        return ((pixels >> 8) / 255.0).transpose(2, 0, 1)  # 16-bit colour is read at 8 bits
    return (pixels / (2 ** depth - 1)).transpose(2, 0, 1)


@pytest.mark.parametrize("case", sorted(PNG_CASES))
@pytest.mark.parametrize("filters", [(0, 1, 2, 3, 4), (4,), (3, 1), (2, 0)])
def test_png_reads_pixel_exact(tmp_path, case, filters):
    colour, depth, pixels, palette = PNG_CASES[case]
    path = tmp_path / f"{case}.png"
    path.write_bytes(png_bytes(pixels, colour, depth, filters, palette))
    decoded = images.read_image(path)
    expected = _expected_png(PNG_CASES[case])
    assert decoded.dtype == np.float32 and decoded.shape == expected.shape
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-7)


def _refusal_of_image(tmp_path, name, raw) -> str:
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(CnncError) as e:
        images.read_image(path)
    assert "\n" not in e.value.message
    return e.value.message.replace(str(path), name)


def test_png_refusals(tmp_path):
    pixels = RNG.integers(0, 256, (4, 4, 1))
    good = png_bytes(pixels, 0)
    bad_crc = bytearray(good)
    bad_crc[40] ^= 0xFF
    assert _refusal_of_image(tmp_path, "c.png", bytes(bad_crc)) == "image 'c.png' is a corrupt or truncated PNG file"
    assert _refusal_of_image(tmp_path, "t.png", good[:30]) == "image 't.png' is a corrupt or truncated PNG file"
    assert _refusal_of_image(tmp_path, "h.png", png_bytes(pixels, 0, depth=16)[:16] + b"\x00" * 10) == \
        "image 'h.png' is corrupt or unsupported (Truncated File Read)"
    cut = _refusal_of_image(tmp_path, "d.png", good[:-30])
    assert cut.startswith("image 'd.png' is corrupt or unsupported (")
    bad_depth = png_bytes(RNG.integers(0, 16, (2, 2, 3)), colour=2, depth=4)
    assert _refusal_of_image(tmp_path, "x.png", bad_depth) == "image 'x.png' is a corrupt or truncated PNG file"
    assert _refusal_of_image(tmp_path, "g.png", b"GIF89a") == "image 'g.png' is a corrupt or truncated GIF file"
    assert _refusal_of_image(tmp_path, "z.png", b"GARBAGE") == "'z.png' is not an image cnnc can read"


# ====================================================================== PGM / PPM

@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("maxval", [255, 1000, 15])
def test_pnm_reads_scaled_by_maxval(tmp_path, binary, colour, maxval):
    shape = (4, 5, 3) if colour else (4, 5)
    pixels = RNG.integers(0, maxval + 1, shape)
    path = tmp_path / ("a.ppm" if colour else "a.pgm")
    path.write_bytes(pnm_bytes(pixels, binary, maxval))
    decoded = images.read_image(path)
    # Pillow rescales a maxval other than 255 to 8 bits (colour, or grey up to 255) or 16 bits
    # (grey above 255): the value is v / maxval up to that rounding.
    step = 1 / 65535 if maxval > 255 and not colour else 1 / 255
    tolerance = 1e-7 if maxval == 255 else step / 2 + 1e-7
    np.testing.assert_allclose(decoded, (pixels.reshape(4, 5, -1) / maxval).transpose(2, 0, 1),
                               rtol=0, atol=tolerance)


def test_pnm_refusals_never_wrap(tmp_path):
    assert _refusal_of_image(tmp_path, "t.pgm", pnm_bytes(np.ones((3, 3)), True)[:-2]).startswith(
        "image 't.pgm' is corrupt or unsupported (image file is truncated")
    assert _refusal_of_image(tmp_path, "v.pgm", b"P2 2 1 10 3 11") == \
        "image 'v.pgm' is corrupt or unsupported (Channel value too large for this mode: 11)"
    assert _refusal_of_image(tmp_path, "n.pgm", b"P2 2 1 10 -3 5") == \
        "image 'n.pgm' is corrupt or unsupported (Channel value is negative: -3)"
    assert _refusal_of_image(tmp_path, "m.pgm", b"P5 x").startswith("image 'm.pgm' is corrupt or unsupported (")
    # PBM (P4) is a format Pillow reads: 1-bit images become 0/1 grey.
    path = tmp_path / "b.pbm"
    path.write_bytes(b"P4\n2 2\n\x40\x80")  # row 0: 0 1, row 1: 1 0 (1 = black in PBM)
    np.testing.assert_array_equal(images.read_image(path), [[[1.0, 0.0], [0.0, 1.0]]])


# ====================================================================== image folders

def _grey_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pixels[..., None], 0))


def test_image_folder_with_train_and_test(tmp_path):
    imgs = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    for i, (split, cls) in enumerate([("train", "cat"), ("train", "cat"), ("train", "dog"),
                                      ("train", "emu"), ("test", "dog"), ("test", "cat")]):
        path = tmp_path / split / cls / f"{i}.png"
        if i == 3:  # a PGM among PNGs
            path.parent.mkdir(parents=True, exist_ok=True)
            path = path.with_suffix(".pgm")
            path.write_bytes(pnm_bytes(imgs[i], binary=True))
        else:
            _grey_png(path, imgs[i])
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")  # not an image suffix
    ds = sources.load_dataset(tmp_path)
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.train.x.shape == (4, 1, 5, 4) and ds.test.x.shape == (2, 1, 5, 4)
    np.testing.assert_array_equal(ds.train.y, [0, 0, 1, 2])
    np.testing.assert_array_equal(ds.test.y, [0, 1])  # sorted: cat/5.png, dog/4.png
    np.testing.assert_array_equal(np.round(ds.train.x[:, 0] * 255).astype(np.uint8), imgs[:4])
    np.testing.assert_array_equal(np.round(ds.test.x[:, 0] * 255).astype(np.uint8), imgs[[5, 4]])


def test_image_folder_mixed_grey_and_colour_promotes_to_rgb(tmp_path):
    grey = RNG.integers(0, 256, (3, 3), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    _grey_png(tmp_path / "a" / "g.png", grey)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c.png").write_bytes(png_bytes(rgba, 6))
    ds = image_folders.load_image_folder(tmp_path)
    assert ds.train.x.shape == (2, 3, 3, 3) and ds.test is None
    np.testing.assert_array_equal(np.round(ds.train.x[0] * 255), np.stack([grey] * 3))
    np.testing.assert_array_equal(np.round(ds.train.x[1] * 255), rgba[..., :3].transpose(2, 0, 1))


def test_image_folder_refusals(tmp_path):
    _grey_png(tmp_path / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _grey_png(tmp_path / "a" / "2.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == (f"image '{tmp_path / 'a' / '2.png'}' is 4x5 pixels, but "
                               f"'{tmp_path / 'a' / '1.png'}' is 4x4")
    (tmp_path / "a" / "2.png").unlink()
    (tmp_path / "b").mkdir()
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == f"class folder '{tmp_path / 'b'}' contains no images"
    jpeg = tmp_path / "b" / "photo.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == f"image '{jpeg}' is a corrupt or truncated JPEG file"
    jpeg.write_bytes(b"GARBAGE")
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == f"'{jpeg}' is not an image cnnc can read"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CnncError) as e:
        sources.load_dataset(empty)
    assert e.value.message == f"image folder '{empty}' has no class sub-folders"
    with pytest.raises(CnncError) as e:
        image_folders.load_image_folder(tmp_path / "gone")
    assert e.value.message == f"image folder '{tmp_path / 'gone'}' does not exist"
    with pytest.raises(CnncError) as e:
        array_files.load_idx_folder(jpeg)
    assert e.value.message == f"IDX folder '{jpeg}' is not a folder"


def test_test_classes_must_exist_in_training(tmp_path):
    _grey_png(tmp_path / "train" / "a" / "1.png", np.zeros((2, 2), np.uint8))
    _grey_png(tmp_path / "test" / "z" / "1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(CnncError) as e:
        sources.load_dataset(tmp_path)
    assert e.value.message == (f"test folder '{tmp_path / 'test' / 'z'}' is a class that the "
                               f"training folder '{tmp_path / 'train'}' does not have")


# ====================================================================== splits, preprocessing, batches

def _toy(n=50, shape=(2, 3, 3)) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n,) + shape).astype(np.float32) * 3 + 1
    return Dataset("toy", Split(x, np.arange(n) % 5), Split(x[:7], np.arange(7) % 5))


def test_validation_split_is_seeded_and_disjoint():
    ds = _toy()
    a, b = splits.split_validation(ds, 0.2, seed=5), splits.split_validation(ds, 0.2, seed=5)
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert len(a.val) == 10 and len(a.train) == 40
    c = splits.split_validation(ds, 0.2, seed=6)
    assert not np.array_equal(a.val.x, c.val.x)
    # Disjoint and complete: every original sample lands in exactly one part.
    keys = lambda s: {row.tobytes() for row in s.x}  # noqa: E731
    assert keys(a.train) | keys(a.val) == keys(ds.train) and not keys(a.train) & keys(a.val)
    assert splits.split_validation(ds, 0.0) is ds
    assert len(splits.split_validation(ds, 0.001).val) == 1
    with pytest.raises(CnncError) as e:
        splits.split_validation(ds, 1.0)
    assert e.value.message == "the validation fraction must lie in [0, 1), got 1.0"


def test_normalize_and_center_records_fit_on_train_and_replay_on_every_split():
    ds = splits.split_validation(_toy(), 0.2)
    axes = (0, 2, 3)
    records = preprocess.fit([("normalize", {})], ds.train.x)
    norm_train, norm_test = preprocess.apply(records, ds.train.x), preprocess.apply(records, ds.test.x)
    np.testing.assert_allclose(norm_train.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(norm_train.std(axis=axes), 1, atol=1e-5)
    mean, std = records[0]["mean"], records[0]["std"]
    np.testing.assert_allclose(norm_test, (ds.test.x - np.reshape(mean, (1, 2, 1, 1))) /
                               np.reshape(std, (1, 2, 1, 1)), rtol=1e-5)
    fixed = preprocess.fit([("normalize", {"mean": [0.5, 1.0], "std": 2.0})], ds.train.x)
    np.testing.assert_allclose(preprocess.apply(fixed, ds.val.x)[:, 1], (ds.val.x[:, 1] - 1.0) / 2.0, rtol=1e-6)
    twice = preprocess.fit([("normalize", {}), ("center", {})], ds.train.x)
    assert [r["op"] for r in twice] == ["normalize", "center"]
    np.testing.assert_allclose(twice[1]["mean"], 0, atol=1e-6)  # center sees the normalised inputs
    centred = preprocess.apply(preprocess.fit([("center", {})], ds.train.x), ds.train.x)
    np.testing.assert_allclose(centred.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(centred.std(axis=axes), ds.train.x.std(axis=axes), rtol=1e-5)
    with pytest.raises(CnncError) as e:
        preprocess.fit([("normalize", {"mean": [0.1, 0.2, 0.3]})], ds.train.x)
    assert e.value.message == "normalize: 3 mean values for data with 2 channels"
    with pytest.raises(CnncError) as e:
        preprocess.fit([("normalize", {"std": [1.0, 0.0]})], ds.train.x)
    assert e.value.message == "normalize: std must be positive, got [1.0, 0.0]"


def test_batches_cover_everything_once_and_are_seeded():
    x, y = np.arange(23)[:, None].astype(np.float32), np.arange(23)
    batches = list(batching.iterate_batches(x, y, 5, shuffle=True, rng=np.random.default_rng(3)))
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3] == [len(b[1]) for b in batches]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen) == list(range(23)) and list(seen) != list(range(23))
    assert all(np.array_equal(bx[:, 0], by) for bx, by in batches)  # x and y stay aligned
    again = list(batching.iterate_batches(x, y, 5, shuffle=True, rng=np.random.default_rng(3)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    dropped = list(batching.iterate_batches(x, y, 5, drop_last=True))
    assert [len(b[1]) for b in dropped] == [5, 5, 5, 5] and list(dropped[0][1]) == [0, 1, 2, 3, 4]
    assert batching.num_batches(23, 5) == 5 and batching.num_batches(23, 5, drop_last=True) == 4
    with pytest.raises(CnncError):
        next(batching.iterate_batches(x, y, 0))


# ====================================================================== check_dataset

def _ds(x, y, name="d.npz") -> Dataset:
    return Dataset(name, Split(np.asarray(x), np.asarray(y)))


def _refusal(ds, shape, k, loss) -> CnncError:
    with pytest.raises(CnncError) as e:
        check_dataset(ds, NetworkShapes(shape, (k,)), loss)
    return e.value


def test_check_dataset_accepts_and_canonicalises():
    ds = _ds(np.zeros((4, 1, 28, 28), np.float32), np.array([0.0, 1.0, 9.0, 3.0]))
    out = check_dataset(ds, NetworkShapes((1, 28, 28), (10,)), get_loss("cross_entropy"))
    assert out.train.y.dtype == np.int64
    check_dataset(ds, NetworkShapes(("C", 28, "W"), (10,)), get_loss("cross_entropy"))  # symbolic dims match
    seg = _ds(np.zeros((2, 3, 4, 4)), np.array([[[0, 1, 255, 2]] * 4] * 2))
    check_dataset(seg, NetworkShapes((3, 4, 4), (3,)), make_loss("pixel_cross_entropy", ignore_index=255))
    reg = check_dataset(_ds(np.zeros((3, 5)), np.zeros((3, 2), np.int64)), NetworkShapes((5,), (2,)), get_loss("mse"))
    assert reg.train.y.dtype == np.float32


def test_check_dataset_refusals_explain_themselves():
    mnist = standard.load_mnist10k()
    e = _refusal(mnist, (3, 28, 28), 10, get_loss("cross_entropy"))
    assert e.message == "data 'mnist10k' (train split): the network expects 3 channels, the data has 1"
    assert "repeat the grey channel" in e.hint
    e = _refusal(mnist, (1, 32, 32), 10, get_loss("cross_entropy"))
    assert e.message == "data 'mnist10k' (train split): the network expects 32x32 inputs, the data is 28x28"
    flat = _ds(np.zeros((2, 784)), [0, 1])
    e = _refusal(flat, (1, 28, 28), 10, get_loss("cross_entropy"))
    assert e.message == ("data 'd.npz' (train split): the network expects inputs of shape [1, 28, 28] "
                         "per sample, the data has [784]")
    assert e.hint == "the sizes agree, so reshape each sample from [784] to [1, 28, 28]"
    e = _refusal(flat, (100,), 10, get_loss("cross_entropy"))
    assert e.message == "data 'd.npz' (train split): the network expects 100 input features, the data has 784"
    e = _refusal(_ds(np.array([["a"], ["b"]]), [0, 1]), (1,), 2, get_loss("cross_entropy"))
    assert e.message == "data 'd.npz' (train split): the inputs have dtype <U1, which is not numeric"
    e = _refusal(_ds(np.zeros((3, 2)), [0, 10, -1]), (2,), 10, get_loss("cross_entropy"))
    assert e.message == ("data 'd.npz' (train split): labels must lie in [0, 10), the data has "
                         "label(s) -1 to 10")
    assert e.hint.startswith("the network's last layer has 10 outputs, one per class")
    e = _refusal(_ds(np.zeros((2, 2)), [0.5, 1.0]), (2,), 2, get_loss("cross_entropy"))
    assert e.message == "data 'd.npz' (train split): class labels must be integers, got dtype float64"
    e = _refusal(_ds(np.full((2, 2), np.nan), [0, 1]), (2,), 2, get_loss("cross_entropy"))
    assert e.message == "data 'd.npz' (train split): the inputs contain NaN or infinite values"
    e = _refusal(_ds(np.zeros((2, 2)), [[0, 1, 1], [1, 0, 0]]), (2,), 4, get_loss("multilabel_bce"))
    assert e.message == ("data 'd.npz' (train split): the network has 4 outputs, but each target "
                         "has 3 values (labels of shape [2, 3])")
    e = _refusal(_ds(np.zeros((2, 2)), [0, 2]), (2,), 1, get_loss("bce"))
    assert e.message == ("data 'd.npz' (train split): loss bce needs targets between 0 and 1, "
                         "the data has values from 0 to 2")
    e = _refusal(_ds(np.zeros((2, 1, 4, 4)), np.full((2, 4, 4), 3)), (1, 4, 4), 3, get_loss("pixel_cross_entropy"))
    assert e.message == ("data 'd.npz' (train split): labels must lie in [0, 3), the data has label(s) 3")
    ds = _toy()
    ds.test = Split(ds.test.x[:, :1], ds.test.y)
    e = _refusal(ds, (2, 3, 3), 5, get_loss("cross_entropy"))
    assert e.message.startswith("data 'toy' (test split): the network expects 2 channels, the data has 1")


def test_class_labels_may_hold_the_loss_ignore_index():
    x = np.zeros((3, 1, 2, 2), np.float32)
    ds = Dataset("t", Split(x, np.array([0, -100, 1])))
    fixed = check_dataset(ds, NetworkShapes((1, 2, 2), (2,)), make_loss("cross_entropy", ignore_index=-100))
    assert fixed.train.y.tolist() == [0, -100, 1]
    with pytest.raises(CnncError, match="-100"):
        check_dataset(ds, NetworkShapes((1, 2, 2), (2,)), make_loss("cross_entropy"))
