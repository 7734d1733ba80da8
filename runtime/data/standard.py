"""Stage 3 (runtime), data: the standard data sets by name — embedded, or downloaded, verified, unpacked, cached.

`data = mnist10k` is the 10,000-digit MNIST sample shipped inside cnnc
(`load_mnist10k`). `data = mnist | fashion_mnist | cifar10 | cifar100` names a public data set.
`STANDARD` is the one table of them: where each file lives, its size, SHA-256
and MD5 (both are checked: the SHA-256 is the guard, the MD5 is the value the
publishers and torchvision list), and how to read it. On first use every file
is downloaded into the cache (`CNNC_DATA`, default the user's cache directory,
e.g. ~/.cache/cnnc/data), to a temporary name beside its final one; only a file
whose size and both digests match is renamed into place, so the cache never
holds a half-written or unverified file and a second run downloads nothing.
`CNNC_DATA_MIRROR` replaces the official locations with `MIRROR/NAME/FILE`
(http, https or file; tests serve files from 127.0.0.1 that way). A transfer
is bounded (`_Watch`, `_receive`): at most the published size is read, within
a deadline and above a minimum rate (CNNC_MAX_DOWNLOAD_SECONDS and
CNNC_MAX_DOWNLOAD_STALL, dsl/files.py LIMITS), and a `file:` mirror is read
like any user file (regular files only, opened without blocking).

MNIST and Fashion-MNIST are gzipped IDX files, read in place by
`array_files.read_idx`. CIFAR comes as the publisher's *binary* tarballs (the Python
versions are pickles, which cnnc never unpickles): the archive is streamed
member by member, inflated to at most what its expected members take, and
only those are taken, each a regular file with a plain name (no absolute
path, no `..`, no link) whose size in its tar header is whole records, at
most the published number; they are renamed into the cache together. A
download that fails (offline, a proxy, a truncated transfer, a mirror too
slow) says which file to fetch and where to put it.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import importlib.resources
import io
import os
import socket
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .array_files import load_idx
from .containers import Dataset, Split, as_split, data_limit
from ..progress import Progress, wanted

CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name at the source, size in bytes and digests."""

    name: str
    size: int
    sha256: str
    md5: str


@dataclass(frozen=True)
class StandardDataset:
    """A named public data set: where its files live and how they are read."""

    name: str
    base_url: str                       # the official location, without the file name
    files: tuple[RemoteFile, ...]
    reader: str                         # "idx" or "cifar"
    classes: tuple[str, ...] = ()
    # CIFAR: the folder inside the tarball, its training and test members, the label bytes per record
    folder: str = ""
    train_members: tuple[str, ...] = ()
    test_members: tuple[str, ...] = ()
    label_bytes: int = 1
    names_member: str | None = None     # a text member with one class name per line
    member_records: int = 0             # the most records one data member holds (the published count)

    @property
    def members(self) -> tuple[str, ...]:
        return self.train_members + self.test_members + ((self.names_member,) if self.names_member else ())


