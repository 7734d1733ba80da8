"""Stage 3 (runtime), data: the one call that makes a run's data, step by step in one direction.

`prepare` is what the trainer (and prediction, evaluation, k-fold) asks for:
1. the source: the train section's `data = ...` entry, or `--data` (sources.py);
2. `limit`: only the first N training samples;
3. held-out splits: the `val` and `test` fractions (splits.py `split_holdout`);
4. resampling: a k-fold's fold, then a bootstrap resample (splits.py `resample`);
5. preprocessing: fitted on the training split, or replayed from a checkpoint's
   records (runtime/preprocess.py), applied to every split;
6. the checks against the network's shapes and the loss's targets (targets.py).
Each step reads only what the one before gave it. Augmenting and batching happen
per epoch, in the trainer (augment.py, batching.py).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ...compiler.train_spec import TrainConfig
from .. import preprocess
from .containers import Dataset, Split
from .sources import DATA_LOADERS, load_named
from .splits import resample, split_holdout
from .targets import NetworkShapes, TargetSpec, check_dataset


def prepare(cfg: TrainConfig, shapes: NetworkShapes, loss: TargetSpec, data_override: str | None = None,
            limit: int | None = None, records: list[dict] | None = None,
            resplit: Callable[[Dataset], Dataset] | None = None) -> Dataset:
    """The data set of a run, split, preprocessed and checked against the network's `shapes` and `loss`.

    `resplit` (a k-fold's fold) re-divides the splits before anything is fitted; `bootstrap`
    then resamples the training split. The preprocessing is fitted on the training split,
    unless `records` (from a checkpoint) say what it was; either way the records end in
    `ds.meta["preprocess"]`.
    """
    spec = cfg.data
    opts = spec.arguments
    val = opts.pop("val", None)
    test = opts.pop("test", None)
    limit = limit or opts.pop("limit", None)
    opts.pop("limit", None)
    if data_override is not None:
        ds = load_named(data_override, shapes)
    else:
        ds = DATA_LOADERS[spec.name](shapes, **opts)
    if limit:
        ds = replace(ds, train=ds.train.take(np.arange(min(int(limit), len(ds.train)))))
    val = cfg.val if cfg.val is not None else val
    test = cfg.test if cfg.test is not None else test
    ds = split_holdout(ds, val, test, cfg.seed)
    ds = resample(ds, resplit, cfg.bootstrap, cfg.seed)
    if records is None:
        records = preprocess.fit([(p.name, p.arguments) for p in cfg.preprocess], ds.train.x)
    ds = _preprocessed(ds, records)
    classes = shapes.output[0] if shapes.output else None
    return check_dataset(ds, shapes.input, classes, loss)


def _preprocessed(ds: Dataset, records: list[dict]) -> Dataset:
    """Every split after the records; the records themselves in `ds.meta["preprocess"]`."""
    def fix(split):
        return None if split is None else Split(preprocess.apply(records, split.x), split.y)

    meta = dict(ds.meta)
    meta["preprocess"] = list(records)
    if not records:
        return replace(ds, meta=meta)
    return replace(ds, train=fix(ds.train), val=fix(ds.val), test=fix(ds.test), meta=meta)
