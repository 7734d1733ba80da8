"""Stage 3 (runtime), training: the training loop behind `cnnc run`.

From a resolved `TrainConfig` it makes the objective (a loss per output of the
network, losses.py `Objective`), asks the data pipeline (data/pipeline.py) once
for the run's data (read, split, its preprocessing fitted, checked against the
network), builds the engine (engines.py) and the schedule, then trains epoch
by epoch, batching the training split and augmenting each batch as read before
preprocessing it (torchvision's order): the resolved record in one line at the
start (compiler/train_spec.py `summary`; its JSON form goes into every
checkpoint's meta as "train"), progress on stderr, one summary line per epoch
(each output's loss and accuracy when there are several), `metrics.jsonl`, an
atomic `last.npz` after every epoch and `best.npz` when the watched figure
improves (early stopping's monitor; without it validation accuracy, else loss)
(and, with `snapshots`, `snapshot-K.npz` at the end of each warm-restart cycle).
The plateau schedule and early stopping are fed the figure their `monitor`
names (monitors.py). Every random draw of epoch e comes from generators
seeded with (seed, e), so a run resumed from `last.npz` ends with the same
weights, bit for bit, as one that was never interrupted. A non-finite loss,
or parameters that are no longer finite at the end of an epoch, stop the run
before anything non-finite is written: the last good checkpoint stays.
An `on_epoch` callback (`cnnc.train(callback=...)`, app/api.py) sees each
epoch's metrics.jsonl record once its checkpoints are written; returning
False or raising `StopTraining` ends the run there.

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
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...compiler.metrics_format import LAYERS
from ...compiler.ops import OPS
from ...compiler.train_spec import Spec, TrainConfig, for_network, record, summary, with_data
from ...dsl import files
from ...dsl.source import CnncError
from .. import checkpoint
from ..data import batching
from ..data.augment import make_augment
from ..data.containers import IMAGE_SIZE, Dataset
from ..data.pipeline import inputs, prepare
from ..data.splits import HELD_OUT
from ..data.targets import CLASS, PIXEL_CLASS, NetworkShapes
from ..plan import Plan
from ..progress import Progress
from .diagnostics import PROBE, LayerWatch, Rules, Unwatched
from .engines import make_engine
from .events import EventWriter, check_events
from .evaluation import Confusion, report
from .losses import Objective
from .monitors import EarlyStop, figure
from .numpy_engine import QUIET_FLOATS
from .optim import weight_predicate
from .rundir import MetricsFile, RunDirectory
from .schedules import make_schedule


@dataclass
class OutputStats:
    """One output's share of an epoch: its own mean loss and accuracy counts."""

    loss: float = 0.0
    correct: int = 0
    counted: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.counted if self.counted else None


