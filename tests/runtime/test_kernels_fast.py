"""The fast kernel set (runtime/kernels/fast, the `cnnc[fast]` extra) against the NumPy kernels.

Every fast kernel must give its NumPy kernel's results: forward, backward and side effects (running
statistics, maxpool indices), in both memory layouts (NCHW and NHWC behind a channels-first view), at
odd sizes, strides, padding, dilation and groups. Tolerances, relative to each tensor's largest value:
float32 1e-5 (the kernels round differently: one-pass batchnorm statistics, fused multiply-adds,
other summation orders), float64 1e-11 (the same formulas). The gradient checks of every kernel test
file run on both sets too (kernel_helpers.check_grads); here are the set's own properties: the plan's
lowering, the optimizer updates (equal bit for bit), lockstep shards, reproducibility, threads and the
disk cache.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.compiler.fusion import ALL_OPS
from cnnc.runtime import fused  # noqa: F401  (registers the NumPy kernels of the fused ops)
from cnnc.runtime.apply import forward
from cnnc.runtime.kernels import Context, shards, sets
from cnnc.runtime.train.losses import make_loss
from cnnc.runtime.train.optim import make_optimizer
from cnnc.runtime.plan import Plan
from cnnc.runtime.train.numpy_engine import batch_loss_and_grads
from cnnc.runtime.train.trainer import Trainer

import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)

pytest.importorskip("numba")
sets.load("fast")

ROOT = Path(__file__).resolve().parents[2]
TOL = {np.float32: 1e-5, np.float64: 1e-11}
LAYOUTS = ("first", "last")


def _laid_out(x: np.ndarray, layout: str) -> np.ndarray:
    """x with the same values, in NHWC memory behind a channels-first view for "last"."""
    if layout == "first" or x.ndim != 4:
        return x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _read_only(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


# ------------------------------------------------------------------ cases
def _conv(shape, out, kernel, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1, bias=True):
    def make(rng, dtype):
        c = shape[1]
        attrs = dict(out_channels=out, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias, trainable=True, weights=None)
        params = {"weight": rng.standard_normal((out, c // groups, *kernel)).astype(dtype)}
        if bias:
            params["bias"] = rng.standard_normal(out).astype(dtype)
        return [rng.standard_normal(shape).astype(dtype)], params, attrs
    return make


def _bn(shape, activation=None, slope=0.01):
    def make(rng, dtype):
        c = shape[1]
        params = {"weight": rng.uniform(0.5, 1.5, c).astype(dtype), "bias": rng.normal(0, 0.3, c).astype(dtype),
                  "running_mean": rng.normal(0, 0.2, c).astype(dtype),
                  "running_var": rng.uniform(0.5, 2, c).astype(dtype)}
        attrs = {"eps": 1e-5, "momentum": 0.1, "activation": activation, "slope": slope}
        return [(rng.standard_normal(shape) * 2 + 0.5).astype(dtype)], params, attrs
    return make


def _pool(shape, **attrs):
    def make(rng, dtype):
        x = rng.standard_normal(shape)
        x[..., ::3] = np.round(x[..., ::3])      # ties: the first maximum wins, as in the NumPy kernel
        return [x.astype(dtype)], {}, attrs
    return make


def _act(**attrs):
    def make(rng, dtype):
        x = rng.standard_normal((3, 5, 7, 6)) * 4
        x.flat[:4] = [0.0, 6.0, -0.0, 3.0]       # the kinks
        return [x.astype(dtype)], {}, attrs
    return make


PAD1 = ((1, 1), (1, 1))
CASES = {
    "conv": {
        "6ch-5x5-valid": _conv((3, 6, 9, 11), 7, (5, 5)),                       # LeNet's second conv
        "16ch-3x3-same": _conv((2, 16, 7, 9), 16, (3, 3), padding=PAD1),          # flipped-kernel data gradient
        "8ch-stride2": _conv((3, 8, 9, 8), 12, (3, 3), stride=(2, 2), padding=PAD1),
        "7ch-asym": _conv((2, 7, 10, 9), 5, (3, 2), stride=(2, 3), padding=((2, 0), (1, 2)), dilation=(2, 1)),
        "6ch-1x1": _conv((2, 6, 5, 7), 9, (1, 1), bias=False),
        "1ch-stem": _conv((3, 1, 12, 11), 6, (5, 5), padding=((2, 2), (2, 2))),   # channels-first path
        "groups": _conv((2, 12, 7, 7), 8, (3, 3), padding=PAD1, groups=2),
        "depthwise": _conv((2, 6, 7, 8), 6, (3, 3), stride=(2, 1), padding=PAD1, groups=6),
    },
    "batchnorm": {"4d": _bn((3, 5, 7, 6)), "2d": _bn((6, 5)), "1x1": _bn((4, 3, 1, 1))},
    "fused_bn": {"relu": _bn((3, 5, 7, 6), "relu"), "relu6": _bn((3, 4, 5, 5), "relu6"),
                 "leaky": _bn((3, 4, 5, 5), "leaky_relu", 0.1), "2d-relu": _bn((6, 5), "relu")},
    "relu": {"": _act()},
    "relu6": {"": _act()},
    "leaky_relu": {"": _act(slope=0.2)},
    "sigmoid": {"": _act()},
    "maxpool": {
        "2x2": _pool((2, 3, 8, 8), kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1),
                     ceil_mode=False),
        "3x3-s2-pad-ceil": _pool((2, 4, 9, 8), kernel=(3, 3), stride=(2, 2), padding=((1, 1), (1, 0)),
                                 dilation=(1, 1), ceil_mode=True),
        "dilated": _pool((2, 3, 11, 9), kernel=(3, 2), stride=(1, 2), padding=((1, 1), (0, 1)), dilation=(2, 1),
                         ceil_mode=False),
    },
    "avgpool": {
        "2x2": _pool((2, 6, 10, 10), kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), ceil_mode=False,
                     count_include_pad=True),
        "3x3-pad-ceil-exclude": _pool((2, 3, 9, 8), kernel=(3, 3), stride=(2, 2), padding=PAD1, ceil_mode=True,
                                      count_include_pad=False),
        "3x2-include": _pool((2, 3, 7, 9), kernel=(3, 2), stride=(1, 3), padding=((1, 0), (1, 1)),
                             ceil_mode=False, count_include_pad=True),
    },
}


def fast_ops() -> set[str]:
    """Every op of the compiler's and the fused table that has a fast kernel registered."""
    return {op for op, spec in ALL_OPS.items() if "fast" in spec.impls}


