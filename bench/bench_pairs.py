"""Stage 3 (runtime) benchmark: cnnc against PyTorch CPU, pair by pair, with the machine's limit beside.

    python bench/bench_pairs.py [--quick] [--only NAME] [--threads N] [--pairs P] [--pairs-infer Q]
                                [--kernels numpy,fast]

One module for every comparison, training and inference. Each case builds the same compiled graph
with the same weights: cnnc's path on each kernel set (A: numpy, and fast where Numba imports;
docs/kernels.md) and a PyTorch twin (B, bench/torch_reference.py, walking the very graph with
`torch.nn.functional`), at the same batch and thread count. The last runner (G) is the machine's
limit: one float32 GEMM (NumPy's BLAS, the same threads) of the same FLOPs as one A or B run. After a
warm-up they alternate single runs A(numpy) A(fast) B G A(numpy) ..., so a disturbance from other
processes on a shared machine hits each round alike, and each round gives

    ratio = A / B                     (below 1: cnnc is faster)
    % of machine = G / A and G / B    (the share of the sustained GEMM peak each side reaches)
    A(fast) / A(numpy)                (the fast kernels against the NumPy ones: before/after)

Printed per case and kernel set: the median of the per-round ratios with its interquartile range,
and the median share of the machine for each side. A median of block medians (the earlier bench_train_step.py) cannot
steer work on a loaded machine; a median of paired ratios can.

FLOPs come from the compiler (`analysis.flops`: 2 per MAC plus one per element of activations,
pooling, normalisation and adds). A training step counts the forward, then the backward: two
products of the forward's size per conv/linear layer (input gradient, weight gradient; the first
layer, whose input gradient nobody needs, counts one) and the forward count again for every other
layer. The optimizer update is not counted.

Training cases: one step (forward, backward, SGD with momentum) as `cnnc run` takes it
(`batch_loss_and_grads` on the trainer's pool, then the optimizer) against PyTorch's loop (zero_grad,
cross entropy, backward, step). Inference cases: cnnc's fastest eval path (the fused graph with
batchnorm folded, on planned arenas, the batch cut into a shard per thread: what `cnnc predict`
runs) against the twin in eval mode under `torch.inference_mode`. `--quick` takes fewer rounds and
skips ResNet-50 at batch 32. `--scale` runs ResNet-20's training step at batch 8 to 256 and a 4x
wider ResNet-20 at batch 64 instead, with each side's peak memory.

On a machine shared with other processes, two-thread runs measure the scheduler more than the code:
a thread descheduled mid-step leaves its partner spinning (OpenBLAS's caller waits for its worker, the
training shards meet at every batchnorm) while PyTorch's team sleeps. `--threads 1` compares the two
single-threaded, which load cannot skew that way.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Idle worker threads spin-wait by default, OpenBLAS's after each call and PyTorch's OpenMP team at
# every barrier. Spinning takes the cores from the other side's run that follows (measured: 4.6 ms
# LeNet-5 steps of PyTorch became 51 ms after a NumPy GEMM), and on a machine shared with other
# processes an OpenMP team spinning at a barrier for a descheduled member turns 5 ms into 130 ms.
# Both are told to sleep when idle (set before NumPy and torch load their thread pools);
# `--torch-spin` leaves PyTorch's OpenMP at its default (fair on a quiet machine only).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if "--torch-spin" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnnc.compiler.driver import compile_file  # noqa: E402
from cnnc.runtime.fused import FusedPlan  # noqa: E402
from cnnc.runtime.kernels import sets  # noqa: E402
from cnnc.runtime.train.losses import make_loss  # noqa: E402
from cnnc.runtime.memory_plan import ShardedArena  # noqa: E402
from cnnc.runtime.train.optim import WEIGHT_OPS, make_optimizer  # noqa: E402
from cnnc.runtime.plan import Plan  # noqa: E402
from cnnc.runtime.train.numpy_engine import batch_loss_and_grads  # noqa: E402
from common import quartiles, randomise_bn  # noqa: E402  (bench/, on sys.path above)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class Case:
    name: str
    example: str
    kind: str               # "train" or "infer"
    batch: int
    size: int | None = None  # rewrite a 3-channel input declaration to 3 x size x size
    quick: bool = True       # part of --quick
    width: int = 1           # ResNet-20 only: every stage this many times wider


CASES = [
    Case("LeNet-5 train", "lenet5.cnn", "train", 64),
    Case("ResNet-20 train", "cifar_resnet20.cnn", "train", 64),
    Case("ResNet-18 infer", "resnet18.cnn", "infer", 1, 224),
    Case("ResNet-18 infer", "resnet18.cnn", "infer", 32, 112),
    Case("ResNet-50 infer", "resnet50.cnn", "infer", 1, 224),
    Case("ResNet-50 infer", "resnet50.cnn", "infer", 32, 112, quick=False),
]

# --scale: how a training step grows with the batch and with the width (ResNet-20 and a 4x wider one).
SCALE = [Case("ResNet-20 train", "cifar_resnet20.cnn", "train", b) for b in (8, 32, 64, 128, 256)] + \
        [Case("ResNet-20x4 train", "cifar_resnet20.cnn", "train", 64, width=4)]


# ------------------------------------------------------------------ statistics


def alternate(runners: list[Callable[[], object]], rounds: int, warmup: int = 2) -> list[list[float]]:
    """Seconds of single runs of each runner, taken in turn (A B G A B G ...) after `warmup` turns."""
    for _ in range(warmup):
        for fn in runners:
            fn()
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for fn, ts in zip(runners, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return times


# ---------------------------------------------------------------------- FLOPs
def step_flops(compiled, batch: int, training: bool) -> int:
    """FLOPs of one run at `batch` by the compiler's per-layer counts (see the module docstring)."""
    net, flops = compiled.net, compiled.analysis.flops
    total = 0
    for node in net.layers():
        f = int(flops.get(node.name) or 0)
        total += f
        if training:
            first = all(i in net.inputs for i in node.inputs)
            total += (f if first else 2 * f) if node.op in WEIGHT_OPS else f
    return total * batch


