"""Stage 3 (runtime): liveness-based memory planning for inference, and an executor that obeys it.

`plan_memory(net)` gives every layer's output an offset in one arena. A
tensor lives from the step that writes it to the last step that reads it
(graph outputs to the end; a maxpool's input until the unpool that asks for
its argmax, because the pool's indices are computed lazily from it). Offsets
come from the "greedy by size" assignment (Pisarchyk & Lee, "Efficient Memory
Management for Deep Neural Net Inference", 2020): largest tensor first, each
at the lowest offset that overlaps no already placed tensor whose lifetime
meets its own. The arena is then compared with the naive total (every
activation its own buffer) and with the lower bound no assignment can beat
(the largest sum of simultaneously live tensors). Sizes are per sample: every
tensor scales with the batch, so offsets × N stay disjoint for any batch.

`ShardedArena` runs inference on several threads: samples never meet in
inference, so a batch is cut into one shard per thread, each run by its own
`ArenaExecutor` with BLAS held to one thread (the im2col copies and the
epilogues, which BLAS threads never reach, then use every core too).

`ArenaExecutor` runs a `Plan` (or `FusedPlan`) in inference on that plan: it
allocates the arena once per batch size and every step writes its output into
its slice — the fused kernels, relu and add directly (`out=`), every other op
through its kernel and one `np.copyto`. What kernels still allocate per step
(measured by the tests with tracemalloc, listed in docs/fusion.md): the im2col
matrix and padded input of a convolution, the output of kernels without an
`out=` path before it is copied, and the small per-channel vectors.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Mapping

import numpy as np

from ..compiler.graph import Network
from ..compiler.ops import numel
from ..dsl.source import CnncError
from .fused import INTO, like
from .kernels import Context, sets, shards
from .plan import Plan, Step


@dataclass(frozen=True)
class MemoryPlan:
    """Arena offsets for a network's activations, in elements per sample."""

    order: tuple[str, ...]                  # layers in execution order
    sizes: dict[str, int]
    lifetimes: dict[str, tuple[int, int]]   # (first step, last step), inclusive
    offsets: dict[str, int]
    arena: int                              # elements per sample the arena holds
    lower_bound: int                        # max over steps of the live elements
    naive: int                              # every activation in its own buffer
    itemsize: int = 4

    def bytes(self, what: str = "arena", batch: int = 1) -> int:
        return getattr(self, what) * self.itemsize * batch

    def summary(self) -> dict[str, int]:
        return {"naive_bytes": self.bytes("naive"), "planned_bytes": self.bytes("arena"),
                "lower_bound_bytes": self.bytes("lower_bound"), "tensors": len(self.sizes)}


# ------------------------------------------------------------------ liveness
def lifetimes(net: Network) -> tuple[tuple[str, ...], dict[str, tuple[int, int]]]:
    """Execution order of the layers and each output's (first, last) step."""
    order = tuple(n.name for n in net.layers())
    step = {name: i for i, name in enumerate(order)}
    last = {name: i for i, name in enumerate(order)}          # unread tensors still get written
    for node in net.layers():
        reads = list(node.inputs)
        if node.op == "unpool":  # its indices come from the maxpool's (kept) input
            reads += [i for i in net.node(node.attrs["of"]).inputs]
        for src in reads:
            if src in last:
                last[src] = max(last[src], step[node.name])
    for out in net.outputs:
        if out in last:
            last[out] = len(order)
    return order, {name: (step[name], last[name]) for name in order}


def greedy_by_size(sizes: Mapping[str, int], life: Mapping[str, tuple[int, int]]) -> tuple[dict[str, int], int]:
    """Offsets: largest first, each at the lowest address free for its whole lifetime."""
    placed: list[tuple[int, int, int, int]] = []      # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], life[n][0])):
        size, (a, b) = sizes[name], life[name]
        busy = sorted((o, s) for o, s, a2, b2 in placed if a2 <= b and a <= b2)
        offset = 0
        for o, s in busy:
            if o - offset >= size:
                break  # the gap before this block fits
            offset = max(offset, o + s)
        offsets[name] = offset
        placed.append((offset, size, a, b))
    return offsets, max((o + s for o, s, _, _ in placed), default=0)


def plan_memory(net: Network, itemsize: int = 4) -> MemoryPlan:
    """The arena plan of a network with concrete sizes (graph inputs are the caller's arrays)."""
    for name, shape in net.shapes.items():
        if not all(isinstance(d, int) for d in shape):
            raise CnncError(f"memory planning needs concrete sizes, but '{name}' has shape "
                            f"[{', '.join(map(str, shape))}]", hint="bind the input with --input NAME=CxHxW")
    order, life = lifetimes(net)
    sizes = {name: int(numel(net.shapes[name])) for name in order}
    offsets, arena = greedy_by_size(sizes, life)
    live = [0] * (len(order) + 1)
    for name, (a, b) in life.items():
        for t in range(a, b + 1):
            live[t] += sizes[name]
    return MemoryPlan(order, sizes, life, offsets, arena, max(live, default=0), sum(sizes.values()), itemsize)


def check_plan(mp: MemoryPlan) -> None:
    """No two tensors alive at the same step overlap in the arena."""
    names = list(mp.offsets)
    for i, u in enumerate(names):
        (a, b), ou, su = mp.lifetimes[u], mp.offsets[u], mp.sizes[u]
        assert ou >= 0 and ou + su <= mp.arena, u
        for v in names[i + 1:]:
            (c, d), ov, sv = mp.lifetimes[v], mp.offsets[v], mp.sizes[v]
            if a <= d and c <= b:
                assert ou + su <= ov or ov + sv <= ou, f"{u} and {v} overlap while both are live"


