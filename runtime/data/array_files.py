"""Stage 3 (runtime): datasets as NumPy arrays, their sources, checks and batching.

A `Dataset` holds `Split`s of `x` (float32 `[N, C, H, W]`, or `[N, F]` for
feature vectors) and `y` (int64 class labels or masks, or float32 targets).
Sources: the embedded `mnist10k` sample, MNIST-style IDX files (gzip or raw),
`.npz` archives, folders of images with one sub-folder per class (every
format Pillow reads, see runtime/images.py; optionally resized and converted
to 1 or 3 channels) and small synthetic sets for smoke tests.
`load_dataset(source, **options)` picks the right reader and refuses options
the source does not take. Pixel data stored as uint8 is scaled to [0, 1].
Data files are untrusted input: every reader goes through the bounded reader
of `cnnc.dsl.files` (regular files only, size-capped), reads headers first and
refuses what they declare beyond `data_limit()` (CNNC_MAX_DATA, 4 GiB) before
inflating or allocating anything. `load_inputs` reads the files given to
`cnnc predict`. `check_dataset` compares the data with the network's
declared input and the loss's target kind before any training starts, so a
mismatch becomes a `CnncError` with a hint instead of a shape error deep in
a kernel; every reader likewise reports a missing or malformed file by name.
Randomness (validation split, shuffling, synthetic data) always comes from
an explicit seed or `np.random.Generator`, so runs are reproducible.
"""
from __future__ import annotations

import importlib.resources
import io
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .images import convert_channels, image_suffixes, read_image, resize, target_size
from ..train.losses import BINARY, CLASS, MULTILABEL, PIXEL_CLASS, LossSpec, get_loss

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


_INT64_MAX = np.iinfo(np.int64).max


def _as_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Integer (and bool) targets become int64 labels; floats stay float32 targets."""
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        _refuse_huge_labels(y, where)
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        return y.astype(np.float32)
    raise CnncError(f"{where}: the labels have dtype {y.dtype}, which is not numeric",
                    hint="store labels as integers (class indices) or floats (regression targets)")


def _refuse_huge_labels(y: np.ndarray, where: str) -> None:
    """uint64 labels above the int64 range would wrap to negative numbers: name the real value."""
    if y.dtype == np.uint64 and y.size and int(y.max()) > _INT64_MAX:
        raise CnncError(f"{where}: the labels hold {int(y.max())}, too large for a class index",
                        hint="number the classes from 0")


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


# ====================================================================== limits

def data_limit() -> int:
    """Bytes a data set may take once decoded (env CNNC_MAX_DATA raises it); 4 GiB by default.

    Declared arrays count at float32 size at least (4 bytes a value): that is what
    training holds, so 1 GiB of uint8 pixels already counts 4 GiB.
    """
    return files.limit("data")


def _decoded_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return math.prod(shape) * max(dtype.itemsize, 4)


def _too_large(what: str, need: int, limit: int, declared: str = "declares") -> CnncError:
    return CnncError(f"{what} {declared} {files.size_text(need)} of data, more than the limit of {files.size_text(limit)}",
                     hint="a file this large is refused as a possible decompression bomb; "
                          "set CNNC_MAX_DATA (bytes) to raise the limit")


# ====================================================================== IDX

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_RANK = 4  # samples x height x width x channels is the most any data set needs
_GZIP_MAGIC = b"\x1f\x8b"


def _gzip_head(raw: bytes, n: int, what: str) -> bytes:
    """The first `n` inflated bytes of gzip data (fewer if it is shorter), inflating no more."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, n)
    except zlib.error as err:
        raise CnncError(f"{what} is a corrupt or truncated gzip file ({err})",
                        hint="download the file again") from None


def _gunzip_exactly(raw: bytes, expected: int, what: str) -> bytes:
    """Inflate gzip data (all its members) to at most `expected + 1` bytes.

    Like `files.bounded_inflate`, the cap holds while inflating; this one also
    follows further gzip members and tells a truncated stream (no end, or a
    bad CRC/length trailer, which zlib checks) from one longer than `expected`.
    """
    out, rest = bytearray(), raw
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, expected + 1 - len(out))
        except zlib.error as err:
            raise CnncError(f"{what} is a corrupt or truncated gzip file ({err})",
                            hint="download the file again") from None
        if len(out) > expected or d.unconsumed_tail:
            raise CnncError(f"{what} is longer than its header says", hint="download the file again")
        if not d.eof:
            raise CnncError(f"{what} is a corrupt or truncated gzip file (it ends inside the compressed data)",
                            hint="download the file again")
        rest = d.unused_data.lstrip(b"\0")  # some tools pad gzip files with zero bytes
    return bytes(out)


