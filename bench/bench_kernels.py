"""Stage 3 (runtime) benchmark: per-op kernel timings on LeNet-5 tensors against PyTorch.

Run `python bench/bench_kernels.py [--batch 64] [--repeat 50] [--threads N]`.
For each hot op it reports the best-of-N time of our forward, of our forward
+ backward, and of the same two for `torch.nn.functional` (CPU, float32, same
thread count) in the same process, then a whole LeNet-5 training step
(forward + backward through every layer, no optimizer) both ways. Best-of-N
rather than the median because these machines are shared: the minimum is the
run nothing else interrupted. Torch is optional: without it only our timings
are printed.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from cnnc.runtime.kernels import KERNELS, Context

try:
    import torch
    import torch.nn.functional as F
except ImportError:      # the numbers for our kernels are still useful
    torch = None

PAD0 = ((0, 0), (0, 0))


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def conv_attrs(o: int, k: int, pad: int) -> dict:
    return dict(out_channels=o, kernel=(k, k), stride=(1, 1), padding=((pad, pad), (pad, pad)),
                dilation=(1, 1), groups=1, bias=True, trainable=True, weights=None)


POOL = dict(kernel=(2, 2), stride=(2, 2), padding=PAD0, dilation=(1, 1), ceil_mode=False)


def ours(op: str, xs, params, attrs, first: bool = False):
    """(forward thunk, forward+backward thunk) for one of our kernels in training mode."""
    kernel = KERNELS[op]

    def fwd():
        ctx = Context(training=True, node=op, need_input_grad=not first)
        return kernel.forward(xs, params, attrs, ctx)

    def fwd_bwd():
        y, cache = fwd()
        return kernel.backward(np.ones_like(y), cache)
    return fwd, fwd_bwd


def theirs(fn, xs, params, first: bool = False):
    """The same pair for a torch function of (inputs..., params...)."""
    tx = [torch.tensor(x, requires_grad=not first) for x in xs]
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    wrt = tp if first else tx + tp

    def fwd():
        with torch.no_grad():
            return fn(*tx, *tp)

    def fwd_bwd():
        y = fn(*tx, *tp)
        return torch.autograd.grad(y, wrt, torch.ones_like(y))
    return fwd, fwd_bwd


def op_table(n: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)     # noqa: E731
    w1, b1, w2, b2 = r(6, 1, 5, 5), r(6), r(16, 6, 5, 5), r(16)
    x1, x2, x3, x4 = r(n, 1, 28, 28), r(n, 6, 28, 28), r(n, 6, 14, 14), r(n, 16, 10, 10)
    f1, wl, bl = r(n, 400), r(120, 400), r(120)
    rows = [
        ("conv1 1->6 5x5 pad2 (first layer)", ours("conv", (x1,), {"weight": w1, "bias": b1}, conv_attrs(6, 5, 2), True),
         lambda: theirs(lambda x, w, b: F.conv2d(x, w, b, padding=2), [x1], [w1, b1], first=True)),
        ("conv2 6->16 5x5", ours("conv", (x3,), {"weight": w2, "bias": b2}, conv_attrs(16, 5, 0)),
         lambda: theirs(lambda x, w, b: F.conv2d(x, w, b), [x3], [w2, b2])),
        ("maxpool 2x2 on 6x28x28", ours("maxpool", (x2,), {}, POOL),
         lambda: theirs(lambda x: F.max_pool2d(x, 2), [x2], [])),
        ("maxpool 2x2 on 16x10x10", ours("maxpool", (x4,), {}, POOL),
         lambda: theirs(lambda x: F.max_pool2d(x, 2), [x4], [])),
        ("linear 400->120", ours("linear", (f1,), {"weight": wl, "bias": bl}, dict(out_features=120, bias=True)),
         lambda: theirs(F.linear, [f1], [wl, bl])),
        ("relu on 6x28x28", ours("relu", (x2,), {}, {}), lambda: theirs(F.relu, [x2], [])),
    ]
    print(f"{'op (batch %d)' % n:40s} {'ours fwd':>9s} {'ours f+b':>9s} {'torch fwd':>10s} {'torch f+b':>10s}  (ms)")
    for name, (fwd, fb), make_torch in rows:
        line = f"{name:40s} {best_ms(fwd, repeat):9.3f} {best_ms(fb, repeat):9.3f}"
        if torch is not None:
            tf, tfb = make_torch()
            line += f" {best_ms(tf, repeat):10.3f} {best_ms(tfb, repeat):10.3f}"
        print(line)


LENET = [
    ("conv", conv_attrs(6, 5, 2), {"weight": (6, 1, 5, 5), "bias": (6,)}),
    ("relu", {}, {}),
    ("maxpool", POOL, {}),
    ("conv", conv_attrs(16, 5, 0), {"weight": (16, 6, 5, 5), "bias": (16,)}),
    ("relu", {}, {}),
    ("maxpool", POOL, {}),
    ("flatten", {}, {}),
    ("linear", dict(out_features=120, bias=True), {"weight": (120, 400), "bias": (120,)}),
    ("relu", {}, {}),
    ("linear", dict(out_features=84, bias=True), {"weight": (84, 120), "bias": (84,)}),
    ("relu", {}, {}),
    ("linear", dict(out_features=10, bias=True), {"weight": (10, 84), "bias": (10,)}),
]


def lenet_step(n: int, repeat: int) -> None:
    rng = np.random.default_rng(1)
    params = [{k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in shapes.items()}
              for _, _, shapes in LENET]
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)

    def step():
        h, caches = x, []
        for i, (op, attrs, _) in enumerate(LENET):
            h, cache = KERNELS[op].forward((h,), params[i], attrs,
                                           Context(training=True, node=str(i), need_input_grad=i > 0))
            caches.append(cache)
        g = np.ones_like(h)
        for (op, _, _), cache in zip(reversed(LENET), reversed(caches)):
            (g,), _ = KERNELS[op].backward(g, cache)
        return g
    line = f"LeNet-5 forward+backward, batch {n}: ours {best_ms(step, repeat):.2f} ms"
    if torch is not None:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
            torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
            torch.nn.Linear(84, 10))
        tx = torch.tensor(x)

        def torch_step():
            model.zero_grad(set_to_none=True)
            y = model(tx)
            y.backward(torch.ones_like(y))
        line += f", torch {best_ms(torch_step, repeat):.2f} ms"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="BLAS and torch threads (default: theirs)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")
    op_table(args.batch, args.repeat)
    lenet_step(args.batch, args.repeat)


if __name__ == "__main__":
    main()
