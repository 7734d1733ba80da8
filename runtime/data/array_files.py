"""Stage 3 (runtime), data: the sources that are array files — MNIST-style IDX files, `.npy` and `.npz`.

`read_idx` reads one IDX array (gzip or raw), `read_npy` and `read_npz` the
arrays of NumPy's files; `load_idx`, `load_idx_folder` and `load_npz` make a
`Dataset` of them (containers.py). Data files are untrusted input: every reader
goes through the bounded reader of `cnnc.dsl.files` (regular files only,
size-capped), reads headers first and refuses what they declare beyond
`data_limit()` (CNNC_MAX_DATA, 4 GiB) before inflating or allocating anything;
a missing or malformed file is reported by name.
"""
from __future__ import annotations

import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Sequence

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .containers import Dataset, PathLike, Split, as_split, data_limit, require_dir


# ====================================================================== limits

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
        return as_split(x, y, str(images))

    test = pair(test_images, test_labels) if test_images is not None else None
    return Dataset(name or str(train_images), pair(train_images, train_labels), test)


def load_idx_folder(folder: PathLike) -> Dataset:
    """MNIST-style folder: train-images-idx3-ubyte[.gz], train-labels-..., optional t10k-*."""
    folder = Path(folder)
    require_dir(folder, "IDX folder")
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


def _targets(arrays: dict[str, np.ndarray], stem: str) -> Any:
    """The targets named `stem` (y_train, y_test, y): that array, or for a network with several
    outputs one array per output, `<stem>_<output>` (y_train_cls, y_train_box)."""
    if stem in arrays:
        return arrays[stem]
    named = {k[len(stem) + 1:]: v for k, v in arrays.items() if k.startswith(stem + "_") and len(k) > len(stem) + 1}
    return named or None


def load_npz(path: PathLike) -> Dataset:
    """`.npz` with x_train/y_train (+ optional x_test/y_test), or a single x/y pair; a network with
    several outputs reads y_train_<output> (y_test_<output>, y_<output>) per output instead of y_train."""
    arrays = read_npz(path)
    where = str(path)
    if "x_train" in arrays and _targets(arrays, "y_train") is not None:
        train = as_split(arrays["x_train"], _targets(arrays, "y_train"), where)
        test = None
        if "x_test" in arrays and _targets(arrays, "y_test") is not None:
            test = as_split(arrays["x_test"], _targets(arrays, "y_test"), where)
        return Dataset(where, train, test)
    if "x" in arrays and "x_train" not in arrays and _targets(arrays, "y") is not None:
        return Dataset(where, as_split(arrays["x"], _targets(arrays, "y"), where))
    raise CnncError(f"'{path}' has arrays {sorted(arrays)}, but cnnc needs x_train and y_train "
                    "(optionally x_test and y_test), or x and y (y_train_NAME, y_NAME per output NAME)",
                    hint="rename the arrays when saving: numpy.savez(path, x_train=..., y_train=...)")


# ====================================================================== validation
