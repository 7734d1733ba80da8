"""Runtime of 1-D signals and of channel slicing/shuffling: kernels and whole networks.

`slice` and `channel_shuffle` kernels against finite differences and PyTorch; a
network on [C, L] signals (every op a signal may take) against a hand-built
PyTorch model with Conv1d/BatchNorm1d/MaxPool1d/AvgPool1d and cnnc's weights,
forward and gradients, in training and evaluation; the lifted conv kernel
against finite differences; `cnnc run` training a 1-D CNN on synthetic signals.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)
from cnnc.compiler.driver import compile_file
from cnnc.runtime.kernels import KERNELS, Context
from cnnc.runtime.kernels.signal import lift
from cnnc.runtime.train.losses import make_loss
from cnnc.runtime.plan import Plan

torch = pytest.importorskip("torch")
F = torch.nn.functional
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# ------------------------------------------------------------ slice, channel_shuffle
@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (2, 6, 5), (3, 6)])
def test_slice_kernel(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    y, _ = H.run("slice", [x], attrs={"start": 1, "stop": 4})
    np.testing.assert_array_equal(y, x[:, 1:4])
    H.check_grads("slice", [x], attrs={"start": 1, "stop": 4})


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 4), 2), ((2, 6, 3, 4), 3), ((2, 12, 5), 4), ((2, 6, 1, 1), 6)])
def test_channel_shuffle_kernel_is_pytorchs(shape, groups):
    x = np.random.default_rng(1).standard_normal(shape)
    y, _ = H.run("channel_shuffle", [x], attrs={"groups": groups})
    np.testing.assert_array_equal(y, F.channel_shuffle(torch.tensor(x), groups).numpy())
    c = shape[1]
    for j in range(c):   # channel g*(C/groups) + i goes to i*groups + g
        g, i = divmod(j, c // groups)
        np.testing.assert_array_equal(y[:, i * groups + g], x[:, j])
    H.check_grads("channel_shuffle", [x], attrs={"groups": groups})


# ------------------------------------------------------------------- 1-D signals
def test_lifted_conv_kernel_gradients():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 4, 11)), rng.standard_normal((6, 2, 3)), rng.standard_normal(6)
    attrs = dict(out_channels=6, kernel=(1, 3), stride=(1, 2), padding=((0, 0), (2, 1)), dilation=(1, 2),
                 groups=2, bias=True, trainable=True, weights=None)
    kernel = lift(KERNELS["conv"], (6, 5))   # (11 + 3 - 2·2 - 1) // 2 + 1
    y, cache = kernel.forward((x,), {"weight": w, "bias": b}, attrs, Context())
    ref = F.conv1d(F.pad(torch.tensor(x), (2, 1)), torch.tensor(w), torch.tensor(b), 2, 0, 2, 2).numpy()
    H.assert_close(y, ref, 1e-12, "conv1d")
    dy = rng.standard_normal(y.shape)
    (dx,), dparams = kernel.backward(dy, cache)

    def loss(xv, wv):
        return float(np.sum(kernel.forward((xv,), {"weight": wv, "bias": b}, attrs, Context())[0] * dy))

    for target, grad in ((x, dx), (w, dparams["weight"])):
        num = np.zeros_like(target)
        for idx in np.ndindex(target.shape):
            old = target[idx]
            target[idx] = old + 1e-6
            up = loss(x, w)
            target[idx] = old - 1e-6
            num[idx] = (up - loss(x, w)) / 2e-6
            target[idx] = old
        H.assert_close(grad, num, 1e-5, "lifted conv gradient", atol_rel=1e-7)


SIGNAL_NET = """
network S(classes = 3) {
    input x: [2, 24]
    a = x -> c1: conv(6, 5, pad = 2, groups = 2) -> b1: batchnorm -> relu -> p1: maxpool(3, stride = 2, pad = 1)
    b = a -> c2: conv(6, 3, pad = same, dilation = 2, bias = false) -> b2: batchnorm -> swish
    m = (a + b) -> p2: avgpool(2) -> u: upsample(2) -> g: global_avgpool
    s = concat(b[3:], b[:3]) -> channel_shuffle(2) -> gm: global_maxpool
    concat(m, s) -> flatten -> dropout(0.2) -> fc: linear(classes)
}
"""


class TorchSignal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv1d(2, 6, 5, padding=2, groups=2), nn.BatchNorm1d(6)
        self.c2, self.b2 = nn.Conv1d(6, 6, 3, padding=2, dilation=2, bias=False), nn.BatchNorm1d(6)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        a = F.max_pool1d(F.relu(self.b1(self.c1(x))), 3, 2, 1)
        b = F.silu(self.b2(self.c2(a)))
        m = F.interpolate(F.avg_pool1d(a + b, 2), scale_factor=2.0, mode="nearest").mean(2, keepdim=True)
        s = F.channel_shuffle(torch.cat([b[:, 3:], b[:, :3]], 1), 2).amax(2, keepdim=True)
        return self.fc(torch.flatten(torch.cat([m, s], 1), 1))


@pytest.mark.torch
@pytest.mark.parametrize("training", [True, False])
def test_signal_network_matches_pytorch(write, training):
    c = compile_file(write(SIGNAL_NET))
    plan = Plan(c.net, c.analysis.params, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    for key in plan.params:
        if "running_var" in key:
            plan.params[key][...] = rng.uniform(0.5, 2.0, plan.params[key].shape)
        elif "running_mean" in key or key.endswith("bias"):
            plan.params[key][...] = rng.normal(0, 0.1, plan.params[key].shape)
    twin = TorchSignal().double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in plan.params.items()}, strict=False)
    assert {k for k, _ in twin.named_parameters()} <= set(plan.params)
    twin.train(training)
    x = rng.standard_normal((4, 2, 24))
    y = rng.integers(0, 3, 4)
    # dropout draws differ between the two: compare with p = 0 in training
    plan.steps = [s if s.op != "dropout" else s.__class__(**{**s.__dict__, "attrs": {**s.attrs, "p": 0.0}})
                  for s in plan.steps]
    twin_in = torch.tensor(x)
    out, tape = plan.forward({"x": x}, training=training, keep_tape=True)
    logits = out[plan.outputs[0]]
    loss, dlogits = make_loss("cross_entropy")(logits, y)
    grads = plan.backward(tape, {plan.outputs[0]: dlogits})
    if training:
        twin.eval()   # dropout off; batchnorm in training mode below
        for m in (twin.b1, twin.b2):
            m.train()
    t_logits = twin(twin_in)
    t_loss = F.cross_entropy(t_logits, torch.tensor(y))
    t_loss.backward()
    H.assert_close(logits, t_logits.detach().numpy(), 1e-10, "logits")
    for name, p in twin.named_parameters():
        H.assert_close(grads[name], p.grad.numpy(), 1e-8, f"d/d{name}")
    if training:
        H.assert_close(plan.params["b1.running_var"], twin.b1.running_var.numpy(), 1e-12, "running_var")


def emitted_numpy(c, tmp_path):
    """`forward` of the module `--emit numpy` writes for c, imported from its file."""
    from cnnc.runtime.export import codegen
    codegen.emit(c, str(tmp_path / "plan.py"))
    spec = importlib.util.spec_from_file_location("plan", tmp_path / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.forward


def exported_onnx(c, tmp_path):
    """The ONNX model `cnnc export --to onnx` writes for c, as a function of x on ONNX Runtime."""
    import onnxruntime
    from cnnc.runtime.export import onnx as export_onnx
    export_onnx.export_onnx(c, str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    return lambda x: session.run(None, {"x": x})[0]


@pytest.mark.torch
def test_signal_network_exports(write, tmp_path):
    """--emit numpy and the PyTorch/ONNX exporters give the runtime's outputs on a signal network."""
    from cnnc.runtime.export import torch_module
    c = compile_file(write(SIGNAL_NET))
    plan = Plan(c.net, c.analysis.params, seed=0)
    x = np.random.default_rng(3).standard_normal((3, 2, 24)).astype(np.float32)
    expected = plan.forward({"x": x})[0][plan.outputs[0]]
    H.assert_close(emitted_numpy(c, tmp_path)(x), expected, 1e-5, "--emit numpy")
    torch_module.export(c, str(tmp_path / "model.py"))
    assert "nn.Conv1d(2, 6, 5, padding=2, groups=2)" in (tmp_path / "model.py").read_text()
    H.assert_close(exported_onnx(c, tmp_path)(x), expected, 1e-5, "onnx")


