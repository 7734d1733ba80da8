"""Fused kernels: BN folding by hand, every example network against the unfused plan, the
training-time recompute kernel against the unfused gradients and finite differences."""
from __future__ import annotations

import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.compiler.fusion import FUSED_OPS, analyse_fused, fuse, tail_of
from cnnc.dsl.source import CnncError
from cnnc.runtime.fused import FusedPlan, fold_parameters, source_keys
from cnnc.runtime.kernels import Context
from cnnc.runtime.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Plans that take seconds just to draw their weights (the 120M-parameter classifiers of VGG-16
# and FCN-32s) or to walk 3339 layers (ResNet-1001): marked slow (CI runs them; -m "not slow" skips).
HEAVY = {"fcn32s", "vgg16", "resnet1001"}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def randomise_bn(plan: Plan, rng: np.random.Generator, gamma: tuple[float, float] = (0.5, 1.5)) -> None:
    """Random running statistics and affine parameters for every batchnorm."""
    draw = {"running_mean": lambda shape: rng.normal(0, 0.3, shape),
            "running_var": lambda shape: rng.uniform(0.5, 2.0, shape),
            "weight": lambda shape: rng.uniform(*gamma, shape),
            "bias": lambda shape: rng.normal(0, 0.3, shape)}
    for key, v in plan.params.items():
        owner, p = key.rsplit(".", 1)
        if plan.net.node(owner).op == "batchnorm":
            v[...] = draw[p](v.shape)


# ------------------------------------------------------------ by hand
def test_batchnorm_folded_by_hand_into_a_tiny_conv(compile_src):
    c = compile_src("network Tiny {\n  input x: [1, 3, 3]\n  x -> conv(2, 2, bias = true) -> batchnorm(eps = 0.01)"
                    " -> relu -> flatten\n}\n")
    plan = Plan(c.net, c.analysis.params, dtype=np.float64)
    w = np.array([[[[1.0, -2.0], [0.5, 3.0]]], [[[-1.0, 0.25], [2.0, -0.5]]]])
    b, gamma, beta = np.array([0.5, -1.0]), np.array([2.0, 0.5]), np.array([-4.0, -5.0])
    mean, var = np.array([1.0, -2.0]), np.array([4.0, 0.25])
    plan.load_state({"conv.weight": w, "conv.bias": b, "batchnorm.weight": gamma, "batchnorm.bias": beta,
                     "batchnorm.running_mean": mean, "batchnorm.running_var": var})
    x = np.arange(9.0).reshape(1, 1, 3, 3) - 4.0
    expected = np.zeros((2, 2, 2))
    for o in range(2):
        s = gamma[o] / np.sqrt(var[o] + 0.01)
        for i in range(2):
            for j in range(2):
                conv = sum(w[o, 0, a, d] * x[0, 0, i + a, j + d] for a in range(2) for d in range(2)) + b[o]
                expected[o, i, j] = max((conv - mean[o]) * s + beta[o], 0.0)
    fused = FusedPlan.from_plan(plan)
    assert [s.op for s in fused.steps] == ["fused_conv", "flatten"]
    out = fused.forward(x)[0]["flatten"].reshape(2, 2, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-14)
    assert np.any(expected == 0) and np.any(expected > 0)     # the relu clips something
    s = gamma / np.sqrt(var + 0.01)
    np.testing.assert_allclose(fused.params["conv.weight"], w * s[:, None, None, None], rtol=1e-15)
    np.testing.assert_allclose(fused.params["conv.bias"], (b - mean) * s + beta, rtol=1e-15)
    assert set(fused.params) == {"conv.weight", "conv.bias"}
    np.testing.assert_allclose(plan.forward(x)[0]["flatten"].reshape(2, 2, 2), expected, rtol=1e-14)


CASES = {
    "conv_bn_relu": "x -> conv(4, 3, pad = 1, bias = false) -> batchnorm -> relu -> flatten",
    "conv_bn_biased_strided": "x -> conv(4, 3, stride = 2, pad = (1, 0)) -> batchnorm -> flatten",
    "grouped_dilated": "x -> conv(6, 3, pad = 2, dilation = 2, groups = 3) -> batchnorm -> relu6 -> flatten",
    "depthwise": "x -> depthwise_conv(3, pad = 1) -> batchnorm -> leaky_relu(0.1) -> flatten",
    "residual": "a = x -> conv(3, 3, pad = 1) -> batchnorm\n  (a + x) -> relu -> flatten",
    "residual_first_operand": "a = x -> conv(3, 1) -> batchnorm\n  (x + a) -> relu6 -> flatten",
    "conv_relu": "x -> conv(5, 3) -> relu -> flatten",
    "linear_relu": "x -> flatten -> linear(7) -> relu -> linear(3)",
    "bn_relu_spatial": "x -> batchnorm -> relu -> flatten",
    "bn_relu_flat": "x -> flatten -> linear(6, bias = false) -> batchnorm -> relu -> linear(2)",
}


def _case(compile_src, name: str, dtype=np.float64, seed: int = 0) -> tuple[Plan, np.ndarray]:
    c = compile_src(f"network C {{\n  input x: [3, 6, 6]\n  {CASES[name]}\n}}\n")
    plan = Plan(c.net, c.analysis.params, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    randomise_bn(plan, rng, gamma=(0.5, 3.0))
    for key in plan.trainable:
        if key.endswith(".bias"):
            plan.params[key] += rng.normal(0, 0.3, plan.params[key].shape).astype(dtype)
    return plan, rng.standard_normal((4, 3, 6, 6)).astype(dtype)


@pytest.mark.parametrize("name", CASES)
def test_each_fused_kernel_equals_its_unfused_chain_in_eval(compile_src, name):
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        plan, x = _case(compile_src, name, dtype)
        fused = FusedPlan.from_plan(plan)
        assert any(s.op in FUSED_OPS for s in fused.steps), name
        ref, out = plan.forward(x)[0], fused.forward(x)[0]
        for k in ref:
            assert out[k].dtype == dtype and rel(out[k], ref[k]) <= tol, (name, dtype, rel(out[k], ref[k]))


# ------------------------------------------------------ training kernel
def _loss_grads(plan: Plan, x: np.ndarray, weights: np.ndarray) -> tuple[float, dict]:
    out, tape = plan.forward(x, training=True)
    y = out[plan.outputs[0]]
    return float((y * weights).sum()), plan.backward(tape, {plan.outputs[0]: weights})


@pytest.mark.parametrize("name", CASES)
def test_training_recompute_kernels_give_the_unfused_gradients(compile_src, name):
    plan, x = _case(compile_src, name)
    fused = FusedPlan.from_plan(plan, "train")
    weights = np.random.default_rng(1).standard_normal((4, *plan.net.shapes[plan.outputs[0]]))
    before = {k: v.copy() for k, v in plan.params.items()}
    loss_ref, g_ref = _loss_grads(plan, x, weights)
    stats_ref = {k: plan.params[k].copy() for k in plan.params if "running" in k}
    plan.load_state(before)                       # the fused store shares these arrays
    loss, g = _loss_grads(fused, x, weights)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    keys = source_keys(fused.net)
    assert {keys[k] for k in g} == set(g_ref)
    for k, v in g.items():   # (a conv bias before a training batchnorm has a zero gradient: atol)
        np.testing.assert_allclose(v, g_ref[keys[k]], rtol=1e-9, atol=1e-12, err_msg=k)
    for k, v in stats_ref.items():               # running statistics move exactly as unfused
        np.testing.assert_allclose(plan.params[k], v, rtol=1e-12)


def test_training_fusion_in_the_trainers_lockstep_shards(compile_src):
    """The trainer cuts a batch into shards on two threads that meet inside every batchnorm;
    the fused steps take part in that exchange, so shards give the whole batch's gradients."""
    from concurrent.futures import ThreadPoolExecutor

    from cnnc.runtime.train.losses import make_loss
    from cnnc.runtime.train.numpy_engine import batch_loss_and_grads
    plan, x = _case(compile_src, "residual")
    fused = FusedPlan.from_plan(plan, "train")
    assert not fused.batch_independent
    labels = np.array([3, 0, 7, 1])
    loss_fn = make_loss("cross_entropy")
    before = {k: v.copy() for k, v in plan.params.items()}
    results = []
    with ThreadPoolExecutor(1) as pool:
        for p, threads in ((plan, pool), (fused, pool), (fused, None)):
            plan.load_state(before)
            loss, _, grads = batch_loss_and_grads(p, loss_fn, x, labels, np.random.default_rng(0), threads)
            keys = source_keys(p.net) if p is fused else {k: k for k in grads}
            results.append((loss, {keys[k]: v for k, v in grads.items()},
                            {k: plan.params[k].copy() for k in plan.params if "running" in k}))
    (loss_u, g_u, rs_u), (loss_s, g_s, rs_s), (loss_w, g_w, _) = results
    assert loss_s == pytest.approx(loss_u, rel=1e-12) and loss_w == pytest.approx(loss_u, rel=1e-12)
    for k in g_u:
        np.testing.assert_allclose(g_s[k], g_u[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(g_w[k], g_u[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for k in rs_u:
        np.testing.assert_allclose(rs_s[k], rs_u[k], rtol=1e-12)


def test_training_recompute_kernel_matches_finite_differences(compile_src):
    plan, x = _case(compile_src, "residual", seed=2)
    fused = FusedPlan.from_plan(plan, "train")
    assert fused.steps[0].op == "fused_conv" and fused.steps[0].attrs["residual"]
    weights = np.random.default_rng(3).standard_normal((4, *plan.net.shapes[plan.outputs[0]]))
    _, grads = _loss_grads(fused, x, weights)
    eps = 1e-6
    for key in sorted(grads):
        p = fused.params[key]
        for idx in list(np.ndindex(p.shape))[::max(1, p.size // 3)][:3]:
            old = p[idx]
            p[idx] = old + eps
            up = _loss_grads(fused, x, weights)[0]
            p[idx] = old - eps
            down = _loss_grads(fused, x, weights)[0]
            p[idx] = old
            assert grads[key][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7), key


def test_the_training_step_keeps_only_its_inputs_and_statistics(compile_src):
    plan, x = _case(compile_src, "residual", np.float32)
    fused = FusedPlan.from_plan(plan, "train")
    _, tape = fused.forward(x, training=True)
    step, cache = tape.caches[0]
    assert step.op == "fused_conv"
    assert cache.x is x and cache.skip is x            # both operands are the input itself, not copies
    held = {id(v) for v in vars(cache).values() if isinstance(v, np.ndarray)}
    assert held == {id(x)}                               # nothing conv-, batchnorm- or relu-output-sized
    assert cache.stats.mean.shape == cache.stats.inv_std.shape == (3,)


def test_training_step_keeps_fewer_bytes():
    """Analytically (the compiler's saves rules) and measured (tracemalloc over one step)."""
    c = compile_file(EXAMPLES / "cifar_resnet20.cnn")
    trained = analyse_fused(fuse(c.net, "train").net, c.analysis).totals()["train_saved_bytes"]
    assert trained < 0.6 * c.analysis.totals()["train_saved_bytes"]
    plan = Plan(c.net, c.analysis.params)
    fused = FusedPlan.from_plan(plan, "train")
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    measured = []
    for p in (plan, fused):
        p.forward(x, training=True)                      # warm caches (lru, BLAS buffers)
        tracemalloc.start()
        out, tape = p.forward(x, training=True)
        held = tracemalloc.get_traced_memory()[0]
        p.backward(tape, {"fc": np.ones_like(out["fc"])})
        measured.append((held, tracemalloc.get_traced_memory()[1]))
        tracemalloc.stop()
        del tape
    (held_u, peak_u), (held_f, peak_f) = measured
    assert held_f < 0.6 * held_u and peak_f < peak_u, measured


# ------------------------------------------------------------- stores
def test_fused_plans_share_unfolded_arrays_and_check_their_store(compile_src):
    plan, _ = _case(compile_src, "linear_relu", np.float32)
    fused = FusedPlan.from_plan(plan)
    assert fused.params["linear_1.weight"] is plan.params["linear_1.weight"]
    fused_net = fuse(plan.net).net
    with pytest.raises(CnncError, match="do not fit"):
        FusedPlan(fused_net, {})
    conv, _ = _case(compile_src, "conv_bn_relu", np.float32)
    store = fold_parameters(fuse(conv.net).net, conv.params)
    assert store["conv.weight"] is not conv.params["conv.weight"]          # folded: a new array
    assert not np.shares_memory(store["conv.weight"], conv.params["conv.weight"])


# ------------------------------------------------ every example network
INPUT = re.compile(r"input\s+(\w+)\s*:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory) -> Path:
    """A copy of examples/ (imports stay relative) whose large inputs the tests shrink."""
    d = tmp_path_factory.mktemp("examples")
    for f in EXAMPLES.glob("*.cnn"):
        shutil.copy(f, d / f.name)
    return d


def small_network(path: Path):
    """The network at a small input: symbolic sizes bound, fixed sizes rewritten where they bind."""
    text = path.read_text()
    m = INPUT.search(text)
    if m is None:                                         # symbolic: the smallest size that binds
        c = compile_file(path)
        if all(isinstance(d, int) for shape in c.net.inputs.values() for d in shape):
            return c                                      # a concrete [C, L] signal or [F] input
        for s in (16, 32, 48, 64, 96, 128, 192, 256):
            try:
                return compile_file(path, inputs={k: (v[0], s, s) for k, v in c.net.inputs.items()})
            except CnncError:
                pass
        pytest.skip(f"{path.name} binds no small input")
    for s in (32, 48, 64, 96, 128):
        if s >= int(m.group(3)):
            break
        path.write_text(text[:m.start()] + f"input {m.group(1)}: [{m.group(2)}, {s}, {s}]" + text[m.end():])
        try:
            return compile_file(path)
        except CnncError:
            pass
    path.write_text(text)
    return compile_file(path)


def run_and_randomise(plan: Plan, x: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The unfused plan's steps in eval, every tensor kept; each batchnorm's running statistics
    are drawn around those of the tensor it is about to normalise (so activations stay O(1))."""
    values, ctx = dict(x), Context(training=False)
    for step in plan.steps:
        xs = tuple(values[s] for s in step.inputs)
        params = {p: plan.params[k] for p, k in step.params}
        if step.op == "batchnorm":
            v, c = xs[0], xs[0].shape[1]
            axes = (0,) + tuple(range(2, v.ndim))
            var = v.var(axis=axes) if v.size > c else np.ones(c, v.dtype)
            var = var + 0.1 * var.mean() + 1e-3
            params["running_mean"][...] = v.mean(axis=axes) + rng.normal(0, 0.2, c) * np.sqrt(var)
            params["running_var"][...] = var * rng.uniform(0.5, 2.0, c)
            params["weight"][...] = rng.uniform(0.5, 1.5, c)
            params["bias"][...] = rng.normal(0, 0.2, c)
        ctx.node = step.name
        values[step.name] = step.kernel.forward(xs, params, step.attrs, ctx)[0]
    return values


def _chain_float64(plan: Plan, members: list[str], values: dict) -> np.ndarray:
    """The unfused steps of one fused group in float64 (the truth both float32 results approximate)."""
    steps = {s.name: s for s in plan.steps}
    local, ctx = {}, Context(training=False)
    for name in members:
        step = steps[name]
        xs = tuple(local[s] if s in local else values[s].astype(np.float64) for s in step.inputs)
        params = {p: plan.params[k].astype(np.float64) for p, k in step.params}
        local[name] = step.kernel.forward(xs, params, step.attrs, ctx)[0]
    return local[members[-1]]


def _step_errors(plan: Plan, fused: FusedPlan, values: dict) -> list[tuple[str, float]]:
    """Every fused-plan step on the unfused plan's own tensors: (step, relative error)."""
    net, ctx, errors = fused.net, Context(training=False), []
    for step in fused.steps:
        xs = tuple(values[tail_of(net.node(s))] for s in step.inputs)
        params = {p: fused.params[k] for p, k in step.params}
        ctx.node = step.name
        y = step.kernel.forward(xs, params, step.attrs, ctx)[0]
        node = net.node(step.name)
        ref = values[tail_of(node)]
        err = rel(y, ref)
        if err > 1e-5 and node.op in FUSED_OPS:
            # Folding changes float32 rounding where |μ| >> σ: then hold the fused step to the
            # accuracy of the unfused chain itself, both against float64.
            truth = _chain_float64(plan, [m[0] for m in node.attrs["fused_from"]], values)
            assert rel(y, truth) <= 2 * rel(ref, truth) + 1e-6, (step.name, err, rel(y, truth), rel(ref, truth))
            err = 0.0
        errors.append((step.name, err))
    return errors


FILES = sorted(EXAMPLES.glob("*.cnn"))


@pytest.mark.parametrize("path", [pytest.param(f, marks=[pytest.mark.slow] if f.stem in HEAVY else [])
                                  for f in FILES], ids=[f.stem for f in FILES])
def test_every_example_fused_in_eval_equals_the_unfused_plan(example_dir, path):
    c = small_network(example_dir / path.name)
    plan = Plan(c.net, c.analysis.params, kernels="numpy")     # the reference: one step per layer
    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal((1, *v)).astype(np.float32) for k, v in c.net.inputs.items()}
    values = run_and_randomise(plan, x, rng)
    fused = FusedPlan.from_plan(plan)
    errors = _step_errors(plan, fused, values)
    assert max((e for _, e in errors), default=0.0) <= 1e-5, sorted(errors, key=lambda e: -e[1])[:3]
    assert len(fused.steps) <= len(plan.steps)
    # End to end, with random statistics and γ in (0.2, 0.6) as trained networks have them: with
    # γ ~ 1 and statistics matched to tiny feature maps these random networks are chaotic, and
    # float32 itself (unfused against float64) differs by up to 100% at the output (docs/fusion.md).
    randomise_bn(plan, rng, gamma=(0.2, 0.6))
    x2 = {k: rng.standard_normal((2, *v)).astype(np.float32) for k, v in c.net.inputs.items()}
    ref, out = plan.forward(x2)[0], FusedPlan.from_plan(plan).forward(x2)[0]
    for k in ref:
        assert rel(out[k], ref[k]) <= 1e-5, (k, rel(out[k], ref[k]))


@pytest.mark.parametrize("name", ["cifar_resnet20", "mobilenet_v1", "googlenet"])
def test_fused_output_equals_unfused_end_to_end_in_float64(example_dir, name):
    """With the (chaotic) statistics matched to each batchnorm's input: exact up to float64 rounding."""
    c = small_network(example_dir / f"{name}.cnn")
    plan = Plan(c.net, c.analysis.params)
    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal((2, *v)) for k, v in c.net.inputs.items()}
    run_and_randomise(plan, {k: v.astype(np.float32) for k, v in x.items()}, rng)
    plan64 = Plan(c.net, c.analysis.params, dtype=np.float64)
    plan64.load_state({k: v.astype(np.float64) for k, v in plan.params.items()})
    ref, out = plan64.forward(x)[0], FusedPlan.from_plan(plan64).forward(x)[0]
    for k in ref:
        assert rel(out[k], ref[k]) < 1e-9


@pytest.mark.parametrize("name", ["small_resnet", "cifar_resnet20", "small_inception", "small_unet"])
def test_fused_output_equals_unfused_end_to_end_in_float32(example_dir, name):
    c = small_network(example_dir / f"{name}.cnn")
    plan = Plan(c.net, c.analysis.params)
    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal((4, *v)).astype(np.float32) for k, v in c.net.inputs.items()}
    randomise_bn(plan, rng)
    ref, out = plan.forward(x)[0], FusedPlan.from_plan(plan).forward(x)[0]
    for k in ref:
        assert rel(out[k], ref[k]) <= 1e-5


# ------------------------------------------------------------ affine folded into weights
AFFINE = """
network A {
    input x: [3, 8, 8]
    a = x -> conv(4, 3, pad = 1) -> batchnorm -> affine(0.5, 1) -> relu
    b = a -> conv(4, 1, bias = false) -> affine(-2, 0.25)
    c = b -> batchnorm -> affine(3, -1) -> relu6
    d = c -> relu -> affine(2, 0)
    d -> flatten -> linear(5) -> affine(2, 1) -> leaky_relu(0.1) -> linear(3) -> affine(0.5, 0)
}
"""


def test_an_affine_folds_into_the_weights_before_it_in_eval(compile_src):
    c = compile_src(AFFINE)
    groups = {g.name: g.pattern for g in fuse(c.net, "eval").groups}
    assert groups == {"conv_1": "conv+bn+affine+relu", "conv_2": "conv+affine", "batchnorm_2": "bn+affine+relu6",
                      "linear_1": "linear+affine+leaky_relu"}
    skipped = {s.start: s.reason for s in fuse(c.net, "eval").skipped}
    assert "graph output" in skipped["linear_2"]                 # the last affine is the output: kept
    assert not any(g.pattern.count("affine") for g in fuse(c.net, "train").groups)   # never in training
    assert "affine" in {n.op for n in fuse(c.net, "eval").net.layers()}   # after relu it cannot fold

    plan = Plan(c.net, c.analysis.params, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    randomise_bn(plan, rng)
    x = rng.standard_normal((2, 3, 8, 8))
    want = plan.forward(x)[0][plan.outputs[0]]
    fused = FusedPlan.from_plan(plan)
    assert [s.op for s in fused.steps].count("affine") == 2
    assert rel(fused.forward(x)[0][fused.outputs[0]], want) < 1e-12


def test_a_folded_affine_by_hand(compile_src):
    """w'' = s·w·γ/σ, b'' = s·((b − μ)·γ/σ + β) + t for a 1x1 conv on one channel."""
    c = compile_src("network T {\n  input x: [1, 2, 2]\n  x -> conv(1, 1) -> batchnorm(eps = 0.0001) -> affine(-3, 2)"
                    " -> flatten\n}\n")
    plan = Plan(c.net, c.analysis.params, dtype=np.float64)
    plan.load_state({"conv.weight": np.full((1, 1, 1, 1), 2.0), "conv.bias": np.array([1.0]),
                     "batchnorm.weight": np.array([4.0]), "batchnorm.bias": np.array([0.5]),
                     "batchnorm.running_mean": np.array([3.0]), "batchnorm.running_var": np.array([0.9999])})
    folded = fold_parameters(fuse(c.net, "eval").net, plan.params)
    np.testing.assert_allclose(folded["conv.weight"].ravel(), [-3 * 2.0 * 4.0 / 1.0])
    np.testing.assert_allclose(folded["conv.bias"], [-3 * ((1.0 - 3.0) * 4.0 + 0.5) + 2])