@dataclass
class EpochStats:
    loss: float = 0.0
    samples: int = 0
    outputs: dict[str, OutputStats] = field(default_factory=dict)

    def add(self, loss: float, n: int, counts: dict, each: dict | None = None) -> None:
        self.loss += loss * n
        self.samples += n
        for o, c in counts.items():
            out = self.outputs.setdefault(o, OutputStats())
            if each is not None:
                out.loss += each[o] * n
            if c is not None:
                out.correct += c[0]
                out.counted += c[1]

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.samples, 1)

    @property
    def accuracy(self) -> float | None:
        """The accuracy of a one-output network (None with several: each output has its own)."""
        return next(iter(self.outputs.values())).accuracy if len(self.outputs) == 1 else None

    def per_output(self, prefix: str) -> dict[str, dict[str, float | None]]:
        """Each output's loss and accuracy, named as in an epoch's record (`train_loss`, …)."""
        n = max(self.samples, 1)
        return {o: {f"{prefix}_loss": s.loss / n, f"{prefix}_accuracy": s.accuracy} for o, s in self.outputs.items()}


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
                 limit: int | None = None, progress: bool | Progress = True, log: Callable[[str], None] = print,
                 threads: int | None = None, engine: str = "numpy", device: str | None = None,
                 resplit: Callable[[Dataset], Dataset] | None = None, kernels: str | None = None,
                 on_epoch: Callable[[dict], bool | None] | None = None, watch_every: int | None = None,
                 tensorboard: Path | None = None, quiet: bool = False):
        if watch_every is not None and watch_every < 1:
            raise CnncError(f"--watch-every {watch_every}: must be at least 1")
        net = compiled.net
        cfg = for_network(with_data(cfg, data_override, limit), net.outputs)   # --data, --limit replace the data
        self.compiled, self.cfg, self.out = compiled, cfg, Path(out_dir)
        self.on_epoch = on_epoch   # sees each epoch's metrics.jsonl record; False (or StopTraining) stops the run
        self.quiet = quiet         # only warnings, stops and the final figures are logged
        self.objective = Objective.of(cfg, tuple(net.outputs))
        self.loss = self.objective.first
        shapes = NetworkShapes.of(net, {o: loss.target_kind for o, loss in self.objective.losses.items()})
        targets = self.objective.losses if len(net.outputs) > 1 else self.loss
        self.ds = prepare(cfg, shapes, targets, resplit=resplit)
        self.records = self.ds.meta.get("preprocess", [])
        hyper = cfg.optimizer.arguments
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        self.base_lr = cfg.lr
        if cfg.sync_bn and not any(OPS[n.op].has("batch_statistics") for n in net.layers()):
            raise CnncError("sync_bn = true, but the network has no layer that uses batch statistics",
                            cfg.locs.get("sync_bn"), "sync_bn synchronises batchnorm across processes; drop it")
        ops = {n.name: n.op for n in net.layers()}
        self.engine = make_engine(engine, compiled, cfg, self.base_lr, hyper, weight_predicate(ops), threads, device,
                                  kernels)
        self.main = getattr(self.engine, "world", None) is None or self.engine.world.main
        # progress: show a bar of this run (True), or advance a caller's bar (k-fold's, over every fold)
        self.progress, self.log = progress if self.main else False, log if self.main else (lambda line: None)
        self.bar: Progress | None = None
        try:
            self._refuse_lone_samples()
        except CnncError:
            self.engine.close()   # (several processes leave their group together)
            raise
        sched = cfg.schedule
        self.schedule = make_schedule(_schedule_spec(sched) if sched else None, self.base_lr, cfg.epochs)
        self.augment = make_augment([(a.name, a.arguments) for a in cfg.augment]) if cfg.augment else None
        self.output = net.outputs[0]
        self.input = next(iter(net.inputs))
        self.class_names = self._class_names()
        self.record = record(cfg)
        self.epoch = 0            # epochs completed
        self.watch = EarlyStop(**cfg.early_stop.arguments) if cfg.early_stop else None
        self.best: float | None = None
        self.bad_epochs = 0
        self.history: list[dict] = []
        self.layers: LayerWatch | Unwatched = self._layer_watch(watch_every)
        self.rules = Rules(net, compiled.allow)
        # TensorBoard event files (events.py) fed every metrics record; the writer and folder are checked now
        self.tensorboard = check_events(Path(tensorboard)) if tensorboard is not None and self.main else None
        self.events: EventWriter | None = None   # while the epochs run
        self.metrics: MetricsFile | None = None   # rank 0's metrics.jsonl while the epochs run

    def _layer_watch(self, every: int | None) -> LayerWatch:
        """Per-layer statistics (diagnostics.py), their activations on the first training samples."""
        probe = inputs(self.ds, self.ds.train.x[:PROBE])
        plan = getattr(self.engine, "plan", None)
        return LayerWatch(self.compiled, probe, every, plan.kernel_set if plan is not None else None)

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
        self.engine.begin_epoch(epoch)
        steps = batching.num_batches(len(x), cfg.batch, cfg.drop_last)
        self.layers.begin_epoch(epoch, steps)
        start = time.perf_counter()
        if self.bar is not None:
            self.bar.set_label(f"epoch {epoch + 1}/{cfg.epochs}")
        for b, (xb, yb) in enumerate(batching.iterate_batches(x, y, cfg.batch, shuffle=True,
                                                               rng=_rng(cfg.seed, epoch, SHUFFLE),
                                                               drop_last=cfg.drop_last)):
            if self.augment is not None:   # on the samples as read, then the preprocessing (torchvision's order)
                xb, yb = self.augment(xb, yb, aug_rng)
            loss, counts, each = self.engine.forward_backward(inputs(self.ds, xb), yb, self.objective, drop_rng)
            if not math.isfinite(loss):
                raise NonFinite(epoch, b, loss)
            self.layers.gradients(self.engine, b, steps)
            before = self.layers.before_step(self.engine.params()) if self.layers.sampled(b, steps) else None
            self.engine.step(lr)
            if before is not None:
                self.layers.after_step(before, self.engine.params())
            if self.layers.watched_step(b) and self.metrics is not None:     # --watch-every K
                self.metrics.append(self.layers.step_record(b, self.engine.params()))
            stats.add(loss, len(xb), counts, each)
            if self.bar is not None:
                self.bar.update(1, bar_fields(stats, time.perf_counter() - start, lr))
        return stats

    def evaluate(self, split, confusion: dict[str, Confusion] | None = None) -> EpochStats:
        """Loss and accuracy on a split (its samples as read: the preprocessing is applied here);
        `confusion`, if given, accumulates each class output's confusion too."""
        stats = EpochStats()
        for xb, yb in batching.iterate_batches(split.x, split.y, max(self.cfg.batch, 256)):
            pred = self.engine.predict(inputs(self.ds, xb))
            loss, _, each = self.objective(pred, yb)
            stats.add(loss, len(xb), self.objective.correct(pred, yb), each)
            for o, matrix in (confusion or {}).items():
                matrix.add(pred[o], self.objective.targets(yb)[o])
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

    def _confusion(self) -> dict[str, Confusion]:
        """A confusion matrix per output with class-label targets (one class per sample or per pixel)."""
        return {o: Confusion(self.compiled.net.shapes[o][0], loss.options.get("ignore_index"))
                for o, loss in self.objective.losses.items() if loss.target_kind in (CLASS, PIXEL_CLASS)}

    def _refuse_lone_samples(self) -> None:
        """A batch whose batchnorm sees one value per channel cannot be normalised in training (PyTorch
        refuses it too): found here, before training, not as a failure in some epoch's last batch."""
        net = self.compiled.net
        lone = [n for n in net.layers() if OPS[n.op].has("batch_statistics")
                and all(d == 1 for d in net.shapes[n.inputs[0]][1:])]
        if not lone:
            return
        n, batch = len(self.ds.train), self.cfg.batch
        world = getattr(self.engine, "world", None)
        ranks = world.size if world is not None else 1
        smallest = batching.smallest_batch(n, batch, self.cfg.drop_last)
        share = smallest // ranks          # the fewest samples one process computes
        if smallest == 0 or share > 1:
            return
        layer = lone[0]
        if batch // ranks <= 1:
            raise CnncError(f"batch = {batch}: batchnorm '{layer.name}' normalises {list(net.shapes[layer.inputs[0]])} "
                            f"features over the batch, which needs at least 2 samples" +
                            (f" per process ({ranks} processes)" if ranks > 1 else ""),
                            self.cfg.locs.get("batch"), "use a larger batch")
        raise CnncError(f"the last batch of each epoch holds {smallest} sample{'s' if smallest != 1 else ''} "
                        f"({n:,} training samples in batches of {batch})" +
                        (f", {share} per process" if ranks > 1 else "") +
                        f", and batchnorm '{layer.name}' cannot normalise {list(net.shapes[layer.inputs[0]])} "
                        "features over one sample", self.cfg.locs.get("batch"),
                        "add drop_last = true to the train section (or --train drop_last=true), or change batch")

    def run(self, resume: bool = False, overwrite: bool = False,
            started: Callable[[], None] | None = None) -> RunResult:
        """Train in the locked run directory; `started` is called once it is ours and ready.
        With several processes, rank 0 owns the directory; the others only compute."""
        finished = False
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
                self._say(f"train: {summary(self.cfg)}")
                with self._progress_bar():
                    result = self._run_epochs(run_dir)
            finished = True
            return result
        finally:
            self.engine.close(finished)   # a failed run does not wait for the other processes

    @contextmanager
    def _progress_bar(self):
        """The bar the epochs advance (runtime/progress.py): this run's own, closed at its end (on
        Ctrl-C its line is ended first), or the caller's, which goes on after this run."""
        own = self.progress is True
        bar = Progress(f"epoch {self.epoch + 1}/{self.cfg.epochs}") if own else self.progress or None
        steps = batching.num_batches(len(self.ds.train), self.cfg.batch, self.cfg.drop_last)
        self.bar, log = bar, self.log
        try:
            if bar is not None:
                bar.start_run(self.cfg.epochs * steps, min(self.epoch, self.cfg.epochs) * steps)
                self.log = lambda line: (bar.clear(), log(line))   # lines go above the bar
            yield
        except BaseException:
            if own:
                bar.close(interrupted=True)
            raise
        finally:
            self.bar, self.log = None, log
            if own:
                bar.close()

    def _run_epochs(self, run_dir: RunDirectory) -> RunResult:
        metrics = run_dir.metrics(self.epoch)
        self.metrics = metrics if self.main else None
        self.events = EventWriter(self.tensorboard) if self.tensorboard is not None else None
        if self.events is not None:
            metrics.readers.append(self.events.add)
        try:
            if self.events is not None:
                self.events.graph(self.compiled.net)   # once per run: the Graphs tab
            return self._epochs(metrics)
        finally:
            self.metrics = None
            if self.events is not None:
                self.events.close()

    def _epochs(self, metrics) -> RunResult:
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
            record = epoch_record(epoch + 1, train, val, self.schedule.lr(epoch), time.perf_counter() - t0)
            self.epoch = epoch + 1
            improved = self.observe(record)
            self.history.append(record)   # (with its layers: checkpoints keep the history without them)
            layers = self.layers.records(self.engine.params()) if self.main else []
            if layers:
                record[LAYERS] = layers
            if self.main:
                metrics.append(record)
                if self.events is not None:
                    self.events.feature_maps(self.epoch, self.layers.activations)
                self._save(self.out / "last.npz")
                if improved:
                    self._save(self.out / "best.npz")
                if self.cfg.snapshots and self.schedule.cycle_end(epoch):
                    self._save(self.out / snapshot_name(self.schedule, epoch))
            self._say(_epoch_line(record, self.cfg.epochs, train.samples))
            for warning in self.rules.check(record) if self.main else ():
                self.log(warning.line())
            result.epochs_run = self.epoch
            if self.on_epoch is not None:   # every process has one, or none: all agree with rank 0's answer
                result.stopped = self.engine.agree(self._callback(record) if self.main else None)
                if result.stopped:
                    self.log(f"stopped: {result.stopped}")
                    break
            if self.watch is not None and self.watch.stop:
                result.stopped = (f"early stop: {self.watch.monitor} has not improved in {self.watch.wait} epochs "
                                  f"(best {self.watch.best:.4g})")
                self.log(result.stopped)
                break
        result.history = self.history
        if self.main and self.ds.test is not None and len(self.ds.test) and not result.non_finite:
            result.test = self._test()   # (not with broken weights)
            metrics.append(result.test)
        return result

    def observe(self, record: dict) -> bool:
        """Feed an epoch's record to what watches it: the plateau schedule and early stopping get the
        figure their monitor names; returns whether the watched figure improved (best.npz)."""
        if self.schedule.monitor is not None:
            self.schedule.observe(figure(record, self.schedule.monitor))
        if self.watch is not None:
            improved = self.watch.update(figure(record, self.watch.monitor))
            self.best, self.bad_epochs = self.watch.best, self.watch.wait
            return improved
        return self._track_best(record)

    def _track_best(self, record: dict) -> bool:
        """Without early stopping, best.npz follows validation accuracy, else validation loss, else the
        training figures (the first the epochs report)."""
        name = next(n for n in ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
                    if record.get(n) is not None or n == "train_loss")
        score = -record[name] if name.endswith("accuracy") else record[name]
        if math.isfinite(score) and (self.best is None or score < self.best):
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    def _test(self) -> dict:
        """The test split's record (or, in a k-fold with a validation split, the held-out fold's): loss
        and accuracy, each class output's confusion report, and each output's figures when there are several."""
        confusion = self._confusion()
        test = self.evaluate(self.ds.test, confusion)
        name = self.ds.meta.get("test_name", "test")
        out: dict[str, Any] = {"split": name, "loss": test.mean_loss, "accuracy": test.accuracy}
        reports = {o: report(c, dense=self.objective.losses[o].target_kind == PIXEL_CLASS,
                             classes=self.class_names if len(self.objective.outputs) == 1 else None)
                   for o, c in confusion.items()}
        if len(self.objective.outputs) == 1:
            out.update(next(iter(reports.values()), {}))
        else:
            out["outputs"] = {o: {"loss": f[f"{name}_loss"], "accuracy": f[f"{name}_accuracy"], **reports.get(o, {})}
                              for o, f in test.per_output(name).items()}
        acc = f", accuracy {test.accuracy:.2%}" if test.accuracy is not None else ""
        if out.get("mean_iou") is not None:
            acc += f", mean IoU {out['mean_iou']:.2%}"
        each = "".join(f"; {o} {_figures(f, name)}" for o, f in test.per_output(name).items()) \
            if len(self.objective.outputs) > 1 else ""
        self.log(f"{'held-out fold' if name == HELD_OUT else 'test'}: loss {test.mean_loss:.4f}{acc}{each} "
                 f"({len(self.ds.test):,} samples)")
        return out

    def _callback(self, record: dict) -> str | None:
        """Hand the epoch's record (after its checkpoints) to `on_epoch`; why it stops the run, or None."""
        try:
            go_on = self.on_epoch(dict(record))
        except StopTraining as stop:
            return str(stop) or f"the callback stopped the run after epoch {record['epoch']}"
        return f"the callback returned False after epoch {record['epoch']}" if go_on is False else None

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

    # ------------------------------------------------------- checkpoints
    def _save(self, path: Path) -> None:
        meta = {"network": self.compiled.net.name, "epoch": self.epoch,
                "seed": self.cfg.seed, "best": self.best, "bad_epochs": self.bad_epochs,
                "schedule": self.schedule.state_dict(),
                "history": [{k: v for k, v in r.items() if k != LAYERS} for r in self.history],
                "preprocess": self.records, "classes": self.class_names, "train": self.record,
                "image_size": self.ds.meta.get(IMAGE_SIZE)}
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

    def _say(self, line: str) -> None:
        """A routine line (the record, each epoch, resuming): logged unless the run is quiet."""
        if not self.quiet:
            self.log(line)

    def _resume(self) -> None:
        """Continue from OUT/last.npz, which rank 0 reads and hands to every process (the other
        machines of a run need not see OUT)."""
        path = self.out / "last.npz"
        ck = self.engine.agree(self._resume_checkpoint(path) if self.main else None)
        epoch, best, bad_epochs, history = ck.epoch, ck.best, ck.bad_epochs, ck.history
        self.engine.load_state(ck.params, ck.optimizer, str(path))
        self.schedule.load_state_dict(ck.schedule)
        self.epoch, self.best, self.bad_epochs, self.history = epoch, best, bad_epochs, list(history)
        if self.watch is not None:
            self.watch.best, self.watch.wait = best, bad_epochs
        self._say(f"resuming {self.compiled.net.name} after epoch {self.epoch} from {path}")

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


