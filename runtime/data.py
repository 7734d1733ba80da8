"""Stage 3 (runtime): datasets as NumPy arrays, their sources, checks and batching.

A `Dataset` holds `Split`s of `x` (float32 `[N, C, H, W]`, or `[N, F]` for
feature vectors) and `y` (int64 class labels or masks, or float32 targets).
Sources: the embedded `mnist10k` sample, MNIST-style IDX files (gzip or raw),
`.npz` archives, folders of images with one sub-folder per class (PNG and
PGM/PPM decoded here with zlib and struct; other formats only through Pillow
when it is installed) and small synthetic sets for smoke tests.
`load_dataset(source)` picks the right reader. Pixel data stored as uint8 is
scaled to [0, 1]. `check_dataset` compares the data with the network's
declared input and the loss's target kind before any training starts, so a
mismatch becomes a `CnncError` with a hint instead of a shape error deep in
a kernel; every reader likewise reports a missing or malformed file by name.
Randomness (validation split, shuffling, synthetic data) always comes from
an explicit seed or `np.random.Generator`, so runs are reproducible.
"""
from __future__ import annotations

import gzip
import importlib.resources
import io
import math
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..dsl.source import CnncError
from .losses import BINARY, CLASS, MULTILABEL, PIXEL_CLASS, LossSpec, get_loss

PathLike = str | os.PathLike


# ====================================================================== containers

@dataclass
class Split:
    """One part of a dataset: inputs `x` and targets `y`, aligned on axis 0."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclass
class Dataset:
    """Train split plus optional test/validation splits, class names and a preprocessing record."""

    name: str                                  # "mnist10k", or the path it came from
    train: Split
    test: Split | None = None
    val: Split | None = None
    classes: list[str] | None = None           # class names, index = label
    meta: dict[str, Any] = field(default_factory=dict)  # preprocessing applied (mean/std...)

    def splits(self) -> list[tuple[str, Split]]:
        """The present splits as (name, split), train first."""
        named = [("train", self.train), ("validation", self.val), ("test", self.test)]
        return [(n, s) for n, s in named if s is not None]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


# ====================================================================== conversions

def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """Float32 inputs: uint8/uint16 pixels scaled to [0, 1]; [N, H, W] gains a channel axis."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise CnncError(f"{where}: the inputs have dtype {x.dtype}, which is not numeric",
                        hint="store images and features as integer or float arrays")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(x.dtype)
    out = x.astype(np.float32) if scale is None else (x / np.float32(scale)).astype(np.float32)
    if out.ndim == 3:
        out = out[:, None]  # greyscale [N, H, W] -> [N, 1, H, W]
    elif out.ndim == 4 and out.shape[3] in (1, 3, 4) and out.shape[1] not in (1, 3, 4):
        out = out.transpose(0, 3, 1, 2)  # channels-last images, as most tools save them
    if out.ndim not in (2, 4):
        raise CnncError(f"{where}: inputs must be [N, F], [N, H, W] or [N, C, H, W], "
                        f"got shape {list(x.shape)}")
    return np.ascontiguousarray(out)


