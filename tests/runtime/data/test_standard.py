"""The standard data sets by name: downloaded from a local server, verified, cached, never half-written."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import re
import struct
import tarfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime import progress
from cnnc.runtime.data import sources
from cnnc.runtime.data import standard as sd
from hostile_inputs import gzip_bomb
from mirror_server import SERVER_SECONDS, Server, endless, trickle, unsized


# ------------------------------------------------------------------ official formats, in small
def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def mnist_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {"train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (12, 28, 28))),
            "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(12) % 10),
            "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (4, 28, 28))),
            "t10k-labels-idx1-ubyte.gz": idx_bytes(np.array([3, 1, 4, 1]))}


def cifar_records(labels: list[int], label_bytes: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = b""
    for label in labels:
        head = bytes([label // 5] * (label_bytes - 1) + [label])  # CIFAR-100: coarse, fine
        out += head + rng.integers(0, 256, 3072).astype(np.uint8).tobytes()
    return out


def tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def cifar10_archive(**extra: bytes) -> bytes:
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records([i, 9 - i], 1, i) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records([0, 7, 2], 1, 9)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    members.update(extra)
    return tar_gz(members)


def cifar100_archive() -> bytes:
    names = "".join(f"class{i}\n" for i in range(100)).encode()
    return tar_gz({"cifar-100-binary/train.bin": cifar_records([0, 42, 99], 2, 1),
                   "cifar-100-binary/test.bin": cifar_records([17], 2, 2),
                   "cifar-100-binary/fine_label_names.txt": names})


def remote(name: str, body: bytes) -> sd.RemoteFile:
    return sd.RemoteFile(name, len(body), hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest())


# ------------------------------------------------------------------ a server on 127.0.0.1
def publish(server: Server, monkeypatch, name: str, bodies: dict[str, bytes], table: dict[str, bytes] | None = None):
    """Serve `bodies` as data set `name`; the checksum table lists `table` (default: the same files)."""
    for file, body in bodies.items():
        server.routes[f"/{name}/{file}"] = body
    listed = tuple(remote(f, b) for f, b in (table or bodies).items())
    monkeypatch.setitem(sd.STANDARD, name, replace(sd.STANDARD[name], files=listed))


def serve_hostile(server: Server, monkeypatch, answer, bodies: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Publish MNIST (or `bodies`), its training images served by the hostile `answer`."""
    bodies = bodies or mnist_files()
    publish(server, monkeypatch, "mnist", bodies)
    server.hostile["/mnist/train-images-idx3-ubyte.gz"] = answer
    return bodies


@pytest.fixture
def server(monkeypatch, tmp_path):
    s = Server()
    monkeypatch.setenv("CNNC_DATA_MIRROR", s.url)
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "cache"))
    yield s
    s.close()


