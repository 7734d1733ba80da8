"""Stage 3 (runtime): the training loop behind `cnnc run`.

Builds the data (load, split, preprocess, check against the network), the
plan, the loss, optimizer and schedule from a validated `TrainConfig`, then
trains epoch by epoch: progress on stderr, one summary line per epoch,
`metrics.jsonl`, an atomic `last.npz` after every epoch and `best.npz` when
validation improves. Every random draw of epoch e comes from generators
seeded with (seed, e), so a run resumed from `last.npz` ends with the same
weights, bit for bit, as one that was never interrupted. A non-finite loss
stops the run with the last good checkpoint left in place.
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from ..compiler.train_spec import Spec, TrainConfig
from ..dsl.source import CnncError
from . import data as data_mod
from .augment import make_augment
from .checkpoint import load_checkpoint, save_checkpoint
from .kernels import _shards
from .losses import make_loss
from .optim import make_optimizer, penalty, weight_predicate
from .plan import Plan
from .schedules import make_schedule

WEIGHT_OPS = {"conv", "deconv", "local", "linear"}


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


# ------------------------------------------------------------------- data
def _spec_options(spec: Spec) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.kwargs}


def load_data(cfg: TrainConfig, compiled, data_override: str | None = None, limit: int | None = None):
    """The dataset for a run, split, preprocessed and checked against the network."""
    spec = cfg.data
    opts = _spec_options(spec)
    val = opts.pop("val", None)
    limit = limit or opts.pop("limit", None)
    opts.pop("limit", None)
    if data_override is not None:
        source, opts = data_override, {}
    elif spec.name == "path":
        source = spec.args[0]
    elif spec.name in ("npz", "idx", "images"):
        if not spec.args:
            raise CnncError(f"data = {spec.name}(…) needs a path, e.g. {spec.name}(\"digits/\")")
        source = spec.args[0]
        opts = {}
    elif spec.name == "synthetic":
        source = _synthetic_name(opts, compiled)
        opts = _synthetic_options(opts, compiled)
    else:
        source = spec.name
    ds = data_mod.load_dataset(source, **opts)
    if limit:
        ds = replace(ds, train=ds.train.take(np.arange(min(int(limit), len(ds.train)))))
    val = cfg.val if cfg.val is not None else val
    if val:
        ds = data_mod.split_validation(ds, float(val), cfg.seed)
    for p in cfg.preprocess:
        if p.name == "normalize":
            mean, std = (list(p.args) + [None, None])[:2]
            o = _spec_options(p)
            ds = data_mod.normalize(ds, o.get("mean", mean), o.get("std", std))
        elif p.name == "center":
            ds = data_mod.center(ds)
    net = compiled.net
    input_shape = net.shapes[net.inputs and next(iter(net.inputs))]
    out_shape = net.shapes[net.outputs[0]]
    loss = make_loss(cfg.loss.name, **_spec_options(cfg.loss))
    classes = out_shape[0] if out_shape else None
    return data_mod.check_dataset(ds, input_shape, classes, loss), loss


def _synthetic_name(opts: dict, compiled) -> str:
    kind = opts.pop("kind", None)
    kind = getattr(kind, "name", kind)  # a bare word in the train section arrives as a Spec
    if kind is None:
        out = compiled.net.shapes[compiled.net.outputs[0]]
        kind = "segmentation" if len(out) == 3 else "classes"
    return {"classes": "synthetic_classes", "segmentation": "synthetic_segmentation",
            "regression": "synthetic_regression"}.get(str(kind), str(kind))


def _synthetic_options(opts: dict, compiled) -> dict:
    net = compiled.net
    shape = net.shapes[next(iter(net.inputs))]
    out = net.shapes[net.outputs[0]]
    o = dict(opts)
    o.setdefault("shape", tuple(shape))
    if "classes" in o:
        o["num_classes"] = o.pop("classes")
    else:
        o.setdefault("num_classes", out[0])
    if "n" in o:
        n = int(o.pop("n"))
        o["n_train"], o["n_test"] = n, max(n // 4, 1)
    return o


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
    results. With batchnorm the shards run in lockstep (kernels._shards: they
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
        group = _shards.ShardGroup(SHARDS)

        def run(i: int):
            with _shards.member(group, i):
                return _shard(plan, loss_fn, *jobs[i])
        with _shards.blas_threads(1):
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
        with _shards.blas_threads(1):
            results = list(pool.map(lambda job: _shard(plan, loss_fn, *job), jobs))
    else:
        results = [_shard(plan, loss_fn, *job) for job in jobs]
    loss = sum(r[0] * job[3] for r, job in zip(results, jobs))
    pred = np.concatenate([r[1] for r in results])
    grads = dict(results[0][2])
    for _, _, g in results[1:]:
        for k, v in g.items():
            grads[k] = grads[k] + v if k in grads else v
    return loss, pred, grads


def _shard(plan: Plan, loss_fn, xb, yb, rng, weight: float):
    out, tape = plan.forward({plan.inputs[0]: xb}, training=True, rng=rng)
    pred = out[plan.outputs[0]]
    loss, dpred = loss_fn(pred, yb)
    grads = plan.backward(tape, {plan.outputs[0]: dpred * np.float32(weight) if weight != 1.0 else dpred})
    return loss, pred, grads


class Trainer:
    def __init__(self, compiled, cfg: TrainConfig, out_dir: Path, data_override: str | None = None,
                 limit: int | None = None, progress: bool = True, log: Callable[[str], None] = print,
                 threads: int | None = None):
        self.compiled, self.cfg, self.out = compiled, cfg, Path(out_dir)
        self.threads = max(1, threads if threads is not None else min(SHARDS, os.cpu_count() or 1))
        self._executor: ThreadPoolExecutor | None = None
        self.progress, self.log = progress, log
        self.ds, self.loss = load_data(cfg, compiled, data_override, limit)
        self.plan = Plan(compiled.net, compiled.analysis.params, seed=cfg.seed)
        hyper = _spec_options(cfg.optimizer)
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        self.base_lr = float(hyper.pop("lr", 0.01))
        trainable = {k: v for k, v in self.plan.params.items() if k in self.plan.trainable}
        self.optimizer = make_optimizer(cfg.optimizer.name, trainable, lr=self.base_lr, **hyper)
        sched = cfg.schedule
        self.schedule = make_schedule(_schedule_spec(sched) if sched else None, self.base_lr, cfg.epochs)
        self.augment = make_augment([(a.name, _spec_options(a)) for a in cfg.augment]) if cfg.augment else None
        ops = {n.name: n.op for n in compiled.net.layers()}
        self.is_weight = weight_predicate(ops)
        self.output = compiled.net.outputs[0]
        self.input = next(iter(compiled.net.inputs))
        self.epoch = 0            # epochs completed
        self.best: float | None = None
        self.bad_epochs = 0
        self.history: list[dict] = []

    # -------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> EpochStats:
        cfg, plan = self.cfg, self.plan
        x, y = self.ds.train.x, self.ds.train.y
        lr = self.schedule.lr(epoch)
        stats = EpochStats()
        aug_rng, drop_rng = _rng(cfg.seed, epoch, AUGMENT), _rng(cfg.seed, epoch, DROPOUT)
        n_batches = data_mod.num_batches(len(x), cfg.batch)
        start = time.perf_counter()
        for b, (xb, yb) in enumerate(data_mod.iterate_batches(x, y, cfg.batch, shuffle=True,
                                                               rng=_rng(cfg.seed, epoch, SHUFFLE))):
            if self.augment is not None:
                xb, yb = self.augment(xb, yb, aug_rng)
            loss, pred, grads = self._loss_and_grads(xb, yb, drop_rng)
            extra, pgrads = penalty(plan.params, cfg.l1, cfg.l2, self.is_weight)
            loss += extra
            if not math.isfinite(loss):
                raise NonFinite(epoch, b, loss)
            for k, g in pgrads.items():
                if k in grads:
                    grads[k] = grads[k] + g
            self.optimizer.step(grads, lr)
            stats.add(loss, len(xb), self.loss.correct(pred, yb))
            if self.progress:
                _progress(epoch + 1, cfg.epochs, b + 1, n_batches, stats, time.perf_counter() - start)
        if self.progress:
            sys.stderr.write("\r\x1b[2K")
        return stats

    def _loss_and_grads(self, xb: np.ndarray, yb: np.ndarray, drop_rng: np.random.Generator):
        if self._executor is None and self.threads > 1:
            self._executor = ThreadPoolExecutor(self.threads)
        return batch_loss_and_grads(self.plan, self.loss, xb, yb, drop_rng, self._executor)

    def evaluate(self, split) -> EpochStats:
        stats = EpochStats()
        for xb, yb in data_mod.iterate_batches(split.x, split.y, max(self.cfg.batch, 256)):
            pred = self.plan.forward({self.input: xb})[0][self.output]
            loss, _ = self.loss(pred, yb)
            stats.add(loss, len(xb), self.loss.correct(pred, yb))
        return stats

    def run(self, resume: bool = False) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = self.out / "metrics.jsonl"
        if resume:
            self._resume()
        else:
            metrics.write_text("")
        _trim_metrics(metrics, self.epoch)
        result = RunResult(self.epoch)
        for epoch in range(self.epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            try:
                train = self.train_epoch(epoch)
            except NonFinite as err:
                result.stopped = str(err)
                self.log(f"stopped: {err}; the last good checkpoint is {self.out / 'last.npz'}")
                break
            val = self.evaluate(self.ds.val) if self.ds.val is not None and len(self.ds.val) else None
            record = {"epoch": epoch + 1, "train_loss": train.mean_loss, "train_accuracy": train.accuracy,
                      "val_loss": val.mean_loss if val else None, "val_accuracy": val.accuracy if val else None,
                      "lr": self.schedule.lr(epoch), "seconds": round(time.perf_counter() - t0, 3)}
            if val is not None:
                self.schedule.observe(val.mean_loss)
            self.epoch = epoch + 1
            improved = self._track_best(val if val is not None else train)
            self.history.append(record)
            with metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self._save(self.out / "last.npz")
            if improved:
                self._save(self.out / "best.npz")
            self.log(_epoch_line(record, self.cfg.epochs, train.samples))
            result.epochs_run = self.epoch
            if self.cfg.early_stop and self.bad_epochs >= self.cfg.early_stop.options["patience"]:
                result.stopped = f"early stop: no improvement in {self.bad_epochs} epochs"
                self.log(result.stopped)
                break
        result.history = self.history
        if self.ds.test is not None and len(self.ds.test):
            test = self.evaluate(self.ds.test)
            result.test = {"split": "test", "loss": test.mean_loss, "accuracy": test.accuracy}
            with metrics.open("a") as f:
                f.write(json.dumps(result.test) + "\n")
            acc = f", accuracy {test.accuracy:.2%}" if test.accuracy is not None else ""
            self.log(f"test: loss {test.mean_loss:.4f}{acc} ({len(self.ds.test):,} samples)")
        return result

    def _track_best(self, stats: EpochStats) -> bool:
        score = -stats.accuracy if stats.accuracy is not None else stats.mean_loss
        if self.best is None or score < self.best:
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    # ------------------------------------------------------- checkpoints
    def _save(self, path: Path) -> None:
        arrays = {f"param/{k}": v for k, v in self.plan.params.items()}
        arrays.update({f"opt/{k}": v for k, v in self.optimizer.state_dict().items()})
        meta = {"format": "cnnc-checkpoint-1", "network": self.compiled.net.name, "epoch": self.epoch,
                "seed": self.cfg.seed, "best": self.best, "bad_epochs": self.bad_epochs,
                "schedule": self.schedule.state_dict(), "history": self.history,
                "preprocess": self.ds.meta}
        save_checkpoint(path, arrays, meta)

    def _resume(self) -> None:
        path = self.out / "last.npz"
        if not path.exists():
            raise CnncError(f"--resume: no checkpoint at {path}", hint="start the run without --resume first")
        arrays, meta = load_checkpoint(path)
        if meta.get("network") != self.compiled.net.name:
            raise CnncError(f"--resume: {path} belongs to network '{meta.get('network')}', "
                            f"not '{self.compiled.net.name}'")
        self.plan.load_state({k[6:]: v for k, v in arrays.items() if k.startswith("param/")}, str(path))
        self.optimizer.load_state_dict({k[4:]: v for k, v in arrays.items() if k.startswith("opt/")})
        self.schedule.load_state_dict(meta.get("schedule") or {})
        self.epoch, self.best = int(meta["epoch"]), meta.get("best")
        self.bad_epochs, self.history = int(meta.get("bad_epochs", 0)), list(meta.get("history", []))
        self.log(f"resuming {self.compiled.net.name} after epoch {self.epoch} from {path}")


class NonFinite(Exception):
    def __init__(self, epoch: int, batch: int, loss: float):
        super().__init__(f"the loss became {loss} in epoch {epoch + 1}, batch {batch + 1}")


def _schedule_spec(spec: Spec) -> Any:
    opts = _spec_options(spec)
    if spec.name == "warmup" and isinstance(opts.get("then"), Spec):
        opts["then"] = _schedule_spec(opts["then"])
    if spec.name == "step" and "every" in opts:
        opts["step_size"] = opts.pop("every")
    if spec.name == "cosine" and "min_lr" in opts:
        opts["eta_min"] = opts.pop("min_lr")
    return (spec.name, opts)


def _trim_metrics(path: Path, epochs_done: int) -> None:
    """On resume, drop lines the interrupted run wrote after its last checkpoint."""
    if not path.exists():
        path.write_text("")
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "epoch" in rec and rec["epoch"] <= epochs_done:
            keep.append(line)
    path.write_text("".join(l + "\n" for l in keep))


def _progress(epoch: int, epochs: int, b: int, n: int, stats: EpochStats, seconds: float) -> None:
    width = 24
    filled = int(width * b / n)
    acc = f" acc {stats.accuracy:6.2%}" if stats.accuracy is not None else ""
    rate = stats.samples / seconds if seconds > 0 else 0.0
    sys.stderr.write(f"\r\x1b[2Kepoch {epoch}/{epochs} [{'█' * filled}{'·' * (width - filled)}] "
                     f"{b}/{n} loss {stats.mean_loss:.4f}{acc} {rate:,.0f} samples/s")
    sys.stderr.flush()


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
