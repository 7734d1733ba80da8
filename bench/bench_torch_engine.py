"""Stage 3 (runtime) benchmark: a CIFAR ResNet-20 training epoch on the torch engine against the NumPy engine.

Run `python bench/bench_torch_engine.py [--samples 10000] [--batch 128] [--threads N]` (needs `cnnc[torch]`).

`examples/cifar_resnet20.cnn` with its own train section (SGD with momentum and weight decay,
random crop and flip, batch 128), on CIFAR-shaped synthetic data (3x32x32, 10 classes; `--samples`
training samples, 50,000 for a real CIFAR epoch), trained for one epoch by each engine — the same
trainer, data, augmentation and initial weights, only the engine differs — with the same threads
(default: the machine's cores). Each engine first runs a few warm-up batches; then the two epochs
run one after the other and the printed ratio is NumPy time / torch time (above 1: the torch engine
is faster), with samples per second and the two epochs' training losses (they start from the same
weights and see the same batches, so they stay close). One run each, as the issue asks: a shared
machine makes the ratio noisy, bench/README.md says by how much.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cnnc.compiler.driver import compile_file
from cnnc.compiler.train_spec import Spec
from cnnc.runtime.train.trainer import Trainer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar_resnet20.cnn"


def trainer(engine: str, samples: int, batch: int, threads: int, out: Path) -> Trainer:
    compiled = compile_file(EXAMPLE)
    cfg = compiled.net.train
    data = Spec("synthetic", (), (("classes", 10), ("shape", (3, 32, 32)), ("n", samples), ("seed", 0)))
    cfg = replace(cfg, data=data, batch=batch, epochs=1)
    return Trainer(compiled, cfg, out, progress=False, log=lambda s: None, threads=threads, engine=engine)


def warm_up(t: Trainer, batches: int = 3) -> None:
    """Forward and backward passes without a step (batchnorm's running statistics move alike on both)."""
    for i in range(batches):
        sl = slice(i * t.cfg.batch, (i + 1) * t.cfg.batch)
        t.engine.forward_backward(t.ds.train.x[sl], t.ds.train.y[sl], t.objective, np.random.default_rng(i))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000, help="training samples in the epoch (default 10,000)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("numpy", "torch"):
            t = trainer(engine, args.samples, args.batch, args.threads, Path(tmp) / engine)
            warm_up(t)
            start = time.perf_counter()
            stats = t.train_epoch(0)
            results[engine] = (time.perf_counter() - start, stats.mean_loss)
            t.engine.close()
    print(f"CIFAR ResNet-20, one epoch of {args.samples:,} samples, batch {args.batch}, {args.threads} threads")
    for name, (seconds, loss) in results.items():
        print(f"  {name:>5} engine: {seconds:7.1f} s  {args.samples / seconds:7.0f} samples/s  train loss {loss:.4f}")
    print(f"  ratio numpy / torch: {results['numpy'][0] / results['torch'][0]:.2f}x  "
          "(above 1: the torch engine is faster)")


if __name__ == "__main__":
    main()