class StopTraining(Exception):
    """Raised by an `on_epoch` callback (`cnnc.train(callback=...)`) to end the run after this epoch: its
    checkpoints are written, the test split is scored, and the message is the run's `stopped`."""


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


def bar_fields(stats: EpochStats, seconds: float, lr: float | None = None) -> dict[str, str]:
    """The figures shown after the training bar, in order: name -> the text shown (runtime/progress.py
    leaves out, from the end, what the terminal has no room for). Another figure is another entry."""
    fields = {"loss": f"loss {stats.mean_loss:.4f}"}
    if stats.accuracy is not None:
        fields["accuracy"] = f"acc {stats.accuracy:.2%}"
    if lr is not None:
        fields["lr"] = f"lr {lr:.3g}"
    if seconds > 0:
        fields["speed"] = f"{stats.samples / seconds:,.0f} samples/s"
    return fields


def epoch_record(epoch: int, train: EpochStats, val: EpochStats | None, lr: float, seconds: float) -> dict:
    """An epoch's line of metrics.jsonl: the total figures, and each output's when there are several."""
    r = {"epoch": epoch, "train_loss": train.mean_loss, "train_accuracy": train.accuracy,
         "val_loss": val.mean_loss if val else None, "val_accuracy": val.accuracy if val else None,
         "lr": lr, "seconds": round(seconds, 3)}
    if len(train.outputs) > 1:
        each = train.per_output("train")
        for o, f in (val.per_output("val") if val else {}).items():
            each[o].update(f)
        r["outputs"] = each
    return r


def _figures(f: dict, prefix: str) -> str:
    """`loss 0.1234  acc 95.00%` of one split's figures (`train_loss`, `train_accuracy`)."""
    acc = f.get(f"{prefix}_accuracy")
    return f"loss {f[f'{prefix}_loss']:.4f}" + (f" acc {acc:.2%}" if acc is not None else "")


def _epoch_line(r: dict, epochs: int, samples: int) -> str:
    parts = [f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}", f"train loss {r['train_loss']:.4f}"]
    if r["train_accuracy"] is not None:
        parts.append(f"acc {r['train_accuracy']:.2%}")
    if r["val_loss"] is not None:
        parts.append(f"val loss {r['val_loss']:.4f}")
        if r["val_accuracy"] is not None:
            parts.append(f"acc {r['val_accuracy']:.2%}")
    for o, f in r.get("outputs", {}).items():
        shown = _figures(f, "train") + (f", val {_figures(f, 'val')}" if f.get("val_loss") is not None else "")
        parts.append(f"[{o}: {shown}]")
    parts.append(f"lr {r['lr']:.4g}")
    parts.append(f"{r['seconds']:.1f}s ({samples / max(r['seconds'], 1e-9):,.0f} samples/s)")
    return "  ".join(parts)