def _idx_header(head: bytes, shown: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length) from the first bytes of an IDX file."""
    what = f"IDX file '{shown}'"
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
        raise CnncError(f"'{shown}' is not an IDX file (bad header {head[:4].hex(' ') or 'empty'})",
                        hint="IDX files start with two zero bytes, a type code and the rank")
    ndim = head[3]
    if ndim > _IDX_MAX_RANK:
        raise CnncError(f"{what} declares rank {ndim}; cnnc reads IDX arrays of rank 1 to {_IDX_MAX_RANK}")
    start = 4 + 4 * ndim
    if len(head) < start:
        raise CnncError(f"{what} is truncated inside its header")
    return np.dtype(_IDX_DTYPES[head[2]]), struct.unpack(f">{ndim}I", head[4:start]), start


def read_idx(path: PathLike) -> np.ndarray:
    """One IDX array (the MNIST format), gzip-compressed or raw, in native byte order.

    The header is read first; the data it declares is checked against the file
    size (raw) or inflated to exactly that size (gzip), and against `data_limit()`.
    """
    shown = files.describe_path(path)
    what = f"IDX file '{shown}'"
    limit = data_limit()
    raw = files.read_bytes(path, "IDX file", limit)
    gz = raw[:2] == _GZIP_MAGIC  # gzip magic, whatever the file is called
    head = _gzip_head(raw, 4 + 4 * 255, what) if gz else raw[:4 + 4 * 255]
    dtype, dims, start = _idx_header(head, shown)
    if _decoded_bytes(dims, dtype) > limit:
        raise _too_large(what, _decoded_bytes(dims, dtype), limit, "declares (as float32)")
    need = math.prod(dims) * dtype.itemsize
    body = _gunzip_exactly(raw, start + need, what) if gz else raw
    have = len(body) - start
    if have != need:
        state = "truncated" if have < need else "longer than its header says"
        raise CnncError(f"{what} is {state}: the header promises {list(dims)} "
                        f"values of {dtype.itemsize} byte(s), the file holds {have} data bytes",
                        hint="download the file again")
    data = np.frombuffer(body, dtype=dtype, count=math.prod(dims), offset=start).reshape(dims)
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


# ====================================================================== npz / npy

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip


def _npy_header(f: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an .npy header, refusing object arrays; reads the header only."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10_000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10_000)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except CnncError:
        raise
    except Exception as err:  # NumPy's header parser raises ValueError, SyntaxError, EOFError...
        raise CnncError(f"{what} is not a readable .npy array ({str(err).splitlines()[0][:160]})") from None
    if dtype.hasobject:
        raise CnncError(f"{what} holds Python objects (pickled arrays); cnnc reads plain numeric arrays only",
                        hint="save the arrays with a numeric dtype")
    return tuple(int(d) for d in shape), fortran, dtype


def _npy_body(f: IO[bytes], shape: tuple[int, ...], fortran: bool, dtype: np.dtype, what: str) -> np.ndarray:
    count = math.prod(shape)
    want = count * dtype.itemsize
    raw = f.read(want)
    if len(raw) != want:
        raise CnncError(f"{what} is truncated: its header promises {list(shape)} values of "
                        f"{dtype.itemsize} byte(s), it holds {len(raw)} data bytes")
    arr = np.frombuffer(raw, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_npy(path: PathLike, max_bytes: int | None = None) -> np.ndarray:
    """One `.npy` array: header first (shape, dtype), refusing object arrays and sizes over the limit."""
    shown = files.describe_path(path)
    what = f"array file '{shown}'"
    limit = data_limit() if max_bytes is None else max_bytes
    with files.open_regular(path, "array file", limit) as (f, size):
        shape, fortran, dtype = _npy_header(f, what)
        need = math.prod(shape) * dtype.itemsize
        if need > size:  # a raw .npy holds its data: a header promising more than the file is a lie
            raise CnncError(f"{what} is truncated: its header promises {list(shape)} values of "
                            f"{dtype.itemsize} byte(s), the file has {size} bytes")
        return _npy_body(f, shape, fortran, dtype, what)


def read_npz(path: PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` archive, by name (without ".npy").

    Before anything is inflated, every member's declared size and `.npy`
    header (shape, dtype) are read; object (pickled) arrays, members that are
    not `.npy` arrays and a total over `max_bytes` (default `data_limit()`) are
    refused. Each member is then inflated to exactly the size its header implies.
    """
    shown = files.describe_path(path)
    what = f"'{shown}'"
    limit = data_limit() if max_bytes is None else max_bytes
    with files.open_regular(path, "data file", limit) as (f, _size):
        if f.read(4) not in _ZIP_MAGICS:
            raise CnncError(f"data file '{shown}' is not an .npz archive",
                            hint="write it with numpy.savez(path, x_train=..., y_train=...); for IDX "
                                 "files pass the folder that holds them; for images pass the folder "
                                 "with one sub-folder per class")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as z:
                return _read_members(z, what, limit)
        except CnncError:
            raise
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, ValueError,
                NotImplementedError, RuntimeError) as err:
            raise CnncError(f"{what} is not a readable .npz file ({str(err).splitlines()[0][:160]})",
                            hint="write it with numpy.savez(path, x_train=..., y_train=...)") from None


