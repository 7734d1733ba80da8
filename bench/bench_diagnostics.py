"""Stage 3 (runtime) benchmark: the cost of the per-layer statistics (runtime/train/diagnostics.py).

    python bench/bench_diagnostics.py [--threads N] [--rounds R] [--samples N] [--only NAME] [--engines numpy,torch]

The cases of bench_epochs.py (LeNet-5 on the embedded digits, ResNet-20 on CIFAR-shaped synthetic data of
`--samples` images), each on each engine, trained by two trainers from the same weights in one process: one
records the statistics (gradient norms at every step, the update ratio of the last step, the probe's
activations and the layer records at the end of the epoch, the rules read), the other does not
(its `layers` replaced by `Unwatched`). Their epochs alternate, `--rounds` times; printed: the median of the per-round
ratios (with statistics / without) and their IQR, and the time spent inside the statistics' own calls as a
share of the watched epochs (steadier than the ratio when other processes share the cores). The default must
stay below 1.05 (docs/diagnostics.md).
Not timed: the first probe of a run, which compiles the fast kernels' eval path once (about 0.7 s).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_epochs import CASES, trainer, warm_up  # noqa: E402
from common import quartiles  # noqa: E402


def timed_epoch(t, epoch: int) -> float:
    """An epoch as the run has it: training, then the layer records and the rules (nothing when unwatched)."""
    start = time.perf_counter()
    stats = t.train_epoch(epoch)
    layers = t.layers.records(t.engine.params())
    t.rules.check({"epoch": epoch + 1, "train_loss": stats.mean_loss, "val_loss": None, "layers": layers})
    return time.perf_counter() - start


class Clock:
    """Seconds spent in the statistics' own calls (a second figure, steadier than the ratio on a busy machine)."""

    def __init__(self, t) -> None:
        self.seconds = 0.0
        for obj, names in ((t.layers, ("gradients", "before_step", "after_step", "records")), (t.rules, ("check",))):
            for name in names:
                setattr(obj, name, self.timed(getattr(obj, name)))

    def timed(self, call):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return run


def run_case(case, engine: str, samples: int, threads: int, rounds: int, tmp: Path) -> None:
    back_end = "torch" if engine == "torch" else "numpy"
    pair = {}
    for label, watch in (("with", True), ("without", False)):
        t = trainer(case, back_end, samples, threads, tmp / f"{case.example}-{engine}-{label}")
        if not watch:
            from cnnc.runtime.train.diagnostics import Unwatched
            t.layers = Unwatched()
        warm_up(t)
        t.layers.records(t.engine.params())   # the probe's kernels compile once per run (the fast set): not timed
        pair[label] = t
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    clock = Clock(pair["with"])
    for epoch in range(rounds):
        for label, t in pair.items():
            seconds[label].append(timed_epoch(t, epoch))
    ratios = [a / b for a, b in zip(seconds["with"], seconds["without"])]
    q1, med, q3 = quartiles(ratios)
    n = len(pair["with"].ds.train)
    print(f"{case.name}, {engine} engine: {n:,} samples, {rounds} alternating epochs; "
          f"without {statistics.median(seconds['without']):.2f} s/epoch, with {statistics.median(seconds['with']):.2f}"
          f" s/epoch; ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}); the statistics' own calls "
          f"{clock.seconds / rounds:.3f} s/epoch = {clock.seconds / sum(seconds['with']):.1%} of the epochs", flush=True)
    for t in pair.values():
        t.engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=2048, help="ResNet-20's synthetic training images (default 2,048)")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this (case-insensitive)")
    ap.add_argument("--engines", default="numpy,torch")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if args.only.lower() in case.name.lower():
                for engine in args.engines.split(","):
                    run_case(case, engine, args.samples, args.threads, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