def _as_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Integer (and bool) targets become int64 labels; floats stay float32 targets."""
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        return y.astype(np.float32)
    raise CnncError(f"{where}: the labels have dtype {y.dtype}, which is not numeric",
                    hint="store labels as integers (class indices) or floats (regression targets)")


def _split(x: np.ndarray, y: np.ndarray, where: str) -> Split:
    x, y = _as_images(x, where), _as_targets(y, where)
    if len(x) != len(y):
        raise CnncError(f"{where}: {len(x)} inputs but {len(y)} labels",
                        hint="inputs and labels must have the same number of samples")
    return Split(x, y)


# ====================================================================== mnist10k

def load_mnist10k() -> Dataset:
    """The embedded 10k-sample MNIST subset: 8000 train / 2000 test, [N, 1, 28, 28] in [0, 1]."""
    resource = importlib.resources.files("cnnc.runtime").joinpath("datasets", "mnist10k.npz")
    with np.load(io.BytesIO(resource.read_bytes()), allow_pickle=False) as z:
        train = _split(z["x_train"], z["y_train"], "mnist10k")
        test = _split(z["x_test"], z["y_test"], "mnist10k")
    return Dataset("mnist10k", train, test, classes=[str(i) for i in range(10)])


# ====================================================================== IDX

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CnncError(f"{what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise CnncError(f"{what} '{path}' is a directory, not a file") from None
    except OSError as e:
        raise CnncError(f"cannot read {what} '{path}': {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CnncError(f"{what} '{path}' is a corrupt or truncated gzip file ({e})",
                            hint="download the file again") from None
    return raw


def read_idx(path: PathLike) -> np.ndarray:
    """One IDX array (the MNIST format), gzip-compressed or raw, in native byte order."""
    path = Path(path)
    raw = _read_bytes(path, "IDX file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise CnncError(f"'{path}' is not an IDX file (bad header {raw[:4].hex(' ') or 'empty'})",
                        hint="IDX files start with two zero bytes, a type code and the rank")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise CnncError(f"IDX file '{path}' is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    count = math.prod(dims)
    have = len(raw) - start
    if have != count * dtype.itemsize:
        state = "truncated" if have < count * dtype.itemsize else "longer than its header says"
        raise CnncError(f"IDX file '{path}' is {state}: the header promises {list(dims)} "
                        f"values of {dtype.itemsize} byte(s), the file holds {have} data bytes",
                        hint="download the file again")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


_IDX_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte",
                    "test-images-idx3-ubyte", "test-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte",
                    "test-labels-idx1-ubyte", "test-labels.idx1-ubyte"),
}


def _find_idx(folder: Path, role: str) -> Path | None:
    for stem in _IDX_NAMES[role]:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def is_idx_folder(folder: PathLike) -> bool:
    return Path(folder).is_dir() and any("ubyte" in p.name for p in Path(folder).iterdir())


def load_idx(train_images: PathLike, train_labels: PathLike, test_images: PathLike | None = None,
             test_labels: PathLike | None = None, name: str | None = None) -> Dataset:
    """A dataset from explicit IDX files; the test pair is optional."""
    if (test_images is None) != (test_labels is None):
        raise CnncError("IDX test data needs both an images file and a labels file")

    def pair(images: PathLike, labels: PathLike) -> Split:
        x, y = read_idx(images), read_idx(labels)
        if y.ndim != 1:
            raise CnncError(f"IDX labels '{labels}' must be one-dimensional, got shape {list(y.shape)}")
        if len(x) != len(y):
            raise CnncError(f"IDX files '{images}' ({len(x)} images) and '{labels}' "
                            f"({len(y)} labels) do not match", hint="check the files belong together")
        return _split(x, y, str(images))

    test = pair(test_images, test_labels) if test_images is not None else None
    return Dataset(name or str(train_images), pair(train_images, train_labels), test)


def load_idx_folder(folder: PathLike) -> Dataset:
    """MNIST-style folder: train-images-idx3-ubyte[.gz], train-labels-..., optional t10k-*."""
    folder = Path(folder)
    _require_dir(folder, "IDX folder")
    found = {role: _find_idx(folder, role) for role in _IDX_NAMES}
    for role in ("train_images", "train_labels"):
        if found[role] is None:
            raise CnncError(f"IDX folder '{folder}' has no {role.replace('_', ' ')} file",
                            hint=f"expected '{_IDX_NAMES[role][0]}' or '{_IDX_NAMES[role][0]}.gz'")
    has_test = found["test_images"] is not None and found["test_labels"] is not None
    return load_idx(found["train_images"], found["train_labels"],
                    found["test_images"] if has_test else None,
                    found["test_labels"] if has_test else None, name=str(folder))


# ====================================================================== npz

def load_npz(path: PathLike) -> Dataset:
    """`.npz` with x_train/y_train (+ optional x_test/y_test), or a single x/y pair."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except FileNotFoundError:
        raise CnncError(f"data file '{path}' does not exist") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CnncError(f"'{path}' holds Python objects (pickled arrays); cnnc reads plain "
                            "numeric arrays only", hint="save the arrays with a numeric dtype") from None
        raise CnncError(f"'{path}' is not a readable .npz file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise CnncError(f"'{path}' is not a readable .npz file ({e})",
                        hint="write it with numpy.savez(path, x_train=..., y_train=...)") from None
    where = str(path)
    if "x_train" in arrays and "y_train" in arrays:
        train = _split(arrays["x_train"], arrays["y_train"], where)
        test = None
        if "x_test" in arrays and "y_test" in arrays:
            test = _split(arrays["x_test"], arrays["y_test"], where)
        return Dataset(where, train, test)
    if "x" in arrays and "y" in arrays:
        return Dataset(where, _split(arrays["x"], arrays["y"], where))
    raise CnncError(f"'{path}' has arrays {sorted(arrays)}, but cnnc needs x_train and y_train "
                    "(optionally x_test and y_test), or x and y",
                    hint="rename the arrays when saving: numpy.savez(path, x_train=..., y_train=...)")


