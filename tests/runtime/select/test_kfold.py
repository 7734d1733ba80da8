"""k-fold cross-validation: disjoint folds that cover the training split, the test split out of every fold,
one result per fold and their mean ± std; bagging and the fold re-division come from runtime/data/splits.py."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.driver import compile_file
from cnnc.compiler.train_spec import set_key
from cnnc.dsl.source import CnncError
from cnnc.runtime.data import splits
from cnnc.runtime.data.containers import Dataset, Split
from cnnc.runtime.select.kfold import run_kfold
from cnnc.runtime.train.trainer import Trainer

SMALL = """
network Small(classes = 10) {
    input x: [1, 28, 28]
    x -> maxpool(4) -> flatten -> linear(16) -> relu -> linear(classes)
}
train Small {
    data = mnist10k
    epochs = 1
    batch = 32
    optimizer = adam(lr = 0.01)
}
"""


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def test_fold_indices_are_disjoint_cover_and_balanced():
    parts = splits.fold_indices(10, 3, seed=4)
    assert [len(p) for p in parts] == [4, 3, 3]
    joined = np.concatenate(parts)
    assert sorted(joined) == list(range(10))
    assert all((a == b).all() for a, b in zip(parts, splits.fold_indices(10, 3, seed=4)))  # reproducible


@pytest.mark.parametrize("n, k, message", [(2, 3, "only 2 samples, fewer than the folds"),
                                           (10, 1, "kfold must be at least 2")])
def test_impossible_folds_are_refused(n, k, message):
    with pytest.raises(CnncError, match=message):
        splits.fold_indices(n, k, 0)


def test_bootstrap_draws_with_replacement_reproducibly():
    ds = Dataset("t", Split(np.arange(100, dtype=np.float32)[:, None], np.arange(100)))
    a, b = splits.bootstrap(ds, 3), splits.bootstrap(ds, 3)
    assert len(a.train) == 100 and (a.train.y == b.train.y).all()
    assert len(set(a.train.y.tolist())) < 100   # some drawn twice: ~63% distinct
    assert 50 < len(set(a.train.y.tolist())) < 75
    assert not (splits.bootstrap(ds, 4).train.y == a.train.y).all()


def test_three_folds_of_the_embedded_digits(write, tmp_path):
    path = write(SMALL)
    c = compile_file(path)
    cfg = set_key(c.net.train, "kfold", 3, None)
    seen = []

    def make(fold_cfg, out, resplit, log):
        t = Trainer(c, fold_cfg, out, limit=300, progress=False, log=lambda s: None, threads=1, resplit=resplit)
        seen.append(t)
        return t
    result = run_kfold(c, cfg, tmp_path / "cv", make, log=lambda s: None)
    assert [f.index for f in result.folds] == [1, 2, 3]
    test_rows = _rows(Trainer(c, c.net.train, tmp_path / "t", limit=300, progress=False).ds.test.x)
    vals = []
    for t in seen:
        assert t.ds.test is None                                   # never scored on the test split
        assert len(t.ds.train) + len(t.ds.val) == 300
        assert not (_rows(t.ds.train.x) | _rows(t.ds.val.x)) & test_rows   # no test sample in a fold
        assert not _rows(t.ds.train.x) & _rows(t.ds.val.x)
        vals.append(_rows(t.ds.val.x))
    assert not (vals[0] & vals[1]) and not (vals[0] & vals[2]) and not (vals[1] & vals[2])  # disjoint folds
    accs = [f.figures["val_accuracy"] for f in result.folds]
    assert result.summary["val_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert result.summary["val_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    doc = json.loads((tmp_path / "cv" / "kfold.json").read_text())
    assert doc["k"] == 3 and len(doc["folds"]) == 3 and doc["summary"] == result.summary
    for i in (1, 2, 3):
        assert (tmp_path / "cv" / f"fold-{i}" / "last.npz").exists()


def test_kfold_on_the_command_line(write, tmp_path, capsys):
    path = write(SMALL)
    out = tmp_path / "cv"
    argv = ["run", str(path), "--kfold", "2", "--limit", "120", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "2-fold cross-validation of 120 training samples" in text
    assert "mean" in text and " std" in text and (out / "kfold.json").exists()
    assert main(argv) == 1                                 # a finished cross-validation is not replaced
    assert "already holds a run" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0                  # every fold is finished: nothing retrains
    assert "resuming" in capsys.readouterr().out


def test_a_quiet_kfold_run_prints_only_its_final_figures(write, tmp_path, capsys):
    """--quiet: no header, no fold's record or epoch lines; the same table of folds (same seed, one thread)."""
    path = write(SMALL)
    argv = ["run", str(path), "--kfold", "2", "--limit", "120", "--threads", "1"]
    assert main(argv + ["--out", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr().out.splitlines()
    assert main(argv + ["--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()

    def table(lines):
        return [line for line in lines if ":" not in line and line.split()[:1] in (["fold"], ["1"], ["2"], ["mean"],
                                                                                   ["std"])]
    assert any("cross-validation" in line for line in loud) and any(": epoch 1/1 " in line for line in loud)
    assert not [line for line in quiet if "cross-validation" in line or ": epoch " in line or ": train: " in line]
    assert len(table(loud)) == 5 and table(quiet) == table(loud)


@pytest.mark.parametrize("argv, message", [
    (["--kfold", "1"], "--kfold 1: kfold must be an integer >= 2, got the integer 1"),
    (["--train", "kfold=x"], "--train kfold=x: kfold must be an integer >= 2"),
    (["--kfold", "500", "--limit", "100"], "kfold = 500: the training split has only 100 samples"),
])
def test_bad_kfold_flags_are_one_line_errors(write, tmp_path, capsys, argv, message):
    path = write(SMALL)
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_too_many_folds_name_the_flag_to_change(write, tmp_path, capsys):
    path = write(SMALL)
    assert main(["run", str(path), "--kfold", "500", "--limit", "100", "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "hint: use at most 100 folds (--kfold 100), or more data (--limit)" in capsys.readouterr().err


def test_a_validation_split_inside_each_fold(write, tmp_path, capsys):
    """kfold with val: each fold holds out val of its training folds for validation (early stopping,
    best.npz) and scores its held-out fold once trained; no sample is in two parts, none from the test split."""
    path = write(SMALL.replace("epochs = 1", "epochs = 1\n    kfold = 3\n    val = 0.2"))
    c = compile_file(path)
    seen = []

    def make(fold_cfg, out, resplit, log):
        t = Trainer(c, fold_cfg, out, limit=300, progress=False, log=lambda s: None, threads=1, resplit=resplit)
        seen.append(t)
        return t
    result = run_kfold(c, c.net.train, tmp_path / "cv", make, log=lambda s: None)
    test_rows = _rows(Trainer(c, replace(c.net.train, kfold=None), tmp_path / "t", limit=300,
                              progress=False).ds.test.x)
    held = []
    for t, fold in zip(seen, result.folds):
        train, val, fold_part = _rows(t.ds.train.x), _rows(t.ds.val.x), _rows(t.ds.test.x)
        assert len(t.ds.train) + len(t.ds.val) + len(t.ds.test) == 300
        assert len(t.ds.val) == 40 and len(t.ds.test) == 100           # val: 0.2 of the 200 training-fold samples
        assert not (train & val) and not (train & fold_part) and not (val & fold_part)
        assert not (train | val | fold_part) & test_rows
        held.append(fold_part)
        lines = [json.loads(l) for l in (tmp_path / "cv" / f"fold-{fold.index}" / "metrics.jsonl").read_text()
                 .splitlines()]
        assert lines[-1]["split"] == "fold" and lines[0]["val_loss"] is not None
        assert fold.figures["fold_loss"] == pytest.approx(lines[-1]["loss"]) and fold.val == 100
    assert not (held[0] & held[1]) and not (held[1] & held[2])
    assert set(result.summary) >= {"val_loss", "fold_loss", "fold_accuracy"}
    assert main(["run", str(path), "--limit", "90", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fold_accuracy" in out and "fold 3/3: held-out fold: loss" in out


def test_bootstrap_trains_on_a_resample_of_the_training_split(write, tmp_path, capsys):
    path = write(SMALL)
    c = compile_file(path)
    plain = Trainer(c, c.net.train, tmp_path / "a", limit=200, progress=False)
    bagged = Trainer(c, set_key(c.net.train, "bootstrap", True, None), tmp_path / "b", limit=200, progress=False)
    assert len(bagged.ds.train) == len(plain.ds.train) == 200
    rows = [r.tobytes() for r in bagged.ds.train.x.reshape(200, -1)]
    assert len(set(rows)) < 160                                          # drawn with replacement
    assert set(rows) <= _rows(plain.ds.train.x)                          # only training samples
    assert (bagged.ds.test.x == plain.ds.test.x).all()                   # the test split untouched
    assert main(["run", str(path), "--bootstrap", "--limit", "100", "--out", str(tmp_path / "r")]) == 0
    assert "100 training samples (a bootstrap resample)" in capsys.readouterr().out
