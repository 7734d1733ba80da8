"""Stage 3 (runtime), data: dividing a data set — held-out splits, k-fold folds and bootstrap resamples.

`split_holdout` holds validation and/or test parts out of the training split
(`holdout_indices`: seeded, disjoint, stratified by class), recorded in
`ds.meta["split"]` for the run directory. Then the training split may be
re-divided:
`fold_indices(n, k, seed)` cuts a seeded permutation of the training split
into k disjoint folds that cover it (sizes differ by at most one, as
scikit-learn's shuffled `KFold`); `fold(k, i, seed)` returns the re-division
for fold i: training on the other folds, validating on fold i, and no test
split at all, so the test samples never reach a fold (they are held back for
the model finally chosen). `bootstrap` draws len(train) samples of the
training split with replacement (bagging). The pipeline (pipeline.py) applies
both before it fits any preprocessing, so statistics never see a held-out sample.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError
from .containers import Dataset, first_targets

def split_validation(ds: Dataset, val: float, seed: int = 0) -> Dataset:
    """Move a seeded random `val` fraction of the training split into `ds.val` (order kept)."""
    if not 0.0 <= val < 1.0:
        raise CnncError(f"the validation fraction must lie in [0, 1), got {val}")
    n = len(ds.train)
    count = int(round(val * n))
    if val > 0:
        count = max(1, count)
    if count >= n:
        raise CnncError(f"a validation fraction of {val} leaves no training samples out of {n}")
    if count == 0:
        return ds
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(order[:count]), np.sort(order[count:])
    return replace(ds, train=ds.train.take(train_idx), val=ds.train.take(val_idx))


def _allocate(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split `total` over groups in proportion to `counts` (largest remainders, ties drawn at random)."""
    exact = counts * (total / max(int(counts.sum()), 1))
    base = np.floor(exact).astype(np.int64)
    order = np.lexsort((rng.random(len(counts)), -(exact - base)))
    base[order[:total - int(base.sum())]] += 1
    return base


def _held_out_count(fraction: float, n: int) -> int:
    return 0 if not fraction else max(1, int(round(fraction * n)))


def holdout_indices(y: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Sorted indices of the train, validation and test parts, seeded and disjoint.

    `val` and `test` are fractions of all `len(y)` samples. With one class label
    per sample the split is stratified: each class is cut in the same proportions
    (largest remainders), so every part keeps the class balance of the whole.
    """
    n = len(y)
    n_test, n_val = _held_out_count(test, n), _held_out_count(val, n)
    if n_test + n_val >= n:
        raise CnncError(f"holding out {n_val} validation and {n_test} test samples leaves no training "
                        f"samples out of {n}", hint="lower val or test (--train val=F, --train test=F)")
    rng = np.random.default_rng([seed, 0x5B117])
    order = rng.permutation(n)
    labels = np.asarray(y)
    if labels.ndim == 1 and labels.dtype.kind in "iub":
        classes, inverse = np.unique(labels[order], return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes))
        want_test = _allocate(counts, n_test, rng)
        want_val = _allocate(counts - want_test, n_val, rng)
        rank = np.empty(n, np.int64)   # position of each sample among its class, in shuffled order
        for c in range(len(classes)):
            members = np.flatnonzero(inverse == c)
            rank[members] = np.arange(len(members))
        part = np.where(rank < want_test[inverse], 2, np.where(rank < (want_test + want_val)[inverse], 1, 0))
    else:
        part = np.zeros(n, np.int64)
        part[:n_test], part[n_test:n_test + n_val] = 2, 1
    return {name: np.sort(order[part == k]) for k, name in ((0, "train"), (1, "val"), (2, "test"))}


def split_holdout(ds: Dataset, val: float | None, test: float | None, seed: int = 0) -> Dataset:
    """Hold out validation and/or test parts of the training split (see `holdout_indices`).

    A `test` fraction is refused for data that ships its own test split. The split
    is recorded in `ds.meta["split"]` (fractions, seed and indices) for the run directory.
    """
    val, test = float(val or 0.0), float(test or 0.0)
    if not val and not test:
        return ds
    if test and ds.test is not None:
        raise CnncError(f"data '{files.describe_path(ds.name)}' has its own test split, so a test fraction "
                        "would replace it", hint="drop test = ..., or use val = ... to hold out validation data")
    labels = first_targets(ds.train.y)
    index = holdout_indices(labels, val, test, seed)
    meta = dict(ds.meta)
    meta["split"] = {"seed": seed, "val": val, "test": test, "samples": len(ds.train),
                     "stratified": bool(np.asarray(labels).ndim == 1 and labels.dtype.kind in "iub"),
                     "val_index": index["val"].tolist(), "test_index": index["test"].tolist()}
    part = lambda k: ds.train.take(index[k]) if len(index[k]) else None  # noqa: E731
    return replace(ds, train=ds.train.take(index["train"]), val=part("val") or ds.val,
                   test=part("test") if test else ds.test, meta=meta)


FOLDS, BOOTSTRAP = 7, 8   # random streams of their own (the trainer's are 0-2)


def fold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint, sorted index arrays covering range(n), from a permutation seeded by `seed`."""
    if k < 2:
        raise CnncError(f"kfold must be at least 2, got {k}")
    if n < k:
        raise CnncError(f"kfold = {k}: the training split has only {n} samples, fewer than the folds",
                        hint=f"use at most {n} folds (--kfold {n}), or more data (--limit)")
    order = np.random.default_rng([seed, FOLDS]).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


HELD_OUT = "fold"   # the name of a fold's held-out part when it is not the validation split


def fold(k: int, i: int, seed: int, val: float | None = None) -> Callable[[Dataset], Dataset]:
    """The re-division of fold i (0-based) of k: train on the others, no test split. Fold i is the
    validation split; with a `val` fraction, that fraction of the other folds is (held out as a
    run's val is: stratified, seeded) and fold i is scored once training ends, as a test split
    named "fold"."""
    def resplit(ds: Dataset) -> Dataset:
        parts = fold_indices(len(ds.train), k, seed)
        rest = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i]))
        held = ds.train.take(parts[i])
        if not val:
            return replace(ds, train=ds.train.take(rest), val=held, test=None)
        inner = split_holdout(replace(ds, train=ds.train.take(rest), val=None, test=None), val, None, seed)
        return replace(inner, test=held, meta={**inner.meta, "test_name": HELD_OUT})
    return resplit


def bootstrap(ds: Dataset, seed: int) -> Dataset:
    """The training split resampled with replacement (same size), seeded by the run's seed."""
    n = len(ds.train)
    picks = np.sort(np.random.default_rng([seed, BOOTSTRAP]).integers(0, n, size=n))
    return replace(ds, train=ds.train.take(picks))


def resample(ds: Dataset, resplit: Callable[[Dataset], Dataset] | None, use_bootstrap: bool,
             seed: int) -> Dataset:
    """What the pipeline applies after the held-out splits: a fold's re-division, then a bootstrap resample."""
    if resplit is not None:
        ds = resplit(ds)
    return bootstrap(ds, seed) if use_bootstrap else ds
