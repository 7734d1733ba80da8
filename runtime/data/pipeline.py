"""Stage 3 (runtime), data: the one call that makes a run's data, step by step in one direction.

`prepare` is what the trainer (and prediction, evaluation, k-fold) asks for:
1. the source: the train section's `data = ...` entry (sources.py; `--data` and `--limit`
   replace it and its limit: compiler/train_spec.py `with_data`);
2. `limit`: only the first N training samples; `targets = inputs`: each sample's target is itself;
3. held-out splits: the `val` and `test` fractions (splits.py `split_holdout`);
4. resampling: a k-fold's fold (which holds out its own validation part when `val` is
   given), then a bootstrap resample (splits.py `resample`);
5. preprocessing: *fitted* on the training split as read (or replayed from a checkpoint's
   records: runtime/preprocess.py) — the records go into `ds.meta["preprocess"]`, and the
   samples stay as read;
6. the checks against the network's shapes and the loss's targets (targets.py).
Each step reads only what the one before gave it. The trainer then augments each training
batch (augment.py) on the images as read, in [0, 1], and only then applies the records
(normalisation last, as torchvision's transforms do); evaluation batches get the records alone.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import numpy as np

from ...compiler.train_spec import TrainConfig
from ...compiler.train_vocab import DATA
from .. import preprocess
from .containers import Dataset, Split
from .image_policy import ImagePolicy
from .sources import load_source
from .splits import resample, split_holdout
from .targets import NetworkShapes, TargetSpec, check_dataset


def prepare(cfg: TrainConfig, shapes: NetworkShapes, loss: TargetSpec | Mapping[str, TargetSpec],
            records: list[dict] | None = None, resplit: Callable[[Dataset], Dataset] | None = None,
            images: ImagePolicy | None = None) -> Dataset:
    """The data set of a run, split, its preprocessing fitted, checked against the network's `shapes`
    and `loss` (one per output for a network with several).

    `resplit` (a k-fold's fold) re-divides the splits before anything is fitted; `bootstrap`
    then resamples the training split. The preprocessing is fitted on the training split,
    unless `records` (from a checkpoint) say what it was; either way the records end in
    `ds.meta["preprocess"]` and every split holds its samples as read (`inputs` applies them).
    `images`: a trained network's image policy (image_policy.py: a folder of images is resized to its
    size, and must then fit the network), for evaluation.
    """
    opts = cfg.data.arguments
    common = {o.name: opts.pop(o.name, o.default) for o in DATA.common}   # every data set's; the rest the source's
    limit, targets = common["limit"], common["targets"]
    ds = load_source(cfg.data.name, shapes, opts, images.size if images is not None else None)
    if images is not None:
        images.check_data(ds)
    if limit:
        ds = replace(ds, train=ds.train.take(np.arange(min(int(limit), len(ds.train)))))
    if targets == "inputs":
        ds = _own_inputs_as_targets(ds)
    # A fold holds out its own validation part (of its training folds), so the val fraction waits for it.
    ds = split_holdout(ds, None if resplit is not None else cfg.val, cfg.test, cfg.seed)
    ds = resample(ds, resplit, cfg.bootstrap, cfg.seed)
    if records is None:
        records = preprocess.fit([(p.name, p.arguments) for p in cfg.preprocess], ds.train.x)
    ds = replace(ds, meta={**ds.meta, "preprocess": list(records)})
    return check_dataset(ds, shapes, loss)


def inputs(ds: Dataset, x: np.ndarray) -> np.ndarray:
    """Samples of `ds` as the network takes them: after its preprocessing records."""
    return preprocess.apply(ds.meta.get("preprocess", []), x)


def _own_inputs_as_targets(ds: Dataset) -> Dataset:
    """`targets = inputs`: every split's targets are its samples as read (an autoencoder learns them)."""
    def own(split: Split | None) -> Split | None:
        return None if split is None else Split(split.x, split.x.copy())
    return replace(ds, train=own(ds.train), val=own(ds.val), test=own(ds.test), classes=None)
