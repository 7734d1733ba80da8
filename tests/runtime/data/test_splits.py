"""Held-out splits: val and test fractions, seeded, stratified, disjoint, recorded and checked on --resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.data import containers, splits
from cnnc.runtime.train.trainer import Trainer


def labelled(counts: list[int], seed: int = 0) -> containers.Dataset:
    y = np.repeat(np.arange(len(counts)), counts)
    y = np.random.default_rng(seed).permutation(y)
    x = np.arange(len(y), dtype=np.float32)[:, None]   # each sample's x is its own index
    return containers.Dataset("toy", containers.Split(x, y))


def parts(ds: containers.Dataset) -> dict[str, np.ndarray]:
    return {n: s.x[:, 0].astype(int) for n, s in (("train", ds.train), ("val", ds.val), ("test", ds.test))
            if s is not None}


@pytest.mark.parametrize("val, test", [(0.1, 0.2), (0.25, 0.0), (0.0, 0.3), (0.05, 0.05)])
def test_parts_are_disjoint_cover_everything_and_have_the_asked_sizes(val, test):
    ds = labelled([50, 30, 20, 7])
    split = parts(splits.split_holdout(ds, val, test, seed=3))
    everything = np.concatenate(list(split.values()))
    assert sorted(everything.tolist()) == list(range(107))  # disjoint and complete
    assert len(split.get("val", [])) == (max(1, round(val * 107)) if val else 0)
    assert len(split.get("test", [])) == (max(1, round(test * 107)) if test else 0)


def test_the_split_is_stratified():
    ds = labelled([400, 200, 100, 100, 200])
    split = splits.split_holdout(ds, 0.1, 0.2, seed=1)
    for part, fraction in ((split.val, 0.1), (split.test, 0.2)):
        counts = np.bincount(part.y, minlength=5)
        np.testing.assert_array_equal(counts, np.array([400, 200, 100, 100, 200]) * fraction)


def test_uneven_classes_are_cut_by_largest_remainders():
    ds = labelled([7, 5, 3])  # 15 samples, test = 0.4 -> 6 test samples: 2.8, 2, 1.2 -> 3, 2, 1
    split = splits.split_holdout(ds, 0.0, 0.4, seed=0)
    assert np.bincount(split.test.y, minlength=3).tolist() == [3, 2, 1]


def test_the_split_is_reproducible_and_follows_the_seed():
    ds = labelled([40, 40, 40])
    a, b = (parts(splits.split_holdout(ds, 0.2, 0.2, seed=5)) for _ in range(2))
    c = parts(splits.split_holdout(ds, 0.2, 0.2, seed=6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_targets_that_are_not_class_labels_are_split_at_random():
    x = np.arange(20, dtype=np.float32)[:, None]
    ds = containers.Dataset("reg", containers.Split(x, np.linspace(0, 1, 20, dtype=np.float32)[:, None]))
    split = splits.split_holdout(ds, 0.25, 0.25, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (10, 5, 5)
    assert split.meta["split"]["stratified"] is False


def test_a_test_fraction_is_refused_for_data_with_a_test_split():
    ds = labelled([10, 10])
    ds = containers.Dataset("shipped.npz", ds.train, test=ds.train)
    with pytest.raises(CnncError, match="data 'shipped.npz' has its own test split, so a test fraction "
                                        "would replace it"):
        splits.split_holdout(ds, 0.0, 0.2)


def test_holding_out_everything_is_refused():
    with pytest.raises(CnncError, match="holding out 5 validation and 5 test samples leaves no training samples "
                                        "out of 10"):
        splits.split_holdout(labelled([5, 5]), 0.5, 0.5)


RUN = """
network Tiny {{
    input x: [1, 4, 4]
    x -> flatten -> linear(3)
}}
train Tiny {{
    data   = npz("{path}", test = 0.25, val = 0.25)
    epochs = {epochs}
    batch  = 8
    seed   = {seed}
}}
"""


def test_the_split_is_recorded_in_the_run_directory_and_checked_on_resume(compile_src, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 1, 4, 4)).astype(np.float32), y=np.arange(40) % 3)
    c = compile_src(RUN.format(path=tmp_path / "d.npz", epochs=1, seed=4), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path / "run", progress=False, log=lambda s: None)
    assert (len(t.ds.train), len(t.ds.val), len(t.ds.test)) == (20, 10, 10)
    t.run()
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert record["seed"] == 4 and record["val"] == 0.25 and record["test"] == 0.25 and record["stratified"]
    assert len(record["test_index"]) == 10 and set(record["test_index"]).isdisjoint(record["val_index"])
    x_all = np.load(tmp_path / "d.npz")["x"]  # the recorded indices name the samples of the test split
    np.testing.assert_array_equal(x_all[record["test_index"]], t.ds.test.x)

    c2 = compile_src(RUN.format(path=tmp_path / "d.npz", epochs=2, seed=4), allow={"all"})
    Trainer(c2, c2.net.train, tmp_path / "run", progress=False, log=lambda s: None).run(resume=True)
    other = compile_src(RUN.format(path=tmp_path / "d.npz", epochs=3, seed=5), allow={"all"})
    with pytest.raises(CnncError, match=r"--resume: the split recorded in .*split.json differs from the split "
                                        "of this run's data"):
        Trainer(other, other.net.train, tmp_path / "run", progress=False, log=lambda s: None).run(resume=True)
