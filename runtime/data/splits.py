"""Stage 3 (runtime): re-dividing a data set's training split — k-fold folds and bootstrap resamples.

`fold_indices(n, k, seed)` cuts a seeded permutation of the training split
into k disjoint folds that cover it (sizes differ by at most one, as
scikit-learn's shuffled `KFold`); `fold(k, i, seed)` returns the re-division
for fold i: training on the other folds, validating on fold i, and no test
split at all, so the test samples never reach a fold (they are held back for
the model finally chosen). `bootstrap` draws len(train) samples of the
training split with replacement (bagging). The trainer applies both before
it fits any preprocessing, so statistics never see a held-out sample.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ...dsl.source import CnncError
from .array_files import Dataset

FOLDS, BOOTSTRAP = 7, 8   # random streams of their own (the trainer's are 0-2)


def fold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint, sorted index arrays covering range(n), from a permutation seeded by `seed`."""
    if k < 2:
        raise CnncError(f"kfold must be at least 2, got {k}")
    if n < k:
        raise CnncError(f"kfold = {k}: the training split has only {n} samples, fewer than the folds")
    order = np.random.default_rng([seed, FOLDS]).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def fold(k: int, i: int, seed: int) -> Callable[[Dataset], Dataset]:
    """The re-division of fold i (0-based) of k: train on the others, validate on it, no test split."""
    def resplit(ds: Dataset) -> Dataset:
        parts = fold_indices(len(ds.train), k, seed)
        rest = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i]))
        return replace(ds, train=ds.train.take(rest), val=ds.train.take(parts[i]), test=None)
    return resplit


def bootstrap(ds: Dataset, seed: int) -> Dataset:
    """The training split resampled with replacement (same size), seeded by the run's seed."""
    n = len(ds.train)
    picks = np.sort(np.random.default_rng([seed, BOOTSTRAP]).integers(0, n, size=n))
    return replace(ds, train=ds.train.take(picks))


def resample(ds: Dataset, resplit: Callable[[Dataset], Dataset] | None, use_bootstrap: bool,
             seed: int) -> Dataset:
    """What load_data applies after its own splits: a fold's re-division, then a bootstrap resample."""
    if resplit is not None:
        ds = resplit(ds)
    return bootstrap(ds, seed) if use_bootstrap else ds