def gemm_runner(flops: int) -> Callable[[], None]:
    """One float32 GEMM of about `flops` (n x n by n x n, n = (flops/2)^(1/3)): the machine's limit.
    One call, not many small ones: each call would wake the BLAS workers again."""
    n = max(64, round((flops / 2) ** (1 / 3)))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)

    def run() -> None:
        np.matmul(a, b, out=out)
    run.flops = 2 * n ** 3    # type: ignore[attr-defined]
    return run


# -------------------------------------------------------------------- builders
def compile_case(case: Case, tmp: Path):
    path = EXAMPLES / case.example
    if case.size is not None or case.width != 1:
        text = path.read_text()
        if case.size is not None:
            text = re.sub(r"input x: \[3, \d+, \d+\]", f"input x: [3, {case.size}, {case.size}]", text)
        if case.width != 1:     # CIFAR ResNet-20's three stages (and stem) of 16, 32, 64 channels
            text = re.sub(r"(conv_bn_relu|stage)\((16|32|64)\b", lambda m: f"{m[1]}({int(m[2]) * case.width}", text)
        path = tmp / f"{case.size}_{case.width}_{case.example}"
        path.write_text(text)
        for dep in re.findall(r'import "([^"]+)"', text):
            (tmp / dep).write_text((EXAMPLES / dep).read_text())
    return compile_file(path, allow={"all"})