# ====================================================================== PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> (samples per pixel, allowed bit depths)
_PNG_COLOUR = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)),
               4: (2, (8, 16)), 6: (4, (8, 16))}


def _png_chunks(data: bytes, name: str) -> Iterator[tuple[bytes, bytes]]:
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise CnncError(f"PNG '{name}' is truncated (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise CnncError(f"PNG '{name}' is truncated inside a {kind.decode('latin-1')} chunk")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise CnncError(f"PNG '{name}' is corrupt (bad CRC in a {kind.decode('latin-1')} chunk)")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def _undo_sub(line: np.ndarray, bpp: int) -> np.ndarray:
    # Sub adds the byte bpp to the left: a running sum (mod 256) down each byte lane.
    return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)


def _undo_average(line: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    cur, up = bytearray(line.tobytes()), prior.tobytes()
    for i in range(len(cur)):  # sequential: each byte needs its reconstructed left neighbour
        left = cur[i - bpp] if i >= bpp else 0
        cur[i] = (cur[i] + ((left + up[i]) >> 1)) & 0xFF
    return np.frombuffer(bytes(cur), np.uint8)


def _undo_paeth(line: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    cur, up = bytearray(line.tobytes()), prior.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        c = up[i - bpp] if i >= bpp else 0
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)  # |p-a|, |p-b|, |p-c|, p = a+b-c
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), np.uint8)


