"""Stage 3 (runtime): crash-safe, pickle-free checkpoints — the one home of their layout.

A checkpoint is a zip of `.npy` members, one per array, written with
`allow_pickle=False` so loading never executes code, plus a `__meta__` member:
the JSON-encoded metadata dict as a uint8 array. The layout is spelled here
and nowhere else: a network parameter `conv.weight` is the member
`param/conv.weight`, optimizer state `conv.weight/exp_avg` is
`opt/conv.weight/exp_avg`. The typed API is `save_training_state` /
`load` (-> `Checkpoint(params, optimizer, meta)`) / `fit` (does this
checkpoint fit these parameters?); `save_checkpoint` / `load_checkpoint` are
the raw array-and-meta form underneath.

Saving goes through `cnnc.dsl.files.atomic_output`: a temporary file in the
target's directory, fsynced, renamed over the target, the directory fsynced,
so a crash leaves the old checkpoint or the new one, never a mixture; the
temporary file a killed writer leaves behind is removed by the next process
that writes into that folder (`files.remove_stale_temporaries`). Loading reads only a regular file of bounded size, checks the
zip directory and every `.npy` header against the declared sizes before
inflating anything, and turns every kind of bad file (missing, unreadable,
not a zip, truncated, corrupt, containing pickles or strings, lying about its
sizes, with meta of the wrong types) into a one-line `CnncError` naming it.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..dsl import files
from ..dsl.source import CnncError

META_KEY = "__meta__"
FORMAT = "cnnc-checkpoint-1"
PARAM = "param/"        # prefix of a network parameter's member
OPT = "opt/"            # prefix of an optimizer state member
NUMERIC_KINDS = "biuf"  # booleans, integers, floats: nothing else is a parameter
META_LIMIT = 64 * files.MiB


# ------------------------------------------------------------------ meta
def _json_default(value: Any) -> Any:
    """Let numpy scalars and small arrays appear in metadata (epoch counters, lr, stats)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint metadata cannot hold a {type(value).__name__}")


def encode_meta(meta: Mapping[str, Any]) -> np.ndarray:
    # allow_nan: plateau's initial "best" is inf; Python's json reads its own Infinity back.
    text = json.dumps(dict(meta), default=_json_default, allow_nan=True, sort_keys=True)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def decode_meta(raw: np.ndarray) -> dict[str, Any]:
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"metadata must be UTF-8 bytes, got a {raw.dtype} array of shape {list(raw.shape)}")
    return json.loads(raw.tobytes().decode("utf-8"))


# ------------------------------------------------------------------ saving
def _write_archive(f: Any, arrays: Mapping[str, np.ndarray], compress: bool) -> None:
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=mode, allowZip64=True) as zf:
        for key, value in arrays.items():
            # force_zip64: members may exceed 2 GiB and the size is unknown until written.
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _validate(arrays: Mapping[str, np.ndarray]) -> None:
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or key == META_KEY:
            raise ValueError(f"invalid checkpoint array name {key!r}")
        if np.asanyarray(value).dtype.hasobject:
            raise ValueError(f"checkpoint array '{key}' has dtype object, which would need pickle")


def save_checkpoint(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any], *, compress: bool = False) -> None:
    """Atomically write `arrays` and JSON `meta` to `path` (used as given, no suffix added)."""
    path = Path(path)
    _validate(arrays)
    members = dict(arrays)
    members[META_KEY] = encode_meta(meta)  # encode first: a bad meta must not touch the disk
    with files.atomic_output(path, "checkpoint") as f:
        _write_archive(f, members, compress)


