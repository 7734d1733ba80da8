"""Stage 3 (runtime), training: the training loop behind `cnnc run`.

From a validated `TrainConfig` it makes the loss, asks the data pipeline
(data/pipeline.py) once for the run's data (read, split, preprocessed, checked
against the network), builds the engine (engines.py) and the schedule, then
trains epoch by epoch, augmenting and batching the training split: progress
on stderr, one summary line per epoch, `metrics.jsonl`, an atomic `last.npz`
after every epoch and `best.npz` when validation improves (and, with
`snapshots`, `snapshot-K.npz` at the end of each warm-restart cycle). Every random draw of epoch e comes from generators
seeded with (seed, e), so a run resumed from `last.npz` ends with the same
weights, bit for bit, as one that was never interrupted. A non-finite loss,
or parameters that are no longer finite at the end of an epoch, stop the run
before anything non-finite is written: the last good checkpoint stays.

The run directory is locked for the run (`OUT/.lock`, an flock held until
exit), so two runs never share one; a directory that already holds a run is
refused unless the run resumes it or is told to overwrite it. Every option of
the train section reaches its factory through the train vocabulary
(compiler/train_vocab.py), which each factory's parameters match.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...compiler.ops import OPS
from ...compiler.train_spec import Spec, TrainConfig
from ...compiler.train_vocab import OPTIMIZER
from ...dsl import files
from ...dsl.source import CnncError
from .. import checkpoint
from ..data import batching
from ..data.augment import make_augment
from ..data.containers import Dataset
from ..data.pipeline import prepare
from ..data.targets import CLASS, PIXEL_CLASS, NetworkShapes
from ..plan import Plan
from .engines import make_engine
from .evaluation import Confusion, report
from .losses import loss_for
from .numpy_engine import QUIET_FLOATS
from .optim import weight_predicate
from .rundir import RunDirectory
from .schedules import make_schedule


@dataclass
class EpochStats:
    loss: float = 0.0
    correct: int = 0
    counted: int = 0
    samples: int = 0

    def add(self, loss: float, n: int, counts: tuple[int, int] | None) -> None:
        self.loss += loss * n
        self.samples += n
        if counts is not None:
            self.correct += counts[0]
            self.counted += counts[1]

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.samples, 1)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.counted if self.counted else None


@dataclass
class RunResult:
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    test: dict | None = None
    stopped: str | None = None
    non_finite: bool = False  # stopped because the loss or the weights stopped being finite


# ------------------------------------------------------------------ state
def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """Independent, reproducible generators per (seed, epoch, purpose)."""
    return np.random.default_rng([seed, epoch, stream])


SHUFFLE, AUGMENT, DROPOUT = 0, 1, 2


class Trainer:
    def __init__(self, compiled, cfg: TrainConfig, out_dir: Path, data_override: str | None = None,
                 limit: int | None = None, progress: bool = True, log: Callable[[str], None] = print,
                 threads: int | None = None, engine: str = "numpy", device: str | None = None,
                 resplit: Callable[[Dataset], Dataset] | None = None):
        self.compiled, self.cfg, self.out = compiled, cfg, Path(out_dir)
        self.loss = loss_for(cfg)
        self.ds = prepare(cfg, NetworkShapes.of(compiled.net), self.loss, data_override, limit, resplit=resplit)
        hyper = cfg.optimizer.arguments
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        self.base_lr = float(hyper.pop("lr", OPTIMIZER.entries[cfg.optimizer.name].option("lr").default))
        if cfg.sync_bn and not any(OPS[n.op].has("batch_statistics") for n in compiled.net.layers()):
            raise CnncError("sync_bn = true, but the network has no layer that uses batch statistics",
                            cfg.locs.get("sync_bn"), "sync_bn synchronises batchnorm across processes; drop it")
        ops = {n.name: n.op for n in compiled.net.layers()}
        self.engine = make_engine(engine, compiled, cfg, self.base_lr, hyper, weight_predicate(ops), threads, device)
        self.main = getattr(self.engine, "world", None) is None or self.engine.world.main
        self.progress, self.log = progress and self.main, log if self.main else (lambda line: None)
        sched = cfg.schedule
        self.schedule = make_schedule(_schedule_spec(sched) if sched else None, self.base_lr, cfg.epochs)
        if cfg.snapshots and not self.schedule.restarts:
            raise CnncError("snapshots = true needs a schedule with warm restarts", cfg.locs.get("snapshots"),
                            "e.g. schedule = cosine_restarts(T_0 = 5): a snapshot is kept at the end of each cycle")
        self.augment = make_augment([(a.name, a.arguments) for a in cfg.augment]) if cfg.augment else None
        self.output = compiled.net.outputs[0]
        self.input = next(iter(compiled.net.inputs))
        self.class_names = self._class_names()
        self.epoch = 0            # epochs completed
        self.best: float | None = None
        self.bad_epochs = 0
        self.history: list[dict] = []

    @property
    def plan(self) -> Plan:
        """The numpy engine's plan (predict and tests reach the weights through it)."""
        return self.engine.plan

    @property
    def optimizer(self):
        return self.engine.optimizer

    # -------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> EpochStats:
        cfg = self.cfg
        x, y = self.ds.train.x, self.ds.train.y
        lr = self.schedule.lr(epoch)
        stats = EpochStats()
        aug_rng, drop_rng = _rng(cfg.seed, epoch, AUGMENT), _rng(cfg.seed, epoch, DROPOUT)
        n_batches = batching.num_batches(len(x), cfg.batch)
        self.engine.begin_epoch(epoch)
        start = time.perf_counter()
        for b, (xb, yb) in enumerate(batching.iterate_batches(x, y, cfg.batch, shuffle=True,
                                                               rng=_rng(cfg.seed, epoch, SHUFFLE))):
            if self.augment is not None:
                xb, yb = self.augment(xb, yb, aug_rng)
            loss, counts = self.engine.forward_backward(xb, yb, self.loss, drop_rng)
            if not math.isfinite(loss):
                raise NonFinite(epoch, b, loss)
            self.engine.step(lr)
            stats.add(loss, len(xb), counts)
            if self.progress:
                _progress(epoch + 1, cfg.epochs, b + 1, n_batches, stats, time.perf_counter() - start)
        if self.progress:
            sys.stderr.write("\r\x1b[2K")
        return stats

    def evaluate(self, split, confusion: Confusion | None = None) -> EpochStats:
        """Loss and accuracy on a split; `confusion`, if given, accumulates the class confusion too."""
        stats = EpochStats()
        for xb, yb in batching.iterate_batches(split.x, split.y, max(self.cfg.batch, 256)):
            pred = self.engine.predict(xb)
            loss, _ = self.loss(pred, yb)
            stats.add(loss, len(xb), self.loss.correct(pred, yb))
            if confusion is not None:
                confusion.add(pred, yb)
        return stats

    def _class_names(self) -> list[str] | None:
        """The train section's `classes` (which must name every output), else the data's own names
        (an image folder's sub-folders) when they name every output; recorded in checkpoints for predict."""
        if self.loss.target_kind not in (CLASS, PIXEL_CLASS):
            return None
        outputs = self.compiled.net.shapes[self.output][0]
        if self.cfg.classes:
            if len(self.cfg.classes) != outputs:
                raise CnncError(f"classes names {len(self.cfg.classes)} classes, but the network has {outputs} "
                                "outputs", self.cfg.locs.get("classes"), "name one class per output, in label order")
            return list(self.cfg.classes)
        names = self.ds.classes
        return [str(n) for n in names] if names is not None and len(names) == outputs else None

    def _confusion(self) -> Confusion | None:
        """A confusion matrix for class-label losses (one class per sample or per pixel), else None."""
        if self.loss.target_kind not in (CLASS, PIXEL_CLASS):
            return None
        classes = self.compiled.net.shapes[self.output][0]
        return Confusion(classes, self.loss.options.get("ignore_index"))

    def run(self, resume: bool = False, overwrite: bool = False,
            started: Callable[[], None] | None = None) -> RunResult:
        """Train in the locked run directory; `started` is called once it is ours and ready.
        With several processes, rank 0 owns the directory; the others only compute."""
        try:
            with (RunDirectory(self.out) if self.main else _NoDirectory()) as run_dir, \
                    np.errstate(**QUIET_FLOATS):
                if resume:
                    self._resume()
                elif self.main:
                    run_dir.claim(overwrite)
                    self._record_split()
                if started is not None and self.main:
                    started()
                return self._run_epochs(run_dir)
        finally:
            self.engine.close()

    def _run_epochs(self, run_dir: RunDirectory) -> RunResult:
        metrics = run_dir.metrics(self.epoch)
        result = RunResult(self.epoch)
        for epoch in range(self.epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            try:
                train = self.train_epoch(epoch)
                self._require_finite_state(epoch)
            except NonFinite as err:
                result.stopped, result.non_finite = str(err), True
                self.log(f"stopped: {err}; {self._last_good()}")
                break
            has_val = self.ds.val is not None and len(self.ds.val)
            val = self.engine.agree(self.evaluate(self.ds.val) if has_val and self.main else None)
            record = {"epoch": epoch + 1, "train_loss": train.mean_loss, "train_accuracy": train.accuracy,
                      "val_loss": val.mean_loss if val else None, "val_accuracy": val.accuracy if val else None,
                      "lr": self.schedule.lr(epoch), "seconds": round(time.perf_counter() - t0, 3)}
            if val is not None:
                self.schedule.observe(val.mean_loss)
            self.epoch = epoch + 1
            improved = self._track_best(val if val is not None else train)
            self.history.append(record)
            if self.main:
                metrics.append(record)
                self._save(self.out / "last.npz")
                if improved:
                    self._save(self.out / "best.npz")
                if self.cfg.snapshots and self.schedule.cycle_end(epoch):
                    self._save(self.out / snapshot_name(self.schedule, epoch))
            self.log(_epoch_line(record, self.cfg.epochs, train.samples))
            result.epochs_run = self.epoch
            if self.cfg.early_stop and self.bad_epochs >= self.cfg.early_stop.options["patience"]:
                result.stopped = f"early stop: no improvement in {self.bad_epochs} epochs"
                self.log(result.stopped)
                break
        result.history = self.history
        if self.main and self.ds.test is not None and len(self.ds.test) and not result.non_finite:
            # (not with broken weights)
            confusion = self._confusion()
            test = self.evaluate(self.ds.test, confusion)
            result.test = {"split": "test", "loss": test.mean_loss, "accuracy": test.accuracy}
            if confusion is not None:
                result.test.update(report(confusion, dense=self.loss.target_kind == PIXEL_CLASS,
                                          classes=self.class_names))
            metrics.append(result.test)
            acc = f", accuracy {test.accuracy:.2%}" if test.accuracy is not None else ""
            if result.test.get("mean_iou") is not None:
                acc += f", mean IoU {result.test['mean_iou']:.2%}"
            self.log(f"test: loss {test.mean_loss:.4f}{acc} ({len(self.ds.test):,} samples)")
        return result

    def _require_finite_state(self, epoch: int) -> None:
        """Parameters and optimizer state must be finite before any checkpoint is written."""
        for what, arrays in (("parameter", self.engine.params()), ("optimizer state", self.engine.optimizer_state())):
            for key, value in arrays.items():
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise NonFinite(epoch, None, None, f"{what} '{key}'")

    def _last_good(self) -> str:
        last = self.out / "last.npz"
        if last.exists():
            return f"the last good checkpoint is {files.describe_path(last)} (epoch {self.epoch})"
        return "no checkpoint was written (no epoch ended with finite weights)"

    def _track_best(self, stats: EpochStats) -> bool:
        score = -stats.accuracy if stats.accuracy is not None else stats.mean_loss
        if math.isfinite(score) and (self.best is None or score < self.best):
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    # ------------------------------------------------------- checkpoints
    def _save(self, path: Path) -> None:
        meta = {"network": self.compiled.net.name, "epoch": self.epoch,
                "seed": self.cfg.seed, "best": self.best, "bad_epochs": self.bad_epochs,
                "schedule": self.schedule.state_dict(), "history": self.history,
                "preprocess": self.ds.meta.get("preprocess", []), "classes": self.class_names}
        checkpoint.save_training_state(path, self.engine.params(), self.engine.optimizer_state(), meta)

    SPLIT_FILE = "split.json"

    def _record_split(self) -> None:
        """The held-out split (fractions, seed, indices) goes into OUT/split.json for --resume to check."""
        path = self.out / self.SPLIT_FILE
        split = self.ds.meta.get("split")
        if split is None:
            if os.path.lexists(path):
                os.unlink(path)  # an overwritten run's record does not describe this one
            return
        files.write_atomic(path, json.dumps(split, separators=(",", ":")), "split record")

    def _check_split(self) -> None:
        """A resumed run holds out exactly the samples its first epoch held out."""
        path = self.out / self.SPLIT_FILE
        split = self.ds.meta.get("split")
        if not os.path.lexists(path):
            if split is not None:
                raise CnncError(f"--resume: the run holds out samples, but {files.describe_path(path)} is missing",
                                hint="the run directory is incomplete; start the run again")
            return
        try:
            recorded = json.loads(files.read_bytes(path, "split record", 1 << 30))
        except ValueError:
            raise CnncError(f"--resume: {files.describe_path(path)} is not valid JSON") from None
        if recorded != split:
            raise CnncError(f"--resume: the split recorded in {files.describe_path(path)} differs from the "
                            "split of this run's data", hint="the data, its val/test fractions or the seed "
                            "changed since the run started; resume with the same ones")

    def _resume(self) -> None:
        """Continue from OUT/last.npz, which rank 0 reads and hands to every process (the other
        machines of a run need not see OUT)."""
        path = self.out / "last.npz"
        ck = self.engine.agree(self._resume_checkpoint(path) if self.main else None)
        epoch, best, bad_epochs, history = ck.epoch, ck.best, ck.bad_epochs, ck.history
        self.engine.load_state(ck.params, ck.optimizer, str(path))
        self.schedule.load_state_dict(ck.schedule)
        self.epoch, self.best, self.bad_epochs, self.history = epoch, best, bad_epochs, list(history)
        self.log(f"resuming {self.compiled.net.name} after epoch {self.epoch} from {path}")

    def _resume_checkpoint(self, path: Path) -> checkpoint.Checkpoint:
        if not path.exists():
            raise CnncError(f"--resume: no checkpoint at {path}", hint="start the run without --resume first")
        self._check_split()
        ck = checkpoint.load(path)
        if ck.network != self.compiled.net.name:
            raise CnncError(f"--resume: {path} belongs to network '{ck.meta.get('network')}', "
                            f"not '{self.compiled.net.name}'")
        return ck


class _NoDirectory:
    """What a process other than rank 0 holds instead of the run directory: it writes nothing."""

    def __enter__(self) -> "_NoDirectory":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def metrics(self, epoch: int) -> None:
        return None


def snapshot_name(schedule, epoch: int) -> str:
    """snapshot-K.npz for the K-th cycle ending at `epoch` (counted from the schedule: resuming agrees)."""
    return f"snapshot-{sum(schedule.cycle_end(e) for e in range(epoch + 1))}.npz"


class NonFinite(Exception):
    def __init__(self, epoch: int, batch: int | None, loss: float | None, what: str | None = None):
        if what is None:
            super().__init__(f"the loss became {loss} in epoch {epoch + 1}, batch {batch + 1}")
        else:
            super().__init__(f"the weights became non-finite in epoch {epoch + 1} ({what})")


def _schedule_spec(spec: Spec) -> Any:
    """(name, options) for make_schedule; warmup's `then` is a schedule of its own."""
    opts = spec.arguments
    if isinstance(opts.get("then"), Spec):
        opts["then"] = _schedule_spec(opts["then"])
    return (spec.name, opts)


def _clock(seconds: float) -> str:
    """0:07, 12:34 or 1:02:03."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _progress(epoch: int, epochs: int, b: int, n: int, stats: EpochStats, seconds: float, stream=None) -> None:
    """The epoch's progress bar (on a terminal: the trainer shows it only there) with samples/s and
    the time left in the epoch, redrawn in place."""
    stream = stream if stream is not None else sys.stderr
    width = 24
    filled = int(width * b / n)
    acc = f" acc {stats.accuracy:6.2%}" if stats.accuracy is not None else ""
    rate = stats.samples / seconds if seconds > 0 else 0.0
    eta = f" ETA {_clock(seconds / b * (n - b))}" if seconds > 0 else ""
    stream.write(f"\r\x1b[2Kepoch {epoch}/{epochs} [{'█' * filled}{'·' * (width - filled)}] "
                 f"{b}/{n} loss {stats.mean_loss:.4f}{acc} {rate:,.0f} samples/s{eta}")
    stream.flush()


def _epoch_line(r: dict, epochs: int, samples: int) -> str:
    parts = [f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}", f"train loss {r['train_loss']:.4f}"]
    if r["train_accuracy"] is not None:
        parts.append(f"acc {r['train_accuracy']:.2%}")
    if r["val_loss"] is not None:
        parts.append(f"val loss {r['val_loss']:.4f}")
        if r["val_accuracy"] is not None:
            parts.append(f"acc {r['val_accuracy']:.2%}")
    parts.append(f"lr {r['lr']:.4g}")
    parts.append(f"{r['seconds']:.1f}s ({samples / max(r['seconds'], 1e-9):,.0f} samples/s)")
    return "  ".join(parts)
