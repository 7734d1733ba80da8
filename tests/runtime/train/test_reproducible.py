"""A run is the same, bit for bit, whatever BLAS's thread count, `--threads` or the load of the machine.

The class of defect: a number that depends on how many threads BLAS runs
(OpenBLAS splits some products by thread: LeNet-5's second conv's weight
gradient at 6 samples a shard differs in its last bits between one BLAS
thread and two). BLAS's thread count is process-wide state that `--threads`,
another library or the environment sets; the numpy engine holds it at one
thread on every path, so only the engine's fixed shards run in parallel.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from cnnc.compiler.driver import compile_file
from cnnc.runtime.checkpoint import load_checkpoint
from cnnc.runtime.plan import Plan
from cnnc.runtime.train.losses import loss_for
from cnnc.runtime.train.numpy_engine import batch_loss_and_grads
from cnnc.runtime.train.trainer import Trainer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _lenet():
    return compile_file(EXAMPLES / "lenet5.cnn")


@pytest.mark.parametrize("batch", [12, 32])
def test_a_batch_is_the_same_whatever_blas_thread_count_and_pool(batch):
    from concurrent.futures import ThreadPoolExecutor
    c = _lenet()
    loss = loss_for(c.net.train)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    controller = ThreadpoolController()
    results = []
    with ThreadPoolExecutor(2) as pool:
        for blas in (1, 2, 4):
            for with_pool in (None, pool):
                with controller.limit(limits=blas):     # what another library or OPENBLAS_NUM_THREADS sets
                    plan = Plan(c.net, c.analysis.params, seed=0)
                    results.append(batch_loss_and_grads(plan, loss, x, y, np.random.default_rng(0), with_pool))
    first_loss, first_pred, first_grads = results[0]
    for value, pred, grads in results[1:]:
        assert value == first_loss
        assert pred.keys() == first_pred.keys()
        assert all(np.array_equal(pred[o], first_pred[o]) for o in pred)
        for key, g in first_grads.items():
            assert grads[key].tobytes() == g.tobytes(), key


def _train(out, threads):
    c = _lenet()
    cfg = c.net.train
    from cnnc.compiler.train_spec import set_key
    cfg = set_key(set_key(cfg, "epochs", 2, None), "batch", 12, None)   # 6 samples a shard: BLAS-sensitive shapes
    Trainer(c, cfg, out, limit=480, progress=False, log=lambda s: None, threads=threads).run()
    arrays, meta = load_checkpoint(out / "last.npz")
    for record in meta["history"]:
        record.pop("seconds")     # the one figure that is the clock's
    return arrays, meta


@pytest.mark.slow
def test_training_beside_a_cpu_burning_process_gives_the_same_checkpoint(tmp_path):
    quiet, _ = _train(tmp_path / "quiet", threads=2)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy, busy_meta = _train(tmp_path / "busy", threads=2)
    finally:
        for p in burners:
            p.kill()
            p.wait()
    one_thread, one_meta = _train(tmp_path / "one", threads=1)
    _, quiet_meta = _train(tmp_path / "again", threads=2)
    assert quiet.keys() == busy.keys() == one_thread.keys()
    for key, value in quiet.items():
        assert busy[key].tobytes() == value.tobytes(), f"{key} changed under load"
        assert one_thread[key].tobytes() == value.tobytes(), f"{key} changed with --threads 1"
    assert busy_meta == one_meta == quiet_meta
