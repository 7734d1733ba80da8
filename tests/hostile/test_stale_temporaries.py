"""Issue 22, item 4: the temporary files and folders of writers killed mid-write are cleaned up.

Every output cnnc writes goes through cnnc.dsl.files (a temporary
`.NAME.PID.RANDOM.tmp` beside it, locked by its writer, renamed at the end).
A writer killed with SIGKILL leaves its temporary; the next cnnc process that
writes into that folder must remove it — and must leave alone the temporary of
a writer that is still alive. The class is tested at its root (a writer
killed inside `atomic_output` / `atomic_directory`, beside the output of
every command that writes) and on the two instances issue 22 found (kill -9
mid-download into the data cache, and mid-`make-shapes`), each killed at the
moment its temporary exists, found by watching for it.
"""
from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hostile_harness import assert_clean_output, child_env, start_cli, succeeded, wait_for
from cnnc.runtime.data import standard

WRITER = """\
import sys
from cnnc.dsl import files
target, kind = sys.argv[1], sys.argv[2]
if kind == "file":
    with files.atomic_output(target, "test output") as f:
        f.write(b"half of it")
        f.flush()
        print("inside", flush=True)
        sys.stdin.readline()
else:
    with files.atomic_directory(target, "test folder") as staging:
        (staging / "half").write_text("of it")
        print("inside", flush=True)
        sys.stdin.readline()
"""


class Writer:
    """A process inside an atomic write of `target` (a file, or a folder), until released or killed."""

    def __init__(self, target: Path, kind: str):
        self.process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], env=child_env(),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "inside\n"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def release(self) -> None:
        self.process.communicate("\n", timeout=30)
        assert self.process.returncode == 0


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


# Each command that writes, and the folder it writes into (relative to the scratch directory).
WRITERS = {
    "run": (["run", "tiny.cnn", "--out", "out", "--quiet"], "out"),
    "compile --emit": (["compile", "tiny.cnn", "--emit", "numpy", "-o", "out/model.py"], "out"),
    "viz": (["viz", "tiny.cnn", "-o", "out/tiny.svg"], "out"),
    "make-shapes": (["make-shapes", "out/shapes", "--n", "4", "--size", "16"], "out"),
    "search": (["search", "tiny.cnn", "--grid", "lr=0.1", "--out", "out"], "out"),
}


@pytest.mark.parametrize("command", WRITERS)
def test_the_next_write_removes_dead_writers_temporaries_and_keeps_live_ones(scratch, command):
    args, folder = WRITERS[command]
    scratch.tiny()
    scratch.path(folder).mkdir()
    dead = [Writer(scratch.path(f"{folder}/{name}"), kind) for name, kind in (("a.npz", "file"), ("d", "folder"))]
    for writer in dead:
        writer.kill()
    left = temporaries(scratch.path(folder))
    assert len(left) == 2, left   # what a kill -9 mid-write leaves
    live = Writer(scratch.path(f"{folder}/live.txt"), "file")
    try:
        succeeded(scratch.run(*args))
        kept = temporaries(scratch.path(folder))
        assert not set(left) & set(kept), f"the dead writers' temporaries are still there: {kept}"
        assert len(kept) == 1 and kept[0].startswith(".live.txt."), f"a live writer's temporary was removed: {kept}"
    finally:
        live.release()
    assert scratch.path(f"{folder}/live.txt").read_bytes() == b"half of it"
    assert not temporaries(scratch.path(folder))


# ------------------------------------------------------------------ the instances of issue 22
class StallingMirror:
    """A data mirror on 127.0.0.1 that sends the headers and the first bytes of a file, then stalls until
    told to go on; afterwards it sends the rest (bytes that are not the published file)."""

    def __init__(self):
        self.go_on = threading.Event()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                # the published size, as the file's own mirror declares it (a size that differs is refused
                # before anything is written); the bytes are not the file's
                name, _, file = self.path.strip("/").partition("/")
                size = next(f.size for f in standard.STANDARD[name].files if f.name == file)
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.write(b"\0" * 4096)
                self.wfile.flush()
                mirror.go_on.wait(60)
                self.wfile.write(b"\0" * (size - 4096))

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass   # the killed client's reset connection

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.go_on.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_a_download_killed_mid_way_leaves_nothing_after_the_next_run(scratch):
    scratch.tiny()
    mirror = StallingMirror()
    env = {"CNNC_DATA": str(scratch.path("cache")), "CNNC_DATA_MIRROR": mirror.url}
    try:
        first = start_cli(["run", "tiny.cnn", "--data", "mnist", "--out", "r"], scratch.root, env=env)
        cache = scratch.path("cache/mnist")
        wait_for(lambda: cache.is_dir() and temporaries(cache), "the download's temporary file")
        first.kill()
        first.communicate()
        assert temporaries(cache), "the killed download left no temporary to clean"
        mirror.go_on.set()   # the next download gets bytes that are not the file: refused, and nothing is left
        again = scratch.run("run", "tiny.cnn", "--data", "mnist", "--out", "r", env=env)
        assert again.status == 1 and "cnnc: error: " in again.err, str(again)
        assert_clean_output(again)
    finally:
        mirror.close()
    assert not temporaries(cache) and not os.listdir(cache), os.listdir(cache)


@pytest.mark.slow
def test_make_shapes_killed_mid_way_leaves_nothing_after_the_next_run(scratch):
    first = start_cli(["make-shapes", "out/shapes", "--n", "1000", "--size", "32"], scratch.root)

    def writing() -> bool:
        staging = [p for p in scratch.path("out").glob(".shapes.*.tmp")] if scratch.path("out").is_dir() else []
        return bool(staging) and (staging[0] / "train" / "images").is_dir()
    wait_for(writing, "make-shapes writing its images")
    first.kill()
    first.communicate()
    assert temporaries(scratch.path("out")), "the killed make-shapes left no temporary folder to clean"
    succeeded(scratch.run("make-shapes", "out/shapes", "--n", "4", "--size", "16"))
    assert not temporaries(scratch.path("out"))
    assert sorted(os.listdir(scratch.path("out/shapes/train/images"))) == [f"0000{i}.png" for i in range(4)]
