"""Benchmark: one training step (forward, backward, SGD update) of cnnc vs PyTorch CPU.

Same model (a PyTorch twin of the compiled graph, with cnnc's weights), same
batch, same thread count, measured in the same process, interleaved. Prints
the median step time of each, the ratio, and peak memory: tracemalloc's peak
for NumPy (it sees NumPy's allocations) and, for PyTorch (whose allocator tracemalloc
cannot see), the peak of the process's resident memory sampled every
millisecond during one step, above its level just before the step.

    python bench/bench_train_step.py [--threads N] [--repeats R] [--rounds K] [--only NAME] [--profile]

With --profile, cProfile sees the calling thread only: in a sharded step that
is shard 0 (the other shards run the same code on the pool's threads).
"""
from __future__ import annotations

import argparse
import cProfile
from concurrent.futures import ThreadPoolExecutor
import pstats
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnnc.compiler.driver import compile_file  # noqa: E402
from cnnc.runtime.losses import make_loss  # noqa: E402
from cnnc.runtime.optim import make_optimizer  # noqa: E402
from cnnc.runtime.plan import Plan  # noqa: E402
from cnnc.runtime.train import batch_loss_and_grads  # noqa: E402

CASES = [("LeNet-5", ROOT / "examples" / "lenet5.cnn", 64, 1.5),
         ("ResNet-20 (CIFAR)", ROOT / "examples" / "cifar_resnet20.cnn", 64, 2.0)]


def cnnc_step(plan, opt, loss, x, y, pool):
    """What `cnnc run` does per batch (two shards on two threads where the network allows)."""
    _, _, grads = batch_loss_and_grads(plan, loss, x, y, np.random.default_rng(0), pool)
    opt.step(grads)


def torch_step(model, opt, x, y):
    import torch
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def rss_growth(fn) -> float:
    """Peak resident memory above the starting level while fn runs, in MiB (Linux)."""
    import gc
    import threading
    gc.collect()
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    fn()
    done.set()
    t.join()
    return max(peak[0] - base, 0) / 2**20


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved cnnc/torch rounds; the last one is reported")
    ap.add_argument("--only", default="", help="run only the models whose name contains this (case-insensitive)")
    ap.add_argument("--profile", action="store_true", help="print where cnnc's step spends its time")
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits
    from torch_reference import TorchTwin
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads} (NumPy BLAS and torch); median of {args.repeats} steps\n")
    print(f"{'model':<20} {'batch':>5} {'cnnc ms':>9} {'torch ms':>9} {'ratio':>7} {'target':>7} "
          f"{'cnnc peak MiB':>14} {'torch peak MiB':>15}")
    for name, path, batch, target in CASES:
        if args.only.lower() not in name.lower():
            continue
        c = compile_file(path, allow={"all"})
        plan = Plan(c.net, c.analysis.params, seed=0)
        shape = c.net.shapes[plan.inputs[0]]
        classes = c.net.shapes[plan.outputs[0]][0]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, classes, batch)
        loss = make_loss("cross_entropy")
        trainable = {k: v for k, v in plan.params.items() if k in plan.trainable}
        opt = make_optimizer("sgd", trainable, lr=0.01, momentum=0.9)
        twin = TorchTwin(c, plan.params).train()
        topt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.tensor(x), torch.tensor(y)

        pool = ThreadPoolExecutor(args.threads) if args.threads > 1 else None
        rss = rss_growth(lambda: torch_step(twin, topt, tx, ty))  # cold: the allocator's first step
        with threadpool_limits(args.threads):
            tracemalloc.start()
            cnnc_step(plan, opt, loss, x, y, pool)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        for _ in range(args.rounds):  # interleave, so load changes hit both sides alike
            with threadpool_limits(args.threads):
                ours = median_ms(lambda: cnnc_step(plan, opt, loss, x, y, pool), args.repeats)
            theirs = median_ms(lambda: torch_step(twin, topt, tx, ty), args.repeats)
        ratio = ours / theirs
        verdict = "ok" if ratio <= target else "SLOWER"
        print(f"{name:<20} {batch:>5} {ours:>9.1f} {theirs:>9.1f} {ratio:>6.2f}x {target:>5.1f}x "
              f"{peak:>14.1f} {rss:>15.1f}  {verdict}")
        if args.profile:
            prof = cProfile.Profile()
            with threadpool_limits(args.threads):
                prof.enable()
                for _ in range(5):
                    cnnc_step(plan, opt, loss, x, y, pool)
                prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