def _read_members(z: zipfile.ZipFile, what: str, limit: int) -> dict[str, np.ndarray]:
    members = [m for m in z.infolist() if not m.is_dir()]
    if not members:
        raise CnncError(f"{what} is an empty .npz archive (it holds no arrays)",
                        hint="write it with numpy.savez(path, x_train=..., y_train=...)")
    headers, total = {}, 0
    for m in members:  # every header first: nothing is inflated before the total is known
        if not m.filename.endswith(".npy"):
            raise CnncError(f"{what} holds '{files.describe_path(m.filename)}', which is not an .npy array")
        if m.file_size > limit:
            raise _too_large(f"{what} (member '{files.describe_path(m.filename)}')", m.file_size, limit,
                             "inflates to")
        member = f"{what} (array '{files.describe_path(m.filename[:-4])}')"
        with z.open(m) as f:
            header = _npy_header(f, member)
        total += _decoded_bytes(header[0], header[2])
        if total > limit:
            raise _too_large(what, total, limit, "declares (as float32)")
        headers[m.filename] = (member, header)
    arrays = {}
    for name, (member, (shape, fortran, dtype)) in headers.items():
        with z.open(name) as f:
            _npy_header(f, member)
            arrays[name[:-4]] = _npy_body(f, shape, fortran, dtype, member)
    return arrays


def load_npz(path: PathLike) -> Dataset:
    """`.npz` with x_train/y_train (+ optional x_test/y_test), or a single x/y pair."""
    arrays = read_npz(path)
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


# ====================================================================== image folders

def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise CnncError(f"{what} '{folder}' {state}")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(sub: Path, suffixes: frozenset[str]) -> list[Path]:
    found = sorted(p for p in sub.iterdir()
                   if not p.name.startswith(".") and p.suffix.lower() in suffixes and not p.is_dir())
    if not found:
        raise CnncError(f"class folder '{sub}' contains no images",
                        hint="remove the empty folder or add images (.png, .pgm, .jpg, ...)")
    return found


def _read_tree(folder: Path, classes: list[str], budget: list[int]) -> tuple[list[np.ndarray], list[int], list[Path]]:
    images, labels, paths = [], [], []
    suffixes = image_suffixes()
    for label, cls in enumerate(classes):
        sub = folder / cls
        if not sub.is_dir():
            continue
        for path in _image_files(sub, suffixes):
            image = read_image(path)
            budget[0] -= image.nbytes
            if budget[0] < 0:
                raise CnncError(f"image folder '{folder}' holds more than the limit of "
                                f"{files.size_text(data_limit())} of pixels (reached at '{path}')",
                                hint="set CNNC_MAX_DATA (bytes) to raise the limit")
            images.append(image)
            labels.append(label)
            paths.append(path)
    return images, labels, paths


