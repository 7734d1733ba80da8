"""Checkpoints: exact round trips, no pickle, atomic replacement, corrupt files refused."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime import checkpoint
from cnnc.runtime.checkpoint import load_checkpoint, save_checkpoint

ARRAYS = {
    "conv1.weight": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32),
    "fc.bias": np.arange(5, dtype=np.float64),
    "optim/fc.weight/step": np.array(7, dtype=np.int64),
    "bn.running_var": np.ones(3, np.float32),
    "mask": np.array([True, False]),
    "bytes": np.arange(10, dtype=np.uint8),
    "empty": np.zeros((0, 3), np.float32),
}
META = {"epoch": 3, "lr": np.float64(0.01), "best": float("inf"), "history": [1.5, 1.2],
        "schedule": {"name": "plateau", "state": {"num_bad_epochs": 2}}, "net": "lenet.cnn"}


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, META)
    arrays, meta = load_checkpoint(path)
    _assert_same(arrays, ARRAYS)
    assert meta == {**META, "lr": 0.01} and meta["best"] == float("inf")
    save_checkpoint(tmp_path / "small.npz", ARRAYS, META, compress=True)
    _assert_same(load_checkpoint(tmp_path / "small.npz")[0], ARRAYS)
    assert os.path.getsize(tmp_path / "small.npz") < os.path.getsize(path)


def test_file_is_a_plain_pickle_free_npz(tmp_path):
    path = tmp_path / "ck"  # no suffix added
    save_checkpoint(path, ARRAYS, META)
    assert os.listdir(tmp_path) == ["ck"]  # and no temporary file left behind
    with np.load(path, allow_pickle=False) as z:  # numpy alone can read it, no pickle needed
        assert set(z.files) == set(ARRAYS) | {"__meta__"}
        assert z["__meta__"].dtype == np.uint8
        assert checkpoint.decode_meta(z["__meta__"])["epoch"] == 3
    with zipfile.ZipFile(path) as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())


def test_refuses_object_arrays_and_unencodable_meta(tmp_path):
    path = tmp_path / "ck.npz"
    with pytest.raises(ValueError, match="dtype object"):
        save_checkpoint(path, {"x": np.array([None, 1], dtype=object)}, {})
    with pytest.raises(TypeError, match="cannot hold a set"):
        save_checkpoint(path, {"x": np.zeros(2)}, {"bad": {1, 2}})
    with pytest.raises(ValueError, match="invalid checkpoint array name"):
        save_checkpoint(path, {"__meta__": np.zeros(2)}, {})
    assert not path.exists() and os.listdir(tmp_path) == []


def test_crash_before_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, {"epoch": 1})

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CnncError) as e:
        save_checkpoint(path, {"conv1.weight": np.zeros(3)}, {"epoch": 2})
    assert e.value.message == f"cannot write checkpoint '{path}': no space left on device"
    monkeypatch.undo()
    arrays, meta = load_checkpoint(path)
    assert meta == {"epoch": 1}
    _assert_same(arrays, ARRAYS)
    assert os.listdir(tmp_path) == ["ck.npz"]  # the temporary file was removed


def test_interrupt_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, {"epoch": 1})
    real = np.lib.format.write_array
    calls = []

    def interrupted(fp, array, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # a few members in: the archive on disk is half written
            raise KeyboardInterrupt
        return real(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {k: v + 1 for k, v in ARRAYS.items() if v.dtype != bool}, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)[1] == {"epoch": 1}
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_data_and_directory_are_fsynced_before_and_after_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.dirname(src)))
        real_replace(src, dst)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell file descriptors apart")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "ck.npz", ARRAYS, META)
    # File data reaches the disk before the rename, the rename itself right after.
    assert events == [("fsync", "file"), ("replace", str(tmp_path)), ("fsync", "dir")]


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from cnnc.runtime.checkpoint import save_checkpoint
    path = sys.argv[1]
    big = np.empty(3_000_000, np.float64)  # 24 MB: each save takes a while
    i = 0
    while True:
        big.fill(i)
        save_checkpoint(path, {"big": big, "tag": np.array(i)}, {"i": i})
        print(i, flush=True)
        i += 1
""")


def test_kill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    interrupted = 0
    for attempt in range(4):
        path = tmp_path / str(attempt) / "ck.npz"
        path.parent.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "0"  # one complete checkpoint exists
            time.sleep(0.05 + 0.05 * attempt)  # then kill it, most likely inside a later save
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        arrays, meta = load_checkpoint(path)
        i = meta["i"]
        assert int(arrays["tag"]) == i and np.all(arrays["big"] == i)
        interrupted += any(name.endswith(".tmp") for name in os.listdir(path.parent))
    # Saving is ~95% of the writer's time, so some kill must have hit one mid-write.
    assert interrupted >= 1
    save_checkpoint(path, {"x": np.zeros(1)}, {})
    assert os.listdir(path.parent) == ["ck.npz"]  # the next save clears the killed writer's temp


