"""Stage 3 (runtime): the numpy engine — a training batch computed by the embedded runtime.

`NumpyEngine` is the engine `cnnc run --engine numpy` (the default) builds: the
Plan tape interpreter (runtime/plan.py), cnnc's optimizers (optim.py) and
`batch_loss_and_grads`, which cuts a batch into shards that run on a thread
pool. The trainer (trainer.py) owns the rest of a run; engines.py builds this
engine or the torch one.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from ...compiler.train_spec import TrainConfig
from ..data.containers import take
from ..kernels import shards
from ..plan import Plan
from .losses import Objective
from .optim import make_optimizer, penalty


SHARDS = 2  # a training batch is computed as this many shards (see batch_loss_and_grads)


def batch_loss_and_grads(plan: Plan, objective, xb: np.ndarray, yb, drop_rng: np.random.Generator,
                         pool: ThreadPoolExecutor | None = None):
    """Loss, predictions (by output) and parameter gradients of one training batch: `objective`
    (losses.py `Objective`, or one output's loss) scores every output against its targets.

    The batch is cut into SHARDS fixed shards, run on the pool's threads with
    BLAS held to one thread each: NumPy releases the GIL inside its kernels, so
    the shards run in parallel. When no layer couples the samples of a batch
    (no batchnorm), the shards are independent and run whether or not there is
    a pool, so the shards, their random streams and the order their gradients
    are summed in do not depend on the thread count, and neither do the
    results. With batchnorm the shards run in lockstep (kernels.shards: they
    meet inside every batchnorm to sum its statistics over the whole batch),
    which needs a thread per shard; without a pool the batch runs whole.

    BLAS runs at one thread on every path: its own thread count would reach the
    bits (OpenBLAS splits some products by thread, e.g. a matrix-vector product,
    or conv_2's weight gradient of LeNet-5 at 6 samples a shard), and it is
    process-wide state that `--threads`, another library or the environment
    sets. Held here, a run's numbers depend on the seed and the data alone:
    not on `--threads`, the load of the machine or when threads arrive.
    """
    if not isinstance(objective, Objective):
        objective = Objective({plan.outputs[0]: objective}, {plan.outputs[0]: 1.0})
    with shards.blas_threads(1):
        return _batch(plan, objective, xb, yb, drop_rng, pool)


def _batch(plan: Plan, objective: Objective, xb: np.ndarray, yb, drop_rng: np.random.Generator,
           pool: ThreadPoolExecutor | None):
    lockstep = not plan.batch_independent
    if len(xb) < SHARDS or (lockstep and pool is None):
        return _shard(plan, objective, xb, yb, drop_rng, 1.0)
    parts = np.array_split(np.arange(len(xb)), SHARDS)
    rngs = [np.random.default_rng(s) for s in drop_rng.integers(0, 2**63 - 1, size=SHARDS)]
    jobs = [(xb[i], take(yb, i), r, len(i) / len(xb)) for i, r in zip(parts, rngs)]
    if lockstep:
        group = shards.ShardGroup(SHARDS)

        def run(i: int):
            with shards.member(group, i):
                return _shard(plan, objective, *jobs[i])
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
        results = shards.in_parallel(pool, [partial(_shard, plan, objective, *job) for job in jobs])
    else:
        results = [_shard(plan, objective, *job) for job in jobs]
    loss = sum(r[0] * job[3] for r, job in zip(results, jobs))
    pred = {o: np.concatenate([r[1][o] for r in results]) for o in results[0][1]}
    grads = dict(results[0][2])
    for _, _, g in results[1:]:
        for k, v in g.items():
            grads[k] = grads[k] + v if k in grads else v
    return loss, pred, grads


# Overflow is the trainer's to report (NonFinite names the epoch and batch), not NumPy's warnings.
QUIET_FLOATS = {"over": "ignore", "invalid": "ignore", "divide": "ignore"}


def _shard(plan: Plan, objective, xb, yb, rng, weight: float):
    with np.errstate(**QUIET_FLOATS):  # per thread: shards may run on the pool's threads
        out, tape = plan.forward({plan.inputs[0]: xb}, training=True, rng=rng)
        loss, dpreds, _ = objective(out, yb)
        if weight != 1.0:
            dpreds = {o: g * np.float32(weight) for o, g in dpreds.items()}
        grads = plan.backward(tape, dpreds)
    return loss, {o: out[o] for o in objective.outputs}, grads


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
        self.optimizer = make_optimizer(cfg.optimizer.name, trainable, lr=base_lr, kernels=self.plan.kernels,
                                        **hyper)
        self._grads: dict[str, np.ndarray] = {}

    def begin_epoch(self, epoch: int) -> None:
        """Nothing to do: the trainer's (seed, epoch) generator draws this engine's random drops."""

    def forward_backward(self, xb: np.ndarray, yb, objective, drop_rng: np.random.Generator):
        """The batch's loss (with the L1/L2 penalty), each output's (correct, counted) and each output's
        own loss; the gradients wait for step."""
        if self._executor is None and self.threads > 1:
            self._executor = ThreadPoolExecutor(self.threads)
        loss, pred, grads = batch_loss_and_grads(self.plan, objective, xb, yb, drop_rng, self._executor)
        extra, pgrads = penalty(self.plan.params, self.cfg.l1, self.cfg.l2, self.is_weight)
        for k, g in pgrads.items():
            if k in grads:
                grads[k] = grads[k] + g
        self._grads = grads
        each = objective(pred, yb)[2] if len(objective.outputs) > 1 else {objective.outputs[0]: loss}
        return loss + extra, objective.correct(pred, yb), each

    def grad_norms(self) -> dict[str, float]:
        """The L2 norm of each parameter's gradient of the last batch (penalty included), before step."""
        return {k: math.sqrt(float(np.vdot(g, g))) for k, g in self._grads.items()}   # BLAS's dot: no copy

    def grads(self) -> dict[str, np.ndarray]:
        """Each parameter's gradient of the last batch (penalty included), before step."""
        return dict(self._grads)

    def step(self, lr: float) -> None:
        self.optimizer.step(self._grads, lr)
        self._grads = {}

    def predict(self, xb: np.ndarray) -> dict[str, np.ndarray]:
        """Eval-mode outputs by name; the batch cut into a shard per thread (samples never meet in eval)."""
        k = min(self.threads, len(xb))
        if k <= 1:
            with shards.blas_threads(1):    # as in training: BLAS's thread count never reaches the bits
                return self._predict(xb)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads)
        jobs = [partial(self._predict, xb[a:b]) for a, b in shards.bounds(len(xb), k)]
        parts = shards.in_parallel(self._executor, jobs)
        return {o: np.concatenate([p[o] for p in parts]) for o in self.plan.outputs}

    def _predict(self, xb: np.ndarray) -> dict[str, np.ndarray]:
        return self.plan.forward({self.plan.inputs[0]: xb})[0]

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
