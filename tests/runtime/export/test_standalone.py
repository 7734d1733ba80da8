"""runtime/export/standalone.py: the plain-NumPy ops equal the runtime kernels, and the window rule lives once."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from cnnc.compiler.ops import OPS, window_out
from cnnc.compiler.symbolic import Dim
from cnnc.runtime.export import standalone
from cnnc.runtime.export.codegen import module_source
from cnnc.runtime.kernels import KERNELS, Context
from cnnc.runtime.kernels import _im2col
from cnnc.runtime.plan import Plan
from kernel_helpers import GRAPH_OPS

ONE_LAYER = {
    "conv": "conv(4, 3, stride = 2, pad = ((1, 0), (2, 1)), dilation = 1, groups = 2)",
    "deconv": "deconv(3, 3, stride = 2, pad = 1, output_padding = 1)",
    "local": "local(3, 3, stride = 2, pad = 1)",
    "maxpool": "maxpool(3, stride = 2, pad = 1, ceil_mode = true)",
    "avgpool": "avgpool(3, stride = 2, pad = 1, ceil_mode = true, count_include_pad = false)",
    "lppool": "lppool(2, stride = 2, p = 3, ceil_mode = true)",
    "adaptive_avgpool": "adaptive_avgpool(3, 2)", "adaptive_maxpool": "adaptive_maxpool(3, 2)",
    "upsample": "upsample(2, mode = bilinear)",
    "leaky_relu": "leaky_relu(0.2)", "elu": "elu(0.5)", "groupnorm": "groupnorm(2)", "lrn": "lrn(3)",
    "dropout": "dropout(0.3, mode = downgrade_in_infer)", "spatial_dropout": "spatial_dropout(0.3)",
    "pad": "pad(((1, 0), (2, 1)), value = -0.5)", "linear": "flatten -> linear(5)",
    "slice": "slice(1, 3)", "channel_shuffle": "channel_shuffle(2)", "stochastic_depth": "stochastic_depth(0.2)",
    "layer_scale": "layer_scale(0.5)",
}
MORE = {  # variants the one-layer table does not reach
    "layernorm_over_channels": "layernorm(over = channels)",
    "linear_over_channels": "linear(5, over = channels)",
    "adaptive_avgpool_pair": "adaptive_avgpool((2, 3))",
    "local_tiled": "local(2, 3, tile = 2)",
    "lppool_l2": "lppool(3, stride = 2)",
    "gelu_after_scale": "conv(4, 1) -> gelu",
}


def network(body: str) -> str:
    return f"network N {{\n    input x: [4, 9, 7]\n    {body}\n}}\n"


def emitted_forward(c, params: dict) -> dict:
    """The generated module's `forward`, executed in-process on the given (unfused) parameters."""
    source, _ = module_source(c.net, "unused.npz", "test")
    namespace: dict = {"__file__": "/nonexistent/generated.py", "__name__": "generated"}
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace["forward"]


def compare_with_plan(c, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    plan = Plan(c.net, c.analysis.params, seed=seed)
    params = {k: np.asarray(v * rng.uniform(0.5, 1.5) + rng.normal(0, 0.1, v.shape), np.float32)
              for k, v in plan.params.items()}
    params = {k: np.abs(v) + 0.5 if k.endswith("running_var") else v for k, v in params.items()}
    plan.load_state(params)
    x = rng.standard_normal((2, *c.net.shapes["x"])).astype(np.float32)
    if any(n.op == "lppool" for n in c.net.layers()):
        x = np.abs(x)  # x^p of a negative x is nan for fractional p, in both
    expected = plan.forward({"x": x})[0][c.net.outputs[0]]
    got = emitted_forward(c, params)(x, params=params)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("op", sorted(set(OPS) - {"input"}))
def test_each_op_in_plain_numpy_equals_its_kernel(compile_src, op):
    body = GRAPH_OPS.get(op) or f"x -> {ONE_LAYER.get(op, op)}"
    c = compile_src(network(body), allow={"all"})
    assert op in {n.op for n in c.net.layers()}
    compare_with_plan(c)


@pytest.mark.parametrize("case", sorted(MORE))
def test_more_variants_equal_the_kernels(compile_src, case):
    compare_with_plan(compile_src(network(f"x -> {MORE[case]}"), allow={"all"}), seed=3)


def test_gelu_is_pytorchs_exact_gelu():
    x = np.linspace(-8, 8, 4001, dtype=np.float32).reshape(1, 1, 1, -1)
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    got = standalone.gelu(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=2e-6)   # erf fit: 2e-7 of 1, times x
    kernel, _ = KERNELS["gelu"].forward((x,), {}, {}, Context())
    np.testing.assert_array_equal(got, kernel)


def test_lp_pool_and_local_against_pytorch():
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((2, 3, 9, 8))).astype(np.float32)
    ref = torch.nn.functional.lp_pool2d(torch.from_numpy(x), 3.0, (2, 3), (2, 2), ceil_mode=False).numpy()
    np.testing.assert_allclose(standalone.lp_pool2d(x, (2, 3), (2, 2), p=3.0), ref, rtol=1e-5)
    # An unshared local layer is one conv per output position: check two positions by hand.
    w = rng.standard_normal((4, 7, 6, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal((4, 7, 6)).astype(np.float32)
    y = standalone.local2d(x, w, b)
    assert y.shape == (2, 4, 7, 6)
    for i, j in ((0, 0), (4, 5)):
        patch = x[:, :, i:i + 3, j:j + 3]
        np.testing.assert_allclose(y[:, :, i, j], np.einsum("ncab,ocab->no", patch, w[:, i, j]) + b[:, i, j],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_the_window_rule_is_pytorchs(ceil_mode):
    for n in range(1, 12):
        for k in range(1, 5):
            for s in range(1, 4):
                for d in (1, 2):
                    for pad in ((0, 0), (1, 0), (1, 2)):
                        span = d * (k - 1) + 1
                        if n + sum(pad) < span or max(pad) > span // 2:
                            continue
                        frac = (n + sum(pad) - span) / s
                        ref = (math.ceil(frac) if ceil_mode else math.floor(frac)) + 1
                        if ceil_mode and (ref - 1) * s >= n + pad[0]:
                            ref -= 1
                        assert window_out(n, k, s, pad, d, ceil_mode) == ref
                        assert window_out(np.int64(n), k, s, pad, d, ceil_mode) == ref
                        assert _im2col.out_size(n, k, s, d, pad, ceil_mode) == ref


def test_the_window_rule_keeps_working_on_symbolic_sizes():
    h = Dim.symbol("H")
    assert str(window_out(h, 3, 2, (1, 1))) == str((h - 1) // 2 + 1)
    assert str(window_out(h, 3, 2, (0, 0), ceil_mode=True)) == str((h - 3 + 2 - 1) // 2 + 1)


def test_the_window_rule_has_one_home():
    """The kernels and the standalone ops call the compiler's rule; nobody restates it."""
    assert "window_out" in inspect.getsource(_im2col.out_size)
    assert "window_out" in inspect.getsource(standalone._windows)
    for module in (_im2col, standalone):
        text = inspect.getsource(module)
        assert "// stride + 1" not in text and "// s + 1" not in text


def test_load_reads_the_weights_and_never_unpickles(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.arange(3, dtype=np.float32))
    assert standalone.load(tmp_path / "w.npz")["a"].tolist() == [0.0, 1.0, 2.0]
    np.savez(tmp_path / "bad.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        standalone.load(tmp_path / "bad.npz")