def save_training_state(path: str | os.PathLike, params: Mapping[str, np.ndarray],
                        optimizer_state: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write a network's parameters, its optimizer's state and the run's meta; refuses non-finite values."""
    for key, value in list(params.items()) + list(optimizer_state.items()):
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise CnncError(f"refusing to write checkpoint '{files.describe_path(path)}': "
                            f"'{key}' holds NaN or infinite values")
    arrays = {PARAM + k: v for k, v in params.items()}
    arrays.update({OPT + k: v for k, v in optimizer_state.items()})
    save_checkpoint(path, arrays, {"format": FORMAT, **meta})


# ------------------------------------------------------------------ loading
def _corrupt(path: Any, error: BaseException | str) -> CnncError:
    return CnncError(f"checkpoint '{files.describe_path(path)}' is corrupt or truncated ({error})",
                     hint="restore it from a backup, or train again without resuming")


NPY_HEADER_LIMIT = 10_000  # bytes of an .npy header (NumPy's own default limit)


def npy_header(member, name):
    """The dtype text, Fortran order, shape and data offset of the .npy array at the start of `member`
    (a binary file), reading its header only; anything else is a ValueError naming `name`.

    Plain Python, and a contract: `cnnc export --to torch` copies it (with `check_npy_size`) into the
    loader it generates (export/torch_module.py), so both loaders check a member alike, from its header."""
    import ast
    magic = member.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
        raise ValueError(f"member '{name}' is not an .npy array")
    width = 2 if magic[6] == 1 else 4
    length = int.from_bytes(member.read(width), "little")
    if length > NPY_HEADER_LIMIT:
        raise ValueError(f"member '{name}' has a header of {length:,} bytes")
    try:
        header = ast.literal_eval(member.read(length).decode("utf-8" if magic[6] == 3 else "latin1"))
    except (SyntaxError, ValueError, TypeError, UnicodeDecodeError, MemoryError, RecursionError):
        raise ValueError(f"member '{name}' has a malformed .npy header") from None
    shape = header.get("shape") if isinstance(header, dict) else None
    if not isinstance(header, dict) or sorted(header) != ["descr", "fortran_order", "shape"] \
            or not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) \
            or not isinstance(header["fortran_order"], bool):
        raise ValueError(f"member '{name}' has a malformed .npy header")
    return header["descr"], header["fortran_order"], shape, 8 + width + length


def check_npy_size(name, shape, itemsize, offset, size):
    """The array a header declares must be exactly the member's `size` bytes: checked before any of the
    data is read (copied into generated loaders with `npy_header`)."""
    count = 1
    for d in shape:
        count *= d
    if offset + count * itemsize != size:
        raise ValueError(f"member '{name}' declares {offset + count * itemsize} bytes of array but holds {size}")


