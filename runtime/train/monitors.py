"""Stage 3 (runtime), training: what a run watches — the figures of an epoch's record, and early stopping.

`figure(record, name)` reads a monitored figure (val_loss, val_accuracy, train_loss,
train_accuracy) from the record an epoch writes to metrics.jsonl; the plateau
schedule (schedules.py) and early stopping are fed the figure their `monitor`
names, never another. `EarlyStop` is Keras's EarlyStopping: an epoch improves
when its figure beats the best so far by more than `min_delta` (lower for
`min`, higher for `max`; `mode` None follows the monitor: min for a loss, max
for an accuracy); the run stops once `patience` epochs in a row have not
improved. Its options are those the train vocabulary declares
(compiler/train_vocab.py `EARLY_STOP`). The same watch, without stopping, says
when best.npz is written.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from ...dsl.source import CnncError


def figure(record: Mapping[str, Any], name: str) -> float:
    """The monitored figure of an epoch's record; a run whose record lacks it is refused by name
    (the checker refuses a val_ monitor without a validation split, so this is the last guard)."""
    value = record.get(name)
    if value is None:
        raise CnncError(f"the run watches {name}, but its epochs report none",
                        hint="a val_ figure needs a validation split; an accuracy needs class targets")
    return float(value)


def natural_mode(monitor: str) -> str:
    return "max" if monitor.endswith("accuracy") else "min"


class EarlyStop:
    """Keras's EarlyStopping (see the module docstring); `update` reports whether the epoch improved."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str | None = None) -> None:
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.mode = mode if mode is not None else natural_mode(monitor)
        self.best: float | None = None
        self.wait = 0

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def update(self, value: float) -> bool:
        if self.improves(value):
            self.best, self.wait = value, 0
            return True
        self.wait += 1
        return False

    @property
    def stop(self) -> bool:
        return self.wait >= self.patience
