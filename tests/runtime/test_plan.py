"""The execution plan: whole-network gradients, shapes agree with the compiler, weight sharing."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cnnc.compiler.ops import OPS
from cnnc.runtime.kernels import KERNELS
from cnnc.runtime.plan import Plan
from kernel_helpers import one_layer_network  # tests/runtime is on pytest's `pythonpath`

SMALL_RESNET = """
block cbr(c, stride = 1) { conv(c, 3, stride = stride, pad = 1, bias = false) -> batchnorm -> relu }
block basic(c, stride = 1) {
    main = cbr(c, stride) -> conv(c, 3, pad = 1, bias = false) -> batchnorm
    skip = if stride != 1 or channels(in) != c { conv(c, 1, stride = stride) -> batchnorm } else { in }
    (main + skip) -> relu
}
network R {
    input x: [2, 8, 8]
    x -> cbr(3) -> basic(3) -> basic(4, stride = 2) -> global_avgpool -> flatten -> linear(3)
}
"""

INCEPTION = """
block inception(c1, c3r, c3, c5r, c5, pool_proj) {
    b1 = conv(c1, 1) -> relu
    b2 = conv(c3r, 1) -> relu -> conv(c3, 3, pad = 1) -> relu
    b3 = conv(c5r, 1) -> relu -> conv(c5, 5, pad = 2) -> relu
    b4 = maxpool(3, stride = 1, pad = 1) -> conv(pool_proj, 1) -> relu
    concat(b1, b2, b3, b4)
}
network I {
    input x: [3, 6, 6]
    x -> inception(2, 2, 3, 1, 2, 2) -> avgpool(2) -> flatten -> linear(2)
}
"""

UNET = """
block dc(c) { conv(c, 3, pad = 1) -> relu -> conv(c, 3, pad = 1) -> tanh }
block up(c, skip) {
    u = deconv(c, 2, stride = 2)
    concat(skip, u) -> dc(c)
}
network U {
    input x: [1, 8, 8]
    e1 = x -> dc(2)
    e2 = e1 -> maxpool(2) -> dc(3)
    mid = e2 -> maxpool(2) -> dc(4)
    mid -> up(3, e2) -> up(2, e1) -> conv(2, 1)
}
"""


def loss_and_grads(plan: Plan, x: np.ndarray, weights: np.ndarray):
    out, tape = plan.forward({plan.inputs[0]: x}, training=True)
    y = out[plan.outputs[0]]
    return float((y * weights).sum()), plan.backward(tape, {plan.outputs[0]: weights})


@pytest.mark.parametrize("source", [SMALL_RESNET, INCEPTION, UNET], ids=["resnet", "inception", "unet"])
def test_whole_network_gradients_match_finite_differences(compile_src, source):
    c = compile_src(source, allow={"all"})
    plan = Plan(c.net, c.analysis.params, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    shape = c.net.shapes[plan.inputs[0]]
    x = rng.standard_normal((3, *shape))
    out_shape = c.net.shapes[plan.outputs[0]]
    weights = rng.standard_normal((3, *out_shape))
    for key in plan.params:  # break symmetry of zero biases and unit BN scales
        if key in plan.trainable:
            plan.params[key] += rng.standard_normal(plan.params[key].shape) * 0.1
    _, grads = loss_and_grads(plan, x, weights)
    assert set(grads) == plan.trainable
    eps = 1e-6
    for key in sorted(plan.trainable):
        p = plan.params[key]
        for idx in list(np.ndindex(p.shape))[:: max(1, p.size // 4)][:4]:
            old = p[idx]
            p[idx] = old + eps
            up, _ = loss_and_grads(plan, x, weights)
            p[idx] = old - eps
            down, _ = loss_and_grads(plan, x, weights)
            p[idx] = old
            numeric = (up - down) / (2 * eps)
            assert grads[key][idx] == pytest.approx(numeric, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("op", sorted(set(OPS) - {"input"}))
def test_compiler_shape_equals_kernel_output_shape(compile_src, op):
    c = compile_src(one_layer_network(op), allow={"all"})
    plan = Plan(c.net, c.analysis.params)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 7)).astype(np.float32)
    for training in (False, True):
        out, _ = plan.forward({"x": x}, training=training, rng=np.random.default_rng(1))
        for name in c.net.outputs:
            assert out[name].shape == (2, *c.net.shapes[name]), (op, training)
    steps = {s.op for s in plan.steps}
    assert op in steps


def test_kernel_table_covers_the_compiler_table():
    assert set(KERNELS) == set(OPS) - {"input"}


def test_shared_weights_receive_the_sum_of_both_uses(compile_src):
    c = compile_src("""
    network S {
        input x: [1, 5, 5]
        a = x -> enc: conv(2, 3)
        b = a -> conv(1, 1) -> enc
        b -> flatten
    }
    """, allow={"all"})
    plan = Plan(c.net, c.analysis.params, dtype=np.float64)
    assert [k for k in plan.params if k.startswith("enc")] == ["enc.weight", "enc.bias"]
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5))
    w = np.random.default_rng(1).standard_normal((2, 2))
    _, grads = loss_and_grads(plan, x, w)
    p, eps = plan.params["enc.weight"], 1e-6
    old = p[0, 0, 1, 1]
    p[0, 0, 1, 1] = old + eps
    up, _ = loss_and_grads(plan, x, w)
    p[0, 0, 1, 1] = old - eps
    down, _ = loss_and_grads(plan, x, w)
    p[0, 0, 1, 1] = old
    assert grads["enc.weight"][0, 0, 1, 1] == pytest.approx((up - down) / (2 * eps), rel=1e-5)


def test_fixed_weights_are_used_and_not_trained(compile_src):
    c = compile_src("""
    network SobelX {
        input img: [1, 5, 5]
        img -> conv(1, 3, pad = 1, bias = false, trainable = false,
                    weights = [[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]])
    }
    """)
    plan = Plan(c.net, c.analysis.params)
    assert plan.trainable == set()
    ramp = np.tile(np.arange(5, dtype=np.float32), (5, 1))[None, None]  # intensity grows to the right
    out = plan.forward({"img": ramp})[0]["conv"][0, 0]
    # interior: (-1-2-1)*(j-1) + (1+2+1)*(j+1) = 8 everywhere
    assert np.all(out[1:-1, 1:-1] == 8)


def test_the_runtime_never_imports_the_parser():
    code = ("import sys, cnnc.runtime.plan, cnnc.runtime.train.trainer, cnnc.runtime.kernels; "
            "print('cnnc.dsl.parser' in sys.modules, 'lark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_lrn_keeps_its_k_constant(compile_src):
    """`k` means kernel size for windows, but LRN's k is its additive constant (PyTorch's k)."""
    torch = pytest.importorskip("torch")
    c = compile_src("network N {\n    input x: [6, 4, 4]\n    x -> lrn(3, alpha = 0.5, k = 1.0)\n}\n")
    assert c.net.node("lrn").attrs["k"] == 1.0 and "kernel" not in c.net.node("lrn").attrs
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 4))
    plan = Plan(c.net, c.analysis.params, dtype=np.float64)
    ours = plan.forward({"x": x})[0]["lrn"]
    ref = torch.nn.functional.local_response_norm(torch.tensor(x), 3, alpha=0.5, beta=0.75, k=1.0).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