def train_runners(compiled, batch: int, threads: int, kernel_sets: list[str]):
    """({kernel set: cnnc step}, torch step, check) for one training step of SGD with momentum; each
    kernel set trains its own copy of the same initial weights."""
    import torch
    from torch_reference import TorchTwin
    plans = {k: Plan(compiled.net, compiled.analysis.params, seed=0, kernels=k) for k in kernel_sets}
    first = plans[kernel_sets[0]]
    shape = compiled.net.shapes[first.inputs[0]]
    classes = compiled.net.shapes[first.outputs[0]][0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    loss = make_loss("cross_entropy")
    twin = TorchTwin(compiled, first.params).train()      # copies the weights before any step
    topt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.tensor(x), torch.tensor(y)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def step_of(plan: Plan) -> Callable[[], float]:
        trainable = {k: v for k, v in plan.params.items() if k in plan.trainable}
        opt = make_optimizer("sgd", trainable, lr=0.01, momentum=0.9, kernels=plan.kernels)

        def ours() -> float:
            value, _, grads = batch_loss_and_grads(plan, loss, x, y, np.random.default_rng(0), pool)
            opt.step(grads)
            return value
        return ours
    ours = {k: step_of(plan) for k, plan in plans.items()}

    def theirs() -> float:
        topt.zero_grad(set_to_none=True)
        value = torch.nn.functional.cross_entropy(twin(tx), ty)
        value.backward()
        topt.step()
        return value.item()

    def check() -> str:
        a = {k: run() for k, run in ours.items()}     # same weights before the first step: same loss
        return "first-step loss " + ", ".join(f"{v:.5f} ({k})" for k, v in a.items()) + f" vs {theirs():.5f}"
    return ours, theirs, check


def infer_runners(compiled, batch: int, threads: int, kernel_sets: list[str]):
    """({kernel set: cnnc fused planned eval}, torch eval, check) for one batch of inference."""
    import torch
    from torch_reference import TorchTwin
    plan = Plan(compiled.net, compiled.analysis.params, seed=0, kernels="numpy")
    randomise_bn(plan, np.random.default_rng(0))
    arenas = {k: ShardedArena(FusedPlan.from_plan(Plan(compiled.net, compiled.analysis.params, params=plan.params,
                                                       kernels=k)), threads)     # what `cnnc predict` runs
              for k in kernel_sets}
    twin = TorchTwin(compiled, plan.params).eval()
    shape = compiled.net.shapes[plan.inputs[0]]
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    tx, out = torch.tensor(x), plan.outputs[0]
    ours = {k: (lambda arena=arena: arena.run(x)[out]) for k, arena in arenas.items()}

    def theirs() -> np.ndarray:
        with torch.inference_mode():
            return twin(tx).numpy()

    def check() -> str:
        b = theirs()
        return "max rel. difference " + ", ".join(
            f"{float(np.abs(run() - b).max() / np.abs(b).max()):.1e} ({k})" for k, run in ours.items())
    return ours, theirs, check


# ------------------------------------------------------------------------ main
def run_case(case: Case, rounds: int, threads: int, tmp: Path, kernel_sets: list[str]) -> list[dict]:
    """One result per kernel set (the later sets also against the first: `vs_first`), from one
    alternation of every runner: numpy, fast, torch, GEMM, numpy, fast, ..."""
    compiled = compile_case(case, tmp)
    training = case.kind == "train"
    ours, theirs, check = (train_runners if training else infer_runners)(compiled, case.batch, threads, kernel_sets)
    flops = step_flops(compiled, case.batch, training)
    gemm = gemm_runner(flops)
    note = check()
    *ta, tb, tg = alternate([*ours.values(), theirs, gemm], rounds)
    # The GEMMs' FLOPs differ from the step's by the rounding of their count: scale to the step's.
    tg = [t * flops / gemm.flops for t in tg]
    results = []
    for name, times in zip(ours, ta):
        q1, med, q3 = quartiles([a / b for a, b in zip(times, tb)])
        vs_first = quartiles([a / f for a, f in zip(times, ta[0])]) if results else None
        results.append({"case": case, "kernels": name, "ratio": med, "iqr": (q1, q3), "rounds": rounds,
                        "gflop": flops / 1e9, "vs_first": vs_first,
                        "ms": (statistics.median(times) * 1e3, statistics.median(tb) * 1e3),
                        "machine": (statistics.median(g / a for g, a in zip(tg, times)),
                                    statistics.median(g / b for g, b in zip(tg, tb))),
                        "peak": flops / statistics.median(tg) / 1e9, "note": note})
    return results


def memory_mib(case: Case, threads: int, tmp: Path, kernels: str) -> tuple[float, float]:
    """Peak memory of one cold run of each side, in MiB, measured in a fresh process (a heap that
    earlier cases grew would hide PyTorch's peak): the growth of the peak resident size for PyTorch
    (VmHWM, whose allocator tracemalloc cannot see), run first, then tracemalloc's peak for NumPy
    (which sees every NumPy buffer, reused heap or not)."""
    import subprocess
    index = SCALE.index(case)
    out = subprocess.run([sys.executable, __file__, "--memory-of", str(index), "--threads", str(threads),
                          "--kernels", kernels], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def _measure_memory(case: Case, threads: int, tmp: Path, kernels: str) -> tuple[float, float]:
    import tracemalloc
    compiled = compile_case(case, tmp)
    ours, theirs, _ = (train_runners if case.kind == "train" else infer_runners)(compiled, case.batch, threads,
                                                                                 [kernels])
    base = _status_kib("VmRSS")
    theirs()
    torch_peak = (_status_kib("VmHWM") - base) / 1024
    tracemalloc.start()
    ours[kernels]()
    numpy_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return numpy_peak, torch_peak


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def line(r: dict) -> str:
    c = r["case"]
    size = f"{c.size}²" if c.size else ""
    memory = f"  peak MiB: cnnc {r['memory'][0]:.0f} torch {r['memory'][1]:.0f}" if "memory" in r else ""
    vs = r["vs_first"]
    versus = f"  {vs[1]:.2f}x the first set (IQR {vs[0]:.2f}-{vs[2]:.2f})" if vs else ""
    return (f"{c.name:<16} b{c.batch:<4}{size:>5} {r['kernels']:<5} {r['gflop']:7.2f} GF  cnnc {r['ms'][0]:8.1f} ms  "
            f"torch {r['ms'][1]:8.1f} ms  ratio {r['ratio']:.2f}x (IQR {r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}, "
            f"n={r['rounds']})  machine: cnnc {r['machine'][0]:4.0%} torch {r['machine'][1]:4.0%} "
            f"of {r['peak']:.0f} GF/s{memory}{versus}  [{r['note']}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides and the GEMM (default 2)")
    ap.add_argument("--pairs", type=int, default=40, help="alternating rounds per training case (default 40)")
    ap.add_argument("--pairs-infer", type=int, default=15, help="alternating rounds per inference case (15)")
    ap.add_argument("--quick", action="store_true", help="15/5 rounds, and no ResNet-50 at batch 32")
    ap.add_argument("--torch-spin", action="store_true",
                    help="leave PyTorch's OpenMP threads spinning when idle (its default; see the source)")
    ap.add_argument("--scale", action="store_true",
                    help="ResNet-20 steps at batch 8 to 256 and a 4x wider one at 64, with peak memory")
    ap.add_argument("--memory-of", type=int, help=argparse.SUPPRESS)   # memory_mib's fresh process
    ap.add_argument("--only", default="", help="run only the cases whose name contains this (case-insensitive)")
    ap.add_argument("--kernels", help="comma-separated kernel sets to run cnnc on, alternating within each case "
                                      "(default: numpy, and fast where Numba imports)")
    args = ap.parse_args()

    import torch
    from cnnc.runtime.kernels import keep_freed_memory
    from threadpoolctl import threadpool_limits
    keep_freed_memory()                 # what `cnnc run` and `cnnc predict` do when they start
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)     # NumPy's BLAS (the training shards hold it to 1 inside)
    kernel_sets = args.kernels.split(",") if args.kernels else \
        ["numpy"] + (["fast"] if sets.choose().name == "fast" else [])
    if args.memory_of is not None:
        with tempfile.TemporaryDirectory() as tmp:
            print(*_measure_memory(SCALE[args.memory_of], args.threads, Path(tmp), kernel_sets[0]))
        return
    pairs, pairs_infer = (15, 5) if args.quick else (args.pairs, args.pairs_infer)
    print(f"NumPy {np.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} thread(s) "
          f"each, idle OpenMP threads {'spin' if args.torch_spin else 'sleep'}; cnnc on "
          + ", ".join(sets.choose(k).describe() for k in kernel_sets)
          + "; ratio = cnnc time / torch time per alternating round (median, IQR); machine = time of "
          "one float32 GEMM of the same FLOPs / the side's time")
    with tempfile.TemporaryDirectory() as tmp:
        for case in SCALE if args.scale else CASES:
            if args.only.lower() not in case.name.lower() or (args.quick and not case.quick):
                continue
            rounds = pairs if case.kind == "train" else pairs_infer
            for result in run_case(case, rounds, args.threads, Path(tmp), kernel_sets):
                if args.scale:
                    result["memory"] = memory_mib(case, args.threads, Path(tmp), result["kernels"])
                print(line(result), flush=True)


if __name__ == "__main__":
    main()
