"""The bounded reader and the safe writer (dsl/files.py)."""
import gzip
import os

import pytest

from cnnc.dsl import files
from cnnc.dsl.source import CnncError


def test_reads_a_regular_file(tmp_path):
    p = tmp_path / "a.cnn"
    p.write_bytes(b"hello")
    assert files.read_bytes(p, "source file", 10) == b"hello"


def test_refuses_a_file_over_the_limit_before_reading(tmp_path):
    p = tmp_path / "big"
    p.write_bytes(b"x" * 101)
    with pytest.raises(CnncError, match=r"source file '.*big' is 101 bytes, more than the limit of 100 bytes"):
        files.read_bytes(p, "source file", 100)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_refuses_devices(path):
    with pytest.raises(CnncError, match="is not a regular file"):
        files.read_bytes(path, "data file", 1 << 20)


def test_refuses_proc_files_without_quoting_them():
    with pytest.raises(CnncError) as err:
        files.read_bytes("/proc/self/environ", "import", 1 << 20)
    assert "PATH=" not in str(err.value)


def test_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    with pytest.raises(CnncError, match="not a regular file"):
        files.read_bytes(fifo, "import", 1 << 20)


def test_missing_directory_nul_and_symlink_loop(tmp_path):
    with pytest.raises(CnncError, match="does not exist"):
        files.read_bytes(tmp_path / "nope", "data file", 10)
    with pytest.raises(CnncError, match="is a directory"):
        files.read_bytes(tmp_path, "data file", 10)
    with pytest.raises(CnncError, match="NUL byte"):
        files.read_bytes(str(tmp_path / "a\x00b"), "data file", 10)
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    with pytest.raises(CnncError, match="symbolic links"):
        files.read_bytes(tmp_path / "l1", "data file", 10)


def test_paths_in_messages_are_escaped():
    assert files.describe_path("a\x1b]0;pwn\x07b\nc") == "a\\x1b]0;pwn\\x07b\\nc"


def test_bounded_inflate_stops_at_the_limit():
    bomb = gzip.compress(b"\0" * (10 << 20))
    assert len(bomb) < 100_000
    with pytest.raises(CnncError, match="inflates to more than 1.0 MiB"):
        files.bounded_inflate([bomb], "labels.gz", 1 << 20)
    assert files.bounded_inflate([gzip.compress(b"abc")], "x", 10) == b"abc"


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.svg"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_output(target, "diagram") as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.svg"]  # no temp left behind
    files.write_atomic(target, "new", "diagram")
    assert target.read_text() == "new"


def test_atomic_write_refuses_inputs_symlinks_and_directories(tmp_path):
    src = tmp_path / "weights.npz"
    src.write_bytes(b"w")
    with pytest.raises(CnncError, match="is also an input of this command"):
        files.write_atomic(src, b"x", "weights", inputs=[src])
    assert src.read_bytes() == b"w"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(CnncError, match="symbolic link"):
        files.write_atomic(tmp_path / "link", "x", "metrics")
    assert victim.read_text() == "keep"
    with pytest.raises(CnncError, match="is a directory"):
        files.write_atomic(tmp_path, "x", "diagram")


def test_write_errors_name_the_file(tmp_path):
    (tmp_path / "file").write_text("f")
    with pytest.raises(CnncError, match="cannot write diagram '.*file/x'"):
        files.write_atomic(tmp_path / "file" / "x", "x", "diagram")


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CNNC_MAX_SOURCE", "123")
    assert files.limit("source") == 123
    monkeypatch.setenv("CNNC_MAX_SOURCE", "lots")
    with pytest.raises(CnncError, match="CNNC_MAX_SOURCE"):
        files.limit("source")


def test_every_limit_is_documented_with_its_default():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    for name, (default, unit, _) in files.LIMITS.items():
        row = next((line for line in doc.splitlines()
                    if line.startswith("|") and f"`CNNC_MAX_{name.upper()}`" in line), None)
        assert row is not None, f"docs/security.md's table of limits does not list CNNC_MAX_{name.upper()}"
        shown = files.size_text(default) if unit == "bytes" else f"{default:,}"
        assert shown in row and unit in row, (name, shown, row)


def test_outputs_get_the_mode_a_plain_write_would(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_atomic(tmp_path / "new.png", b"x", "picture")
        assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.sh").write_text("old")
        os.chmod(tmp_path / "kept.sh", 0o750)
        files.write_atomic(tmp_path / "kept.sh", "new", "script")
        assert (tmp_path / "kept.sh").stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)


# ------------------------------------------------------------------ temporaries of dead writers
def _temporary(folder, name: str, pid: int):
    path = folder / f".{name}.{pid}.abcd1234.tmp"
    path.write_bytes(b"half of it")
    return path


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_of_dead_unlocked_writers_are_removed(tmp_path):
    import fcntl
    dead = _temporary(tmp_path, "a.npz", _dead_pid())
    folder = tmp_path / f".shapes.{_dead_pid()}.abcd1234.tmp"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "x.png").write_bytes(b"png")
    alive = _temporary(tmp_path, "b.npz", os.getppid())           # its writer runs: kept
    locked = _temporary(tmp_path, "c.npz", 4_000_000_000)          # no such pid here, but a writer holds the lock
    holder = open(locked, "rb")
    fcntl.flock(holder, fcntl.LOCK_EX)
    (tmp_path / "victim").write_text("kept")
    link = tmp_path / f".d.{_dead_pid()}.abcd1234.tmp"
    os.symlink("victim", link)                                     # a link is never followed nor removed
    unrelated = tmp_path / ".e.tmp"                                 # not a cnnc temporary
    unrelated.write_text("kept")
    try:
        files.remove_stale_temporaries(tmp_path)
    finally:
        holder.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not dead.exists() and not folder.exists(), left
    assert alive.exists() and locked.exists() and unrelated.exists() and link.is_symlink()
    assert (tmp_path / "victim").read_text() == "kept"


def test_a_write_clears_its_folder_once_per_process(tmp_path):
    first = _temporary(tmp_path, "x", _dead_pid())
    files.write_atomic(tmp_path / "out.txt", "new", "output")
    assert not first.exists()
    second = _temporary(tmp_path, "x", _dead_pid())   # a writer that died after this process looked
    files.write_atomic(tmp_path / "out.txt", "newer", "output")
    assert second.exists(), "the folder is listed once per process, not at every write"


def test_a_folder_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "set"
    with pytest.raises(RuntimeError):
        with files.atomic_directory(target, "data set") as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    with files.atomic_directory(target, "data set") as staging:
        (staging / "whole").write_text("x")
    assert os.listdir(tmp_path) == ["set"] and os.listdir(target) == ["whole"]