def step_scratch(net: Network, name: str, batch: int = 1, itemsize: int = 4) -> int:
    """Bytes one inference step may allocate besides its arena slice (an upper estimate).

    Convolutions: the im2col matrix (N·oh·ow·kh·kw·C) and the padded input, plus one output-sized
    result where no GEMM writes the arena directly (grouped, depthwise); transposed convolutions:
    the per-offset products (N·H·W·kh·kw·O) and the padded output; any other kernel: its result
    before the copy and its own temporaries, bounded by four times its inputs and output.
    """
    node, shapes = net.node(name), net.shapes
    out = int(numel(shapes[name]))
    ins = sum(int(numel(shapes[i])) for i in node.inputs)
    a = node.attrs
    if node.op in ("conv", "fused_conv", "local"):
        c, h, w = shapes[node.inputs[0]]
        (kh, kw), ((pt, pb), (pl, pr)) = a["kernel"], a["padding"]
        oh, ow = shapes[name][1:]
        elements = oh * ow * kh * kw * c + c * (h + pt + pb) * (w + pl + pr) + out
    elif node.op == "deconv":
        c, h, w = shapes[node.inputs[0]]
        kh, kw = a["kernel"]
        elements = h * w * kh * kw * a["out_channels"] + 2 * out + ins
    else:
        elements = 4 * (ins + out)
    return elements * batch * itemsize


# ------------------------------------------------------------------ executor
def _relu_into(xs, params, attrs, buf):
    return np.maximum(xs[0], 0, out=like(buf, xs[0]))


def _add_into(xs, params, attrs, buf):
    shape = np.broadcast_shapes(*(x.shape for x in xs))
    out = like(buf, xs[0]) if xs[0].shape == shape else buf[:int(np.prod(shape))].reshape(shape)
    np.add(xs[0], xs[1], out=out) if len(xs) > 1 else np.copyto(out, xs[0])
    for x in xs[2:]:
        out += x
    return out


# In-place forms of NumPy kernels: a step takes its op's writer only where its kernel set runs the
# NumPy kernel (a fast kernel's result is copied in), so the arena computes what the plan computes.
WRITERS = {**INTO, "relu": _relu_into, "add": _add_into}


class ArenaExecutor:
    """Inference over one preallocated arena laid out by `plan_memory`."""

    def __init__(self, plan: Plan, memory: MemoryPlan | None = None):
        self.plan = plan
        self.memory = memory or plan_memory(plan.lowered, np.dtype(plan.dtype).itemsize)
        if [s.name for s in plan.steps] != list(self.memory.order):
            raise ValueError("the memory plan was made for another network")
        self.arena: np.ndarray | None = None
        self.batch = 0
        self.writers = {s.name: WRITERS[s.op] for s in plan.steps if s.op in WRITERS
                        and sets.kernel(s.op, plan.kernels, plan.ops) is sets.kernel(s.op, "numpy", plan.ops)}

    def allocate(self, batch: int) -> None:
        """The arena for `batch` samples (done once per batch size)."""
        self.arena = np.empty(self.memory.arena * batch, self.plan.dtype)
        self.batch = batch

    def run(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """The outputs (copies: the arena is overwritten by the next call)."""
        values = self.plan._bind_inputs(inputs)
        n = next(iter(values.values())).shape[0]
        if n != self.batch:
            self.allocate(n)
        ctx = Context(training=False)
        for step in self.plan.steps:
            ctx.node = step.name
            values[step.name] = self._run_step(step, tuple(values[s] for s in step.inputs), ctx, n)
        return {o: values[o].copy() for o in self.plan.outputs}

    def buffer(self, name: str, n: int) -> np.ndarray:
        off, size = self.memory.offsets[name], self.memory.sizes[name]
        return self.arena[off * n:(off + size) * n]

    def _run_step(self, step: Step, xs: tuple, ctx: Context, n: int) -> np.ndarray:
        params = {p: self.plan.params[k] for p, k in step.params}
        buf = self.buffer(step.name, n)
        writer = self.writers.get(step.name)
        if writer is not None and not any(x.ndim == 3 for x in xs):  # signals take the (lifted) kernel
            return writer(xs, params, step.attrs, buf)
        y, _ = step.kernel.forward(xs, params, step.attrs, ctx)
        out = like(buf, y)
        np.copyto(out, y)
        return out


class ShardedArena:
    """Inference on `threads` threads: each batch cut into up to `threads` shards of consecutive
    samples, each shard on its own arena (the arenas together hold what one full-batch arena would).
    A batch of one sample runs whole, with BLAS on every thread."""

    def __init__(self, plan: Plan, threads: int = 1):
        memory = plan_memory(plan.lowered, np.dtype(plan.dtype).itemsize)
        self.plan = plan
        self.executors = [ArenaExecutor(plan, memory) for _ in range(max(1, threads))]
        self._pool: ThreadPoolExecutor | None = None

    def run(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """The outputs for the batch, as `ArenaExecutor.run` gives them."""
        values = self.plan._bind_inputs(inputs)
        n = next(iter(values.values())).shape[0]
        k = min(len(self.executors), n)
        if k <= 1:
            return self.executors[0].run(values)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.executors) - 1)
        jobs = [partial(ex.run, {name: v[a:b] for name, v in values.items()})
                for ex, (a, b) in zip(self.executors, shards.bounds(n, k))]
        results = shards.in_parallel(self._pool, jobs)
        return {o: np.concatenate([r[o] for r in results]) for o in self.plan.outputs}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
