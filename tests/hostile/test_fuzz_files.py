"""Fuzzing the file loaders: only the user-error type escapes, whatever the bytes.

tests/compiler/test_robustness.py fuzzes sources; this fuzzes the other files
cnnc reads from a user: checkpoints (`load_checkpoint`), data sets
(`load_dataset` on .npz archives and IDX folders), images (`read_image`) and
metrics files (`read_metrics`, then drawing them). Valid files are made once,
then mutated: bit flips, truncation, inserted and deleted bytes, and for
archives member swaps, drops and replacements with hostile arrays (strings,
0-d, empty, NaN, uint64, a header declaring 10^12 elements). A `CnncError` is
the only acceptable failure, and its message must render. Examples are
derandomised and few, so the file runs in seconds and a strict xfail stays
strict.
"""
from __future__ import annotations

import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cnnc.dsl.source import CnncError
from cnnc.runtime.checkpoint import load_checkpoint, save_checkpoint
from cnnc.runtime.data.images import read_image
from cnnc.runtime.data.sources import load_dataset
from cnnc.viz.curves import curves_svg, read_metrics

from hostile_inputs import idx_header, npy_bytes, npy_header, png_bytes

# No shrinking: a failing example is reported as found (shrinking a strict xfail would cost seconds each run).
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------ valid seeds
@lru_cache(maxsize=None)
def checkpoint_seed() -> bytes:
    import tempfile
    path = Path(tempfile.mkdtemp()) / "seed.npz"
    save_checkpoint(path, {"param/conv.w": np.ones((2, 1, 3, 3), np.float32), "param/conv.b": np.zeros(2, np.float32),
                           "opt/conv.w.m": np.zeros((2, 1, 3, 3), np.float32)},
                    {"format": "cnnc-checkpoint-1", "network": "N", "epoch": 2, "best": 0.5, "bad_epochs": 0,
                     "history": [], "preprocess": {"normalize": {"mean": [0.1], "std": [0.3]}}})
    return path.read_bytes()


@lru_cache(maxsize=None)
def dataset_seed() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.random((6, 1, 4, 4), np.float32), y_train=np.arange(6) % 3,
             x_test=rng.random((3, 1, 4, 4), np.float32), y_test=np.arange(3))
    return buf.getvalue()


IMAGE_SEEDS = {
    "png-grey": png_bytes(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16),
    "png-rgb": png_bytes(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5),
    "png-palette": png_bytes(np.array([[0, 1], [1, 0]], np.uint8), palette=b"\x00\x00\x00\xff\xff\xff"),
    "pgm-binary": b"P5 4 4 255\n" + bytes(range(0, 256, 16)),
    "pgm-ascii": b"P2\n# a comment\n2 2\n15\n0 5\n10 15\n",
    "ppm-binary": b"P6 2 1 255\n" + bytes(range(6)),
}

METRICS_SEED = "".join(json.dumps({"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e,
                                   "val_loss": 1.2 / e, "val_accuracy": 0.4 + 0.1 * e, "lr": 0.1,
                                   "seconds": 0.5}) + "\n" for e in (1, 2, 3)) \
    + json.dumps({"split": "test", "loss": 0.4, "accuracy": 0.8}) + "\n"


# ------------------------------------------------------------------ mutations
def byte_mutations():
    position = st.integers(0, 1 << 16)
    return st.lists(st.one_of(
        st.tuples(st.just("flip"), position, st.integers(0, 7)),
        st.tuples(st.just("truncate"), position),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), position, st.integers(1, 64)),
        st.tuples(st.just("overwrite"), position, st.binary(min_size=1, max_size=8)),
    ), min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for op in ops:
        if not out:
            break
        at = op[1] % len(out)
        if op[0] == "flip":
            out[at] ^= 1 << op[2]
        elif op[0] == "truncate":
            del out[at:]
        elif op[0] == "insert":
            out[at:at] = op[2]
        elif op[0] == "delete":
            del out[at:at + op[2]]
        else:
            out[at:at + len(op[2])] = op[2]
    return bytes(out)


HOSTILE_MEMBERS = {
    "string": npy_bytes(np.array(["a", "bc"])),
    "0-d": npy_bytes(np.float32(3.0)),
    "empty": npy_bytes(np.zeros((0, 1, 4, 4), np.float32)),
    "nan": npy_bytes(np.full((2, 1, 4, 4), np.nan, np.float32)),
    "uint64": npy_bytes(np.array([0, 2 ** 64 - 1], np.uint64)),
    "negative": npy_bytes(np.array([-1, -2])),
    "complex": npy_bytes(np.ones(3, np.complex64)),
    "huge-header": npy_header((10 ** 6, 1000, 1000), "<f4"),
    "text": b"plain text, not an array\n",
    "empty-file": b"",
}