def test_every_fast_kernel_has_cases_here():
    assert fast_ops() == set(CASES), "a fast kernel without cases (or cases without a kernel)"


def _params(params: dict) -> dict:
    return {k: v.copy() for k, v in params.items()}


def _run(op, kernel_set, xs, params, attrs, training):
    ctx = Context(training=training, node="pool")
    kernel = sets.kernel(op, kernel_set, ALL_OPS)
    y, cache = kernel.forward(tuple(xs), params, attrs, ctx)
    return kernel, y, cache, ctx


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op, case", [(op, case) for op, cases in CASES.items() for case in cases])
def test_fast_kernel_equals_numpy_kernel(op, case, layout, training, dtype):
    rng = np.random.default_rng(abs(hash((op, case))) % 2**32)
    xs, params, attrs = CASES[op][case](rng, dtype)
    xs = [_read_only(_laid_out(x, layout)) for x in xs]      # kernels never write their inputs
    tol, what = TOL[dtype], f"{op} {case} {layout}"
    ref_params, fast_params = _params(params), _params(params)
    ref_kernel, y_ref, c_ref, ctx_ref = _run(op, "numpy", xs, ref_params, attrs, training)
    fast_kernel, y, c_fast, ctx_fast = _run(op, "fast", xs, fast_params, attrs, training)
    assert y.dtype == dtype and y.shape == y_ref.shape, what
    H.assert_close(y, y_ref, tol, f"{what} forward")
    for key in ref_params:                      # batchnorm's running statistics
        H.assert_close(fast_params[key], ref_params[key], tol, f"{what} {key}")
    if op == "maxpool":                         # what unpool reads
        np.testing.assert_array_equal(ctx_fast.saved["pool"].argmax(), ctx_ref.saved["pool"].argmax(), what)
    dy = _read_only(_laid_out(rng.standard_normal(y_ref.shape).astype(dtype), layout))
    (dx_ref, *_), g_ref = ref_kernel.backward(dy, c_ref)
    (dx, *_), g = fast_kernel.backward(dy, c_fast)
    assert dx.dtype == dtype, what
    H.assert_close(dx, dx_ref, tol, f"{what} dx")
    assert set(g) == set(g_ref), what
    for name in g_ref:
        assert g[name].dtype == dtype, f"{what} d{name}"
        H.assert_close(g[name], g_ref[name], tol, f"{what} d{name}")


def test_fast_maxpool_indices_feed_unpool_as_the_numpy_ones_do():
    rng = np.random.default_rng(3)
    xs, _, attrs = CASES["maxpool"]["3x3-s2-pad-ceil"](rng, np.float32)
    outs = []
    for kernel_set in sets.SETS:
        _, y, _, ctx = _run("maxpool", kernel_set, xs, {}, attrs, training=False)
        up, _ = sets.kernel("unpool", kernel_set).forward((y,), {}, {"of": "pool"}, ctx)
        outs.append(up)
    np.testing.assert_array_equal(outs[1], outs[0])


