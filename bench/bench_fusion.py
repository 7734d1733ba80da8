"""Stage 3 (runtime) benchmark: conv–BN–ReLU fusion and memory planning on ResNet-18/50, against PyTorch.

Run `python bench/bench_fusion.py [--nets resnet18,resnet50] [--repeat 3] [--size32 112]`.

Inference (eval mode, BN running statistics randomised): the unfused `Plan`, the
fused `FusedPlan` (also with its folded weights in plain OIHW order, to separate
the gain of fusing from that of storing weights in the GEMM's order), the fused
plan on its preallocated arena (`ArenaExecutor`, steady state) and
PyTorch's eager CPU eval of the same graph with the same weights, at batch 1 on
3x224x224 and at batch 32 on a smaller input (3x112x112 by default: the input
declaration of a copy of the example is rewritten; at 224 one ResNet-50 batch
takes tens of seconds here). Times are the fastest of a few interleaved runs
after one warm-up (other processes on a shared machine only add time), all in
one process with the same thread count; ratios are against the unfused plan
and against torch. Peak memory: tracemalloc's peak over one forward for
NumPy (NumPy reports its buffers to tracemalloc), the peak-RSS growth for torch
(VmHWM, reset through /proc/self/clear_refs; torch's CPU allocator is invisible
to tracemalloc) and, for comparison, for NumPy too.

Training (one step = forward + backward, batch 2 at 3x224x224): activation bytes
kept for the backward pass, analytically from shapes (the compiler's `saves`
rules; the recompute step keeps only its inputs, plus 2·C floats of statistics)
and measured with tracemalloc (bytes held after the forward, and the peak over
forward + backward), and the time the recomputation costs.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

from cnnc.compiler.driver import compile_file
from cnnc.compiler.fusion import analyse_fused, fuse
from cnnc.runtime.fused import FusedPlan
from cnnc.runtime.memory_plan import ArenaExecutor
from cnnc.runtime.plan import Plan
from common import randomise_bn   # bench/: the script's own directory

try:
    import torch
    import torch.nn.functional as F
except ImportError:          # our numbers are still useful
    torch = None

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MIB = 1 << 20


# ------------------------------------------------------------------ helpers
def best_s(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Fastest of `repeat` runs of each, after a warm-up, interleaved: on a shared machine other
    processes only ever add time, so the minimum is the least disturbed measurement."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def traced_peak(fn: Callable[[], object]) -> int:
    """Bytes tracemalloc sees allocated at the worst moment of fn, above what was live before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_peak_growth(name: str, size: int, batch: int, mode: str) -> int | None:
    """Peak-RSS growth of one first forward in a fresh process (Linux VmHWM − VmRSS before it):
    in a process that has run before, freed pages are reused and RSS shows nothing."""
    r = subprocess.run([sys.executable, __file__, "--rss-worker", name, str(size), str(batch), mode],
                       capture_output=True, text=True, timeout=600, check=False)
    try:
        return int(r.stdout.split()[-1])
    except (ValueError, IndexError):
        return None