def _check_sizes(images: list[np.ndarray], paths: list[Path]) -> None:
    h, w = images[0].shape[1:]
    for img, path in zip(images, paths):
        if img.shape[1:] != (h, w):
            raise CnncError(f"image '{path}' is {img.shape[2]}x{img.shape[1]} pixels, but "
                            f"'{paths[0]}' is {w}x{h}",
                            hint="all images of a dataset must have the same size: resize them first, "
                                 "or give images(\"dir\", size = N)")


def _channel_count(channels: Any) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise CnncError(f"images: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)


def load_image_folder(root: PathLike, size: int | Sequence[int] | None = None,
                      channels: int | None = None) -> Dataset:
    """Images in class sub-folders (`root/<class>/*` or `root/train/<class>/*` + `root/test/...`).

    Labels follow the sorted class-folder names of the training tree. `size`
    (n, or (height, width)) resizes every image with Pillow's bilinear filter
    (see `images.resize`); without it all images must already share one size.
    `channels` (1 or 3) converts every image (see `images.convert_channels`);
    without it, grey images among colour ones are promoted to RGB.
    """
    root = Path(root)
    target = None if size is None else target_size(size)
    want = _channel_count(channels)
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
    budget = [data_limit()]
    parts = [_read_tree(train_dir, classes, budget)]
    if test_dir is not None:
        parts.append(_read_tree(test_dir, classes, budget))
    all_images = [img for images, _, _ in parts for img in images]
    count = want or max(img.shape[0] for img in all_images)
    parts = [([_fit(img, count, target) for img in images], labels, paths) for images, labels, paths in parts]
    _check_sizes([img for images, _, _ in parts for img in images], [p for _, _, paths in parts for p in paths])
    splits = [Split(np.stack(images), np.asarray(labels, dtype=np.int64))
              for images, labels, _ in parts if images]
    return Dataset(str(root), splits[0], splits[1] if len(splits) > 1 else None, classes=classes)


def _fit(image: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    image = convert_channels(image, channels)
    return image if size is None else resize(image, size)


# ====================================================================== synthetic sets

def synthetic_classes(n_train: int = 512, n_test: int = 128, num_classes: int = 4,
                      shape: Sequence[int] = (1, 16, 16), noise: float = 0.2,
                      seed: int = 0) -> Dataset:
    """K classes: a Gaussian blob at a class-specific place, striped at a class-specific angle.

    Positions jitter by up to a pixel and noise is added, so a small conv net has
    to use local spatial patterns (not single pixels) to reach high accuracy.
    """
    if len(shape) == 2:
        return _synthetic_signals(n_train, n_test, num_classes, shape, noise, seed)
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


def _synthetic_signals(n_train: int, n_test: int, num_classes: int, shape: Sequence[int], noise: float,
                       seed: int) -> Dataset:
    """[C, L] signals for 1-D networks: class k is a burst of a class-specific frequency at a random
    place (each channel with its own phase), plus noise, so a conv net must find a local pattern."""
    c, length = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % num_classes)
    t = np.arange(length, dtype=np.float64)
    centre = rng.uniform(0.25, 0.75, n)[:, None] * length
    envelope = np.exp(-((t[None] - centre) ** 2) / (2 * (length / 8) ** 2))
    cycles = (2 + 2 * y)[:, None, None] * (2 * np.pi / length)
    phase = rng.uniform(0, 2 * np.pi, (n, c, 1))
    x = envelope[:, None] * np.sin(cycles * t[None, None] + phase) + noise * rng.standard_normal((n, c, length))
    x = x.astype(np.float32)
    return Dataset("synthetic_classes", Split(x[:n_train], y[:n_train].astype(np.int64)),
                   Split(x[n_train:], y[n_train:].astype(np.int64)),
                   classes=[f"class{k}" for k in range(num_classes)])


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

# Options of the synthetic sets that count something, with their least allowed value.
_SYNTHETIC_COUNTS = {"n_train": 1, "n_test": 0, "num_classes": 2, "features": 1, "targets": 1,
                     "max_shapes": 1}
_IMAGE_FOLDER_OPTIONS = ("size", "channels")


def _synthetic(name: str, options: dict[str, Any]) -> Dataset:
    for key, least in _SYNTHETIC_COUNTS.items():
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < least):
            raise CnncError(f"data source '{name}': {key} must be a whole number of at least {least}, "
                            f"got {value!r}")
    try:
        return SYNTHETIC[name](**options)
    except TypeError as e:
        raise CnncError(f"data source '{name}': {e}") from None