# ------------------------------------------------------- lockstep shards
@pytest.mark.parametrize("op, activation", [("batchnorm", None), ("fused_bn", "relu")])
def test_fast_batchnorm_in_lockstep_shards_equals_numpy(op, activation):
    """Two shards on two threads meet inside the kernel: each normalises with the whole batch's
    statistics, and the gradients are the unsharded batch's (summed over the shards)."""
    rng = np.random.default_rng(7)
    xs, params, attrs = _bn((6, 4, 5, 5), activation)(rng, np.float32)
    x = _laid_out(xs[0], "last")
    dy = rng.standard_normal(x.shape).astype(np.float32)
    whole = _run(op, "numpy", [x], _params(params), attrs, True)
    (dx_whole,), g_whole = whole[0].backward(dy, whole[2])
    group, parts, live = shards.ShardGroup(2), [None, None], _params(params)

    def shard(i: int) -> None:
        with shards.member(group, i):
            kernel, y, cache, _ = _run(op, "fast", [x[3 * i:3 * i + 3]], live, attrs, True)
            parts[i] = (y, *kernel.backward(dy[3 * i:3 * i + 3], cache))
    t = threading.Thread(target=shard, args=(1,))
    t.start()
    shard(0)
    t.join()
    H.assert_close(np.concatenate([p[0] for p in parts]), whole[1], 1e-5, "forward")
    H.assert_close(np.concatenate([p[1][0] for p in parts]), dx_whole, 1e-5, "dx")
    for name in g_whole:
        H.assert_close(parts[0][2][name] + parts[1][2][name], g_whole[name], 1e-5, name)


# ------------------------------------------------------------- optimizers
@pytest.mark.parametrize("name, hyper", [
    ("sgd", {}), ("sgd", {"momentum": 0.9, "weight_decay": 1e-2}), ("sgd", {"momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"momentum": 0.8, "nesterov": True}), ("adam", {}), ("adam", {"weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {"weight_decay": 0.05})])
def test_fast_optimizer_update_equals_numpy(name, hyper):
    rng = np.random.default_rng(1)
    start = {"a.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
             "a.bias": rng.standard_normal(4).astype(np.float32)}
    stores = {k: _params(start) for k in sets.SETS}
    opts = {k: make_optimizer(name, stores[k], kernels=k, lr=0.05, **hyper) for k in sets.SETS}
    assert opts["fast"].fast_update is not None and opts["numpy"].fast_update is None
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in start.items()}
        for opt in opts.values():
            opt.step(grads)
    for key in start:               # the same operations, rounded alike (no fastmath): equal bit for bit
        np.testing.assert_array_equal(stores["fast"][key], stores["numpy"][key], f"{name} {key}")
    for key, value in opts["numpy"].state_dict().items():
        np.testing.assert_array_equal(opts["fast"].state_dict()[key], value, key)


def test_optimizers_without_a_compiled_update_keep_their_own():
    assert make_optimizer("rmsprop", {"w": np.zeros(3, np.float32)}, kernels="fast").fast_update is None


# -------------------------------------------------------------- the plan
def _network(example: str):
    return compile_file(ROOT / "examples" / example, allow={"all"})


def test_fast_plan_fuses_batchnorm_and_activation_with_the_same_parameters():
    c = _network("cifar_resnet20.cnn")
    numpy_plan = Plan(c.net, c.analysis.params, kernels="numpy")
    fast_plan = Plan(c.net, c.analysis.params, kernels="fast")
    ops = [s.op for s in fast_plan.steps]
    assert "fused_bn" in ops and ops.count("relu") < [s.op for s in numpy_plan.steps].count("relu")
    assert fast_plan.params.keys() == numpy_plan.params.keys() and fast_plan.net is c.net
    assert not fast_plan.batch_independent      # a fused batchnorm still couples the batch
    for key, value in numpy_plan.params.items():
        np.testing.assert_array_equal(fast_plan.params[key], value, key)


