"""Stage 3 (runtime), training: `cnnc run --tensorboard DIR` — the metrics records as TensorBoard event files.

A consumer of metrics.jsonl, not a second bookkeeping: `EventWriter.add` is
handed every record the run appends to metrics.jsonl (rundir.py
`MetricsFile`), as it is appended, and writes each of its figures as a scalar
at the record's epoch, under a tag spelled from the record's own keys:

- an epoch record: `train_loss`, `train_accuracy`, `val_loss`, `val_accuracy`, `lr`, `seconds`
  (and `outputs/O/train_loss`, ... for a network with several outputs), and of its `layers`
  (compiler/metrics_format.py) `layers/LAYER/params/P/FIGURE`, `layers/LAYER/activation/FIGURE`,
  `layers/LAYER/drift/FIGURE`;
- the test record: `test/loss`, `test/accuracy` (at the last epoch);
- a step record (`--watch-every K`): its layers' figures as `steps/layers/...`, at the run's step.

A null figure is not written. The `histograms` of each layer record become
TensorBoard histograms at the record's epoch: `layers/LAYER/weights/P` (the
values at the end of the epoch), `layers/LAYER/gradients/P` (the epoch's last
step) and `layers/LAYER/activation` (the probe's outputs), with the record's
bins as TensorBoard's buckets.

The writer is tensorboardX (the `cnnc[tensorboard]` extra): the smallest
well-kept writer of event files (a pure-Python wheel of under 100 KB that
needs numpy, packaging and protobuf), where TensorBoard's own writer comes
with TensorBoard's server and its dependencies, and torch.utils.tensorboard
needs both PyTorch and TensorBoard.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ...compiler.metrics_format import LAYERS, STEP
from ...dsl import files
from ...dsl.source import CnncError

EXTRA = "pip install 'cnnc[tensorboard]'"
EPOCH_SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def writer_class() -> Any:
    """tensorboardX's SummaryWriter, or a one-line error naming the extra."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise CnncError("--tensorboard: the TensorBoard writer (tensorboardX) is not installed",
                        hint=f"run {EXTRA}") from None
    return SummaryWriter


def check_folder(folder: Path) -> Path:
    """The folder for the event files, made if missing; a one-line error when it cannot be."""
    shown = files.describe_path(folder)
    if folder.exists() and not folder.is_dir():
        raise CnncError(f"--tensorboard '{shown}' is not a directory", hint="give a folder for the event files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CnncError(f"--tensorboard '{shown}' cannot be used: {(err.strerror or str(err)).lower()}") from None
    return folder


def check_events(folder: Path) -> Path:
    """Before a run: the writer is installed and `folder` can hold the event files."""
    writer_class()
    return check_folder(folder)


class EventWriter:
    """TensorBoard event files in `folder`, fed the run's metrics records."""

    def __init__(self, folder: Path):
        writer = writer_class()
        self.folder = check_folder(Path(folder))
        self.writer = writer(logdir=str(self.folder), flush_secs=5)
        self.epoch = 0

    def add(self, record: Mapping[str, Any]) -> None:
        """One metrics.jsonl record, as it is appended."""
        if STEP in record:      # --watch-every's step record: its layers' figures at the run's step
            for tag, value in layer_scalars(record.get(LAYERS) or ()):
                self.writer.add_scalar(f"steps/{tag}", value, record[STEP])
            return
        if "epoch" in record:
            self.epoch = record["epoch"]
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, self.epoch)
        for tag, h in histograms(record):
            self.writer.add_histogram_raw(tag, global_step=self.epoch, **buckets(h))

    def close(self) -> None:
        self.writer.close()


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(tag, value) of each figure of a metrics record that is a finite number."""
    if record.get("split") is not None:
        yield from _finite(str(record["split"]), {k: record.get(k) for k in ("loss", "accuracy")})
        return
    yield from _finite("", {k: record.get(k) for k in EPOCH_SCALARS})
    for o, figures in (record.get("outputs") or {}).items():
        yield from _finite(f"outputs/{o}", figures)
    yield from layer_scalars(record.get(LAYERS) or ())


def layer_scalars(layers) -> Iterator[tuple[str, float]]:
    """(tag, value) of each finite figure of a record's layer records."""
    for layer in layers:
        base = f"layers/{layer['layer']}"
        for p, figures in (layer.get("params") or {}).items():
            yield from _finite(f"{base}/params/{p}", figures)
        for group in ("activation", "drift"):
            yield from _finite(f"{base}/{group}", layer.get(group) or {})


HISTOGRAM_TAGS = {"params": "weights", "gradients": "gradients"}   # a record's group -> its tag's word


def histograms(record: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(tag, histogram) of each histogram of an epoch record's layers that counts any value."""
    for layer in record.get(LAYERS) or ():
        base = f"layers/{layer['layer']}"
        groups = layer.get("histograms") or {}
        for group, word in HISTOGRAM_TAGS.items():
            for p, h in (groups.get(group) or {}).items():
                if sum(h["counts"]):
                    yield f"{base}/{word}/{p}", h
        if "activation" in groups and sum(groups["activation"]["counts"]):
            yield f"{base}/activation", groups["activation"]


def buckets(h: Mapping[str, Any]) -> dict[str, Any]:
    """add_histogram_raw's arguments for a record's histogram: its bins as buckets (each by its upper edge;
    one bucket when all values are equal). The record keeps no sums, so TensorBoard's `sum` and
    `sum_squares` are taken at the bins' centres (its histogram and distribution views draw only buckets)."""
    lo, hi, counts = float(h["lo"]), float(h["hi"]), np.asarray(h["counts"], dtype=np.float64)
    if hi > lo:
        edges = np.linspace(lo, hi, len(counts) + 1)
        limits, centres = edges[1:], (edges[:-1] + edges[1:]) / 2
    else:
        counts = np.array([counts.sum()])
        limits = centres = np.array([hi])
    return {"min": lo, "max": hi, "num": int(counts.sum()), "sum": float(counts @ centres),
            "sum_squares": float(counts @ centres ** 2), "bucket_limits": limits, "bucket_counts": counts}


def _finite(prefix: str, figures: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    for name, value in figures.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield (f"{prefix}/{name}" if prefix else name), float(value)