def _refuse_options(text: str, kind: str, options: dict[str, Any], allowed: Sequence[str] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if not unknown:
        return
    if allowed:
        raise CnncError(f"data source '{text}' ({kind}) takes only {', '.join(allowed)}, got {unknown}")
    raise CnncError(f"data source '{text}'{f' ({kind})' if kind else ''} takes no options, got {unknown}")


def load_dataset(source: PathLike, **options: Any) -> Dataset:
    """Load `source`: "mnist10k", a synthetic set name (options go to it), an .npz file,
    an IDX folder, or an image folder with one sub-folder per class (options `size`
    and `channels`, see `load_image_folder`). Options a source does not take are refused."""
    text = str(source)
    if text in SYNTHETIC:
        return _synthetic(text, options)
    if text == "mnist10k":
        _refuse_options(text, "", options)
        return load_mnist10k()
    from . import standard as standard_datasets  # it reads its files with this module's readers
    if text in standard_datasets.STANDARD and not Path(text).exists():  # a folder of that name wins
        _refuse_options(text, "", options)
        return standard_datasets.load_standard(text)
    path = Path(source)
    if not path.exists():
        raise CnncError(f"data source '{files.describe_path(text)}' does not exist",
                        hint="give a path to an .npz file, an IDX folder or an image folder, "
                             "or one of: mnist10k, " + ", ".join([*standard_datasets.STANDARD, *SYNTHETIC]))
    from .segmentation import is_segmentation_folder, load_segmentation_folder
    if is_segmentation_folder(path):
        _refuse_options(text, "a segmentation folder", options, _IMAGE_FOLDER_OPTIONS)
        return load_segmentation_folder(path, **options)
    if path.is_dir() and is_idx_folder(path):
        _refuse_options(text, "an IDX folder", options)
        return load_idx_folder(path)
    if path.is_dir():
        _refuse_options(text, "an image folder", options, _IMAGE_FOLDER_OPTIONS)
        return load_image_folder(path, **options)
    _refuse_options(text, "an .npz archive", options)
    return load_npz(path)


# ====================================================================== prediction inputs

def _same_shape(have: Sequence[int], expected: Sequence[Any]) -> bool:
    """Shapes agree; symbolic (non-int) dimensions of `expected` match anything."""
    return len(have) == len(expected) and all(
        not isinstance(e, (int, np.integer)) or int(e) == h for h, e in zip(have, expected))


def _input_array(path: PathLike, shown: str) -> np.ndarray:
    """The numeric array of an .npy file, or of an .npz archive's "x" (else its first) array."""
    if Path(path).suffix.lower() == ".npz":
        arrays = read_npz(path)
        arr = arrays["x"] if "x" in arrays else next(iter(arrays.values()))
    else:
        arr = read_npy(path)
    if arr.dtype.kind not in "biuf":
        raise CnncError(f"'{shown}' holds an array of dtype {arr.dtype}, which is not numeric",
                        hint="save the inputs as integer or float arrays")
    if arr.ndim == 0:
        raise CnncError(f"'{shown}' holds a single number (a 0-d array), not samples",
                        hint="save the inputs as one sample or a batch [N, ...]")
    if arr.size == 0:
        raise CnncError(f"'{shown}' holds an empty array of shape {list(arr.shape)}")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype)
    return arr.astype(np.float32) if scale is None else (arr / np.float32(scale)).astype(np.float32)


def _array_batch(arr: np.ndarray, sample_shape: Sequence[Any], shown: str) -> np.ndarray:
    """One sample or a batch shaped [N, *sample_shape]; a grey network also takes [H, W] / [N, H, W]."""
    shape = tuple(sample_shape)
    grey = len(shape) == 3 and shape[0] == 1
    if _same_shape(arr.shape, shape):
        return arr[None]
    if _same_shape(arr.shape[1:], shape):
        return arr
    if grey and _same_shape(arr.shape, shape[1:]):
        return arr[None, None]
    if grey and _same_shape(arr.shape[1:], shape[1:]):
        return arr[:, None]
    if len(shape) == 3 and arr.ndim == 4 and _same_shape(arr.shape[1:], shape[1:] + shape[:1]):
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # channels-last, as most tools save
    raise CnncError(f"'{shown}' holds an array of shape {_fmt(arr.shape)}; the network expects "
                    f"{_fmt(shape)} per sample (one sample, or a batch [N, ...])")


