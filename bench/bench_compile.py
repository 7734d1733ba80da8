"""Benchmark: how long the full compile + analysis takes, and how it grows with depth.

    python bench/bench_compile.py             # the table
    python bench/bench_compile.py --profile   # plus a cProfile of the deepest network
    python bench/bench_compile.py --quick     # fewer repeats, no 2000-layer network

Times `cnnc.compiler.driver.compile_file` (parse, elaborate, shape inference,
parameters, MACs/FLOPs, receptive fields, memory, lints) for ResNet-18, -50
and -152 from examples/, and for pre-activation bottleneck CIFAR ResNets of
growing depth (9n + 2 layers: 110, 254, 506, 1001, 2000) generated on the fly
with `block(...) * n`. Prints the time per network, the number of graph
layers and the time per layer; near-constant time per layer means linear
growth. Targets: ResNet-152 well under 1 s; more than 1000 layers in a few
seconds. When a target is missed the deepest network is profiled.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from cnnc.compiler.driver import compile_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

CIFAR_RESNET = """\
# Pre-activation bottleneck ResNet for CIFAR (He et al., 2016), depth 9n + 2 = {depth}.
block preact_bottleneck(c, stride = 1) {{
    a = batchnorm -> relu
    main = a -> conv(c, 1, bias = false)
        -> batchnorm -> relu -> conv(c, 3, stride = stride, pad = 1, bias = false)
        -> batchnorm -> relu -> conv(4 * c, 1, bias = false)
    skip = if stride != 1 or channels(in) != 4 * c {{
        a -> conv(4 * c, 1, stride = stride, bias = false)
    }} else {{
        in
    }}
    main + skip
}}

network PreResNet{depth}(classes = 10) {{
    input x: [3, 32, 32]
    x -> conv(16, 3, pad = 1, bias = false)
      -> preact_bottleneck(16) * {n}
      -> preact_bottleneck(32, stride = 2) -> preact_bottleneck(32) * {n1}
      -> preact_bottleneck(64, stride = 2) -> preact_bottleneck(64) * {n1}
      -> batchnorm -> relu -> global_avgpool -> flatten -> linear(classes)
}}
"""


def cifar_resnet(depth: int, folder: Path) -> Path:
    n = (depth - 2) // 9
    assert 9 * n + 2 == depth, depth
    path = folder / f"preresnet{depth}.cnn"
    path.write_text(CIFAR_RESNET.format(depth=depth, n=n, n1=n - 1))
    return path


def time_compile(path: Path, repeats: int, no_gc: bool = False) -> tuple[float, int]:
    """Best wall time of `repeats` full compiles, and the number of layers of the graph."""
    best, layers = float("inf"), 0
    for _ in range(repeats):
        gc.collect()
        if no_gc:
            gc.disable()
        try:
            start = time.perf_counter()
            c = compile_file(path)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
        layers = len(c.net.layers())
        del c
    return best, layers


def profile(path: Path, top: int = 25) -> str:
    prof = cProfile.Profile()
    prof.enable()
    compile_file(path)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats("cumulative")
    stats.print_stats(top)
    out.write("\n--- by own time ---\n")
    stats.sort_stats("tottime").print_stats(12)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", action="store_true", help="cProfile the deepest network")
    ap.add_argument("--quick", action="store_true", help="one repeat, depths up to 1001")
    ap.add_argument("--no-gc", action="store_true", help="disable the garbage collector while timing")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else 3
    depths = [110, 254, 506, 1001] + ([] if args.quick else [2000])
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))

    compile_file(EXAMPLES / "lenet5.cnn")  # warm up: imports, grammar
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nets = [(f"ResNet-{d}", EXAMPLES / f"resnet{d}.cnn") for d in (18, 50, 152)]
        nets += [(f"PreResNet-{d} (CIFAR)", cifar_resnet(d, Path(tmp))) for d in depths]
        print(f"{'network':<24}{'layers':>8}{'time (s)':>11}{'us/layer':>11}")
        print("-" * 54)
        for name, path in nets:
            seconds, layers = time_compile(path, repeats, args.no_gc)
            rows.append((name, path, layers, seconds))
            print(f"{name:<24}{layers:>8}{seconds:>11.3f}{1e6 * seconds / layers:>11.1f}", flush=True)

        generated = [r for r in rows if "CIFAR" in r[0]]
        small, large = generated[0], generated[-1]
        ratio = (large[3] / large[2]) / (small[3] / small[2])
        print("-" * 54)
        print(f"time per layer, {large[0]} vs {small[0]}: x{ratio:.2f} "
              f"({large[2] / small[2]:.1f}x the layers){'  -- linear' if ratio < 1.5 else '  -- SUPERLINEAR'}")

        r152 = next(r for r in rows if r[0] == "ResNet-152")
        over_1000 = [r for r in rows if r[2] > 1000 and "CIFAR" in r[0]]
        slowest_big = max(r[3] for r in over_1000)
        ok152, okbig = r152[3] < 1.0, slowest_big < 5.0
        print(f"target ResNet-152 < 1 s: {r152[3]:.3f} s {'ok' if ok152 else 'MISSED'}")
        print(f"target >1000 layers in a few seconds (< 5 s): slowest {slowest_big:.3f} s "
              f"{'ok' if okbig else 'MISSED'}")
        if args.profile or not (ok152 and okbig and ratio < 1.5):
            deepest = rows[-1]
            print(f"\ncProfile of {deepest[0]} ({deepest[2]} layers):\n")
            print(profile(deepest[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