@pytest.mark.parametrize("example", ["lenet5.cnn", "cifar_resnet20.cnn"])
def test_fast_plan_step_equals_numpy_plan_step(example):
    """One sharded training step (loss, every gradient, running statistics) on both kernel sets, in
    float64: in float32 the rounding differences of 20 batchnorm layers at initialisation grow to
    percent-size gradient differences in either set (docs/fusion.md, "chaotic"), so float32 checks
    the loss only."""
    c = _network(example)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *c.net.shapes["x"]))
    y = rng.integers(0, 10, 8)
    results = {}
    with ThreadPoolExecutor(2) as pool:
        for k, dtype in [(k, d) for k in sets.SETS for d in (np.float32, np.float64)]:
            plan = Plan(c.net, c.analysis.params, seed=3, kernels=k, dtype=dtype)
            loss, _, grads = batch_loss_and_grads(plan, make_loss("cross_entropy"), x.astype(dtype), y,
                                                  np.random.default_rng(0), pool)
            results[k, dtype] = loss, grads, plan.params
    assert results["fast", np.float32][0] == pytest.approx(results["numpy", np.float32][0], rel=1e-5)
    fast, ref = results["fast", np.float64], results["numpy", np.float64]
    assert fast[0] == pytest.approx(ref[0], rel=1e-12)
    assert fast[1].keys() == ref[1].keys()
    for key, g in ref[1].items():
        H.assert_close(fast[1][key], g, 1e-9, key)
    for key, p in ref[2].items():
        H.assert_close(fast[2][key], p, 1e-11, key)


# ------------------------------------------------ reproducibility, threads
def _train(kernels: str, threads: int, epochs: int = 1, limit: int = 640, example: str = "cifar_resnet20.cnn"):
    """(per-epoch train losses, final parameters) of a short run through the trainer."""
    c = _network(example)
    cfg = replace(c.net.train, epochs=epochs, batch=64)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(c, cfg, Path(out), limit=limit, progress=False, log=lambda line: None,
                          threads=threads, kernels=kernels)
        result = trainer.run()
        return [r["train_loss"] for r in result.history], {k: v.copy() for k, v in trainer.plan.params.items()}


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_training_is_reproducible_for_a_seed_and_thread_count(threads):
    import numba.np.ufunc.parallel as numba_threads
    first, second = _train("fast", threads), _train("fast", threads)
    assert first[0] == second[0]
    for key, value in first[1].items():
        np.testing.assert_array_equal(second[1][key], value, key)
    # The kernels start no threads of their own: the run's parallelism is its shards (--threads).
    assert not numba_threads._is_initialized


@pytest.mark.slow
def test_lenet5_epoch_losses_agree_between_the_kernel_sets():
    """LeNet-5 on the embedded digits, two epochs: the per-epoch losses agree to float32 rounding
    accumulated over ~220 Adam steps (measured difference ~1e-6)."""
    losses = {k: _train(k, threads=2, epochs=2, limit=7200, example="lenet5.cnn")[0] for k in sets.SETS}
    np.testing.assert_allclose(losses["fast"], losses["numpy"], rtol=1e-4)
    assert losses["numpy"][1] < losses["numpy"][0]      # it learns


# ------------------------------------------------------------ disk cache
def test_compiled_kernels_are_cached_in_the_user_cache_folder(tmp_path):
    """A fresh process compiles into its cache folder; the next finds every kernel there."""
    script = ("import numpy as np; from cnnc.runtime.kernels import sets; sets.load('fast');"
              "from cnnc.runtime.kernels.fast import activation as a;"
              "x = np.ones(8, np.float32); a._act_loop(x, x, 1, np.float32(0.01));"
              "print(a._act_loop.stats.cache_hits.__len__(), a._act_loop.stats.cache_misses.__len__())")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("CNNC_DATA", None)
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["0", "1"]       # compiled
    assert second.stdout.split() == ["1", "0"]      # loaded from the cache
    cached = list((tmp_path / "cnnc" / "kernels").rglob("*.nbi"))     # beside the data sets' cnnc/data
    assert cached, "no index of compiled kernels in the user cache folder"


def test_layers_asked_for_by_name_keep_their_own_tensors_on_the_fast_set(monkeypatch):
    """`cnnc apply`'s activations: a batchnorm asked for by name is not fused with its relu (its
    output stays the normalised, unrectified tensor), on either set alike."""
    c = _network("cifar_resnet20.cnn")
    bn = next(n for n in c.net.layers() if n.op == "batchnorm"
              and c.net.node(next(iter(c.net.graph.successors(n.name)))).op == "relu")
    relu = next(iter(c.net.graph.successors(bn.name)))
    image = np.random.default_rng(0).standard_normal(c.net.shapes["x"]).astype(np.float32)
    values = {}
    for k in sets.SETS:
        monkeypatch.setenv("CNNC_KERNELS", k)
        values[k] = forward(c, image, [bn.name, relu])
    assert (values["fast"][bn.name] < 0).any()
    for name in (bn.name, relu):
        H.assert_close(values["fast"][name], values["numpy"][name], 1e-5, name)