@pytest.mark.parametrize("cut", [0, 10, 200, 0.5, -30])
def test_truncated_file_is_a_cnnc_error(tmp_path, cut):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, META)
    raw = path.read_bytes()
    keep = int(len(raw) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(raw) + cut)
    path.write_bytes(raw[:keep])
    with pytest.raises(CnncError) as e:
        load_checkpoint(path)
    assert e.value.message.startswith(f"checkpoint '{path}' is corrupt or truncated (")
    assert e.value.hint == "restore it from a backup, or train again without resuming"


def test_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.zeros(1000)}, {})
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the array data: only the zip CRC notices
    path.write_bytes(bytes(raw))
    with pytest.raises(CnncError) as e:
        load_checkpoint(path)
    assert "is corrupt or truncated" in e.value.message and "CRC" in e.value.message


def test_other_bad_files(tmp_path):
    with pytest.raises(CnncError) as e:
        load_checkpoint(tmp_path / "missing.npz")
    assert e.value.message == f"checkpoint '{tmp_path / 'missing.npz'}' does not exist"
    with pytest.raises(CnncError) as e:
        load_checkpoint(tmp_path)
    assert e.value.message == f"checkpoint '{tmp_path}' is a directory, not a file"
    np.savez(tmp_path / "plain.npz", w=np.zeros(2))
    with pytest.raises(CnncError) as e:
        load_checkpoint(tmp_path / "plain.npz")
    assert e.value.message == (f"'{tmp_path / 'plain.npz'}' is an .npz archive but not a cnnc "
                               "checkpoint (no __meta__ entry)")
    np.savez(tmp_path / "evil.npz", w=np.array([{"x": 1}], dtype=object), __meta__=np.zeros(1, np.uint8))
    with pytest.raises(CnncError) as e:
        load_checkpoint(tmp_path / "evil.npz")
    assert e.value.message == (f"checkpoint '{tmp_path / 'evil.npz'}' contains pickled objects; "
                               "cnnc refuses to load them")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CnncError) as e:
        load_checkpoint(tmp_path / "text.npz")
    assert e.value.message == f"checkpoint '{tmp_path / 'text.npz'}' is not an .npz archive"
    np.savez(tmp_path / "badmeta.npz", __meta__=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(CnncError) as e:
        load_checkpoint(tmp_path / "badmeta.npz")
    assert "is corrupt or truncated" in e.value.message


# ------------------------------------------------------------------ the typed API and crafted files
from cnnc.runtime.checkpoint import Checkpoint, fit, load, save_training_state  # noqa: E402

PARAMS = {"conv.weight": np.ones((2, 1, 3, 3), np.float32), "conv.bias": np.zeros(2, np.float32)}
TRAIN_META = {"network": "N", "epoch": 3, "best": -0.5, "bad_epochs": 1, "history": [], "schedule": {},
              "preprocess": [{"op": "scale", "factor": 2.0}]}


def test_training_state_round_trip_and_layout(tmp_path):
    path = tmp_path / "last.npz"
    save_training_state(path, PARAMS, {"conv.weight/step": np.array(4)}, TRAIN_META)
    ck = load(path)
    assert isinstance(ck, Checkpoint) and (ck.epoch, ck.best, ck.bad_epochs) == (3, -0.5, 1)
    _assert_same(ck.params, PARAMS)
    assert int(ck.optimizer["conv.weight/step"]) == 4
    assert ck.preprocess == [{"op": "scale", "factor": 2.0}] and ck.meta["format"] == checkpoint.FORMAT
    with np.load(path, allow_pickle=False) as z:  # the layout: param/ and opt/ members
        assert set(z.files) == {"param/conv.weight", "param/conv.bias", "opt/conv.weight/step", "__meta__"}


def test_a_non_finite_training_state_is_never_written(tmp_path):
    bad = dict(PARAMS, **{"conv.bias": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(CnncError) as e:
        save_training_state(tmp_path / "last.npz", bad, {}, TRAIN_META)
    assert e.value.message == (f"refusing to write checkpoint '{tmp_path / 'last.npz'}': 'conv.bias' holds NaN "
                               "or infinite values")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("meta, read, message", [
    ({"best": 1.0, "bad_epochs": 0}, "epoch", "has no 'epoch' in its meta"),
    ({"epoch": "3", "best": 1.0, "bad_epochs": 0}, "epoch", "meta 'epoch' must be a non-negative integer, got \"3\""),
    ({"epoch": 3, "best": "low", "bad_epochs": 0}, "best", "meta 'best' must be a number or null, got \"low\""),
    ({"epoch": 3, "best": 1.0, "bad_epochs": [1]}, "bad_epochs",
     "meta 'bad_epochs' must be a non-negative integer, got [1]"),
    ({"epoch": 3, "best": 1.0}, "bad_epochs", "has no 'bad_epochs' in its meta"),
    ({"epoch": -1}, "epoch", "meta 'epoch' must be a non-negative integer, got -1"),
    ({"history": {"a": 1}}, "history", "meta 'history' must be a list of records"),
    ({"schedule": {"current": "x"}}, "schedule", "meta 'schedule' must be an object of numbers"),
])
def test_crafted_meta_is_a_one_line_error(tmp_path, meta, read, message):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"param/w": np.zeros(2)}, meta)
    with pytest.raises(CnncError) as e:
        getattr(load(path), read)
    prefix = f"checkpoint '{path}'" + ("" if message.startswith("has") else ":") + " "
    assert e.value.message.startswith(prefix + message), e.value.message
    assert "\n" not in e.value.message


def test_string_typed_parameters_are_refused(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"param/w": np.array(["a", "b"])}, TRAIN_META)
    with pytest.raises(CnncError) as e:
        load(path)
    assert e.value.message == f"checkpoint '{path}': 'param/w' has dtype <U1, not numbers"
    with pytest.raises(CnncError) as e:
        fit({"w": np.array(["a", "b"])}, {"w": np.zeros(2, np.float32)}, "ck")
    assert e.value.message == "ck does not fit this network: 'w' has dtype <U1, not numbers"


