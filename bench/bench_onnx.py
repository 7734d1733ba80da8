"""Stage 3 (runtime) benchmark: ResNet-18 inference on ONNX Runtime against cnnc's NumPy runtime.

Run `python bench/bench_onnx.py [--pairs 15] [--pairs32 7] [--size32 112] [--threads N]` (needs `cnnc[onnx]`).

The same compiled ResNet-18 with the same weights (seeded initial weights, batchnorm statistics
randomised so that folding matters) runs two ways: cnnc's fastest inference path — the fused graph
(batchnorm folded into the convolutions, runtime/fused.py) on planned arenas, a shard of the batch
per thread (`ShardedArena`, runtime/memory_plan.py), what `cnnc predict` runs — and ONNX Runtime on the model
`cnnc export --to onnx` writes (runtime/export/onnx.py; unfused, ORT's own optimiser fuses it),
both with the machine's cores (ORT's workers told not to spin between runs,
which would take the cores from the NumPy run that follows). At batch 1 on 3x224x224 and batch 32 on 3x112x112 (the input
declaration of a copy of the example rewritten, to keep the run short). After warm-up the two
alternate single runs A B A B ..., so a disturbance on a shared machine hits both alike; each
pair gives one ratio (NumPy time / ORT time), and the median ratio and its interquartile range
are printed, with each side's median time and the largest output difference.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnc.compiler.driver import compile_file
from cnnc.runtime.export.onnx import build_model, checked_bytes
from cnnc.runtime.fused import FusedPlan
from cnnc.runtime.memory_plan import ShardedArena
from cnnc.runtime.plan import Plan
from common import quartiles, randomise_bn   # bench/: the script's own directory

try:
    import onnxruntime as ort
except ImportError:
    sys.exit("bench_onnx needs ONNX Runtime: pip install 'cnnc[onnx]'")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def compile_at(size: int, tmp: Path):
    """ResNet-18 with its input declaration rewritten to 3 x size x size."""
    text = (EXAMPLES / "resnet18.cnn").read_text()
    path = tmp / f"resnet18_{size}.cnn"
    path.write_text(re.sub(r"input x: \[3, 224, 224\]", f"input x: [3, {size}, {size}]", text))
    return compile_file(path)




def runners(size: int, batch: int, tmp: Path, threads: int):
    """(cnnc's fused planned run, ORT's run, the input) for one batch of ResNet-18."""
    c = compile_at(size, tmp)
    plan = Plan(c.net, c.analysis.params)
    randomise_bn(plan, np.random.default_rng(0))
    arena = ShardedArena(FusedPlan.from_plan(plan), threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # ORT's workers spin after a run by default, and would steal the cores from the NumPy run that follows.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(checked_bytes(build_model(c.net, plan.params)), options,
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((batch, 3, size, size)).astype(np.float32)
    out = plan.outputs[0]
    return (lambda: arena.run(x)[out]), (lambda: session.run(None, {"x": x})[0]), x


def alternate(a, b, pairs: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    """Seconds of single runs of a and b, alternating a b a b ... after `warmup` runs of each."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(pairs):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return ta, tb




def bench(size: int, batch: int, pairs: int, tmp: Path, threads: int) -> None:
    numpy_run, ort_run, _ = runners(size, batch, tmp, threads)
    ref, got = numpy_run(), ort_run()
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    tn, to = alternate(numpy_run, ort_run, pairs)
    ratios = [n / o for n, o in zip(tn, to)]
    q1, med, q3 = quartiles(ratios)
    print(f"ResNet-18  batch {batch:2}  3x{size}x{size}: NumPy (fused, planned) {statistics.median(tn) * 1e3:8.1f} ms, "
          f"ONNX Runtime {statistics.median(to) * 1e3:8.1f} ms; NumPy/ORT median {med:.2f}x "
          f"(IQR {q1:.2f}-{q3:.2f}x, {pairs} pairs); max rel. difference {err:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15, help="alternating pairs at batch 1 (default 15)")
    parser.add_argument("--pairs32", type=int, default=7, help="alternating pairs at batch 32 (default 7)")
    parser.add_argument("--size32", type=int, default=112, help="input size for batch 32 (default 112)")
    parser.add_argument("--threads", type=int, help="threads for both (default: the number of CPUs)")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(threads)   # NumPy's BLAS
        except ImportError:
            sys.exit("--threads needs threadpoolctl")
    print(f"NumPy {np.__version__}, ONNX Runtime {ort.__version__}, {os.cpu_count()} CPUs, {threads} thread(s) "
          f"each; ratio = NumPy time / ORT time per alternating pair")
    tmp = Path(tempfile.mkdtemp())
    try:
        bench(224, 1, args.pairs, tmp, threads)
        bench(args.size32, 32, args.pairs32, tmp, threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
