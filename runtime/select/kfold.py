"""Stage 3 (runtime): k-fold cross-validation behind `cnnc run --kfold K` (train key `kfold`).

The training split (after `limit`) is cut into K disjoint folds
(runtime/data/splits.py); fold i trains a fresh model on the other K-1 folds
in OUT/fold-i (a run directory of its own: checkpoints, metrics.jsonl,
`--resume`) and is validated on fold i. The test split is kept out of every
fold: no fold trains, validates or is scored on it. Each fold's figures are
its last epoch's record; the summary is the mean and the sample standard
deviation (ddof = 1) of each figure over the folds, written with the folds to
OUT/kfold.json.
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
from ...dsl.source import CnncError
from ..data import splits
from ..train.rundir import RunDirectory

FIGURES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
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


def _refuse_val(cfg: TrainConfig) -> None:
    """The held-out fold is the validation split: a second one would be held out and never used."""
    given = cfg.val if cfg.val is not None else cfg.data.options.get("val")
    if given:
        raise CnncError(f"kfold = {cfg.kfold} and val = {given}: each fold validates on its held-out fold",
                        cfg.locs.get("kfold"),
                        "remove val (from the command line: --train data=NAME without it); the test split "
                        "stays out of every fold")


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
    _refuse_val(cfg)
    out = Path(out)
    folds: list[Fold] = []
    with RunDirectory(out):
        for i in range(k):
            fold_out = out / f"fold-{i + 1}"
            trainer = make_trainer(cfg, fold_out, splits.fold(k, i, cfg.seed),
                                   lambda s, i=i: log(f"fold {i + 1}/{k}: {s}"))
            if i == 0 and started is not None:
                started(len(trainer.ds.train) + len(trainer.ds.val))
            again = resume and (fold_out / "last.npz").exists()
            result = trainer.run(resume=again, overwrite=overwrite)
            last = result.history[-1] if result.history else {}
            folds.append(Fold(i + 1, len(trainer.ds.train), len(trainer.ds.val), result.epochs_run,
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