_MNIST_CLASSES = tuple(str(i) for i in range(10))
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The published digests. MD5: torchvision's resources and the CIFAR page; SHA-256: torchvision's
# prototype datasets (MNIST, Fashion-MNIST) and independent downloaders of the CIFAR binaries.
STANDARD: dict[str, StandardDataset] = {d.name: d for d in (
    StandardDataset("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist", (
        RemoteFile("train-images-idx3-ubyte.gz", 9912422,
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", 28881,
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                   "d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 1648877,
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   "9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 4542,
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                   "ec29112dd5afa0611ce80d1b7f02629c"),
    ), "idx", _MNIST_CLASSES),
    StandardDataset("fashion_mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com", (
        RemoteFile("train-images-idx3-ubyte.gz", 26421880,
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile("train-labels-idx1-ubyte.gz", 29515,
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                   "25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 4422102,
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                   "bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 5148,
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                   "bb300cfdad3c16e7a12a480ee83cd310"),
    ), "idx", _FASHION_CLASSES),
    StandardDataset("cifar10", "https://www.cs.toronto.edu/~kriz", (
        RemoteFile("cifar-10-binary.tar.gz", 170052171,
                   "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                   "c32a1d4ab5d03f1284b67883e8d87530"),
    ), "cifar", _CIFAR10_CLASSES, folder="cifar-10-batches-bin",
        train_members=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test_members=("test_batch.bin",),
        member_records=10_000),
    StandardDataset("cifar100", "https://www.cs.toronto.edu/~kriz", (
        RemoteFile("cifar-100-binary.tar.gz", 168513733,
                   "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                   "03b5dce01913d631647c71ecec9e9cb8"),
    ), "cifar", folder="cifar-100-binary", train_members=("train.bin",), test_members=("test.bin",),
        label_bytes=2, names_member="fine_label_names.txt", member_records=50_000),
)}

CIFAR_PIXELS = 3 * 32 * 32
NAMES_LIMIT = 1 << 20       # bytes of a class-names member
ARCHIVE_SLACK = 1 << 20     # inflated bytes of an archive beyond its members' (tar headers, a readme)


# ------------------------------------------------------------------ places
def cache_root() -> Path:
    """CNNC_DATA, else `data` in cnnc's user cache folder (dsl/files.py `user_cache`)."""
    given = os.environ.get("CNNC_DATA")
    return Path(given).expanduser() if given else files.user_cache("data")


def file_url(ds: StandardDataset, remote: RemoteFile) -> str:
    """The official location, or MIRROR/NAME/FILE when CNNC_DATA_MIRROR is set."""
    mirror = os.environ.get("CNNC_DATA_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{ds.name}/{remote.name}"
    return f"{ds.base_url}/{remote.name}"


# ------------------------------------------------------------------ download
class _Progress:
    """A download's display (runtime/progress.py): a bar on a terminal or in a notebook, two plain
    lines otherwise (logs, pipes)."""

    def __init__(self, label: str, total: int | None, stream=None):
        self.label, self.done = label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.bar = Progress(f"downloading {label}", total or None, shown=wanted(self.stream), unit="B",
                            byte_sizes=True, stream=self.stream, out=self.stream)
        self.start = time.perf_counter()
        if not self.bar.shown:
            self.bar.write(f"downloading {label}")

    def update(self, done: int) -> None:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        total = self.bar.bar.total if self.bar.bar is not None else None
        size = f"{files.size_text(done)} of {files.size_text(total)}" if total else files.size_text(done)
        self.bar.update(done - self.done, {"size": size, "rate": f"({files.size_text(int(done / seconds))}/s)"})
        self.done = done

    def close(self) -> None:
        """End the bar (a broken transfer: its last state stays, and the error starts a line of its own)."""
        self.bar.close(interrupted=True)

    def finish(self, done: int) -> None:
        seconds = time.perf_counter() - self.start
        self.bar.close()
        self.bar.write(f"downloaded {self.label}: {files.size_text(done)} in {seconds:.1f}s, checksums verified")


def _offline_error(ds: StandardDataset, remote: RemoteFile, url: str, target: Path, reason: str) -> CnncError:
    return CnncError(f"cannot download {ds.name} file '{remote.name}' from {url}: {reason}",
                     hint=f"fetch {url} by hand and put it at {files.describe_path(target)} "
                          f"(SHA-256 {remote.sha256}); or set CNNC_DATA to a folder that holds it")


# ------------------------------------------------------------------ the transfer's bounds
MIN_RATE = 1024  # bytes a second: a transfer slower than this over a whole stall window is cut
SCHEMES = ("http", "https", "file")


class _Watch:
    """The deadline and the minimum rate of one transfer (docs/security.md).

    A thread looks at the transfer a few times a second: past `CNNC_MAX_DOWNLOAD_SECONDS`, or after
    `CNNC_MAX_DOWNLOAD_STALL` seconds in which fewer than MIN_RATE bytes a second arrived (from the
    request on, so a server that trickles its headers is cut too), it shuts the connection's sockets
    down, which wakes the blocked read; the reader then raises `reason`. Every socket read also times
    out after one stall window."""

    def __init__(self):
        self.deadline, self.window = files.limit("download_seconds"), files.limit("download_stall")
        self.start = self.mark = time.monotonic()
        self.done = self.mark_done = 0     # bytes received (set by the reader), and at the window's start
        self.reason: str | None = None
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cnnc-download-watch", daemon=True)
        self._thread.start()

    def attach(self, sock: socket.socket) -> None:
        self.sockets.append(sock)
        if self.reason is not None:
            self._cut()

    def check(self, now: float) -> str | None:
        """Why the transfer must stop at `now`, or None."""
        if now - self.start > self.deadline:
            return (f"it took more than {self.deadline:,} seconds (received {self.done:,} bytes); "
                    f"CNNC_MAX_DOWNLOAD_SECONDS raises the deadline")
        if now - self.mark >= self.window:
            got, seconds = self.done - self.mark_done, now - self.mark
            if got < MIN_RATE * seconds:
                return (f"{got:,} bytes arrived in {seconds:.0f} s ({got / seconds:.1f} bytes/s), below the "
                        f"minimum rate of {files.size_text(MIN_RATE)}/s; CNNC_MAX_DOWNLOAD_STALL allows a slow "
                        f"stretch to last longer")
            self.mark, self.mark_done = now, self.done
        return None

    def _run(self) -> None:
        while not self._stop.wait(min(0.25, self.window / 4)):
            reason = self.check(time.monotonic())
            if reason is not None:
                self.reason = reason
                self._cut()
                return

    def _cut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Watched:
    """An HTTP(S) handler whose connections hand their socket to a `_Watch`."""

    def __init__(self, watch: _Watch, **kwargs):
        super().__init__(**kwargs)
        self.watch = watch

    def do_open(self, http_class, req, **kwargs):
        watch = self.watch

        class Connection(http_class):
            def connect(self):
                super().connect()
                watch.attach(self.sock)

        return super().do_open(Connection, req, **kwargs)


class _WatchedHTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    """urllib's opener for http and https only (a redirect elsewhere, ftp or file, is refused),
    every connection watched."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _WatchedHTTP(watch),
                    _WatchedHTTPS(watch), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


@contextlib.contextmanager
def _source(url: str, what: str, watch: _Watch) -> Iterator[tuple[object, int | None]]:
    """The file at `url` as (a reader, the size it declares or None). A `file:` URL is read like any
    user file (dsl/files.py: regular files only, opened without blocking); http and https through
    urllib, each read timing out after one stall window."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in SCHEMES:
        raise CnncError(f"CNNC_DATA_MIRROR: cannot download from '{files.describe_path(url)}': "
                        f"the scheme must be {', '.join(SCHEMES[:-1])} or {SCHEMES[-1]}")
    if parsed.scheme == "file":
        with files.open_regular(urllib.request.url2pathname(parsed.path), what, sys.maxsize) as (f, size):
            yield f, size
        return
    request = urllib.request.Request(url, headers={"User-Agent": "cnnc"})
    with _opener(watch).open(request, timeout=watch.window) as response:
        declared = response.headers.get("Content-Length")
        yield response, int(declared) if declared and declared.isdigit() else None


def download(ds: StandardDataset, remote: RemoteFile, target: Path) -> None:
    """Fetch one file to `target`: temporary name, size and digests checked, then renamed. The transfer
    is bounded: at most the published size is read, within a deadline and above a minimum rate."""
    url = file_url(ds, remote)
    watch = _Watch()
    try:
        _transfer(ds, remote, url, target, watch)
    finally:
        watch.close()


def _transfer(ds: StandardDataset, remote: RemoteFile, url: str, target: Path, watch: _Watch) -> None:
    try:
        with _source(url, f"{ds.name} mirror file", watch) as (response, declared):
            if declared is not None and declared != remote.size:
                raise _offline_error(ds, remote, url, target, f"it declares {declared:,} bytes, the published "
                                                              f"file has {remote.size:,}")
            _receive(ds, remote, url, target, watch, response, declared is not None)
    except CnncError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise _offline_error(ds, remote, url, target, watch.reason or _reason(err)) from None


def _receive(ds: StandardDataset, remote: RemoteFile, url: str, target: Path, watch: _Watch, response,
             sized: bool) -> None:
    """Read at most the published size (one byte more tells a longer file) into the temporary file."""
    with files.atomic_output(target, f"{ds.name} file") as out:
        total = remote.size
        progress = _Progress(f"{ds.name}: {remote.name}", total)
        sha, md5, done = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        read = getattr(response, "read1", response.read)  # what has arrived, not a whole chunk: the watch
        try:                                                # counts bytes as they come
            while chunk := read(min(CHUNK, total + 1 - done)):
                done += len(chunk)
                watch.done = done
                if done > total:
                    raise _offline_error(ds, remote, url, target, f"it sends more than the published {total:,} bytes")
                sha.update(chunk)
                md5.update(chunk)
                out.write(chunk)
                progress.update(done)
        except (OSError, http.client.HTTPException) as err:
            raise _broke_off(ds, remote, url, target, done, total, progress, f" ({_reason(err)})",
                             watch.reason) from None
        if watch.reason is not None or sized and done < total:  # cut by the watch, or closed early
            raise _broke_off(ds, remote, url, target, done, total, progress, "", watch.reason)
        _verify(ds, remote, url, done, sha.hexdigest(), md5.hexdigest(), progress)
        progress.finish(done)


def _broke_off(ds: StandardDataset, remote: RemoteFile, url: str, target: Path, done: int, total: int,
               progress: _Progress, why: str, cut: str | None = None) -> CnncError:
    progress.close()
    reason = f"the transfer was cut after {done:,} of {total:,} bytes: {cut}" if cut else \
        f"the transfer broke off after {done:,} of {total:,} bytes{why}"
    return _offline_error(ds, remote, url, target, reason)


def _verify(ds: StandardDataset, remote: RemoteFile, url: str, size: int, sha256: str, md5: str,
            progress: _Progress) -> None:
    progress.close()
    if sha256 == remote.sha256 and md5 == remote.md5:
        return
    if size < remote.size:
        raise CnncError(f"the download of {ds.name} file '{remote.name}' is truncated: {size:,} of "
                        f"{remote.size:,} bytes (from {url})",
                        hint="nothing was kept; run again to download it again")
    kind, got, want = ("SHA-256", sha256, remote.sha256) if sha256 != remote.sha256 else ("MD5", md5, remote.md5)
    raise CnncError(f"{ds.name} file '{remote.name}' from {url} fails its {kind} check: got {got}, expected {want}",
                    hint="the file is damaged or not the published one; nothing was kept")


def _check_cached(ds: StandardDataset, remote: RemoteFile, path: Path) -> None:
    """A file in the cache (downloaded, or put there by hand) must still be the published one."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with files.open_regular(path, f"{ds.name} file", sys.maxsize) as (f, size):
        if size != remote.size:
            raise CnncError(f"{ds.name} file '{files.describe_path(path)}' has {size:,} bytes, the published file "
                            f"{remote.size:,}", hint="delete it and run again to download it again")
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    for kind, got, want in (("SHA-256", sha.hexdigest(), remote.sha256), ("MD5", md5.hexdigest(), remote.md5)):
        if got != want:
            raise CnncError(f"{ds.name} file '{files.describe_path(path)}' fails its {kind} check: got {got}, "
                            f"expected {want}", hint="delete it and run again to download it again")


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def fetch(name: str) -> Path:
    """The cache folder of a standard data set, downloading and unpacking what is missing."""
    ds = STANDARD[name]
    folder = cache_root() / ds.name
    for remote in ds.files:
        target = folder / remote.name
        if ds.reader == "cifar" and all((folder / m).is_file() for m in ds.members):
            continue  # unpacked already: the archive is not needed
        if target.is_file():
            _check_cached(ds, remote, target)
        else:
            download(ds, remote, target)
        if ds.reader == "cifar":
            unpack_cifar(ds, target, folder)
    return folder


# ------------------------------------------------------------------ CIFAR
def _member_name(member: tarfile.TarInfo, ds: StandardDataset, archive: str) -> str | None:
    """The member's file name if it is one cnnc takes; hostile names and links are refused."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name or "\x00" in member.name:
        raise CnncError(f"archive '{archive}' holds a member with an unsafe path "
                        f"'{files.describe_path(member.name)}'", hint="the archive is not the published one")
    parts = [p for p in path.parts if p not in ("", ".")]
    if len(parts) != 2 or parts[0] != ds.folder or parts[1] not in ds.members:
        return None
    if not member.isfile():
        raise CnncError(f"archive '{archive}': '{files.describe_path(member.name)}' is not a regular file",
                        hint="the archive is not the published one")
    return parts[1]


def _member_limit(ds: StandardDataset, name: str) -> int:
    return NAMES_LIMIT if name == ds.names_member else ds.member_records * (ds.label_bytes + CIFAR_PIXELS)


def _check_member_size(ds: StandardDataset, name: str, size: int, archive: str) -> None:
    """A member's size, from its tar header, before any of it is inflated: a data member holds whole
    records, at most the published number."""
    record = ds.label_bytes + CIFAR_PIXELS
    limit = _member_limit(ds, name)
    if size > limit or name != ds.names_member and size % record:
        what = f"more than the {limit:,} bytes it has" if size > limit else f"not a whole number of {record}-byte records"
        raise CnncError(f"{ds.name} archive '{archive}': '{ds.folder}/{name}' declares {size:,} bytes, {what}",
                        hint="the archive is not the published one")


class _Inflating:
    """A gzip file inflated as tarfile reads it, refusing to give more than `cap` bytes."""

    def __init__(self, raw, cap: int, what: str):
        self.gzip, self.cap, self.what, self.count = gzip.GzipFile(fileobj=raw, mode="rb"), cap, what, 0

    def read(self, n: int = -1) -> bytes:
        room = self.cap + 1 - self.count
        data = self.gzip.read(room if n is None or n < 0 else min(n, room))
        self.count += len(data)
        if self.count > self.cap:
            raise CnncError(f"{self.what} inflates to more than {files.size_text(self.cap)}, more than the members "
                            "it should hold", hint="the archive is not the published one")
        return data


def unpack_cifar(ds: StandardDataset, archive: Path, folder: Path) -> None:
    """Stream the tarball member by member and write its expected members into `folder`.

    Memory stays at one chunk: the archive is inflated as it is read, to at most what its expected
    members and a little slack take; each member's size is checked from its header before its data is
    read; the members go to temporary files renamed into place together once the archive is whole."""
    shown = files.describe_path(archive)
    cap = sum(_member_limit(ds, m) for m in ds.members) + ARCHIVE_SLACK
    found: list[str] = []
    try:
        with files.open_regular(archive, f"{ds.name} archive", sys.maxsize) as (raw, _size), \
                contextlib.ExitStack() as outputs:
            with tarfile.open(fileobj=_Inflating(raw, cap, f"{ds.name} archive '{shown}'"), mode="r|") as tar:
                for member in tar:
                    name = _member_name(member, ds, shown)
                    if name is None:
                        continue
                    if name in found:
                        raise CnncError(f"{ds.name} archive '{shown}' holds '{ds.folder}/{name}' twice",
                                        hint="the archive is not the published one")
                    _check_member_size(ds, name, member.size, shown)
                    out = outputs.enter_context(files.atomic_output(folder / name, f"{ds.name} file"))
                    source = tar.extractfile(member)
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                    found.append(name)
            missing = [m for m in ds.members if m not in found]
            if missing:
                raise CnncError(f"{ds.name} archive '{shown}' has no '{ds.folder}/{missing[0]}'",
                                hint="the archive is not the published one")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CnncError(f"{ds.name} archive '{shown}' is not a readable tar.gz file ({err})",
                        hint="delete it and run again to download it again") from None


def _cifar_records(path: Path, ds: StandardDataset) -> tuple[np.ndarray, np.ndarray]:
    record = ds.label_bytes + CIFAR_PIXELS
    raw = files.read_bytes(path, f"{ds.name} file", data_limit())
    if not raw or len(raw) % record:
        raise CnncError(f"{ds.name} file '{files.describe_path(path)}' holds {len(raw):,} bytes, not a whole "
                        f"number of {record}-byte records", hint="delete it and run again to download it again")
    table = np.frombuffer(raw, np.uint8).reshape(-1, record)
    labels = table[:, ds.label_bytes - 1].astype(np.int64)   # CIFAR-100: coarse, then fine label
    images = table[:, ds.label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


def _cifar_split(folder: Path, ds: StandardDataset, members: tuple[str, ...]) -> Split:
    parts = [_cifar_records(folder / m, ds) for m in members]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    classes = len(ds.classes) if ds.classes else 100
    if y.size and int(y.max()) >= classes:
        raise CnncError(f"{ds.name} file '{members[0]}' holds label {int(y.max())}, outside [0, {classes})",
                        hint="delete the cached files and run again to download them again")
    return Split((x / np.float32(255)).astype(np.float32), y)


def _cifar_classes(folder: Path, ds: StandardDataset) -> list[str]:
    if ds.classes:
        return list(ds.classes)
    text = files.read_bytes(folder / ds.names_member, f"{ds.name} file", NAMES_LIMIT).decode("utf-8", "replace")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return names if len(names) == 100 else [str(i) for i in range(100)]


def load_mnist10k() -> Dataset:
    """The embedded 10k-sample MNIST subset: 8000 train / 2000 test, [N, 1, 28, 28] in [0, 1]."""
    resource = importlib.resources.files("cnnc.runtime").joinpath("datasets", "mnist10k.npz")
    with np.load(io.BytesIO(resource.read_bytes()), allow_pickle=False) as z:
        train = as_split(z["x_train"], z["y_train"], "mnist10k")
        test = as_split(z["x_test"], z["y_test"], "mnist10k")
    return Dataset("mnist10k", train, test, classes=[str(i) for i in range(10)])


def load_standard(name: str) -> Dataset:
    """The named data set, from the cache (downloaded on first use)."""
    ds = STANDARD[name]
    folder = fetch(name)
    if ds.reader == "idx":
        train_images, train_labels, test_images, test_labels = (folder / f.name for f in ds.files)
        loaded = load_idx(train_images, train_labels, test_images, test_labels, name=name)
        return Dataset(name, loaded.train, loaded.test, classes=list(ds.classes))
    train = _cifar_split(folder, ds, ds.train_members)
    test = _cifar_split(folder, ds, ds.test_members)
    return Dataset(name, train, test, classes=_cifar_classes(folder, ds))
