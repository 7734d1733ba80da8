"""Whole networks against PyTorch: same graph, same weights -> same outputs and gradients."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.runtime.train.losses import make_loss
from cnnc.runtime.plan import Plan

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
import torch_reference  # noqa: E402  (bench/ is on sys.path via pytest's `pythonpath`)


def kernel_sets() -> list[str]:
    """numpy, and fast where Numba imports (tests/runtime/kernel_helpers.py)."""
    import kernel_helpers
    return ["numpy"] + (["fast"] if kernel_helpers.fast_available() else [])


@pytest.mark.torch
@pytest.mark.parametrize("example, batch", [("lenet5.cnn", 8), ("cifar_resnet20.cnn", 4)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kernels", kernel_sets())
def test_outputs_and_gradients_match_pytorch(example, batch, training, kernels):
    c = compile_file(ROOT / "examples" / example, allow={"all"})
    plan = Plan(c.net, c.analysis.params, seed=1, dtype=np.float64, kernels=kernels)
    rng = np.random.default_rng(0)
    for key in plan.params:  # non-trivial BN statistics and affine parameters
        if "running_var" in key:
            plan.params[key][...] = rng.uniform(0.5, 2.0, plan.params[key].shape)
        elif "running_mean" in key or key.endswith("bias"):
            plan.params[key][...] = rng.normal(0, 0.1, plan.params[key].shape)
    twin = torch_reference.TorchTwin(c, plan.params).double().train(training)
    x = rng.standard_normal((batch, *c.net.shapes[plan.inputs[0]]))
    y = rng.integers(0, 10, batch)

    out, tape = plan.forward({plan.inputs[0]: x}, training=training, keep_tape=True)
    logits = out[plan.outputs[0]]
    loss, dlogits = make_loss("cross_entropy")(logits, y)
    grads = plan.backward(tape, {plan.outputs[0]: dlogits})

    t_logits = twin(torch.tensor(x))
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(y))
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-9, atol=1e-10)
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for key in plan.trainable:
        expected = twin.store[key.replace(".", "__")].grad.numpy()
        np.testing.assert_allclose(grads[key], expected, rtol=1e-7, atol=1e-10, err_msg=key)
    if training:  # running statistics move the same way
        for key in (k for k in plan.params if "running" in k):
            np.testing.assert_allclose(plan.params[key], getattr(twin, key.replace(".", "__")).numpy(),
                                       rtol=1e-9, err_msg=key)


@pytest.mark.torch
@pytest.mark.parametrize("padding", ["1", "(1, 2)", "((0, 2), (1, 0))", "same"])
def test_twin_conv_padding_symmetric_or_not(tmp_path, padding):
    """The twin hands symmetric padding to conv2d itself (as a PyTorch model does) and pads
    explicitly otherwise; both agree with the conv kernel."""
    src = tmp_path / "pad.cnn"
    kernel = "(3, 4)" if padding == "same" else "3"     # an even kernel: "same" pads unevenly
    src.write_text(f"network Pad {{\n    input x: [3, 9, 8]\n    x -> conv(5, {kernel}, pad = {padding})\n}}\n")
    c = compile_file(src, allow={"all"})
    plan = Plan(c.net, c.analysis.params, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8))
    ours = plan.forward({"x": x})[0][plan.outputs[0]]
    twin = torch_reference.TorchTwin(c, plan.params).double()
    np.testing.assert_allclose(ours, twin(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_profile_step_accounts_for_every_kernel_call():
    """bench/profile_step.py: per-op times of one LeNet-5 step, each op's forward and backward, within
    the step's total; PyTorch's side names its forward ops and autograd functions."""
    import profile_step
    from bench_pairs import Case, compile_case
    c = compile_case(Case("lenet5.cnn", "lenet5.cnn", "train", 8), ROOT)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    total, times = profile_step.profile_cnnc(c, x, y, steps=1)
    assert {("conv", "forward"), ("conv", "backward"), ("avgpool", "backward"), ("optimizer", "step")} <= set(times)
    assert 0 < sum(times.values()) <= total * 1.05
    ttotal, ttimes = profile_step.profile_torch(c, x, y, steps=1)
    assert ("conv", "forward") in ttimes and ("ConvolutionBackward0", "backward") in ttimes
    assert ttotal > 0
