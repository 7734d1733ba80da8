"""Stage 3 (runtime): the numpy engine — a training batch computed by the embedded runtime.

`NumpyEngine` is the engine `cnnc run --engine numpy` (the default) builds: the
Plan tape interpreter (runtime/plan.py), cnnc's optimizers (optim.py) and
`batch_loss_and_grads`, which cuts a batch into shards that run on a thread
pool. The trainer (trainer.py) owns the rest of a run; engines.py builds this
engine or the torch one.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from ...compiler.train_spec import TrainConfig
from ..kernels import shards
from ..plan import Plan
from .optim import make_optimizer, penalty


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
                 threads: int | None = None):
        self.cfg, self.is_weight = cfg, is_weight
        self.threads = max(1, threads if threads is not None else min(SHARDS, os.cpu_count() or 1))
        self._executor: ThreadPoolExecutor | None = None
        self.plan = Plan(compiled.net, compiled.analysis.params, seed=cfg.seed, init=cfg.init)
        trainable = {k: v for k, v in self.plan.params.items() if k in self.plan.trainable}
        self.optimizer = make_optimizer(cfg.optimizer.name, trainable, lr=base_lr, **hyper)
        self._grads: dict[str, np.ndarray] = {}

    def begin_epoch(self, epoch: int) -> None:
        """Nothing to do: the trainer's (seed, epoch) generator draws this engine's random drops."""

    def forward_backward(self, xb: np.ndarray, yb: np.ndarray, loss_fn, drop_rng: np.random.Generator):
        """The batch's loss (with the L1/L2 penalty) and (correct, counted); the gradients wait for step."""
        if self._executor is None and self.threads > 1:
            self._executor = ThreadPoolExecutor(self.threads)
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

    def close(self, finished: bool = True) -> None:
        if self._executor is not None:
            # Never wait here: after Ctrl-C a shard may still be running, and the interpreter joins it at exit.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
