"""Stage 1 (dsl): the one bounded reader and the one safe writer, for every stage.

Everything cnnc reads from a user (source files, imports, data sets, images,
checkpoints, metrics) and everything it writes (modules, weights, diagrams,
checkpoints, metrics) goes through this module, so the rules hold everywhere:

- **Reading** opens only regular files (not FIFOs, devices, directories or
  `/proc` pseudo-files, whose size cannot be trusted), without blocking, and
  refuses a file larger than the caller's limit *before* reading it, so a
  `/dev/zero`, a FIFO with no writer or a 10 GB file never exhausts memory.
  Decompressors are given the same kind of cap (`bounded_inflate`).
- **Writing** goes to a temporary file in the target's directory, which is
  flushed, fsynced and renamed over the target (`os.replace`, atomic on one
  file system): a crash or a full disk leaves the old file or the new one,
  never a truncated mixture. A target that is one of the command's inputs is
  refused, and so is a target that is a symbolic link (it would be followed
  and its target overwritten).

Limits are declared once, in `LIMITS`; each has an environment variable that
raises it (docs/security.md lists them).
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import zlib
from pathlib import Path
from typing import IO, Iterable, Iterator

from .source import CnncError

MiB = 1 << 20
GiB = 1 << 30


# Every size limit, once: name -> (default, unit, what it bounds). docs/security.md lists them
# (a test keeps the two in step); CNNC_MAX_<NAME> in the environment replaces a default.
LIMITS: dict[str, tuple[int, str, str]] = {
    "source": (MiB, "bytes", "a .cnn source file or a file it imports"),
    "tokens": (100_000, "tokens", "tokens in one source file (the largest example has about 400)"),
    "data": (4 * GiB, "bytes", "a data set (.npz, IDX, .npy, an image folder), counted at float32 size"),
    "image": (256 * MiB, "bytes", "one image file, and its decoded float32 pixels (from the header)"),
    "checkpoint": (4 * GiB, "bytes", "a checkpoint, on disk and as its members declare"),
    "metrics": (64 * MiB, "bytes", "a metrics.jsonl file"),
    "model": (2 * GiB, "bytes", "an ONNX model given to `cnnc import`"),
}


def limit(name: str) -> int:
    """The limit `name` of LIMITS, replaced by the environment variable CNNC_MAX_<NAME>."""
    default, unit, _ = LIMITS[name]
    value = os.environ.get(f"CNNC_MAX_{name.upper()}")
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise CnncError(f"CNNC_MAX_{name.upper()}={value!r}: expected a whole number of {unit}") from None
    if n < 1:
        raise CnncError(f"CNNC_MAX_{name.upper()}={value!r}: must be positive")
    return n


def size_text(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def describe_path(path: str | os.PathLike) -> str:
    """A path as it may be quoted in a message: control characters escaped, long paths clipped."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return safe if len(safe) <= 200 else safe[:120] + "…" + safe[-60:]


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if err.errno == errno.ENAMETOOLONG:
        return "the path is too long"
    return (err.strerror or str(err)).lower()


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, what: str, max_bytes: int) -> Iterator[tuple[IO[bytes], int]]:
    """Open a regular file for reading, refusing anything else or anything over `max_bytes`.

    Yields `(binary file, size)`. The file is opened with O_NONBLOCK, so a FIFO
    never blocks; its type and size are taken from the open descriptor, so the
    check and the read see the same file.
    """
    shown = describe_path(path)
    try:
        if "\x00" in os.fspath(path):
            raise CnncError(f"{what} '{shown}': the path contains a NUL byte")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except CnncError:
        raise
    except FileNotFoundError:
        raise CnncError(f"{what} '{shown}' does not exist") from None
    except IsADirectoryError:
        raise CnncError(f"{what} '{shown}' is a directory, not a file") from None
    except PermissionError:
        raise CnncError(f"{what} '{shown}' cannot be read: permission denied") from None
    except (OSError, ValueError) as err:
        reason = _os_reason(err) if isinstance(err, OSError) else str(err)
        raise CnncError(f"{what} '{shown}' cannot be opened: {reason}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise CnncError(f"{what} '{shown}' is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise CnncError(f"{what} '{shown}' is not a regular file (a device, pipe or socket)",
                            hint="cnnc reads only regular files")
        if info.st_size > max_bytes:
            raise CnncError(f"{what} '{shown}' is {size_text(info.st_size)}, more than the limit of "
                            f"{size_text(max_bytes)}", hint="see docs/security.md to raise the limit")
        if shown.startswith("/proc/") or shown.startswith("/sys/"):
            raise CnncError(f"{what} '{shown}' is a kernel pseudo-file, not a file cnnc reads")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, info.st_size


def read_bytes(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """The whole content of a regular file of at most `max_bytes` (see `open_regular`)."""
    with open_regular(path, what, max_bytes) as (f, size):
        try:
            # read(n) allocates n bytes up front: ask for what fstat says (+1 to see growth), not the limit
            data = f.read(min(size, max_bytes) + 1)
            if len(data) > size:  # it grew after fstat: read on, still bounded by the limit
                data += f.read(max_bytes + 1 - len(data))
        except OSError as err:
            raise CnncError(f"{what} '{describe_path(path)}' cannot be read: {_os_reason(err)}") from None
    if len(data) > max_bytes:  # it grew while we read
        raise CnncError(f"{what} '{describe_path(path)}' is more than the limit of {size_text(max_bytes)}")
    return data


def bounded_inflate(chunks: Iterable[bytes], what: str, max_bytes: int, wbits: int = 15 | 32) -> bytes:
    """Decompress zlib/gzip data, refusing output beyond `max_bytes` as soon as it is reached."""
    d = zlib.decompressobj(wbits)
    out = bytearray()
    try:
        for chunk in chunks:
            out += d.decompress(chunk, max_bytes + 1 - len(out))
            if len(out) > max_bytes or d.unconsumed_tail:
                raise CnncError(f"{what} inflates to more than {size_text(max_bytes)}",
                                hint="a file this large is refused as a possible decompression bomb; "
                                     "see docs/security.md to raise the limit")
        out += d.flush()
    except zlib.error as err:
        raise CnncError(f"{what} is not valid compressed data ({err})") from None
    if len(out) > max_bytes:
        raise CnncError(f"{what} inflates to more than {size_text(max_bytes)}")
    return bytes(out)


# ------------------------------------------------------------------ writing
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name one file: an existing file by identity, else by resolved path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def check_output(path: str | os.PathLike, what: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output path that is an input of the command, a symlink, or a directory."""
    target = Path(path)
    shown = describe_path(target)
    if "\x00" in str(target):
        raise CnncError(f"{what} '{shown}': the path contains a NUL byte")
    for source in inputs:
        if source is not None and same_file(target, source):
            raise CnncError(f"{what} '{shown}' is also an input of this command; it would be overwritten",
                            hint="choose another output name")
    if target.is_symlink():
        raise CnncError(f"{what} '{shown}' is a symbolic link; cnnc does not write through links",
                        hint="remove the link or choose another output name")
    if target.is_dir():
        raise CnncError(f"{what} '{shown}' is a directory")
    return target


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open directories; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    """The permissions of the replaced file, or what the umask gives a new file (0666 & ~umask)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str, inputs: Iterable[str | os.PathLike] = (),
                  mode: str = "wb") -> Iterator[IO]:
    """Write a file safely: yield a temporary file beside `path`, then fsync and rename it over `path`.

    On any error (full disk, a bug, Ctrl-C) the temporary file is removed and
    `path` is untouched. Disk errors become a `CnncError` naming the file.
    """
    target = check_output(path, what, inputs)
    directory = target.parent if str(target.parent) else Path(".")
    shown = describe_path(target)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name[:100]}.", suffix=".tmp")
    except OSError as err:
        raise CnncError(f"cannot write {what} '{shown}': {_os_reason(err)}") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _mode_for(target))  # mkstemp makes 0600; the file gets the mode a plain write would
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        if target.is_symlink():  # made a link while we wrote: still never write through it
            raise CnncError(f"{what} '{shown}' became a symbolic link while cnnc wrote it")
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise CnncError(f"cannot write {what} '{shown}': {_os_reason(err)}") from None
        raise
    _fsync_dir(directory)


def write_atomic(path: str | os.PathLike, data: bytes | str, what: str,
                 inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Write bytes or text (UTF-8) to `path` through `atomic_output`."""
    with atomic_output(path, what, inputs, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
