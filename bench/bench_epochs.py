"""Stage 3 (runtime) benchmark: seconds per training epoch as users see them, for every way cnnc trains.

    python bench/bench_epochs.py [--threads N] [--rounds R] [--samples N] [--only NAME] [--starts R]

Two cases, each trained by the same trainer (runtime/train/trainer.py: data, augmentation, batches, initial
weights) on three back ends — the numpy engine with the NumPy kernels, the numpy engine with the
fast kernels (`cnnc[fast]`), the torch engine (`cnnc[torch]`) — with the same threads:

- LeNet-5 on the embedded digits (`examples/lenet5.cnn` and its train section: 7,200 training
  digits, batch 32, Adam, random crops);
- CIFAR ResNet-20 on CIFAR-shaped synthetic data (`examples/cifar_resnet20.cnn` and its train
  section: SGD with momentum and weight decay, crops and flips, batch 128; `--samples` images of
  3x32x32, 50,000 for a real CIFAR epoch).

Each back end first trains a few batches (the fast kernels compile, or load from their cache: the
cold start is `cnnc run`'s, measured in bench/README.md); then whole epochs alternate, numpy, fast,
torch, numpy, ..., `--rounds` times, so a disturbance from other processes hits each alike. Printed
per case: each back end's median seconds per epoch and samples per second, the median of the
per-round ratios to the torch engine with their IQR, and the last epoch's training loss of each
(they start from the same weights and see the same batches).

`--starts R` measures the cold start instead: the wall time of `cnnc run examples/lenet5.cnn` on
64 digits (two batches, so the time is the start), in fresh processes, R rounds of: the NumPy
kernels; the fast kernels with an empty compile cache (the first run after installing); the fast
kernels with the cache the previous run filled (every later run). Medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnnc.compiler.driver import compile_file  # noqa: E402
from cnnc.compiler.train_spec import Spec  # noqa: E402
from cnnc.runtime.kernels import keep_freed_memory, sets  # noqa: E402
from cnnc.runtime.train.trainer import Trainer  # noqa: E402
from common import quartiles  # noqa: E402  (bench/, on sys.path above)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class Case:
    name: str
    example: str
    synthetic: bool          # CIFAR-shaped synthetic data of --samples images instead of the section's data


CASES = [Case("LeNet-5, embedded digits", "lenet5.cnn", False),
         Case("ResNet-20, CIFAR-shaped", "cifar_resnet20.cnn", True)]
BACK_ENDS = {"numpy": ("numpy", "numpy"), "fast": ("numpy", "fast"), "torch": ("torch", None)}


def trainer(case: Case, back_end: str, samples: int, threads: int, out: Path) -> Trainer:
    compiled = compile_file(EXAMPLES / case.example)
    cfg = replace(compiled.net.train, epochs=1000)      # the schedule's learning rate barely moves
    if case.synthetic:
        cfg = replace(cfg, data=Spec("synthetic", (), (("classes", 10), ("shape", (3, 32, 32)), ("n", samples),
                                                        ("seed", 0))))
    engine, kernels = BACK_ENDS[back_end]
    return Trainer(compiled, cfg, out, progress=False, log=lambda s: None, threads=threads, engine=engine,
                   kernels=kernels)


def warm_up(t: Trainer, batches: int = 3) -> None:
    """Forward and backward passes without a step (batchnorm's running statistics move alike on all)."""
    for i in range(batches):
        sl = slice(i * t.cfg.batch, (i + 1) * t.cfg.batch)
        t.engine.forward_backward(t.ds.train.x[sl], t.ds.train.y[sl], t.objective, np.random.default_rng(i))


def run_case(case: Case, back_ends: list[str], samples: int, threads: int, rounds: int, tmp: Path) -> None:
    trainers = {b: trainer(case, b, samples, threads, tmp / f"{case.example}-{b}") for b in back_ends}
    for t in trainers.values():
        warm_up(t)
    seconds: dict[str, list[float]] = {b: [] for b in back_ends}
    losses: dict[str, float] = {}
    for epoch in range(rounds):
        for b, t in trainers.items():
            start = time.perf_counter()
            losses[b] = t.train_epoch(epoch).mean_loss
            seconds[b].append(time.perf_counter() - start)
    n = len(next(iter(trainers.values())).ds.train)
    print(f"{case.name}: {n:,} training samples per epoch, batch {next(iter(trainers.values())).cfg.batch}, "
          f"{threads} thread(s), {rounds} alternating epochs each")
    for b in back_ends:
        s = statistics.median(seconds[b])
        versus = ""
        if b != "torch" and "torch" in seconds:
            q1, med, q3 = quartiles([a / c for a, c in zip(seconds[b], seconds["torch"])])
            versus = f"  {med:.2f}x torch (IQR {q1:.2f}-{q3:.2f})"
        label = "torch engine" if b == "torch" else f"numpy engine, {trainers[b].plan.kernel_set.describe()}"
        print(f"  {label:<44} {s:7.2f} s/epoch  {n / s:7.0f} samples/s{versus}  last train loss {losses[b]:.4f}")
    for t in trainers.values():
        t.engine.close()


def starts(rounds: int, threads: int) -> None:
    """Median wall seconds of `cnnc run examples/lenet5.cnn` on 64 digits: numpy, fast cold, fast warm."""
    import subprocess
    argv = [sys.executable, "-m", "cnnc", "run", str(EXAMPLES / "lenet5.cnn"), "--epochs", "1", "--limit", "64",
            "--quiet", "--overwrite", "--threads", str(threads)]
    seconds: dict[str, list[float]] = {"numpy kernels": [], "fast, empty cache": [], "fast, cache filled": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            cache = Path(tmp) / f"cache{r}"
            for label, kernels in (("numpy kernels", "numpy"), ("fast, empty cache", "fast"),
                                   ("fast, cache filled", "fast")):
                env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "CNNC_KERNELS": kernels}
                start = time.perf_counter()
                subprocess.run([*argv, "--out", str(Path(tmp) / "run")], env=env, check=True, capture_output=True)
                seconds[label].append(time.perf_counter() - start)
    print(f"cnnc run examples/lenet5.cnn --epochs 1 --limit 64 ({threads} thread(s)), wall seconds, median of {rounds}:")
    for label, values in seconds.items():
        print(f"  {label:<20} {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3, help="epochs per back end, alternating (default 3)")
    ap.add_argument("--samples", type=int, default=2048, help="ResNet-20's synthetic training images (default 2,048)")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this (case-insensitive)")
    ap.add_argument("--starts", type=int, metavar="R", help="measure cnnc run's cold and warm start instead")
    args = ap.parse_args()
    if args.starts:
        starts(args.starts, args.threads)
        return
    keep_freed_memory()                 # what `cnnc run` does when it starts
    back_ends = ["numpy"] + (["fast"] if sets.choose().name == "fast" else [])
    try:
        import torch  # noqa: F401
        back_ends.append("torch")
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if args.only.lower() in case.name.lower():
                run_case(case, back_ends, args.samples, args.threads, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