def _pickled(path: Any) -> CnncError:
    return CnncError(f"checkpoint '{files.describe_path(path)}' contains pickled objects; cnnc refuses to "
                     "load them", hint="only load checkpoints written by cnnc")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Any) -> np.ndarray:
    """One member, its header checked (`npy_header`, `check_npy_size`) before its data is read."""
    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    with zf.open(info) as member:
        try:
            descr, fortran, shape, offset = npy_header(member, name)
            dtype = np.dtype(descr)
        except (ValueError, TypeError) as err:
            raise _corrupt(path, err) from None
        if dtype.hasobject:
            raise _pickled(path)
        try:
            check_npy_size(name, shape, dtype.itemsize, offset, info.file_size)
        except ValueError as err:
            raise _corrupt(path, err) from None
        data = bytearray(info.file_size - offset)
        got = 0
        while got < len(data) and (n := member.readinto(memoryview(data)[got:])):
            got += n
    if got != len(data):
        raise _corrupt(path, f"member '{name}' ends early")
    array = np.frombuffer(data, dtype)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def load_checkpoint(path: str | os.PathLike, arrays_too: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint` -> (arrays, meta); never unpickles.
    `arrays_too=False` reads the meta alone (the arrays come back empty)."""
    shown = files.describe_path(path)
    cap = files.limit("checkpoint")
    with files.open_regular(path, "checkpoint", cap) as (f, size):
        try:
            magic = f.read(4)
            if not magic:
                raise _corrupt(path, "empty file")
            if magic != b"PK\x03\x04":  # np.load would otherwise guess "pickle" for any odd file
                raise CnncError(f"checkpoint '{shown}' is not an .npz archive",
                                hint="a checkpoint is the .npz file `cnnc run` writes")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                infos = zf.infolist()
                declared = sum(i.file_size for i in infos)
                if declared > cap:
                    raise CnncError(f"checkpoint '{shown}' declares {declared:,} bytes of arrays, more than "
                                    f"the limit of {cap:,}", hint="see docs/security.md to raise the limit "
                                                                 "(CNNC_MAX_CHECKPOINT)")
                arrays = {}
                for info in infos:
                    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    if arrays_too or key == META_KEY:
                        arrays[key] = _read_member(zf, info, path)
        except CnncError:
            raise
        except PermissionError:
            raise CnncError(f"checkpoint '{shown}' cannot be read: permission denied") from None
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError,
                NotImplementedError) as e:
            raise _corrupt(path, e) from None
    if META_KEY not in arrays:
        raise CnncError(f"'{shown}' is an .npz archive but not a cnnc checkpoint (no {META_KEY} entry)")
    try:
        meta = decode_meta(arrays.pop(META_KEY))
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise _corrupt(path, e) from None
    if not isinstance(meta, dict):
        raise _corrupt(path, "metadata is not a JSON object")
    return arrays, meta


@dataclass(frozen=True)
class Checkpoint:
    """A loaded training checkpoint: parameters, optimizer state and meta, checked."""

    path: str
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def network(self) -> str | None:
        name = self.meta.get("network")
        return name if isinstance(name, str) else None

    @property
    def epoch(self) -> int:
        return self._count("epoch")

    @property
    def bad_epochs(self) -> int:
        return self._count("bad_epochs")

    @property
    def best(self) -> float | None:
        value = self.meta.get("best", None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self._bad_meta("best", "a number or null", value)
        return value

    @property
    def history(self) -> list[dict]:
        value = self.meta.get("history", [])
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise self._bad_meta("history", "a list of records", value)
        return value

    @property
    def schedule(self) -> dict[str, float]:
        value = self.meta.get("schedule") or {}
        if not isinstance(value, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            raise self._bad_meta("schedule", "an object of numbers", value)
        return value

    @property
    def preprocess(self) -> list[dict]:
        """The preprocessing records the trainer applied (checked by runtime.preprocess)."""
        value = self.meta.get("preprocess") or []
        if isinstance(value, dict):  # written before the records had their own key
            value = value.get("preprocess") or []
        return value

    @property
    def classes(self) -> list[str] | None:
        """The class names the trainer recorded (label order), or None."""
        value = self.meta.get("classes")
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise self._bad_meta("classes", "a list of names or null", value)
        return value

    @property
    def image_size(self) -> tuple[int, int] | None:
        """The (height, width) training resized its images to (`images(size = ...)`), or None."""
        value = self.meta.get("image_size")
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535 for v in value):
            raise self._bad_meta("image_size", "[height, width] or null", value)
        return (value[0], value[1])

    def _count(self, key: str) -> int:
        if key not in self.meta:
            raise CnncError(f"checkpoint '{files.describe_path(self.path)}' has no '{key}' in its meta",
                            hint="it was not written by `cnnc run`")
        value = self.meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad_meta(key, "a non-negative integer", value)
        return value

    def _bad_meta(self, key: str, expected: str, value: Any) -> CnncError:
        shown = json.dumps(value)[:40] if _jsonable(value) else type(value).__name__
        return CnncError(f"checkpoint '{files.describe_path(self.path)}': meta '{key}' must be {expected}, "
                         f"got {shown}")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def load(path: str | os.PathLike, arrays_too: bool = True) -> Checkpoint:
    """A checkpoint written by `save_training_state`; arrays that are not numbers are refused.
    `arrays_too=False`: its meta alone (what the trainer recorded), without reading the arrays."""
    arrays, meta = load_checkpoint(path, arrays_too)
    for key, value in arrays.items():
        if value.dtype.kind not in NUMERIC_KINDS:
            raise CnncError(f"checkpoint '{files.describe_path(path)}': '{key}' has dtype {value.dtype}, "
                            "not numbers", hint="only load checkpoints written by cnnc")
    params = {k[len(PARAM):]: v for k, v in arrays.items() if k.startswith(PARAM)}
    optimizer = {k[len(OPT):]: v for k, v in arrays.items() if k.startswith(OPT)}
    return Checkpoint(os.fspath(path), params, optimizer, meta)


def fit(params: Checkpoint | Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
        source: str = "checkpoint", network: str = "this network") -> dict[str, np.ndarray]:
    """The checkpoint's arrays for `expected`'s keys, in their dtypes; refuses what does not fit."""
    arrays = params.params if isinstance(params, Checkpoint) else params
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise CnncError(f"{source} does not fit {network}: it has no '{missing[0]}'"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                        hint="was it written for another network or another version of this file?")
    out: dict[str, np.ndarray] = {}
    for k, v in expected.items():
        a = np.asarray(arrays[k])
        if a.shape != v.shape:
            raise CnncError(f"{source} does not fit {network}: '{k}' has shape {list(a.shape)}, "
                            f"the network needs {list(v.shape)}")
        if a.dtype.kind not in NUMERIC_KINDS:
            raise CnncError(f"{source} does not fit {network}: '{k}' has dtype {a.dtype}, not numbers")
        out[k] = a.astype(v.dtype, copy=False)
    return out
