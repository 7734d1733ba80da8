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
  and its target overwritten). A whole folder is written the same way
  (`atomic_directory`: staged beside it, renamed into place).
- **Temporary names say who writes them**: `.NAME.PID.RANDOM.tmp`, and the
  writer holds an `flock` on the file (or folder) until it is renamed. A
  process killed mid-write (kill -9, power cut) leaves its temporary behind;
  the first write of any later process into that folder removes every such
  temporary whose writer is gone — its pid is not a live process *and* its
  lock is free (the pid guards the instant between creating and locking; the
  lock guards against a reused pid and writers in other pid namespaces).

Limits are declared once, in `LIMITS`; each has an environment variable that
raises it (docs/security.md lists them).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import sys
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
    "activations": (GiB, "bytes", "one image through a network (apply, predict, viz, the explorer): its pixels, "
                                  "the tensors kept and the largest layer's working copy, from the compiled "
                                  "network before the image is decoded"),
    "checkpoint": (4 * GiB, "bytes", "a checkpoint, on disk and as its members declare"),
    "metrics": (64 * MiB, "bytes", "a metrics.jsonl file"),
    "download_seconds": (3600, "seconds", "one download of a standard data set's file, request to last byte"),
    "download_stall": (30, "seconds", "a stretch of a download below 1 KiB/s, and a read that gets nothing"),
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


# ------------------------------------------------------------------ temporaries of dead writers
# `.NAME.PID.RANDOM.tmp`: RANDOM is tempfile's (8 characters of [a-z0-9_]).
_TEMPORARY = re.compile(r"^\..*\.(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp$")
_swept: set[str] = set()   # folders this process has cleared already


def _temporary_prefix(target: Path) -> str:
    return f".{target.name[:100]}.{os.getpid()}."


def _lock(fd: int, wait: bool = True) -> bool:
    """Take an exclusive flock on `fd` (released when the process ends); False if another holds it.
    Without flock (Windows) there is no lock, and the pid alone tells a dead writer."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _process_gone(pid: int) -> bool:
    """No live process has this pid (a zombie, dead but not yet reaped, counts as gone)."""
    if pid in (0, os.getpid()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # alive (another user's), or not a pid at all
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _remove_if_abandoned(entry: Path) -> None:
    """Delete a temporary file or folder if nobody holds its lock (its writer died)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(entry, flags)
    except OSError:
        return  # vanished, a link, or not ours to open
    try:
        if not _lock(fd, wait=False):
            return  # a live writer holds it
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            shutil.rmtree(entry, ignore_errors=True)
        elif stat.S_ISREG(kind):
            with contextlib.suppress(OSError):
                os.unlink(entry)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Remove the temporaries that killed writers left in `directory` (once per folder and process)."""
    folder = Path(directory)
    key = os.path.abspath(folder)
    if key in _swept:
        return
    _swept.add(key)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY.match(name)
        if match and _process_gone(int(match["pid"])):
            _remove_if_abandoned(folder / name)


# ------------------------------------------------------------------ atomic writes
def _folder_of(target: Path, what: str) -> Path:
    """The target's folder, created if need be and cleared of dead writers' temporaries."""
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CnncError(f"cannot write {what} '{describe_path(target)}': {_os_reason(err)}") from None
    remove_stale_temporaries(directory)
    return directory


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str, inputs: Iterable[str | os.PathLike] = (),
                  mode: str = "wb") -> Iterator[IO]:
    """Write a file safely: yield a temporary file beside `path`, then fsync and rename it over `path`.

    On any error (full disk, a bug, Ctrl-C) the temporary file is removed and
    `path` is untouched. Disk errors become a `CnncError` naming the file. The
    temporary is locked until it is renamed (see the module docstring).
    """
    target = check_output(path, what, inputs)
    directory = _folder_of(target, what)
    shown = describe_path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(target), suffix=".tmp")
    except OSError as err:
        raise CnncError(f"cannot write {what} '{shown}': {_os_reason(err)}") from None
    tmp = Path(tmp_name)
    lock = os.dup(fd)  # held until the rename: closing the file must not free the temporary
    try:
        _lock(lock)
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
    finally:
        os.close(lock)
    _fsync_dir(directory)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Write a folder safely: yield an empty staging folder beside `path`, renamed to `path` at the end.

    `path` must not exist or be an empty folder (a rename replaces only that). On
    any error the staging folder is removed and `path` is untouched; it is
    locked like `atomic_output`'s temporaries, so a killed writer's folder is
    removed by a later write there.
    """
    target = Path(path)
    if "\x00" in str(target):
        raise CnncError(f"{what} '{describe_path(target)}': the path contains a NUL byte")
    directory = _folder_of(target, what)
    shown = describe_path(target)
    try:
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=_temporary_prefix(target), suffix=".tmp"))
        lock = os.open(staging, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise CnncError(f"cannot write {what} '{shown}': {_os_reason(err)}") from None
    try:
        _lock(lock)
        yield staging
        os.replace(staging, target)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise CnncError(f"cannot write {what} '{shown}': {_os_reason(err)}") from None
        raise
    finally:
        os.close(lock)
    _fsync_dir(directory)


def write_atomic(path: str | os.PathLike, data: bytes | str, what: str,
                 inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Write bytes or text (UTF-8) to `path` through `atomic_output`."""
    with atomic_output(path, what, inputs, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def user_cache(kind: str) -> Path:
    """cnnc's folder of `kind` (data sets, compiled kernels) in the user's cache directory
    (XDG_CACHE_HOME or ~/.cache, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cnnc" / kind