def archive_mutations():
    return st.lists(st.one_of(
        st.tuples(st.just("swap"), st.integers(0, 15), st.integers(0, 15)),
        st.tuples(st.just("drop"), st.integers(0, 15)),
        st.tuples(st.just("replace"), st.integers(0, 15), st.sampled_from(sorted(HOSTILE_MEMBERS))),
        st.tuples(st.just("duplicate"), st.integers(0, 15)),
    ), min_size=1, max_size=3)


def mutate_archive(data: bytes, ops) -> bytes:
    """Rebuild a zip archive with members swapped, dropped, replaced or duplicated under a new name."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(name, zf.read(name)) for name in zf.namelist()]
    for op in ops:
        if not members:
            break
        i = op[1] % len(members)
        if op[0] == "swap":
            j = op[2] % len(members)
            (a, da), (b, db) = members[i], members[j]
            members[i], members[j] = (a, db), (b, da)
        elif op[0] == "drop":
            del members[i]
        elif op[0] == "replace":
            members[i] = (members[i][0], HOSTILE_MEMBERS[op[2]])
        else:
            members.append(("extra_" + members[i][0], members[i][1]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members:
            zf.writestr(name, content)
    return buf.getvalue()


def only_user_errors(load, *args) -> None:
    try:
        result = load(*args)
    except CnncError as err:
        err.render()  # rendering the diagnostic must not fail either
        return
    return result


# ------------------------------------------------------------------ checkpoints and .npz data sets
ARCHIVES = {"checkpoint": (checkpoint_seed, load_checkpoint), "dataset": (dataset_seed, load_dataset)}


@pytest.mark.parametrize("kind", sorted(ARCHIVES))
@FUZZ
@given(ops=byte_mutations())
def test_mutated_archives_raise_only_user_errors(tmp_path, kind, ops):
    seed, load = ARCHIVES[kind]
    path = tmp_path / "a.npz"
    path.write_bytes(mutate(seed(), ops))
    only_user_errors(load, path)


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the mutation writes a member twice on purpose
@pytest.mark.parametrize("kind", sorted(ARCHIVES))
@FUZZ
@given(ops=archive_mutations())
def test_rearranged_archives_raise_only_user_errors(tmp_path, kind, ops):
    seed, load = ARCHIVES[kind]
    path = tmp_path / "a.npz"
    path.write_bytes(mutate_archive(seed(), ops))
    only_user_errors(load, path)


IDX_IMAGES = idx_header(0x08, (4, 4, 4)) + bytes(range(64))
IDX_LABELS = idx_header(0x08, (4,)) + bytes([0, 1, 2, 1])


@FUZZ
@given(which=st.sampled_from(["images", "labels"]), ops=byte_mutations())
def test_mutated_idx_folders_raise_only_user_errors(tmp_path, which, ops):
    folder = tmp_path / "mnist"
    folder.mkdir(exist_ok=True)
    images, labels = IDX_IMAGES, IDX_LABELS
    if which == "images":
        images = mutate(images, ops)
    else:
        labels = mutate(labels, ops)
    (folder / "train-images-idx3-ubyte").write_bytes(images)
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    only_user_errors(load_dataset, folder)


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("kind", [
    pytest.param(k) for k in IMAGE_SEEDS])
@FUZZ
@given(ops=byte_mutations())
def test_mutated_images_raise_only_user_errors(tmp_path, kind, ops):
    path = tmp_path / ("i.png" if kind.startswith("png") else "i.pnm")
    path.write_bytes(mutate(IMAGE_SEEDS[kind], ops))
    image = only_user_errors(read_image, path)
    if image is not None:
        assert image.ndim == 3 and image.dtype == np.float32 and np.isfinite(image).all()
        assert image.min() >= 0 and image.max() <= 1, "pixel values outside [0, 1]: wrapped or unscaled"


# ------------------------------------------------------------------ metrics
METRICS_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "null", "true", '"x"', "{}", "[]",
                  '{"epoch": Infinity}', '{"epoch": 1e400, "train_loss": 1}', '{"epoch": -1}', "\x1b[2J", ""]


@FUZZ
@given(data=st.data())
def test_mutated_metrics_raise_only_user_errors(tmp_path, data):
    lines = METRICS_SEED.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        action = data.draw(st.sampled_from(["token", "cut", "value", "long"]))
        if action == "token":
            col = data.draw(st.integers(0, len(line)))
            lines[i] = line[:col] + data.draw(st.sampled_from(METRICS_TOKENS)) + line[col:]
        elif action == "cut":
            lines[i] = line[:data.draw(st.integers(0, len(line)))]
        elif action == "value":
            key = data.draw(st.sampled_from(["epoch", "train_loss", "val_accuracy", "lr", "accuracy"]))
            value = data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e308", "0", "-5", '"s"', "null"]))
            lines[i] = line.replace(f'"{key}": ', f'"{key}": {value}, "was": ', 1)
        else:
            lines[i] = line + " " * 50_000
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    metrics = only_user_errors(read_metrics, path)
    if metrics is not None:
        only_user_errors(curves_svg, metrics)
