"""Stage 3 (runtime) benchmark: where one training step's time goes, cnnc beside PyTorch, per op.

    python bench/profile_step.py [EXAMPLE.cnn] [--batch B] [--threads N] [--steps S] [--kernels SETS]

The same compiled graph and weights as bench_pairs.py's training cases (default: CIFAR ResNet-20 at
batch 64, one thread). cnnc's side times every kernel call of the Plan (forward and backward per op,
summed over the step's shards), the optimizer and the rest of the step (loss, sharding, gradient
sums, Python); PyTorch's side runs its profiler over the same steps, with each node of the twin's
forward under a record named by its op, and the backward by autograd function. Times are per step,
medians would hide nothing here: the figures are sums over `--steps` steps after two warm-up steps.
`--kernels numpy,fast` (the default where Numba imports) profiles cnnc on each kernel set in turn
(kernels/sets.py). Use it to choose what to speed up; use bench_pairs.py (alternating runs) to claim
a ratio.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pairs import Case, compile_case  # noqa: E402
from cnnc.runtime.kernels import Kernel, sets  # noqa: E402
from cnnc.runtime.train.losses import make_loss  # noqa: E402
from cnnc.runtime.train.optim import make_optimizer  # noqa: E402
from cnnc.runtime.plan import Plan  # noqa: E402
from cnnc.runtime.train.numpy_engine import batch_loss_and_grads  # noqa: E402


def timed(kernel: Kernel, op: str, times: dict) -> Kernel:
    """The kernel, adding each call's seconds to times[(op, "forward"|"backward")]."""
    def forward(*args):
        t = time.perf_counter()
        out = kernel.forward(*args)
        times[(op, "forward")] += time.perf_counter() - t
        return out

    def backward(*args):
        t = time.perf_counter()
        out = kernel.backward(*args)
        times[(op, "backward")] += time.perf_counter() - t
        return out
    return Kernel(forward, backward)


def profile_cnnc(compiled, x, y, steps: int, kernels: str = "numpy") -> tuple[float, dict]:
    plan = Plan(compiled.net, compiled.analysis.params, seed=0, kernels=kernels)
    times: dict = collections.defaultdict(float)
    plan.steps = [replace(s, kernel=timed(s.kernel, s.op, times)) for s in plan.steps]
    loss = make_loss("cross_entropy")
    opt = make_optimizer("sgd", {k: v for k, v in plan.params.items() if k in plan.trainable}, lr=0.01,
                         momentum=0.9, kernels=kernels)

    def step() -> None:
        _, _, grads = batch_loss_and_grads(plan, loss, x, y, np.random.default_rng(0), None)
        t = time.perf_counter()
        opt.step(grads)
        times[("optimizer", "step")] += time.perf_counter() - t
    for _ in range(2):
        step()
    times.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    total = (time.perf_counter() - t0) / steps
    return total, {k: v / steps for k, v in times.items()}


def profile_torch(compiled, x, y, steps: int) -> tuple[float, dict]:
    import torch
    from torch.profiler import profile, record_function
    from torch_reference import TorchTwin
    plan = Plan(compiled.net, compiled.analysis.params, seed=0)
    twin = TorchTwin(compiled, plan.params).train()
    op_of = twin._op

    def named_op(node, xs, saved):
        with record_function(f"{node.op} forward"):
            return op_of(node, xs, saved)
    twin._op = named_op
    opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(twin(tx), ty).backward()
        with record_function("optimizer step"):
            opt.step()
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    total = (time.perf_counter() - t0) / steps
    with profile() as prof:
        for _ in range(steps):
            step()
    times: dict = collections.defaultdict(float)
    prefix = "autograd::engine::evaluate_function: "
    for event in prof.events():
        name = event.name
        if name.endswith(" forward") or name == "optimizer step":
            times[tuple(name.rsplit(" ", 1))] += event.cpu_time_total / 1e6
        elif name.startswith(prefix):
            times[(name[len(prefix):], "backward")] += event.cpu_time_total / 1e6
    return total, {k: v / steps for k, v in times.items()}


def table(title: str, total: float, times: dict) -> None:
    print(f"\n{title}: {total * 1e3:.1f} ms per step (untimed run)")
    accounted = 0.0
    for (op, phase), sec in sorted(times.items(), key=lambda kv: -kv[1]):
        accounted += sec
        print(f"  {op:<28} {phase:<9} {sec * 1e3:8.2f} ms  {sec / total:5.1%}")
    print(f"  {'(rest of the step)':<38} {(total - accounted) * 1e3:8.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("example", nargs="?", default="cifar_resnet20.cnn", help="a file of examples/")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="BLAS and PyTorch threads (default 1)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--kernels", help="comma-separated kernel sets to profile cnnc on (default: numpy, and fast "
                                      "where Numba imports)")
    args = ap.parse_args()
    import torch
    from cnnc.runtime.kernels import keep_freed_memory
    from threadpoolctl import threadpool_limits
    import tempfile
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        compiled = compile_case(Case(args.example, args.example, "train", args.batch), Path(tmp))
    shape = compiled.net.shapes[next(iter(compiled.net.inputs))]
    classes = compiled.net.shapes[next(iter(compiled.net.outputs))][0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *shape)).astype(np.float32)
    y = rng.integers(0, classes, args.batch)
    print(f"{args.example}, batch {args.batch}, {args.threads} thread(s); times per step, summed over shards")
    kernel_sets = args.kernels.split(",") if args.kernels else \
        ["numpy"] + (["fast"] if sets.choose().name == "fast" else [])
    for name in kernel_sets:
        table(f"cnnc ({sets.choose(name).describe()})", *profile_cnnc(compiled, x, y, args.steps, name))
    table("PyTorch (twin; backward by autograd function, which includes what it calls)",
          *profile_torch(compiled, x, y, args.steps))


if __name__ == "__main__":
    main()
