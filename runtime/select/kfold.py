"""Stage 3 (runtime): k-fold cross-validation behind `cnnc run --kfold K` (train key `kfold`).

The training split (after `limit`) is cut into K disjoint folds
(runtime/data/splits.py); fold i trains a fresh model on the other K-1 folds
in OUT/fold-i (a run directory of its own: checkpoints, metrics.jsonl,
`--resume`). Without a `val` fraction fold i is the validation split; with
one, that fraction of the other folds is held out as each fold's validation
split (for early stopping, plateau, best.npz) and fold i is scored once the
fold's training ends (`fold_loss`, `fold_accuracy`). The test split is kept
out of every fold: no fold trains, validates or is scored on it. Each fold's
figures are its last epoch's record (and its held-out fold's score); the
summary is the mean and the sample standard deviation (ddof = 1) of each
figure over the folds, written with the folds to OUT/kfold.json.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...compiler.train_spec import TrainConfig
from ...dsl import files
from ..data import splits
from ..train.rundir import RunDirectory

FIGURES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "fold_loss", "fold_accuracy")
SUMMARY = "kfold.json"


@dataclass
class Fold:
    index: int                  # 1-based
    train: int                  # samples trained on
    val: int                    # samples of the held-out fold
    epochs: int
    figures: dict[str, float | None]
    out: str
    stopped: str | None = None
    non_finite: bool = False


@dataclass
class KFoldResult:
    folds: list[Fold]
    summary: dict[str, dict[str, float]]   # figure -> {"mean", "std"}

    def as_json(self) -> dict[str, Any]:
        return {"k": len(self.folds), "folds": [vars(f) for f in self.folds], "summary": self.summary}


def summarize(folds: list[Fold]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each figure every fold has."""
    out: dict[str, dict[str, float]] = {}
    for name in FIGURES:
        values = [f.figures.get(name) for f in folds]
        if values and all(v is not None and math.isfinite(v) for v in values):
            arr = np.array(values, dtype=np.float64)
            out[name] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}
    return out


def run_kfold(compiled, cfg: TrainConfig, out: Path, make_trainer: Callable[..., Any], *, resume: bool = False,
              overwrite: bool = False, log: Callable[[str], None] = print,
              started: Callable[[int], None] | None = None) -> KFoldResult:
    """Train cfg.kfold models, one per fold, in OUT/fold-1 ... OUT/fold-K; write OUT/kfold.json.

    `make_trainer(cfg, out_dir, resplit, log)` builds a Trainer (the caller supplies the
    data flags); `started(k)` is called once the first fold's data is loaded.
    """
    k = int(cfg.kfold)
    out = Path(out)
    folds: list[Fold] = []
    with RunDirectory(out):
        for i in range(k):
            fold_out = out / f"fold-{i + 1}"
            trainer = make_trainer(cfg, fold_out, splits.fold(k, i, cfg.seed, cfg.val),
                                   lambda s, i=i: log(f"fold {i + 1}/{k}: {s}"))
            ds = trainer.ds
            held = ds.test if cfg.val else ds.val    # the fold scored: held out past training, or validating
            if i == 0 and started is not None:
                started(sum(len(s) for s in (ds.train, ds.val, ds.test) if s is not None))
            again = resume and (fold_out / "last.npz").exists()
            result = trainer.run(resume=again, overwrite=overwrite)
            last = dict(result.history[-1]) if result.history else {}
            if result.test is not None:
                last.update(fold_loss=result.test["loss"], fold_accuracy=result.test["accuracy"])
            folds.append(Fold(i + 1, len(ds.train), len(held), result.epochs_run,
                              {name: _finite(last.get(name)) for name in FIGURES}, str(fold_out), result.stopped,
                              result.non_finite))
        kf = KFoldResult(folds, summarize(folds))
        text = json.dumps(kf.as_json(), indent=1, allow_nan=False, default=_plain) + "\n"
        files.write_atomic(out / SUMMARY, text.encode("utf-8"), "k-fold summary")
    return kf


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
