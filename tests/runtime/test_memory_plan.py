"""Memory planning: liveness, the greedy-by-size arena, and an executor that uses only the arena."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError
from cnnc.runtime.fused import FusedPlan
from cnnc.runtime.kernels import winograd
from cnnc.runtime.memory_plan import (ArenaExecutor, MemoryPlan, check_plan, greedy_by_size, lifetimes,
                                      plan_memory, step_scratch)
from cnnc.runtime.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def live_peak(sizes: dict, life: dict) -> int:
    steps = max(b for _, b in life.values()) + 1
    return max(sum(s for n, s in sizes.items() if life[n][0] <= t <= life[n][1]) for t in range(steps))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 12), st.integers(0, 6)), min_size=1, max_size=25))
def test_greedy_by_size_never_overlaps_live_tensors(items):
    sizes = {f"t{i}": s for i, (s, _, _) in enumerate(items)}
    life = {f"t{i}": (a, a + d) for i, (_, a, d) in enumerate(items)}
    offsets, arena = greedy_by_size(sizes, life)
    check_plan(MemoryPlan(tuple(sizes), sizes, life, offsets, arena, live_peak(sizes, life), sum(sizes.values())))
    assert live_peak(sizes, life) <= arena <= sum(sizes.values())


def test_a_chain_needs_two_buffers_and_outputs_live_to_the_end(compile_src):
    c = compile_src("""
    network Chain {
        input x: [1, 8, 8]
        x -> conv(4, 3, pad = 1) -> relu -> conv(2, 3, pad = 1) -> relu -> flatten -> linear(3)
    }
    """)
    order, life = lifetimes(c.net)
    assert order == ("conv_1", "relu_1", "conv_2", "relu_2", "flatten", "linear")
    assert life["conv_1"] == (0, 1) and life["relu_2"] == (3, 4) and life["linear"] == (5, 6)
    mp = plan_memory(c.net)
    assert mp.naive == 256 + 256 + 128 + 128 + 128 + 3
    assert mp.arena == mp.lower_bound == 256 + 256          # ping-pong between two 256-element slots
    assert mp.offsets["conv_1"] != mp.offsets["relu_1"] and mp.offsets["conv_2"] == mp.offsets["conv_1"]
    assert mp.summary() == {"naive_bytes": 3596, "planned_bytes": 2048, "lower_bound_bytes": 2048, "tensors": 6}


def test_unpool_keeps_its_maxpool_input_alive(compile_src):
    c = compile_src("""
    network U {
        input x: [2, 8, 8]
        a = x -> conv(2, 3, pad = 1)
        a -> p: maxpool(2) -> conv(2, 3, pad = 1) -> relu -> unpool(p) -> conv(1, 1)
    }
    """)
    _, life = lifetimes(c.net)
    assert life["conv_1"][1] == c.net.layers().index(c.net.node("unpool"))   # read lazily for the argmax
    plan = Plan(c.net, c.analysis.params)
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ArenaExecutor(plan).run(x)["conv_3"], plan.forward(x)[0]["conv_3"])


@pytest.mark.parametrize("name", ["small_resnet", "small_unet", "small_inception", "cifar_resnet20"])
def test_the_executor_gives_the_plans_outputs(name):
    c = compile_file(EXAMPLES / f"{name}.cnn")
    plan = Plan(c.net, c.analysis.params, seed=1)
    for p in plan.params.values():
        p += np.random.default_rng(0).normal(0, 0.05, p.shape).astype(np.float32)
    fused = FusedPlan.from_plan(plan)
    x = np.random.default_rng(2).standard_normal((5, *c.net.shapes["x"])).astype(np.float32)
    for p in (plan, fused):
        mp = plan_memory(p.lowered)     # the graph the plan runs (its kernel set's lowering)
        check_plan(mp)
        assert mp.lower_bound <= mp.arena <= mp.naive
        ref, out = p.forward(x)[0], ArenaExecutor(p, mp).run(x)
        for k in ref:
            # same kernels, same order: bit for bit on the machines this was written on; on an AMD EPYC
            # with AVX-512 OpenBLAS's products in the arena's slices differ in the last bits (1e-6), where
            # a slice shared while live would be wrong by the size of the values
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-5)


def test_fused_resnet18_plans_a_fraction_of_the_naive_memory():
    c = compile_file(EXAMPLES / "resnet18.cnn")
    fused = FusedPlan.from_plan(Plan(c.net, c.analysis.params))
    mp, naive = plan_memory(fused.net), plan_memory(c.net)
    check_plan(mp)
    assert mp.arena == mp.lower_bound                          # greedy by size is optimal here
    assert mp.bytes("arena") < 0.15 * naive.bytes("naive")     # 3.8 MiB against 31.4 MiB per sample
    # The worst moment is the max pool: the stem's output and the pool's, nothing else.
    assert mp.arena == 64 * 112 * 112 + 64 * 56 * 56


def test_steady_state_allocations_stay_near_the_plan():
    c = compile_file(EXAMPLES / "cifar_resnet20.cnn")
    fused = FusedPlan.from_plan(Plan(c.net, c.analysis.params))
    ex, batch = ArenaExecutor(fused), 8
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    out_bytes = 4 * batch * 10
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept_before = sum(u.nbytes for u in winograd._KEPT.values())
        ex.run(x)                                              # allocates the arena, once
        arena = ex.arena
        assert arena.nbytes == ex.memory.bytes("arena", batch)
        first = tracemalloc.get_traced_memory()[0] - base
        # ... and the transformed kernels of its Winograd convs (stage 3: 64 channels), kept with the weights
        kept = sum(u.nbytes for u in winograd._KEPT.values()) - kept_before
        assert kept > 0
        assert arena.nbytes + kept <= first <= arena.nbytes + kept + out_bytes + 64 * 1024
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        ex.run(x)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.arena is arena                                   # same batch: no new arena
    assert current - base <= out_bytes + 16 * 1024             # nothing kept but the returned outputs
    scratch = max(step_scratch(fused.net, s.name, batch) for s in fused.steps)
    assert peak - base <= scratch + out_bytes + 64 * 1024, (peak - base, scratch)
    ex.run(x[:3])
    assert ex.arena is not arena and ex.arena.nbytes == ex.memory.bytes("arena", 3)


def test_symbolic_sizes_cannot_be_planned():
    with pytest.raises(CnncError, match="concrete sizes"):
        plan_memory(compile_file(EXAMPLES / "unet.cnn").net)


def test_the_new_runtime_modules_never_import_the_parser():
    import subprocess
    import sys
    code = ("import sys, cnnc.runtime.fused, cnnc.runtime.memory_plan, cnnc.runtime.export.codegen; "
            "print('cnnc.dsl.parser' in sys.modules, 'lark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 2, 7])
def test_sharded_arena_equals_one_arena(threads, batch):
    """A batch cut into a shard per thread (consecutive samples, each on its own arena) gives the
    outputs of one arena, whatever the batch is against the thread count."""
    from cnnc.runtime.memory_plan import ShardedArena
    c = compile_file(EXAMPLES / "cifar_resnet20.cnn")
    fused = FusedPlan.from_plan(Plan(c.net, c.analysis.params))
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    out = fused.outputs[0]
    sharded = ShardedArena(fused, threads)
    try:
        got = sharded.run(x)[out]
        assert len(sharded.executors) == threads
        used = [ex for ex in sharded.executors if ex.arena is not None]
        assert len(used) == min(threads, batch)                 # one arena per shard that ran
        assert sum(ex.batch for ex in used) == batch
    finally:
        sharded.close()
    # a shard's products have fewer columns than the whole batch's: another blocking, another rounding
    # (up to 5e-5 relative after ResNet-20's 20 layers on an AMD EPYC's OpenBLAS)
    np.testing.assert_allclose(got, ArenaExecutor(fused).run(x)[out], rtol=2e-4, atol=1e-4)


def test_sharded_arena_refuses_a_wrong_input_before_any_thread_runs():
    from cnnc.runtime.memory_plan import ShardedArena
    c = compile_file(EXAMPLES / "cifar_resnet20.cnn")
    sharded = ShardedArena(FusedPlan.from_plan(Plan(c.net, c.analysis.params)), 2)
    with pytest.raises(CnncError, match="per-sample shape"):
        sharded.run(np.zeros((4, 3, 16, 16), np.float32))
    assert sharded._pool is None
