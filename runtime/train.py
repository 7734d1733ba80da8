"""Stage 3 (runtime): the training loop behind `cnnc run`.

Builds the data (load, split, preprocess, check against the network), the
plan, the loss, optimizer and schedule from a validated `TrainConfig`, then
trains epoch by epoch: progress on stderr, one summary line per epoch,
`metrics.jsonl`, an atomic `last.npz` after every epoch and `best.npz` when
validation improves (and, with `snapshots`, `snapshot-K.npz` at the end of
each warm-restart cycle). Every random draw of epoch e comes from generators
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
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from ..compiler.ops import OPS
from ..compiler.train_spec import Spec, TrainConfig
from ..compiler.train_vocab import OPTIMIZER
from ..dsl import files
from ..dsl.source import CnncError
from . import checkpoint
from . import data as data_mod
from . import preprocess
from . import standard_datasets
from . import resampling
from .augment import make_augment
from .kernels import shards
from .engines import make_engine
from .evaluation import Confusion, report
from .losses import CLASS, PIXEL_CLASS, make_loss
from .optim import make_optimizer, penalty, weight_predicate
from .plan import Plan
from .rundir import RunDirectory
from .schedules import make_schedule
from .segmentation_data import load_segmentation_entry



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


# ------------------------------------------------------------------- data
def _spec_options(spec: Spec) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.kwargs}


# One loader per entry of the vocabulary's DATA family; each takes exactly the entry's options
# (the family's common options, val and limit, are applied by load_data to every data set).
def _load_mnist10k(compiled) -> data_mod.Dataset:
    return data_mod.load_dataset("mnist10k")


def _load_path(compiled, path: str) -> data_mod.Dataset:
    return data_mod.load_dataset(path)


def _load_npz(compiled, path: str) -> data_mod.Dataset:
    if Path(path).is_dir():
        raise CnncError(f"data = npz(\"{files.describe_path(path)}\"): that is a folder, not an .npz file",
                        hint="for a folder of images write images(\"…\"), for IDX files idx(\"…\")")
    return data_mod.load_dataset(path)


def _load_idx(compiled, path: str) -> data_mod.Dataset:
    if Path(path).exists() and not data_mod.is_idx_folder(path):
        raise CnncError(f"data = idx(\"{files.describe_path(path)}\"): not a folder of MNIST IDX files",
                        hint="it needs train-images-idx3-ubyte and train-labels-idx1-ubyte (.gz allowed)")
    return data_mod.load_dataset(path)


def _load_images(compiled, path: str, size: Any = None, channels: int | None = None) -> data_mod.Dataset:
    from .segmentation_data import is_segmentation_folder
    if is_segmentation_folder(path):
        raise CnncError(f"data = images(\"{files.describe_path(path)}\"): that folder holds images and masks "
                        "(a segmentation data set), not one sub-folder per class",
                        hint=f"write data = segmentation(\"{files.describe_path(path)}\")")
    given = {k: v for k, v in (("size", size), ("channels", channels)) if v is not None}
    return data_mod.load_dataset(path, **given)


def _load_synthetic(compiled, n: int | None = None, classes: int | None = None, shape: Any = None,
                    kind: str | None = None, seed: int = 0, noise: float | None = None) -> data_mod.Dataset:
    net = compiled.net
    out = net.shapes[net.outputs[0]]
    in_shape = tuple(shape) if shape is not None else tuple(net.shapes[next(iter(net.inputs))])
    kind = kind or ("segmentation" if len(out) == 3 else "classes")
    opts: dict[str, Any] = {"seed": seed}
    if noise is not None:
        opts["noise"] = noise
    if n is not None:
        opts["n_train"], opts["n_test"] = n, max(n // 4, 1)
    if kind == "regression":
        opts["features"] = in_shape[0]
        opts["targets"] = classes if classes is not None else out[0]
    else:
        opts["shape"] = in_shape
        opts["num_classes"] = classes if classes is not None else out[0]
    return data_mod.load_dataset(f"synthetic_{kind}", **opts)


DATA_LOADERS: dict[str, Callable[..., data_mod.Dataset]] = {
    "mnist10k": _load_mnist10k, "path": _load_path, "npz": _load_npz, "idx": _load_idx,
    "images": _load_images, "synthetic": _load_synthetic, "segmentation": load_segmentation_entry,
}


def _standard_loader(name: str) -> Callable[..., data_mod.Dataset]:
    def load(compiled) -> data_mod.Dataset:
        return standard_datasets.load_standard(name)
    return load


# The standard data sets by name (mnist, cifar10, ...): downloaded on first use.
DATA_LOADERS.update({name: _standard_loader(name) for name in standard_datasets.STANDARD})


def load_data(cfg: TrainConfig, compiled, data_override: str | None = None, limit: int | None = None,
              records: list[dict] | None = None, resplit: Callable[[data_mod.Dataset], data_mod.Dataset] | None = None):
    """The dataset for a run, split, preprocessed and checked against the network.

    `resplit` (a k-fold's fold) re-divides the splits before anything is fitted; `bootstrap`
    then resamples the training split. The preprocessing is fitted on the training split,
    unless `records` (from a checkpoint) say what it was; either way the records end in
    `ds.meta["preprocess"]`.
    """
    spec = cfg.data
    opts = _spec_options(spec)
    val = opts.pop("val", None)
    test = opts.pop("test", None)
    limit = limit or opts.pop("limit", None)
    opts.pop("limit", None)
    if data_override is not None:
        ds = data_mod.load_dataset(data_override)
    else:
        ds = DATA_LOADERS[spec.name](compiled, **opts)
    if limit:
        ds = replace(ds, train=ds.train.take(np.arange(min(int(limit), len(ds.train)))))
    val = cfg.val if cfg.val is not None else val
    test = cfg.test if cfg.test is not None else test
    ds = data_mod.split_holdout(ds, val, test, cfg.seed)
    ds = resampling.resample(ds, resplit, cfg.bootstrap, cfg.seed)
    if records is None:
        records = preprocess.fit([(p.name, _spec_options(p)) for p in cfg.preprocess], ds.train.x)
    ds = _preprocessed(ds, records)
    net = compiled.net
    input_shape = net.shapes[net.inputs and next(iter(net.inputs))]
    out_shape = net.shapes[net.outputs[0]]
    loss = make_loss(cfg.loss.name, **_spec_options(cfg.loss))
    classes = out_shape[0] if out_shape else None
    return data_mod.check_dataset(ds, input_shape, classes, loss), loss


def _preprocessed(ds: data_mod.Dataset, records: list[dict]) -> data_mod.Dataset:
    def fix(split):
        return None if split is None else data_mod.Split(preprocess.apply(records, split.x), split.y)

    meta = dict(ds.meta)
    meta["preprocess"] = list(records)
    if not records:
        return replace(ds, meta=meta)
    return replace(ds, train=fix(ds.train), val=fix(ds.val), test=fix(ds.test), meta=meta)


# ------------------------------------------------------------------ state
def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """Independent, reproducible generators per (seed, epoch, purpose)."""
    return np.random.default_rng([seed, epoch, stream])


SHUFFLE, AUGMENT, DROPOUT = 0, 1, 2
SHARDS = 2  # a training batch is computed as this many shards (see batch_loss_and_grads)


def batch_loss_and_grads(plan: Plan, loss_fn, xb: np.ndarray, yb: np.ndarray, drop_rng: np.random.Generator,
                         pool: ThreadPoolExecutor | None = None):
    """Loss, predictions and parameter gradients of one training batch.

    The batch is cut into SHARDS fixed shards, run on the pool's threads with
    BLAS held to one thread each: NumPy releases the GIL inside its kernels, so
    the shards run in parallel. When no layer couples the samples of a batch
    (no batchnorm), the shards are independent and run whether or not there is
    a pool, so the shards, their random streams and the order their gradients
    are summed in do not depend on the thread count, and neither do the
    results. With batchnorm the shards run in lockstep (kernels.shards: they
    meet inside every batchnorm to sum its statistics over the whole batch),
    which needs a thread per shard; without a pool the batch runs whole.
    """
    lockstep = not plan.batch_independent
    if len(xb) < SHARDS or (lockstep and pool is None):
        return _shard(plan, loss_fn, xb, yb, drop_rng, 1.0)
    parts = np.array_split(np.arange(len(xb)), SHARDS)
    rngs = [np.random.default_rng(s) for s in drop_rng.integers(0, 2**63 - 1, size=SHARDS)]
    jobs = [(xb[i], yb[i], r, len(i) / len(xb)) for i, r in zip(parts, rngs)]
    if lockstep:
        group = shards.ShardGroup(SHARDS)

        def run(i: int):
            with shards.member(group, i):
                return _shard(plan, loss_fn, *jobs[i])
        with shards.blas_threads(1):
            # Shard 0 runs on this thread, so a pool of one worker is enough.
            futures = [pool.submit(run, i) for i in range(1, SHARDS)]
            try:
                first = run(0)
            except threading.BrokenBarrierError:
                for f in futures:
                    f.result()      # the shard whose error released this one raises it here
                raise
            except BaseException:
                for f in futures:
                    f.exception()   # released by this shard's error: let them finish
                raise
            results = [first, *(f.result() for f in futures)]
    elif pool is not None:
        results = shards.in_parallel(pool, [partial(_shard, plan, loss_fn, *job) for job in jobs])
    else:
        results = [_shard(plan, loss_fn, *job) for job in jobs]
    loss = sum(r[0] * job[3] for r, job in zip(results, jobs))
    pred = np.concatenate([r[1] for r in results])
    grads = dict(results[0][2])
    for _, _, g in results[1:]:
        for k, v in g.items():
            grads[k] = grads[k] + v if k in grads else v
    return loss, pred, grads


# Overflow is the trainer's to report (NonFinite names the epoch and batch), not NumPy's warnings.
QUIET_FLOATS = {"over": "ignore", "invalid": "ignore", "divide": "ignore"}


def _shard(plan: Plan, loss_fn, xb, yb, rng, weight: float):
    with np.errstate(**QUIET_FLOATS):  # per thread: shards may run on the pool's threads
        out, tape = plan.forward({plan.inputs[0]: xb}, training=True, rng=rng)
        pred = out[plan.outputs[0]]
        loss, dpred = loss_fn(pred, yb)
        grads = plan.backward(tape, {plan.outputs[0]: dpred * np.float32(weight) if weight != 1.0 else dpred})
    return loss, pred, grads


class NumpyEngine:
    """The embedded engine: the Plan tape interpreter, cnnc's optimizers, batches cut into shards
    that run on a thread pool (see batch_loss_and_grads)."""

    name = "numpy"

    def __init__(self, compiled, cfg: TrainConfig, base_lr: float, hyper: dict[str, Any], is_weight,
                 threads: int | None = None, kernels: str | None = None):
        self.cfg, self.is_weight = cfg, is_weight
        self.threads = max(1, threads if threads is not None else min(SHARDS, os.cpu_count() or 1))
        self._executor: ThreadPoolExecutor | None = None
        self.plan = Plan(compiled.net, compiled.analysis.params, seed=cfg.seed, init=cfg.init, kernels=kernels)
        trainable = {k: v for k, v in self.plan.params.items() if k in self.plan.trainable}
        self.optimizer = make_optimizer(cfg.optimizer.name, trainable, lr=base_lr, kernels=self.plan.kernels, **hyper)
        self._grads: dict[str, np.ndarray] = {}

    def begin_epoch(self, epoch: int) -> None:
        """Nothing to do: the trainer's (seed, epoch) generator draws this engine's random drops."""

    def forward_backward(self, xb: np.ndarray, yb: np.ndarray, loss_fn, drop_rng: np.random.Generator):
        """The batch's loss (with the L1/L2 penalty) and (correct, counted); the gradients wait for step."""
        if self._executor is None and self.threads > 1:
            self._executor = ThreadPoolExecutor(self.threads)
        with shards.blas_threads(self.threads):    # the user's thread count (shards hold BLAS to 1 inside)
            loss, pred, grads = batch_loss_and_grads(self.plan, loss_fn, xb, yb, drop_rng, self._executor)
        extra, pgrads = penalty(self.plan.params, self.cfg.l1, self.cfg.l2, self.is_weight)
        for k, g in pgrads.items():
            if k in grads:
                grads[k] = grads[k] + g
        self._grads = grads
        return loss + extra, loss_fn.correct(pred, yb)

    def step(self, lr: float) -> None:
        self.optimizer.step(self._grads, lr)
        self._grads = {}

    def predict(self, xb: np.ndarray) -> np.ndarray:
        """Eval-mode outputs; the batch cut into a shard per thread (samples never meet in eval)."""
        k = min(self.threads, len(xb))
        if k <= 1:
            with shards.blas_threads(self.threads):
                return self._predict(xb)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads)
        jobs = [partial(self._predict, xb[a:b]) for a, b in shards.bounds(len(xb), k)]
        return np.concatenate(shards.in_parallel(self._executor, jobs))

    def _predict(self, xb: np.ndarray) -> np.ndarray:
        return self.plan.forward({self.plan.inputs[0]: xb})[0][self.plan.outputs[0]]

    def params(self) -> dict[str, np.ndarray]:
        return self.plan.params

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_state(self, params, optimizer, source: str) -> None:
        self.plan.load_state(params, source)
        self.optimizer.load_state_dict(optimizer)

    def agree(self, value: Any) -> Any:
        return value   # one process: its value is every process's

    def close(self) -> None:
        if self._executor is not None:
            # Never wait here: after Ctrl-C a shard may still be running, and the interpreter joins it at exit.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class Trainer:
    def __init__(self, compiled, cfg: TrainConfig, out_dir: Path, data_override: str | None = None,
                 limit: int | None = None, progress: bool = True, log: Callable[[str], None] = print,
                 threads: int | None = None, engine: str = "numpy", device: str | None = None,
                 resplit: Callable[[data_mod.Dataset], data_mod.Dataset] | None = None, kernels: str | None = None):
        self.compiled, self.cfg, self.out = compiled, cfg, Path(out_dir)
        self.ds, self.loss = load_data(cfg, compiled, data_override, limit, resplit=resplit)
        hyper = _spec_options(cfg.optimizer)
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        self.base_lr = float(hyper.pop("lr", OPTIMIZER.entries[cfg.optimizer.name].option("lr").default))
        if cfg.sync_bn and not any(OPS[n.op].has("batch_statistics") for n in compiled.net.layers()):
            raise CnncError("sync_bn = true, but the network has no layer that uses batch statistics",
                            cfg.locs.get("sync_bn"), "sync_bn synchronises batchnorm across processes; drop it")
        ops = {n.name: n.op for n in compiled.net.layers()}
        self.engine = make_engine(engine, compiled, cfg, self.base_lr, hyper, weight_predicate(ops), threads, device,
                                  kernels)
        self.main = getattr(self.engine, "world", None) is None or self.engine.world.main
        self.progress, self.log = progress and self.main, log if self.main else (lambda line: None)
        sched = cfg.schedule
        self.schedule = make_schedule(_schedule_spec(sched) if sched else None, self.base_lr, cfg.epochs)
        if cfg.snapshots and not self.schedule.restarts:
            raise CnncError("snapshots = true needs a schedule with warm restarts", cfg.locs.get("snapshots"),
                            "e.g. schedule = cosine_restarts(T_0 = 5): a snapshot is kept at the end of each cycle")
        self.augment = make_augment([(a.name, _spec_options(a)) for a in cfg.augment]) if cfg.augment else None
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
        n_batches = data_mod.num_batches(len(x), cfg.batch)
        self.engine.begin_epoch(epoch)
        start = time.perf_counter()
        for b, (xb, yb) in enumerate(data_mod.iterate_batches(x, y, cfg.batch, shuffle=True,
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
        for xb, yb in data_mod.iterate_batches(split.x, split.y, max(self.cfg.batch, 256)):
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
                result.test.update(report(confusion, dense=self.loss.target_kind == PIXEL_CLASS))
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
    opts = _spec_options(spec)
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