def test_cnnc_run_trains_the_1d_cnn_on_synthetic_signals(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnnc", "run", str(EXAMPLES / "signal_cnn.cnn"), "--out",
                        str(tmp_path), "--quiet", "--epochs", "3"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if "epoch" in line]
    test = next(line for line in lines if line.get("split") == "test")
    assert len(epochs) == 3 and epochs[-1]["train_loss"] < 0.7 * epochs[0]["train_loss"], epochs
    assert test["accuracy"] > 0.5, test   # chance is 0.25


# -------------------------------------- part A's ops on signals: affine, maximum, resizing
RESIZE_NET = """
network R(classes = 2) {
    input x: [3, 10]
    a = x -> c1: conv(4, 3, pad = 1) -> maxpool(2)
    b = max(a * 0.5 + 1, -a) -> upsample(like = x, mode = bilinear)
    c = (1 - a) -> upsample(size = 7, mode = bilinear, align_corners = true) -> upsample(size = 12)
    d = a -> upsample(3)
    concat(b -> global_avgpool, c -> global_maxpool, d -> global_avgpool) -> flatten -> fc: linear(classes)
}
"""


class TorchResize(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.fc = torch.nn.Conv1d(3, 4, 3, padding=1), torch.nn.Linear(12, 2)

    def forward(self, x):
        a = F.max_pool1d(self.c1(x), 2)
        b = F.interpolate(torch.maximum(a * 0.5 + 1, -a), size=x.shape[2:], mode="linear", align_corners=False)
        c = F.interpolate(F.interpolate(1 - a, size=7, mode="linear", align_corners=True), size=12, mode="nearest")
        d = F.interpolate(a, scale_factor=3.0, mode="nearest")
        pooled = torch.cat([b.mean(2, keepdim=True), c.amax(2, keepdim=True), d.mean(2, keepdim=True)], 1)
        return self.fc(torch.flatten(pooled, 1))


@pytest.mark.torch
def test_signal_resizing_affine_and_maximum_match_pytorch(write):
    """upsample by a factor, to a size and like another signal (linear along L, aligned corners
    too), `x * 0.5 + 1`, `1 - a`, `max(a, b)` on [C, L]: outputs and gradients against F.interpolate."""
    c = compile_file(write(RESIZE_NET))
    assert [c.net.shapes[n.name] for n in c.net.layers() if n.op == "upsample"] == [(4, 10), (4, 7), (4, 12), (4, 15)]
    plan = Plan(c.net, c.analysis.params, seed=2, dtype=np.float64)
    twin = TorchResize().double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in plan.params.items()})
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((3, 3, 10)), rng.integers(0, 2, 3)
    out, tape = plan.forward({"x": x}, training=True, keep_tape=True)
    logits = out[plan.outputs[0]]
    _, dlogits = make_loss("cross_entropy")(logits, y)
    grads = plan.backward(tape, {plan.outputs[0]: dlogits})
    t_logits = twin(torch.tensor(x))
    F.cross_entropy(t_logits, torch.tensor(y)).backward()
    H.assert_close(logits, t_logits.detach().numpy(), 1e-10, "logits")
    for name, p in twin.named_parameters():
        H.assert_close(grads[name], p.grad.numpy(), 1e-8, f"d/d{name}")


@pytest.mark.torch
def test_signal_resizing_exports(write, tmp_path):
    """--emit numpy, the PyTorch module and ONNX give the runtime's outputs for the resizing network."""
    from cnnc.runtime.export.torch_module import module_source
    c = compile_file(write(RESIZE_NET))
    plan = Plan(c.net, c.analysis.params, seed=0)
    x = np.random.default_rng(5).standard_normal((2, 3, 10)).astype(np.float32)
    expected = plan.forward({"x": x})[0][plan.outputs[0]]
    H.assert_close(emitted_numpy(c, tmp_path)(x), expected, 1e-5, "--emit numpy")
    text, cls = module_source(c.net, "w.pt", "test", torch)
    namespace: dict = {}
    exec(compile(text, "exported", "exec"), namespace)
    model = namespace[cls]()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in plan.params.items()})
    H.assert_close(model.eval()(torch.from_numpy(x)).detach().numpy(), expected, 1e-5, "torch")
    H.assert_close(exported_onnx(c, tmp_path)(x), expected, 1e-5, "onnx")
