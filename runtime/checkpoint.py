"""Stage 3 (runtime): crash-safe, pickle-free checkpoints as `.npz` archives.

A checkpoint is a zip of `.npy` members, one per array, written with
`allow_pickle=False` so loading never executes code, plus a `__meta__` member:
the JSON-encoded metadata dict as a uint8 array. Saving is atomic: the archive
is written to a temporary file in the target's directory, flushed and fsynced,
renamed over the target with `os.replace` (atomic on POSIX and Windows within
one file system), and then the directory is fsynced so the rename itself
survives a power cut. A crash at any moment therefore leaves either the old
checkpoint or the new one, never a mixture; the `.<name>.*.tmp` file a killed
writer leaves behind is removed by the next save to the same path. Loading
turns every kind of bad file (missing, truncated, corrupt, not a checkpoint,
containing pickles) into a `CnncError` that names the file.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..dsl.source import CnncError

META_KEY = "__meta__"


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
    return json.loads(np.asarray(raw, dtype=np.uint8).tobytes().decode("utf-8"))


def _write_archive(f: Any, arrays: Mapping[str, np.ndarray], compress: bool) -> None:
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=mode, allowZip64=True) as zf:
        for key, value in arrays.items():
            # force_zip64: members may exceed 2 GiB and the size is unknown until written.
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open directories; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; nothing better is possible
    finally:
        os.close(fd)


def _validate(arrays: Mapping[str, np.ndarray]) -> None:
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or key == META_KEY:
            raise ValueError(f"invalid checkpoint array name {key!r}")
        if np.asanyarray(value).dtype.hasobject:
            raise ValueError(f"checkpoint array '{key}' has dtype object, which would need pickle")


def _remove_stale_temps(directory: Path, name: str) -> None:
    """Delete temp files that killed writers of this same checkpoint left behind."""
    prefix = f".{name}."
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            try:
                (directory / entry).unlink()
            except OSError:
                pass  # vanished or not ours to delete: harmless


def save_checkpoint(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any], *, compress: bool = False) -> None:
    """Atomically write `arrays` and JSON `meta` to `path` (used as given, no suffix added)."""
    path = Path(path)
    _validate(arrays)
    members = dict(arrays)
    members[META_KEY] = encode_meta(meta)  # encode first: a bad meta must not touch the disk
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(directory, path.name)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CnncError(f"cannot write checkpoint '{path}': {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, members, compress)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # the old checkpoint was never touched
        if isinstance(e, OSError):
            raise CnncError(f"cannot write checkpoint '{path}': {e.strerror or e}") from None
        raise
    _fsync_dir(directory)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint` -> (arrays, meta); never unpickles."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":  # np.load would otherwise guess "pickle" for any odd file
            raise _corrupt(path, ValueError("not an .npz archive" if magic else "empty file"))
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}  # read everything now: CRC errors surface here
    except FileNotFoundError:
        raise CnncError(f"checkpoint '{path}' does not exist") from None
    except IsADirectoryError:
        raise CnncError(f"checkpoint '{path}' is a directory, not a file") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CnncError(f"checkpoint '{path}' contains pickled objects; cnnc refuses to load them",
                            hint="only load checkpoints written by cnnc") from None
        raise _corrupt(path, e) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise _corrupt(path, e) from None
    if META_KEY not in arrays:
        raise CnncError(f"'{path}' is an .npz archive but not a cnnc checkpoint (no {META_KEY} entry)")
    try:
        meta = decode_meta(arrays.pop(META_KEY))
    except (UnicodeDecodeError, ValueError) as e:
        raise _corrupt(path, e) from None
    if not isinstance(meta, dict):
        raise _corrupt(path, ValueError("metadata is not a JSON object"))
    return arrays, meta


def _corrupt(path: Path, error: BaseException) -> CnncError:
    return CnncError(f"checkpoint '{path}' is corrupt or truncated ({error})",
                     hint="restore it from a backup, or train again without resuming")