def _unfilter(raw: bytes, height: int, stride: int, bpp: int, name: str) -> np.ndarray:
    """Undo the per-row PNG filters (None, Sub, Up, Average, Paeth) -> [height, stride] bytes."""
    if len(raw) != height * (stride + 1):
        raise CnncError(f"PNG '{name}' is corrupt: image data has {len(raw)} bytes, "
                        f"expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.empty((height, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    for r in range(height):
        kind, line = rows[r, 0], rows[r, 1:]
        if kind == 0:
            cur = line
        elif kind == 1:
            cur = _undo_sub(line, bpp)
        elif kind == 2:
            cur = line + prior  # uint8 arithmetic wraps mod 256, as the filter needs
        elif kind == 3:
            cur = _undo_average(line, prior, bpp)
        elif kind == 4:
            cur = _undo_paeth(line, prior, bpp)
        else:
            raise CnncError(f"PNG '{name}' is corrupt: unknown filter type {kind} on row {r}")
        out[r] = cur
        prior = out[r]
    return out


def decode_png(data: bytes, name: str = "<png>") -> tuple[np.ndarray, int]:
    """Decode a non-interlaced PNG -> (samples [H, W, S], maxval); S includes alpha if present.

    Palette images come back as RGB. Samples are uint8 (bit depth <= 8) or uint16.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise CnncError(f"'{name}' is not a PNG file")
    header, palette, idat = None, None, []
    for kind, body in _png_chunks(data, name):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13]) if len(body) == 13 else None
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise CnncError(f"PNG '{name}' is corrupt (missing or malformed IHDR chunk)")
    width, height, depth, colour, _compression, _filter, interlace = header
    if colour not in _PNG_COLOUR or depth not in _PNG_COLOUR[colour][1]:
        raise CnncError(f"PNG '{name}' has an invalid colour type {colour} / bit depth {depth}")
    if interlace:
        raise CnncError(f"PNG '{name}' is interlaced (Adam7), which cnnc does not decode",
                        hint="re-save the image without interlacing")
    if colour == 3 and palette is None:
        raise CnncError(f"PNG '{name}' is a palette image without a PLTE chunk")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise CnncError(f"PNG '{name}' is corrupt: its image data does not decompress ({e})") from None
    samples = _PNG_COLOUR[colour][0]
    bits = depth * samples
    stride, bpp = (width * bits + 7) // 8, max(1, bits // 8)
    rows = _unfilter(raw, height, stride, bpp, name)
    if depth == 16:
        pixels = rows.view(">u2").astype(np.uint16).reshape(height, width, samples)
    elif depth == 8:
        pixels = rows.reshape(height, width, samples)
    else:  # 1/2/4-bit: unpack the packed row, then regroup bits into values
        bits_row = np.unpackbits(rows, axis=1)[:, :width * depth].reshape(height, width, depth)
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        pixels = (bits_row * weights).sum(axis=2, dtype=np.uint8)[..., None]
    if colour == 3:
        index = pixels[..., 0]
        if index.max(initial=0) >= len(palette):
            raise CnncError(f"PNG '{name}' is corrupt: a pixel uses palette entry "
                            f"{int(index.max())} of {len(palette)}")
        return palette[index], 255
    return pixels, (1 << depth) - 1


# ====================================================================== PGM / PPM

_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*(\d+)")


def decode_pnm(data: bytes, name: str = "<pnm>") -> tuple[np.ndarray, int]:
    """Decode PGM/PPM (P2, P3 ASCII; P5, P6 binary) -> (samples [H, W, 1 or 3], maxval)."""
    magic = data[:2]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        if magic in (b"P1", b"P4", b"P7"):
            raise CnncError(f"'{name}' is a {magic.decode()} image (PBM/PAM), which cnnc does not read",
                            hint="convert it to PGM (P5) or PNG")
        raise CnncError(f"'{name}' is not a PGM/PPM file")
    pos, header = 2, []
    for _ in range(3):  # width, height, maxval, with whitespace and comments between
        m = _PNM_TOKEN.match(data, pos)
        if m is None:
            raise CnncError(f"PGM/PPM '{name}' has a malformed header")
        header.append(int(m.group(1)))
        pos = m.end()
    width, height, maxval = header
    if not 0 < maxval < 65536 or width == 0 or height == 0:
        raise CnncError(f"PGM/PPM '{name}' has an invalid header ({width}x{height}, maxval {maxval})")
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P2", b"P3"):
        text = re.sub(rb"#[^\n\r]*", b" ", data[pos:])
        try:
            values = np.array(text.split(), dtype=np.int64)
        except ValueError:
            raise CnncError(f"PGM/PPM '{name}' has non-numeric pixel values") from None
    else:
        dtype = np.dtype(">u2" if maxval > 255 else "u1")
        body = data[pos + 1:]  # exactly one whitespace byte separates maxval from the raster
        if len(body) < count * dtype.itemsize:
            raise CnncError(f"PGM/PPM '{name}' is truncated: {len(body)} bytes of pixels, "
                            f"expected {count * dtype.itemsize}")
        values = np.frombuffer(body, dtype=dtype, count=count).astype(np.int64)
    if len(values) < count:
        raise CnncError(f"PGM/PPM '{name}' is truncated: {len(values)} values, expected {count}")
    values = values[:count]
    if values.max(initial=0) > maxval:
        raise CnncError(f"PGM/PPM '{name}' has a pixel value above its maxval {maxval}")
    out = values.astype(np.uint16 if maxval > 255 else np.uint8)
    return out.reshape(height, width, channels), maxval


# ====================================================================== images

IMAGE_SUFFIXES = frozenset({".png", ".pgm", ".ppm", ".pnm", ".jpg", ".jpeg", ".bmp", ".gif",
                            ".tif", ".tiff", ".webp"})


def _sniff(data: bytes) -> str:
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:2] in (b"P2", b"P3", b"P5", b"P6", b"P1", b"P4", b"P7"):
        return "pnm"
    for magic, kind in ((b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                        (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF")):
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return "unknown"


def _decode_with_pillow(path: Path, kind: str) -> tuple[np.ndarray, int]:
    try:
        from PIL import Image
    except ImportError:
        raise CnncError(f"cannot read '{path}': {kind} images need Pillow, which is not installed",
                        hint="pip install pillow, or convert the images to PNG, PGM or PPM") from None
    try:
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            pixels = np.asarray(img, dtype=np.uint8)
    except Exception as e:  # Pillow raises many types; all mean "unreadable image"
        raise CnncError(f"cannot decode image '{path}' ({e})") from None
    return (pixels[..., None] if pixels.ndim == 2 else pixels), 255


def read_image(path: PathLike) -> np.ndarray:
    """One image as float32 [C, H, W] in [0, 1]: C = 1 (grey) or 3 (colour); alpha is dropped."""
    path = Path(path)
    data = _read_bytes(path, "image")
    kind = _sniff(data)
    if kind == "png":
        pixels, maxval = decode_png(data, str(path))
    elif kind == "pnm":
        pixels, maxval = decode_pnm(data, str(path))
    elif kind == "unknown":
        raise CnncError(f"'{path}' is not an image cnnc can read",
                        hint="supported: PNG, PGM/PPM; JPEG, BMP, GIF, TIFF, WebP with Pillow")
    else:
        pixels, maxval = _decode_with_pillow(path, kind)
    if pixels.shape[2] in (2, 4):
        pixels = pixels[..., :-1]  # grey+alpha / RGBA: the network sees colour only
    return (pixels.transpose(2, 0, 1) / np.float32(maxval)).astype(np.float32)


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise CnncError(f"{what} '{folder}' {state}")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_tree(folder: Path, classes: list[str]) -> tuple[list[np.ndarray], list[int], list[Path]]:
    images, labels, files = [], [], []
    for label, cls in enumerate(classes):
        sub = folder / cls
        if not sub.is_dir():
            continue
        found = sorted(p for p in sub.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise CnncError(f"class folder '{sub}' contains no images",
                            hint="remove the empty folder or add images (.png, .pgm, .ppm)")
        for path in found:
            images.append(read_image(path))
            labels.append(label)
            files.append(path)
    return images, labels, files


def _check_sizes(images: list[np.ndarray], files: list[Path]) -> None:
    h, w = images[0].shape[1:]
    for img, path in zip(images, files):
        if img.shape[1:] != (h, w):
            raise CnncError(f"image '{path}' is {img.shape[2]}x{img.shape[1]} pixels, but "
                            f"'{files[0]}' is {w}x{h}",
                            hint="all images of a dataset must have the same size; resize them first")


def _stack(images: list[np.ndarray], channels: int) -> np.ndarray:
    # Greyscale images among colour ones are promoted by repeating their single channel.
    return np.stack([np.repeat(img, channels // img.shape[0], axis=0) for img in images])


def load_image_folder(root: PathLike) -> Dataset:
    """Images in class sub-folders (`root/<class>/*` or `root/train/<class>/*` + `root/test/...`).

    Labels follow the sorted class-folder names of the training tree.
    """
    root = Path(root)
    _require_dir(root, "image folder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = root / "test" if train_dir != root and (root / "test").is_dir() else None
    classes = _class_dirs(train_dir)
    if not classes:
        raise CnncError(f"image folder '{train_dir}' has no class sub-folders",
                        hint="put the images of each class in their own sub-folder, e.g. "
                             f"{train_dir}/cat/1.png and {train_dir}/dog/1.png")
    if test_dir is not None:
        extra = sorted(set(_class_dirs(test_dir)) - set(classes))
        if extra:
            raise CnncError(f"test folder '{test_dir / extra[0]}' is a class that the training "
                            f"folder '{train_dir}' does not have",
                            hint="the test classes must be a subset of the training classes")
    parts = [_read_tree(train_dir, classes)]
    if test_dir is not None:
        parts.append(_read_tree(test_dir, classes))
    all_images = [img for images, _, _ in parts for img in images]
    _check_sizes(all_images, [f for _, _, files in parts for f in files])  # train and test alike
    channels = max(img.shape[0] for img in all_images)
    splits = [Split(_stack(images, channels), np.asarray(labels, dtype=np.int64))
              for images, labels, _ in parts if images]
    return Dataset(str(root), splits[0], splits[1] if len(splits) > 1 else None, classes=classes)


# ====================================================================== synthetic sets

def synthetic_classes(n_train: int = 512, n_test: int = 128, num_classes: int = 4,
                      shape: Sequence[int] = (1, 16, 16), noise: float = 0.2,
                      seed: int = 0) -> Dataset:
    """K classes: a Gaussian blob at a class-specific place, striped at a class-specific angle.

    Positions jitter by up to a pixel and noise is added, so a small conv net has
    to use local spatial patterns (not single pixels) to reach high accuracy.
    """
    c, h, w = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % num_classes)
    angle = 2 * np.pi * y / num_classes
    cy = (h - 1) / 2 + h / 4 * np.sin(angle) + rng.uniform(-1, 1, n)
    cx = (w - 1) / 2 + w / 4 * np.cos(angle) + rng.uniform(-1, 1, n)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    sigma = max(h, w) / 6
    blob = np.exp(-(dy ** 2 + dx ** 2) / (2 * sigma ** 2))
    stripe_dir = (np.pi * y / num_classes)[:, None, None]
    stripes = 0.5 + 0.5 * np.cos(2 * np.pi / 4 * (dy * np.sin(stripe_dir) + dx * np.cos(stripe_dir)))
    pattern = blob * (0.4 + 0.6 * stripes) * rng.uniform(0.8, 1.2, (n, 1, 1))
    # Channels see the same pattern with class-dependent gains, so colour carries signal too.
    gains = 0.6 + 0.4 * np.cos(2 * np.pi * (y[:, None] + np.arange(c)[None]) / max(2, num_classes))
    x = pattern[:, None] * gains[:, :, None, None] + noise * rng.standard_normal((n, c, h, w))
    x = x.astype(np.float32)
    return Dataset("synthetic_classes", Split(x[:n_train], y[:n_train].astype(np.int64)),
                   Split(x[n_train:], y[n_train:].astype(np.int64)),
                   classes=[f"class{k}" for k in range(num_classes)])


def _shape_mask(kind: int, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:  # disk
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 1:  # square
        return (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    return np.abs(yy - cy) + np.abs(xx - cx) <= r  # diamond


def synthetic_segmentation(n_train: int = 96, n_test: int = 32, num_classes: int = 3,
                           shape: Sequence[int] = (1, 32, 32), max_shapes: int = 3,
                           noise: float = 0.1, seed: int = 0) -> Dataset:
    """Noisy images with disks/squares/diamonds and per-pixel masks [N, H, W] (0 = background).

    Class k >= 1 uses shape (k - 1) % 3 and its own brightness, so both local
    texture and shape tell the classes apart.
    """
    c, h, w = (int(s) for s in shape)
    if num_classes < 2:
        raise CnncError("synthetic_segmentation needs at least 2 classes (background + one shape)")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    masks = np.zeros((n, h, w), np.int64)
    for i in range(n):  # a handful of shapes per image: the loop is over shapes, not pixels
        for _ in range(rng.integers(1, max_shapes + 1)):
            k = int(rng.integers(1, num_classes))
            r = rng.uniform(0.12, 0.22) * min(h, w)
            cy, cx = rng.uniform(r, h - 1 - r), rng.uniform(r, w - 1 - r)
            masks[i][_shape_mask((k - 1) % 3, h, w, cy, cx, r)] = k
    brightness = np.linspace(0.0, 1.0, num_classes)
    gains = np.linspace(1.0, 0.7, c)
    x = brightness[masks][:, None] * gains[None, :, None, None]
    x = (x + noise * rng.standard_normal((n, c, h, w))).astype(np.float32)
    names = ["background"] + [f"shape{k}" for k in range(1, num_classes)]
    return Dataset("synthetic_segmentation", Split(x[:n_train], masks[:n_train]),
                   Split(x[n_train:], masks[n_train:]), classes=names)


def synthetic_regression(n_train: int = 512, n_test: int = 128, features: int = 8,
                         targets: int = 1, noise: float = 0.05, seed: int = 0) -> Dataset:
    """x ~ N(0, 1) [N, F]; y = x @ W + b + a mild nonlinearity + noise, float32 [N, T]."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.standard_normal((n, features))
    weights = rng.standard_normal((features, targets)) / np.sqrt(features)
    bias = rng.standard_normal(targets) * 0.1
    y = x @ weights + bias + 0.1 * np.tanh(x[:, :1]) + noise * rng.standard_normal((n, targets))
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Dataset("synthetic_regression", Split(x[:n_train], y[:n_train]),
                   Split(x[n_train:], y[n_train:]))


SYNTHETIC = {
    "synthetic_classes": synthetic_classes,
    "synthetic_segmentation": synthetic_segmentation,
    "synthetic_regression": synthetic_regression,
}


# ====================================================================== dispatch

def load_dataset(source: PathLike, **options: Any) -> Dataset:
    """Load `source`: "mnist10k", a synthetic set name (options go to it), an .npz file,
    an IDX folder, or an image folder with one sub-folder per class."""
    text = str(source)
    if text in SYNTHETIC:
        try:
            return SYNTHETIC[text](**options)
        except TypeError as e:
            raise CnncError(f"data source '{text}': {e}") from None
    if options:
        raise CnncError(f"data source '{text}' takes no options, got {sorted(options)}")
    if text == "mnist10k":
        return load_mnist10k()
    path = Path(source)
    if not path.exists():
        raise CnncError(f"data source '{text}' does not exist",
                        hint="give a path to an .npz file, an IDX folder or an image folder, "
                             "or one of: mnist10k, " + ", ".join(SYNTHETIC))
    if path.is_dir():
        return load_idx_folder(path) if is_idx_folder(path) else load_image_folder(path)
    with path.open("rb") as f:
        is_zip = f.read(2) == b"PK"
    if path.suffix.lower() != ".npz" and not is_zip:
        raise CnncError(f"data file '{path}' is not an .npz archive",
                        hint="for IDX files pass the folder that holds them; for images "
                             "pass the folder with one sub-folder per class")
    return load_npz(path)


# ====================================================================== splits and preprocessing

def split_validation(ds: Dataset, val: float, seed: int = 0) -> Dataset:
    """Move a seeded random `val` fraction of the training split into `ds.val` (order kept)."""
    if not 0.0 <= val < 1.0:
        raise CnncError(f"the validation fraction must lie in [0, 1), got {val}")
    n = len(ds.train)
    count = int(round(val * n))
    if val > 0:
        count = max(1, count)
    if count >= n:
        raise CnncError(f"a validation fraction of {val} leaves no training samples out of {n}")
    if count == 0:
        return ds
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(order[:count]), np.sort(order[count:])
    return replace(ds, train=ds.train.take(train_idx), val=ds.train.take(val_idx))


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    return x64.mean(axis=axes), x64.std(axis=axes)


def _per_channel(value: Any, channels: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.size == 1:
        return np.repeat(arr, channels)
    if arr.size != channels:
        raise CnncError(f"normalize: {arr.size} {what} values for data with {channels} channels",
                        hint=f"give one value, or one per channel ({channels})")
    return arr


def _apply(ds: Dataset, shift: np.ndarray, scale: np.ndarray, record: dict[str, Any]) -> Dataset:
    def fix(split: Split | None) -> Split | None:
        if split is None:
            return None
        shape = (1, -1) + (1,) * (split.x.ndim - 2)
        x = (split.x - shift.reshape(shape)) / scale.reshape(shape)
        return Split(x.astype(np.float32), split.y)

    meta = dict(ds.meta)
    meta["preprocess"] = list(meta.get("preprocess", [])) + [record]  # never mutate ds.meta
    return replace(ds, train=fix(ds.train), val=fix(ds.val), test=fix(ds.test), meta=meta)


def normalize(ds: Dataset, mean: Any = None, std: Any = None) -> Dataset:
    """(x - mean) / std per channel (axis 1); None means "measure it on the training split"."""
    channels = ds.train.x.shape[1]
    measured_mean, measured_std = _channel_stats(ds.train.x)
    m = measured_mean if mean is None else _per_channel(mean, channels, "mean")
    s = measured_std if std is None else _per_channel(std, channels, "std")
    if np.any(s <= 0):
        raise CnncError(f"normalize: std must be positive, got {s.tolist()}",
                        hint="a constant channel has std 0; give std explicitly")
    return _apply(ds, m, s, {"op": "normalize", "mean": m.tolist(), "std": s.tolist()})


def center(ds: Dataset) -> Dataset:
    """Subtract the per-channel mean of the training split from every split."""
    m, _ = _channel_stats(ds.train.x)
    return _apply(ds, m, np.ones_like(m), {"op": "center", "mean": m.tolist()})


# ====================================================================== batching

def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = False,
                    rng: np.random.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x, y) mini-batches; with `shuffle`, one permutation per call drawn from `rng`."""
    if batch_size < 1:
        raise CnncError(f"batch size must be at least 1, got {batch_size}")
    n = len(x)
    stop = n - n % batch_size if drop_last else n
    if not shuffle:
        for start in range(0, stop, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    order = (rng if rng is not None else np.random.default_rng(0)).permutation(n)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


# ====================================================================== validation

def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_inputs(x: np.ndarray, expected: tuple[Any, ...], where: str) -> None:
    if x.dtype.kind not in "biuf":
        raise CnncError(f"{where}: the inputs have dtype {x.dtype}, which is not numeric",
                        hint="store images and features as integer or float arrays")
    if len(x) == 0:
        raise CnncError(f"{where}: there are no samples")
    have = tuple(x.shape[1:])

    def same(a: Any, b: int) -> bool:  # symbolic dimensions (non-ints) match anything
        return not isinstance(a, (int, np.integer)) or int(a) == b

    if len(have) == len(expected) and all(same(a, b) for a, b in zip(expected, have)):
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise CnncError(f"{where}: the inputs contain NaN or infinite values")
        return
    if len(expected) == 3 and len(have) == 3:
        if not same(expected[0], have[0]):
            raise CnncError(
                f"{where}: the network expects {_count(expected[0], 'channel')}, the data has {have[0]}",
                hint=f"declare the input with {_count(have[0], 'channel')}, or convert the data "
                     + ("(e.g. repeat the grey channel to get RGB)" if have[0] == 1 else
                        "(e.g. average the colour channels to get greyscale)"))
        raise CnncError(
            f"{where}: the network expects {expected[1]}x{expected[2]} inputs, the data is "
            f"{have[1]}x{have[2]}",
            hint="change the input size in the network, or resize/crop the data")
    if len(expected) == 1 and len(have) == 1:
        raise CnncError(f"{where}: the network expects {expected[0]} input features, "
                        f"the data has {have[0]}")
    hint = "reshape the data, or change the network's input declaration"
    if all(isinstance(d, (int, np.integer)) for d in expected) and math.prod(expected) == math.prod(have):
        hint = f"the sizes agree, so reshape each sample from {_fmt(have)} to {_fmt(expected)}"
    raise CnncError(f"{where}: the network expects inputs of shape {_fmt(expected)} per sample, "
                    f"the data has {_fmt(have)}", hint=hint)


def _integral_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.isfinite(y).all() and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise CnncError(f"{where}: class labels must be integers, got dtype {y.dtype}",
                    hint="use a regression loss (mse, smooth_l1) for real-valued targets")


def _check_range(y: np.ndarray, k: int, where: str, allowed: int | None = None) -> None:
    bad = (y < 0) | (y >= k)
    if allowed is not None:
        bad &= y != allowed
    if bad.any():
        lo, hi = int(y[bad].min()), int(y[bad].max())
        seen = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise CnncError(f"{where}: labels must lie in [0, {k}), the data has label(s) {seen}",
                        hint=f"the network's last layer has {k} outputs, one per class; number the "
                             "classes from 0, or change the output size")


def _check_targets(split: Split, spec: LossSpec, num_classes: int | None, where: str) -> np.ndarray:
    y = np.asarray(split.y)
    if y.dtype.kind not in "biuf":
        raise CnncError(f"{where}: the labels have dtype {y.dtype}, which is not numeric")
    if len(y) != len(split.x):
        raise CnncError(f"{where}: {len(split.x)} inputs but {len(y)} labels")
    kind = spec.target_kind
    per_sample = math.prod(y.shape[1:])
    if kind == CLASS:
        if y.ndim > 2 or per_sample != 1:
            raise CnncError(f"{where}: loss {spec.name} needs one class label per sample, the labels "
                            f"have shape {_fmt(y.shape)}",
                            hint="for 0/1 targets per class use multilabel_bce")
        y = _integral_labels(y.reshape(-1), where)
        if num_classes is not None:
            _check_range(y, num_classes, where)
        return y
    if kind == PIXEL_CLASS:
        if y.ndim != 3:
            raise CnncError(f"{where}: loss {spec.name} needs one mask [H, W] per sample, the "
                            f"labels have shape {_fmt(y.shape)}")
        y = _integral_labels(y, where)
        if num_classes is not None:
            _check_range(y, num_classes, where, spec.options.get("ignore_index"))
        return y
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise CnncError(f"{where}: the targets contain NaN or infinite values")
    if kind in (BINARY, MULTILABEL) and ((y < 0) | (y > 1)).any():
        raise CnncError(f"{where}: loss {spec.name} needs targets between 0 and 1, the data has "
                        f"values from {y.min()} to {y.max()}")
    if num_classes is not None and per_sample != num_classes:
        raise CnncError(f"{where}: the network has {_count(num_classes, 'output')}, but each target "
                        f"has {_count(per_sample, 'value')} (labels of shape {_fmt(y.shape)})",
                        hint="the last layer needs one output per target value")
    return y.astype(np.float32)


def check_dataset(ds: Dataset, input_shape: Sequence[Any], num_classes: int | None,
                  loss: str | LossSpec) -> Dataset:
    """Refuse data that does not fit the network; return it with labels in canonical dtypes.

    `input_shape` is the per-sample input (`[C, H, W]` or `[F]`; non-int entries are
    symbolic and match anything); `num_classes` is the size of the output's class axis
    (for regression, the number of outputs; None skips those checks).
    """
    spec = loss if isinstance(loss, LossSpec) else get_loss(loss)
    fixed: dict[str, Split] = {}
    for split_name, split in ds.splits():
        where = f"data '{ds.name}' ({split_name} split)"
        _check_inputs(np.asarray(split.x), tuple(input_shape), where)
        fixed[split_name] = Split(split.x, _check_targets(split, spec, num_classes, where))
    return replace(ds, train=fixed["train"], val=fixed.get("validation"), test=fixed.get("test"))
