"""The standard data sets by name: downloaded from a local server, verified, cached, never half-written."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import struct
import tarfile
import threading
from dataclasses import replace

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime import progress
from cnnc.runtime.data import sources
from cnnc.runtime.data import standard as sd


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
class Server:
    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in outer.truncate:
                    self.wfile.write(body[:len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, monkeypatch, name: str, bodies: dict[str, bytes], table: dict[str, bytes] | None = None):
        """Serve `bodies` as data set `name`; the checksum table lists `table` (default: the same files)."""
        for file, body in bodies.items():
            self.routes[f"/{name}/{file}"] = body
        listed = tuple(remote(f, b) for f, b in (table or bodies).items())
        monkeypatch.setitem(sd.STANDARD, name, replace(sd.STANDARD[name], files=listed))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


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
    server.publish(monkeypatch, "mnist", bodies)
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
    listed = dict(bodies, **{"train-labels-idx1-ubyte.gz": idx_bytes(np.arange(12) % 3)})  # another file's sum
    server.publish(monkeypatch, "mnist", bodies, listed)
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
    server.publish(monkeypatch, "mnist", bodies)
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


def test_a_short_file_sent_whole_is_reported_truncated(server, monkeypatch, tmp_path):
    bodies = mnist_files()
    short = dict(bodies, **{"t10k-labels-idx1-ubyte.gz": bodies["t10k-labels-idx1-ubyte.gz"][:-5]})
    server.publish(monkeypatch, "mnist", short, bodies)
    with pytest.raises(CnncError, match=r"the download of mnist file 't10k-labels-idx1-ubyte.gz' is truncated: "
                                        rf"{len(short['t10k-labels-idx1-ubyte.gz'])} of "
                                        rf"{len(bodies['t10k-labels-idx1-ubyte.gz'])} bytes"):
        sources.load_dataset("mnist")
    assert "mnist/t10k-labels-idx1-ubyte.gz" not in cache_listing(tmp_path)


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
    server.publish(monkeypatch, "mnist", bodies)
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    for name, body in bodies.items():
        (folder / name).write_bytes(body)
    assert len(sources.load_dataset("mnist").test) == 4 and server.requests == []
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(CnncError, match=r"mnist file '.*t10k-labels-idx1-ubyte.gz' fails its SHA-256 check"):
        sources.load_dataset("mnist")


def test_cifar10_binary_archive_is_unpacked_and_read(server, monkeypatch, tmp_path):
    archive = cifar10_archive()
    server.publish(monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": archive})
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
    server.publish(monkeypatch, "cifar100", {"cifar-100-binary.tar.gz": cifar100_archive()})
    ds = sources.load_dataset("cifar100")
    assert ds.train.y.tolist() == [0, 42, 99] and ds.test.y.tolist() == [17]
    assert ds.classes[42] == "class42" and len(ds.classes) == 100


@pytest.mark.parametrize("member, message", [
    ("../evil.bin", "holds a member with an unsafe path '../evil.bin'"),
    ("/etc/evil.bin", "holds a member with an unsafe path '/etc/evil.bin'"),
    ("cifar-10-batches-bin/../../evil.bin", "unsafe path 'cifar-10-batches-bin/../../evil.bin'"),
])
def test_archive_members_cannot_leave_the_cache(server, monkeypatch, tmp_path, member, message):
    server.publish(monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": cifar10_archive(**{member: b"x"})})
    with pytest.raises(CnncError, match=message.replace(".", r"\.")):
        sources.load_dataset("cifar10")
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / "cache" / "evil.bin").exists()


def test_a_linked_member_is_refused(server, monkeypatch, tmp_path):
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records([1], 1, i) for i in range(1, 6)}
    archive = tar_gz(members, links={"cifar-10-batches-bin/test_batch.bin": "/etc/passwd"})
    server.publish(monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": archive})
    with pytest.raises(CnncError, match="'cifar-10-batches-bin/test_batch.bin' is not a regular file"):
        sources.load_dataset("cifar10")


def test_an_archive_bomb_is_refused_while_inflating(server, monkeypatch):
    monkeypatch.setenv("CNNC_MAX_DATA", str(1 << 20))
    big = {f"cifar-10-batches-bin/data_batch_{i}.bin": bytes(1 << 20) for i in range(1, 6)}
    server.publish(monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": tar_gz(big)})
    with pytest.raises(CnncError, match=r"inflates to more than 1\.0 MiB"):
        sources.load_dataset("cifar10")


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