def _image_sample(image: np.ndarray, sample_shape: Sequence[Any], shown: str) -> np.ndarray:
    shape = tuple(sample_shape)
    if len(shape) != 3:
        raise CnncError(f"image '{shown}': the network takes inputs of shape {_fmt(shape)}, not images")
    if not _same_shape(image.shape[:1], shape[:1]):
        kind = {1: "a grey image (1 channel)", 3: "a colour image (3 channels)"}.get(image.shape[0])
        raise CnncError(f"image '{shown}' is {kind}, the network expects {_count(shape[0], 'channel')}",
                        hint="convert the image to " + ("greyscale" if shape[0] == 1 else "RGB") + " first")
    if not _same_shape(image.shape[1:], shape[1:]):
        raise CnncError(f"image '{shown}' is {image.shape[2]}x{image.shape[1]} pixels, the network "
                        f"expects {shape[2]}x{shape[1]}", hint="resize the image first")
    return image


def load_inputs(paths: Sequence[PathLike], sample_shape: Sequence[Any] | None = None) -> np.ndarray:
    """Samples for `cnnc predict` from image files and `.npy`/`.npz` arrays: float32 [N, ...].

    Images are read by `read_image` ([C, H, W] in [0, 1]); arrays hold one
    sample or a batch (uint8 scaled by 1/255, uint16 by 1/65535). With
    `sample_shape` (the network's per-sample input) every file is checked and
    shaped against it; without it, all files must agree with each other.
    Every refusal is one line naming the file.
    """
    if not paths:
        raise CnncError("no input files given")
    batches: list[tuple[np.ndarray, str, bool]] = []
    for path in paths:
        shown = files.describe_path(path)
        is_array = Path(path).suffix.lower() in (".npy", ".npz")
        if is_array:
            batch = _input_array(path, shown)
            if sample_shape is not None:
                batch = _array_batch(batch, sample_shape, shown)
        else:
            image = read_image(path)
            batch = (image if sample_shape is None else _image_sample(image, sample_shape, shown))[None]
        batches.append((batch, shown, is_array))
    _check_input_shapes(batches)
    x = np.concatenate([b for b, _, _ in batches]).astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = next(shown for b, shown, _ in batches if not np.isfinite(b).all())
        raise CnncError(f"'{bad}' holds NaN or infinite values")
    return x


def _check_input_shapes(batches: list[tuple[np.ndarray, str, bool]]) -> None:
    first, first_name, _ = batches[0]
    for batch, shown, is_array in batches[1:]:
        if batch.shape[1:] == first.shape[1:]:
            continue
        if not is_array and not batches[0][2] and batch.ndim == first.ndim == 4:
            raise CnncError(f"image '{shown}' is {batch.shape[3]}x{batch.shape[2]} pixels with "
                            f"{_count(batch.shape[1], 'channel')}, but '{first_name}' is "
                            f"{first.shape[3]}x{first.shape[2]} with {_count(first.shape[1], 'channel')}",
                            hint="all inputs must have the same size")
        raise CnncError(f"'{shown}' holds samples of shape {_fmt(batch.shape[1:])}, but '{first_name}' "
                        f"holds {_fmt(first.shape[1:])}", hint="all inputs must have the same shape")


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