def cache_listing(tmp_path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------ tests
def test_mnist_downloads_once_verifies_and_reads(server, monkeypatch, tmp_path, capsys):
    bodies = mnist_files()
    publish(server, monkeypatch, "mnist", bodies)
    ds = sources.load_dataset("mnist")
    assert ds.train.x.shape == (12, 1, 28, 28) and ds.test.x.shape == (4, 1, 28, 28)
    assert ds.train.y.tolist() == [i % 10 for i in range(12)] and ds.test.y.tolist() == [3, 1, 4, 1]
    assert ds.classes == [str(i) for i in range(10)]
    assert len(server.requests) == 4
    assert cache_listing(tmp_path) == sorted(f"mnist/{f}" for f in bodies)  # nothing else: no temporary files
    err = capsys.readouterr().err
    assert "downloaded mnist: train-images-idx3-ubyte.gz" in err and "checksums verified" in err
    again = sources.DATA_LOADERS["mnist"](None)  # the train section's `data = mnist`
    assert len(server.requests) == 4  # the second run downloads nothing
    np.testing.assert_array_equal(again.train.x, ds.train.x)


def test_a_checksum_mismatch_keeps_nothing(server, monkeypatch, tmp_path):
    bodies = mnist_files()
    labels = bodies["train-labels-idx1-ubyte.gz"]
    listed = dict(bodies, **{"train-labels-idx1-ubyte.gz": labels[::-1]})  # the same size, another file's sums
    publish(server, monkeypatch, "mnist", bodies, listed)
    with pytest.raises(CnncError) as err:
        sources.load_dataset("mnist")
    expected = hashlib.sha256(listed["train-labels-idx1-ubyte.gz"]).hexdigest()
    got = hashlib.sha256(bodies["train-labels-idx1-ubyte.gz"]).hexdigest()
    assert err.value.message == (f"mnist file 'train-labels-idx1-ubyte.gz' from {server.url}/mnist/"
                                 f"train-labels-idx1-ubyte.gz fails its SHA-256 check: got {got}, "
                                 f"expected {expected}")
    assert "nothing was kept" in err.value.diagnostic.hint
    assert cache_listing(tmp_path) == ["mnist/train-images-idx3-ubyte.gz"]  # the verified one only


def test_a_truncated_download_keeps_nothing_and_the_next_run_completes_it(server, monkeypatch, tmp_path):
    bodies = mnist_files()
    publish(server, monkeypatch, "mnist", bodies)
    server.truncate.add("/mnist/train-images-idx3-ubyte.gz")
    with pytest.raises(CnncError) as err:
        sources.load_dataset("mnist")
    size = len(bodies["train-images-idx3-ubyte.gz"])
    assert err.value.message.startswith("cannot download mnist file 'train-images-idx3-ubyte.gz' from "
                                        f"{server.url}/mnist/train-images-idx3-ubyte.gz: the transfer broke off "
                                        f"after {size // 2:,} of {size:,} bytes")
    assert cache_listing(tmp_path) == []
    server.truncate.clear()
    assert len(sources.load_dataset("mnist").train) == 12


def test_a_short_file_sent_whole_is_refused_from_its_declared_size(server, monkeypatch, tmp_path):
    bodies = mnist_files()
    short = dict(bodies, **{"t10k-labels-idx1-ubyte.gz": bodies["t10k-labels-idx1-ubyte.gz"][:-5]})
    publish(server, monkeypatch, "mnist", short, bodies)
    n = len(bodies["t10k-labels-idx1-ubyte.gz"])
    with pytest.raises(CnncError, match=rf"t10k-labels-idx1-ubyte.gz: it declares {n - 5} bytes, the published "
                                        rf"file has {n}\n"):
        sources.load_dataset("mnist")
    assert "mnist/t10k-labels-idx1-ubyte.gz" not in cache_listing(tmp_path)
    assert server.requests.count("/mnist/t10k-labels-idx1-ubyte.gz") == 1


def test_a_short_file_without_a_declared_size_is_reported_truncated(server, monkeypatch, tmp_path):
    bodies = mnist_files()
    short = dict(bodies, **{"t10k-labels-idx1-ubyte.gz": bodies["t10k-labels-idx1-ubyte.gz"][:-5]})
    publish(server, monkeypatch, "mnist", short, bodies)
    server.hostile["/mnist/t10k-labels-idx1-ubyte.gz"] = unsized
    n = len(bodies["t10k-labels-idx1-ubyte.gz"])
    with pytest.raises(CnncError, match=rf"the download of mnist file 't10k-labels-idx1-ubyte.gz' is truncated: "
                                        rf"{n - 5} of {n} bytes"):
        sources.load_dataset("mnist")
    assert "mnist/t10k-labels-idx1-ubyte.gz" not in cache_listing(tmp_path)


@pytest.mark.parametrize("declare", [None, 1 << 40], ids=["no-length", "declares-1-TiB"])
def test_an_endless_body_is_cut_at_the_published_size(server, monkeypatch, tmp_path, declare):
    bodies = serve_hostile(server, monkeypatch, endless(declare))
    n = len(bodies["train-images-idx3-ubyte.gz"])
    reason = "it sends more than the published" if declare is None else f"it declares {declare:,} bytes"
    with pytest.raises(CnncError, match=rf"train-images-idx3-ubyte.gz' from {server.url}/mnist/"
                                        rf"train-images-idx3-ubyte.gz: {reason}.* {n:,}"):
        sources.load_dataset("mnist")
    assert cache_listing(tmp_path) == []


def test_a_trickling_mirror_is_cut_below_the_minimum_rate(server, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNC_MAX_DOWNLOAD_STALL", "1")
    serve_hostile(server, monkeypatch, trickle(0.2))
    start = time.monotonic()
    with pytest.raises(CnncError) as err:
        sources.load_dataset("mnist")
    assert time.monotonic() - start < SERVER_SECONDS / 2, "cut by the server's end, not by cnnc"
    message = err.value.message
    assert message.startswith(f"cannot download mnist file 'train-images-idx3-ubyte.gz' from {server.url}/mnist/"
                              "train-images-idx3-ubyte.gz: the transfer was cut after "), message
    assert re.search(r"\d+ bytes arrived in 1 s \([\d.]+ bytes/s\), below the minimum rate of 1\.0 KiB/s", message)
    assert cache_listing(tmp_path) == []


def test_a_mirror_trickling_its_headers_is_cut_too(server, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNC_MAX_DOWNLOAD_STALL", "1")
    serve_hostile(server, monkeypatch, trickle(0.2, headers_too=True))
    with pytest.raises(CnncError, match=r"from http://127\.0\.0\.1:\d+/mnist/train-images-idx3-ubyte\.gz: 0 bytes "
                                        r"arrived in 1 s \(0\.0 bytes/s\), below the minimum rate"):
        sources.load_dataset("mnist")
    assert cache_listing(tmp_path) == []


def test_a_transfer_past_the_deadline_is_cut(server, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNC_MAX_DOWNLOAD_SECONDS", "1")
    body = np.random.default_rng(0).integers(0, 256, 1 << 20).astype(np.uint8).tobytes()

    def steady(handler, body):  # 16 KiB every 0.1 s: above the minimum rate, done in 6.4 s
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for i in range(0, len(body), 1 << 14):
            handler.wfile.write(body[i:i + (1 << 14)])
            time.sleep(0.1)
    serve_hostile(server, monkeypatch, steady, dict(mnist_files(), **{"train-images-idx3-ubyte.gz": body}))
    with pytest.raises(CnncError, match=r"the transfer was cut after [\d,]+ of 1,048,576 bytes: it took more than "
                                        r"1 seconds \(received [\d,]+ bytes\); CNNC_MAX_DOWNLOAD_SECONDS raises"):
        sources.load_dataset("mnist")
    assert cache_listing(tmp_path) == []


def test_the_transfer_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CNNC_MAX_DOWNLOAD_STALL", "soon")
    with pytest.raises(CnncError, match="CNNC_MAX_DOWNLOAD_STALL='soon': expected a whole number of seconds"):
        sd.download(sd.STANDARD["mnist"], sd.STANDARD["mnist"].files[0], Path("unused"))


def file_mirror(monkeypatch, tmp_path, name: str, bodies: dict[str, bytes]) -> Path:
    folder = tmp_path / "mirror" / name
    folder.mkdir(parents=True)
    for file, body in bodies.items():
        (folder / file).write_bytes(body)
    monkeypatch.setitem(sd.STANDARD, name, replace(sd.STANDARD[name], files=tuple(remote(f, b) for f, b in bodies.items())))
    monkeypatch.setenv("CNNC_DATA_MIRROR", (tmp_path / "mirror").as_uri())
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "cache"))
    return folder


def test_a_file_mirror_is_read_like_a_user_file(monkeypatch, tmp_path):
    file_mirror(monkeypatch, tmp_path, "mnist", mnist_files())
    assert len(sources.load_dataset("mnist").train) == 12


def test_a_fifo_in_a_file_mirror_is_refused_without_blocking(monkeypatch, tmp_path):
    folder = file_mirror(monkeypatch, tmp_path, "mnist", mnist_files())
    (folder / "train-images-idx3-ubyte.gz").unlink()
    os.mkfifo(folder / "train-images-idx3-ubyte.gz")
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("error", _error_of(sources.load_dataset, "mnist")),
                              daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "reading the FIFO blocked"
    assert re.search(r"mnist mirror file '.*train-images-idx3-ubyte.gz' is not a regular file", done["error"])
    assert cache_listing(tmp_path) == []


def _error_of(fn, *args) -> str:
    try:
        fn(*args)
    except CnncError as err:
        return err.message
    return "no error"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "data:,hello", "gopher://127.0.0.1/"])