def rss_worker(name: str, size: int, batch: int, mode: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        runs = build(name, size, batch, tmp, None)[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fn = runs[mode]
    try:  # hand the heap's free pages (weight-drawing temporaries) back, so reuse cannot hide growth
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before = _status("VmRSS")
    fn()
    after = _status("VmHWM")
    print(-1 if before is None or after is None else after - before)


def compile_at(name: str, size: int, tmp: Path):
    """The example network with its input declaration rewritten to 3 x size x size."""
    if size == 224:
        return compile_file(EXAMPLES / f"{name}.cnn")
    text = (EXAMPLES / f"{name}.cnn").read_text()
    path = tmp / f"{name}_{size}.cnn"
    path.write_text(re.sub(r"input x: \[3, 224, 224\]", f"input x: [3, {size}, {size}]", text))
    return compile_file(path)




# -------------------------------------------------------------------- torch
def torch_forward(net, params: dict[str, np.ndarray]) -> Callable:
    """The unfused graph with torch.nn.functional (the ops a ResNet uses), eval mode."""
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    order = net.layers()

    def pad(x, padding):
        (t, b), (l, r) = padding
        return (x, (t, l)) if t == b and l == r else (F.pad(x, (l, r, t, b)), (0, 0))

    def run(x: torch.Tensor) -> torch.Tensor:
        v = {next(iter(net.inputs)): x}
        for n in order:
            a, ins = n.attrs, [v[i] for i in n.inputs]
            if n.op == "conv":
                h, padding = pad(ins[0], a["padding"])
                y = F.conv2d(h, p[f"{n.name}.weight"], p.get(f"{n.name}.bias"), a["stride"], padding,
                             a["dilation"], a["groups"])
            elif n.op == "batchnorm":
                y = F.batch_norm(ins[0], p[f"{n.name}.running_mean"], p[f"{n.name}.running_var"],
                                 p[f"{n.name}.weight"], p[f"{n.name}.bias"], False, 0.0, a["eps"])
            elif n.op == "relu":
                y = F.relu(ins[0])
            elif n.op == "maxpool":
                h, padding = pad(ins[0], a["padding"])
                y = F.max_pool2d(h, a["kernel"], a["stride"], padding, a["dilation"], a["ceil_mode"])
            elif n.op == "add":
                y = ins[0] + ins[1]
            elif n.op == "global_avgpool":
                y = ins[0].mean(dim=(2, 3), keepdim=True)
            elif n.op == "flatten":
                y = ins[0].flatten(1)
            elif n.op == "linear":
                y = F.linear(ins[0], p[f"{n.name}.weight"], p.get(f"{n.name}.bias"))
            else:
                raise NotImplementedError(n.op)
            v[n.name] = y
        return v[net.outputs[0]]
    return run


# ---------------------------------------------------------------- inference
def build(name: str, size: int, batch: int, tmp: Path, params=None):
    """The four ways to run one batch, the plan, the fused plan's executor and the reference output."""
    c = compile_at(name, size, tmp)
    plan = Plan(c.net, c.analysis.params)
    if params is None:
        randomise_bn(plan, np.random.default_rng(0))
    else:
        plan.load_state(params)
    fused = FusedPlan.from_plan(plan)
    # The folded weights are stored in the GEMM's order (fused.gemm_layout); the same fused plan
    # with plain OIHW weights separates what fusing the epilogue saves from what the layout saves.
    oihw = FusedPlan(fused.net, {k: np.ascontiguousarray(v) for k, v in fused.params.items()})
    arena = ArenaExecutor(fused)
    x = x_of(plan, batch, size)
    runs = {"unfused": lambda: plan.forward(x)[0]["fc"], "fused, OIHW w": lambda: oihw.forward(x)[0]["fc"],
            "fused": lambda: fused.forward(x)[0]["fc"],
            # a fresh executor each time: the arena it allocates is part of its cost and peak
            "fused+arena": lambda: ArenaExecutor(fused, arena.memory).run(x)["fc"]}
    if torch is not None:
        tf, tx = torch_forward(c.net, plan.params), torch.from_numpy(x)

        def torch_run():
            with torch.inference_mode():
                return tf(tx).numpy()
        runs["torch eval"] = torch_run
    return runs, plan, arena


def inference_rows(name: str, size: int, batch: int, repeat: int, tmp: Path, params=None):
    runs, plan, arena = build(name, size, batch, tmp, params)
    out = runs["unfused"]()
    err = {k: float(np.abs(fn() - out).max() / np.abs(out).max()) for k, fn in runs.items()}
    timed = dict(runs)
    timed["fused+arena"] = lambda: arena.run(x_of(plan, batch, size))  # steady state: arena reused
    secs = best_s(timed, repeat)
    rows = {}
    for key, fn in runs.items():
        peak = traced_peak(fn) if key != "torch eval" else None
        rows[key] = (secs[key], peak, rss_peak_growth(name, size, batch, key), err[key])
    return rows, plan.params, arena.memory.bytes("arena", batch)


_INPUTS: dict[tuple[int, int], np.ndarray] = {}


def x_of(plan: Plan, batch: int, size: int) -> np.ndarray:
    """One input batch per (batch, size), the same for every candidate."""
    key = (batch, size)
    if key not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[key] = np.random.default_rng(1).standard_normal((batch, 3, size, size)).astype(np.float32)
    return _INPUTS[key]


def print_inference(name: str, size: int, batch: int, rows: dict, arena_bytes: int) -> None:
    base = rows["unfused"][0]
    torch_s = rows.get("torch eval", (None,))[0]
    print(f"\n{name}  batch {batch}  3x{size}x{size}" + ("" if size == 224 else "  (input rewritten from 224)"))
    print(f"  {'':13} {'ms':>9} {'vs unfused':>11} {'vs torch':>9} {'peak (tracemalloc)':>19} "
          f"{'peak RSS growth':>16} {'max rel err':>12}")
    print(f"  {'':13} {'':>9} {'':>11} {'':>9} {'one forward':>19} {'first forward':>16} {'vs unfused':>12}")
    for key, (secs, peak, rss, err) in rows.items():
        vs_torch = f"{secs / torch_s:8.2f}x" if torch_s else "      n/a"
        tm = f"{peak / MIB:15.1f} MiB" if peak is not None else f"{'n/a':>19}"
        rs = f"{rss / MIB:12.1f} MiB" if rss is not None else f"{'n/a':>16}"
        print(f"  {key:13} {secs * 1e3:9.1f} {secs / base:10.2f}x {vs_torch} {tm} {rs} {err:12.1e}")
    print(f"  arena planned for the fused graph: {arena_bytes / MIB:.1f} MiB for the batch; 'fused, OIHW w' "
          "keeps the folded weights in the conv kernel's input order (it copies them to GEMM order per call)")


# ----------------------------------------------------------------- training
def tape_bytes(fn: Callable) -> tuple[int, int, object]:
    """(bytes still held after the forward, peak over forward + backward)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        backward = fn()
        held = tracemalloc.get_traced_memory()[0] - base
        backward()
        return held, tracemalloc.get_traced_memory()[1] - base, None
    finally:
        tracemalloc.stop()


def training_rows(name: str, batch: int, repeat: int) -> None:
    c = compile_file(EXAMPLES / f"{name}.cnn")
    trained = fuse(c.net, "train")
    analytic_u = c.analysis.totals()["train_saved_bytes"]
    analytic_f = analyse_fused(trained.net, c.analysis).totals()["train_saved_bytes"]
    stats = sum(2 * 4 * n.attrs["out_channels"] for n in trained.net.layers() if n.attrs.get("bn"))
    plan = Plan(c.net, c.analysis.params)
    fused = FusedPlan.from_plan(plan, "train")
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)

    def step(p):
        def forward():
            out, tape = p.forward(x, training=True)
            return lambda: p.backward(tape, {"fc": np.ones_like(out["fc"])})
        return forward
    secs = best_s({"unfused": lambda: step(plan)()(), "fused": lambda: step(fused)()()}, repeat)
    measured = {}
    for key, p in (("unfused", plan), ("fused", fused)):
        held, peak, _ = tape_bytes(step(p))
        measured[key] = (held, peak, secs[key])
    print(f"\n{name} training step, batch {batch}, 3x224x224")
    print(f"  kept for backward, analytic (compiler saves rules), per sample: unfused "
          f"{analytic_u / MIB:.1f} MiB, fused {(analytic_f + stats) / MIB:.1f} MiB "
          f"({1 - (analytic_f + stats) / analytic_u:.0%} less; {stats} B of them BN statistics)")
    (hu, pu, su), (hf, pf, sf) = measured["unfused"], measured["fused"]
    print(f"  {'':9} {'held after forward':>19} {'peak fwd+bwd':>13} {'step ms':>9}")
    for key, (held, peak, secs) in measured.items():
        print(f"  {key:9} {held / MIB:15.1f} MiB {peak / MIB:9.1f} MiB {secs * 1e3:9.0f}")
    print(f"  saving: {(hu - hf) / MIB:.1f} MiB held ({1 - hf / hu:.0%}), {(pu - pf) / MIB:.1f} MiB peak "
          f"({1 - pf / pu:.0%}); time {sf / su:.2f}x the unfused step (one extra conv forward per fused step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet18,resnet50")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size32", type=int, default=112, help="input size for batch 32 (default 112)")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--rss-worker", nargs=4, metavar=("NET", "SIZE", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = None
    try:
        from threadpoolctl import threadpool_info
        threads = max((i.get("num_threads", 1) for i in threadpool_info() if i.get("user_api") == "blas"), default=None)
    except ImportError:
        pass
    if torch is not None and threads:
        torch.set_num_threads(threads)
    if args.rss_worker:
        name, size, batch, mode = args.rss_worker
        return rss_worker(name, int(size), int(batch), mode)
    print(f"NumPy {np.__version__} ({threads or '?'} BLAS threads), torch "
          f"{torch.__version__ if torch else 'absent'}, {os.cpu_count()} CPUs; best of {args.repeat} runs")
    tmp = Path(tempfile.mkdtemp())
    try:
        for name in args.nets.split(","):
            rows, params, arena = inference_rows(name, 224, 1, args.repeat, tmp)
            print_inference(name, 224, 1, rows, arena)
            rows, _, arena = inference_rows(name, args.size32, 32, max(1, args.repeat - 1), tmp, params)
            print_inference(name, args.size32, 32, rows, arena)
        if not args.skip_train:
            for name in args.nets.split(","):
                training_rows(name, args.train_batch, max(1, args.repeat - 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