def _allocate(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split `total` over groups in proportion to `counts` (largest remainders, ties drawn at random)."""
    exact = counts * (total / max(int(counts.sum()), 1))
    base = np.floor(exact).astype(np.int64)
    order = np.lexsort((rng.random(len(counts)), -(exact - base)))
    base[order[:total - int(base.sum())]] += 1
    return base


def _held_out_count(fraction: float, n: int) -> int:
    return 0 if not fraction else max(1, int(round(fraction * n)))


def holdout_indices(y: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Sorted indices of the train, validation and test parts, seeded and disjoint.

    `val` and `test` are fractions of all `len(y)` samples. With one class label
    per sample the split is stratified: each class is cut in the same proportions
    (largest remainders), so every part keeps the class balance of the whole.
    """
    n = len(y)
    n_test, n_val = _held_out_count(test, n), _held_out_count(val, n)
    if n_test + n_val >= n:
        raise CnncError(f"holding out {n_val} validation and {n_test} test samples leaves no training "
                        f"samples out of {n}", hint="lower val or test")
    rng = np.random.default_rng([seed, 0x5B117])
    order = rng.permutation(n)
    labels = np.asarray(y)
    if labels.ndim == 1 and labels.dtype.kind in "iub":
        classes, inverse = np.unique(labels[order], return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes))
        want_test = _allocate(counts, n_test, rng)
        want_val = _allocate(counts - want_test, n_val, rng)
        rank = np.empty(n, np.int64)   # position of each sample among its class, in shuffled order
        for c in range(len(classes)):
            members = np.flatnonzero(inverse == c)
            rank[members] = np.arange(len(members))
        part = np.where(rank < want_test[inverse], 2, np.where(rank < (want_test + want_val)[inverse], 1, 0))
    else:
        part = np.zeros(n, np.int64)
        part[:n_test], part[n_test:n_test + n_val] = 2, 1
    return {name: np.sort(order[part == k]) for k, name in ((0, "train"), (1, "val"), (2, "test"))}


def split_holdout(ds: Dataset, val: float | None, test: float | None, seed: int = 0) -> Dataset:
    """Hold out validation and/or test parts of the training split (see `holdout_indices`).

    A `test` fraction is refused for data that ships its own test split. The split
    is recorded in `ds.meta["split"]` (fractions, seed and indices) for the run directory.
    """
    val, test = float(val or 0.0), float(test or 0.0)
    if not val and not test:
        return ds
    if test and ds.test is not None:
        raise CnncError(f"data '{files.describe_path(ds.name)}' has its own test split, so a test fraction "
                        "would replace it", hint="drop test = ..., or use val = ... to hold out validation data")
    index = holdout_indices(ds.train.y, val, test, seed)
    meta = dict(ds.meta)
    meta["split"] = {"seed": seed, "val": val, "test": test, "samples": len(ds.train),
                     "stratified": bool(np.asarray(ds.train.y).ndim == 1 and ds.train.y.dtype.kind in "iub"),
                     "val_index": index["val"].tolist(), "test_index": index["test"].tolist()}
    part = lambda k: ds.train.take(index[k]) if len(index[k]) else None  # noqa: E731
    return replace(ds, train=ds.train.take(index["train"]), val=part("val") or ds.val,
                   test=part("test") if test else ds.test, meta=meta)


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


def _integral_labels(y: np.ndarray, where: str, k: int | None = None,
                     allowed: int | None = None) -> np.ndarray:
    """Class labels as int64, after checking (on the original values, so a uint64 label is
    reported as it is, not wrapped) that they are whole numbers in [0, k) or `allowed`."""
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise CnncError(f"{where}: class labels must be integers, got dtype {y.dtype}",
                        hint="use a regression loss (mse, smooth_l1) for real-valued targets")
    if y.dtype.kind not in "biuf":
        raise CnncError(f"{where}: class labels must be integers, got dtype {y.dtype}")
    if k is not None:
        _check_range(y, k, where, allowed)
    elif y.size and (float(y.max()) > _INT64_MAX or float(y.min()) < -_INT64_MAX):
        big = int(y.max()) if float(y.max()) > _INT64_MAX else int(y.min())
        raise CnncError(f"{where}: the labels hold {big}, too large for a class index",
                        hint="number the classes from 0")
    return y.astype(np.int64)


def _check_range(y: np.ndarray, k: int, where: str, allowed: int | None = None) -> None:
    bad = (y < 0) | (y >= k)
    if allowed is not None and (allowed >= 0 or y.dtype.kind != "u"):  # no uint equals a negative
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
        return _integral_labels(y.reshape(-1), where, num_classes, spec.options.get("ignore_index"))
    if kind == PIXEL_CLASS:
        if y.ndim != 3:
            raise CnncError(f"{where}: loss {spec.name} needs one mask [H, W] per sample, the "
                            f"labels have shape {_fmt(y.shape)}")
        return _integral_labels(y, where, num_classes, spec.options.get("ignore_index"))
    if spec.one_hot_labels and y.dtype.kind in "iu" and y.ndim == 1 and num_classes is not None and num_classes > 1:
        return _integral_labels(y, where, num_classes)   # class labels: mse compares one-hot targets
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