def test_a_mirror_of_another_scheme_is_refused(monkeypatch, tmp_path, url):
    monkeypatch.setenv("CNNC_DATA_MIRROR", url)
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "cache"))
    with pytest.raises(CnncError, match="CNNC_DATA_MIRROR: cannot download from .*: the scheme must be http, https or file"):
        sources.load_dataset("mnist")


def test_a_redirect_to_another_scheme_is_not_followed(server, monkeypatch, tmp_path):
    publish(server, monkeypatch, "mnist", mnist_files())

    def redirect(handler, body):
        handler.send_response(302)
        handler.send_header("Location", "ftp://127.0.0.1/evil")
        handler.end_headers()
    server.hostile["/mnist/train-images-idx3-ubyte.gz"] = redirect
    with pytest.raises(CnncError, match="cannot download mnist file 'train-images-idx3-ubyte.gz' from .*: unknown url type: ftp"):
        sources.load_dataset("mnist")
    assert cache_listing(tmp_path) == []


def test_offline_the_error_says_which_file_to_fetch_and_where(monkeypatch, tmp_path):
    probe = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there now
    monkeypatch.setenv("CNNC_DATA_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "cache"))
    with pytest.raises(CnncError) as err:
        sources.load_dataset("cifar10")
    url = f"http://127.0.0.1:{port}/cifar10/cifar-10-binary.tar.gz"
    assert err.value.message.startswith(f"cannot download cifar10 file 'cifar-10-binary.tar.gz' from {url}: ")
    where = tmp_path / "cache" / "cifar10" / "cifar-10-binary.tar.gz"
    assert err.value.diagnostic.hint == (f"fetch {url} by hand and put it at {where} (SHA-256 "
                                         f"{sd.STANDARD['cifar10'].files[0].sha256}); or set CNNC_DATA to a "
                                         "folder that holds it")


def test_a_file_put_in_the_cache_by_hand_is_used_and_checked(server, monkeypatch, tmp_path):
    bodies = mnist_files()
    publish(server, monkeypatch, "mnist", bodies)
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    for name, body in bodies.items():
        (folder / name).write_bytes(body)
    assert len(sources.load_dataset("mnist").test) == 4 and server.requests == []
    labels = bodies["t10k-labels-idx1-ubyte.gz"]
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(labels[::-1])
    with pytest.raises(CnncError, match=r"mnist file '.*t10k-labels-idx1-ubyte.gz' fails its SHA-256 check"):
        sources.load_dataset("mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(labels + b"more")
    with pytest.raises(CnncError, match=rf"mnist file '.*t10k-labels-idx1-ubyte.gz' has {len(labels) + 4} bytes, "
                                        rf"the published file {len(labels)}"):
        sources.load_dataset("mnist")


def test_cifar10_binary_archive_is_unpacked_and_read(server, monkeypatch, tmp_path):
    archive = cifar10_archive()
    publish(server, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": archive})
    ds = sources.load_dataset("cifar10")
    assert ds.train.x.shape == (10, 3, 32, 32) and ds.train.x.dtype == np.float32
    assert ds.train.y.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4] and ds.test.y.tolist() == [0, 7, 2]
    first = cifar_records([1], 1, 1)[1:]  # the first record's pixels: R plane, G plane, B plane
    np.testing.assert_array_equal(ds.train.x[0], np.frombuffer(first, np.uint8).reshape(3, 32, 32) / np.float32(255))
    assert ds.classes[:3] == ["airplane", "automobile", "bird"]
    requests = len(server.requests)
    sources.load_dataset("cifar10")
    assert len(server.requests) == requests  # unpacked members are used; nothing downloaded again


def test_cifar100_uses_the_fine_labels_and_names(server, monkeypatch):
    publish(server, monkeypatch, "cifar100", {"cifar-100-binary.tar.gz": cifar100_archive()})
    ds = sources.load_dataset("cifar100")
    assert ds.train.y.tolist() == [0, 42, 99] and ds.test.y.tolist() == [17]
    assert ds.classes[42] == "class42" and len(ds.classes) == 100


@pytest.mark.parametrize("member, message", [
    ("../evil.bin", "holds a member with an unsafe path '../evil.bin'"),
    ("/etc/evil.bin", "holds a member with an unsafe path '/etc/evil.bin'"),
    ("cifar-10-batches-bin/../../evil.bin", "unsafe path 'cifar-10-batches-bin/../../evil.bin'"),
])
def test_archive_members_cannot_leave_the_cache(server, monkeypatch, tmp_path, member, message):
    publish(server, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": cifar10_archive(**{member: b"x"})})
    with pytest.raises(CnncError, match=message.replace(".", r"\.")):
        sources.load_dataset("cifar10")
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / "cache" / "evil.bin").exists()


def test_a_linked_member_is_refused(server, monkeypatch, tmp_path):
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records([1], 1, i) for i in range(1, 6)}
    archive = tar_gz(members, links={"cifar-10-batches-bin/test_batch.bin": "/etc/passwd"})
    publish(server, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": archive})
    with pytest.raises(CnncError, match="'cifar-10-batches-bin/test_batch.bin' is not a regular file"):
        sources.load_dataset("cifar10")


def tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


@pytest.mark.parametrize("member", ["cifar-10-batches-bin/data_batch_1.bin", "cifar-10-batches-bin/junk.bin"],
                         ids=["an-expected-member", "another-member"])
def test_an_archive_bomb_is_refused_early(server, monkeypatch, tmp_path, member):
    """A 1 MB tar.gz inflating to 1 GiB in one member: an expected member is refused from its tar
    header (more than the published records), another one once the archive inflates past what its
    expected members take (185 MB for CIFAR-10); nothing is kept but the verified download."""
    archive = gzip_bomb(tar_header(member, 1 << 30), 1 << 30)
    publish(server, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": archive})
    expected = ("declares 1,073,741,824 bytes, more than the 30,730,000 bytes it has" if "data_batch" in member
                else r"inflates to more than 176\.8 MiB, more than the members it should hold")
    with pytest.raises(CnncError, match=expected):
        sources.load_dataset("cifar10")
    assert cache_listing(tmp_path) == ["cifar10/cifar-10-binary.tar.gz"]


def test_a_member_of_partial_records_or_twice_is_refused(server, monkeypatch, tmp_path):
    publish(server, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": cifar10_archive(
        **{"cifar-10-batches-bin/test_batch.bin": bytes(3073 + 5)})})
    with pytest.raises(CnncError, match="'cifar-10-batches-bin/test_batch.bin' declares 3,078 bytes, not a whole "
                                        "number of 3073-byte records"):
        sources.load_dataset("cifar10")
    assert cache_listing(tmp_path) == ["cifar10/cifar-10-binary.tar.gz"]


def test_a_damaged_archive_is_one_error(server, monkeypatch, tmp_path):
    archive = cifar10_archive()
    publish(server, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": archive[:len(archive) // 2]})
    with pytest.raises(CnncError, match="cifar10 archive '.*' is not a readable tar.gz file"):
        sources.load_dataset("cifar10")
    assert cache_listing(tmp_path) == ["cifar10/cifar-10-binary.tar.gz"]


def test_the_table_lists_the_published_digests():
    for ds in sd.STANDARD.values():
        for f in ds.files:
            assert len(f.sha256) == 64 and len(f.md5) == 32 and f.size > 0, (ds.name, f.name)
    assert sd.STANDARD["cifar10"].files[0].md5 == "c32a1d4ab5d03f1284b67883e8d87530"  # the CIFAR page's MD5


def test_the_cache_defaults_to_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sd.sys.platform.startswith("linux"):
        assert sd.cache_root() == tmp_path / "cnnc" / "data"
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "d"))
    assert sd.cache_root() == tmp_path / "d"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_download_bar_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(sd.time, "perf_counter", lambda: next(clock, 2.0))
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0)
    monkeypatch.setenv("COLUMNS", "100")
    term = Terminal()
    bar = sd._Progress("mnist: f.gz", 2048, term)
    bar.update(1024)
    bar.finish(2048)
    text = term.getvalue()
    drawn = [seg for seg in text.split("\r") if "%|" in seg]
    assert any(seg.startswith("downloading mnist: f.gz  50%|") and
               seg.endswith(", 1.0 KiB of 2.0 KiB  (1.0 KiB/s)") for seg in drawn), text
    assert all(len(seg) < 100 for seg in drawn)
    assert text.endswith("downloaded mnist: f.gz: 2.0 KiB in 2.0s, checksums verified\n")
    plain = io.StringIO()
    sd._Progress("mnist: f.gz", 2048, plain).update(1024)
    assert plain.getvalue() == "downloading mnist: f.gz\n"  # no bar, no control characters