def test_fit_names_what_does_not_fit():
    with pytest.raises(CnncError) as e:
        fit({}, PARAMS, "x.npz")
    assert e.value.message == "x.npz does not fit this network: it has no 'conv.weight' (and 1 more)"
    with pytest.raises(CnncError) as e:
        fit({"conv.weight": np.ones((2, 1, 3, 3)), "conv.bias": np.zeros(3)}, PARAMS, "x.npz")
    assert e.value.message == "x.npz does not fit this network: 'conv.bias' has shape [3], the network needs [2]"
    fitted = fit({"conv.weight": np.ones((2, 1, 3, 3)), "conv.bias": np.zeros(2)}, PARAMS)
    assert fitted["conv.weight"].dtype == np.float32  # in the network's dtype


def test_a_member_whose_header_lies_about_its_size_is_refused_before_reading(tmp_path):
    path = tmp_path / "ck.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**12,)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("param/w.npy", header.getvalue() + b"\0" * 64)
        zf.writestr("__meta__.npy", _npy(checkpoint.encode_meta({})))
    with pytest.raises(CnncError) as e:
        load_checkpoint(path)
    assert "is corrupt or truncated (member 'param/w' declares 8000000000128 bytes of array but holds 192)" \
        in e.value.message


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_members_declaring_more_than_the_limit_are_refused_before_inflating(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"param/w": np.zeros(4_000_000)}, {}, compress=True)  # 32 MB of zeros
    assert path.stat().st_size < 1_000_000
    monkeypatch.setenv("CNNC_MAX_CHECKPOINT", str(2_000_000))
    with pytest.raises(CnncError) as e:
        load_checkpoint(path)
    assert e.value.message.startswith(f"checkpoint '{path}' declares 32,000,")
    assert e.value.message.endswith("bytes of arrays, more than the limit of 2,000,000")
    assert "CNNC_MAX_CHECKPOINT" in e.value.hint


def test_an_unreadable_checkpoint_is_cannot_be_read_not_corrupt(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.zeros(2)}, {})
    real_open = os.open

    def denied(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(CnncError) as e:
        load_checkpoint(path)
    assert e.value.message == f"checkpoint '{path}' cannot be read: permission denied"


@pytest.mark.parametrize("craft, message", [
    ("text", "is not an .npz archive"),
    ("strings", "'param/conv.weight' has dtype <U3, not numbers"),
    ("no-epoch", "has no 'epoch' in its meta"),
    ("bad-best", "meta 'best' must be a number or null"),
])
def test_crafted_checkpoints_through_the_cli_are_one_line_errors(tmp_path, write, capsys, craft, message):
    from cnnc.cli import main
    src = write("network N {\n    input x: [1, 4, 4]\n    x -> conv(2, 3) -> flatten -> linear(2)\n}\n"
                "train N {\n    data = synthetic(n = 8, classes = 2)\n    epochs = 1\n}\n")
    out = tmp_path / "run"
    assert main(["run", str(src), "--out", str(out), "--quiet"]) == 0
    last = out / "last.npz"
    ck = load(last)
    meta = dict(ck.meta)
    arrays = {checkpoint.PARAM + k: v for k, v in ck.params.items()}
    arrays.update({checkpoint.OPT + k: v for k, v in ck.optimizer.items()})
    if craft == "text":
        last.write_text("hello, I am not a zip")
    elif craft == "strings":
        arrays["param/conv.weight"] = np.full(ck.params["conv.weight"].shape, "abc")
        save_checkpoint(last, arrays, meta)
    elif craft == "no-epoch":
        del meta["epoch"]
        save_checkpoint(last, arrays, meta)
    else:
        meta["best"] = "x"
        save_checkpoint(last, arrays, meta)
    capsys.readouterr()
    assert main(["run", str(src), "--out", str(out), "--quiet", "--resume", "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err and "Traceback" not in err
    assert err.splitlines()[0].startswith("cnnc: error: ") and len(err.strip().splitlines()) <= 2, err
