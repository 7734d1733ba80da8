"""Kernel tests for issue 24's ops: layer norm over the channels, linear over the channels, layer scale,
drop-path, minimum, causal conv on a signal — naive loops, finite differences, PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

from cnnc.runtime.kernels import Context

import kernel_helpers as H  # tests/runtime is on sys.path (pytest `pythonpath`)

torch = pytest.importorskip("torch")
F = torch.nn.functional
SHAPES = [(2, 4, 3, 5), (3, 6), (2, 5, 7)]      # an image, a flat batch, a signal


# ------------------------------------------------------- layer norm over the channels
def naive_channel_norm(x, w, b, eps):
    y = np.zeros_like(x)
    for n in range(x.shape[0]):
        for place in np.ndindex(x.shape[2:]):
            v = [x[(n, c) + place] for c in range(x.shape[1])]
            mean = sum(v) / len(v)
            var = sum((a - mean) ** 2 for a in v) / len(v)
            for c in range(x.shape[1]):
                y[(n, c) + place] = (v[c] - mean) / np.sqrt(var + eps) * w[c] + b[c]
    return y


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_over_channels(shape):
    rng = np.random.default_rng(len(shape))
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    params = {"weight": 1 + 0.5 * rng.standard_normal(c), "bias": rng.standard_normal(c)}
    attrs = {"eps": 1e-3, "over": "channels"}
    y, _ = H.run("layernorm", [x], params, attrs)
    H.assert_close(y, naive_channel_norm(x, params["weight"], params["bias"], 1e-3), 1e-12, "forward")
    H.check_grads("layernorm", [x], params, attrs, wrt_params=("weight", "bias"))

    def torch_fn(t, weight, bias):   # PyTorch's LayerNorm on channels-last, moved back
        moved = t.movedim(1, -1)
        return F.layer_norm(moved, (c,), weight, bias, 1e-3).movedim(-1, 1)
    H.torch_compare("layernorm", [x], params, attrs, torch_fn, wrt_params=("weight", "bias"))


def test_layernorm_over_channels_differs_from_over_all():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4))
    params = {"weight": np.ones(3), "bias": np.zeros(3)}
    per_place, _ = H.run("layernorm", [x], params, {"eps": 1e-5, "over": "channels"})
    whole, _ = H.run("layernorm", [x], params, {"eps": 1e-5, "over": "all"})
    np.testing.assert_allclose(per_place.mean(axis=1), 0, atol=1e-12)       # each place centred
    assert np.abs(whole.mean(axis=1)).max() > 0.1                          # not so over all axes


# ------------------------------------------------------- linear over the channels
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_over_channels(shape, bias):
    rng = np.random.default_rng(7)
    c, o = shape[1], 3
    x = rng.standard_normal(shape)
    params = {"weight": rng.standard_normal((o, c))}
    if bias:
        params["bias"] = rng.standard_normal(o)
    attrs = {"out_features": o, "bias": bias, "trainable": True, "weights": None, "over": "channels"}
    y, _ = H.run("linear", [x], params, attrs)
    want = np.zeros((shape[0], o) + shape[2:])
    for n in range(shape[0]):
        for place in np.ndindex(shape[2:]):
            for j in range(o):
                want[(n, j) + place] = sum(params["weight"][j, i] * x[(n, i) + place] for i in range(c)) \
                    + (params["bias"][j] if bias else 0.0)
    H.assert_close(y, want, 1e-12, "forward")
    H.check_grads("linear", [x], params, attrs, wrt_params=tuple(params))
    torch_fn = lambda t, weight, bias=None: F.linear(t.movedim(1, -1), weight, bias).movedim(-1, 1)  # noqa: E731
    H.torch_compare("linear", [x], params, attrs, torch_fn, wrt_params=tuple(params))


# ------------------------------------------------------- layer scale
@pytest.mark.parametrize("shape", SHAPES)
def test_layer_scale(shape):
    rng = np.random.default_rng(3)
    c = shape[1]
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c,) + (1,) * (len(shape) - 2))
    y, _ = H.run("layer_scale", [x], {"weight": w}, {"value": 1e-6})
    want = np.stack([x[:, i] * w.reshape(-1)[i] for i in range(c)], axis=1)
    H.assert_close(y, want, 1e-12, "forward")
    H.check_grads("layer_scale", [x], {"weight": w}, {"value": 1e-6}, wrt_params=("weight",))
    H.torch_compare("layer_scale", [x], {"weight": w}, {"value": 1e-6}, lambda t, weight: t * weight,
                    wrt_params=("weight",))


# ------------------------------------------------------- minimum
def test_minimum_against_naive_fd_and_torch_at_ties():
    rng = np.random.default_rng(5)
    a = H.spread_values(rng, (2, 3, 4, 4))
    b = H.spread_values(np.random.default_rng(6), (2, 3, 1, 1), low=-0.5)
    y, _ = H.run("minimum", [a, b])
    H.assert_close(y, np.array([[[[min(a[n, c, i, j], b[n, c, 0, 0]) for j in range(4)] for i in range(4)]
                                  for c in range(3)] for n in range(2)]), 0, "forward")
    H.check_grads("minimum", [a, b + 0.005])          # off the ties for finite differences
    tie = np.round(rng.standard_normal((2, 3, 4, 4)))  # many exact ties: half the gradient to each side
    H.torch_compare("minimum", [tie, tie[::-1].copy()], {}, {}, torch.minimum)


# ------------------------------------------------------- stochastic depth
def test_stochastic_depth_is_the_identity_in_inference():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    y, _ = H.run("stochastic_depth", [x], {}, {"p": 0.5, "mode": "row"})
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_drops_whole_samples_and_scales_the_rest(mode):
    p, n, draws = 0.3, (4000 if mode == "row" else 8), (8 if mode == "row" else 2000)
    x = np.random.default_rng(1).uniform(1, 2, (n, 2, 3))
    kept, whole_batch = [], []
    for seed in range(draws):
        y, _ = H.run("stochastic_depth", [x], {}, {"p": p, "mode": mode},
                     Context(training=True, rng=np.random.default_rng(seed)))
        alive = np.all(y != 0, axis=(1, 2))
        dead = np.all(y == 0, axis=(1, 2))
        assert np.all(alive | dead)                                          # a sample is kept or dropped whole
        np.testing.assert_allclose(y[alive], x[alive] / (1 - p))             # kept ones scaled by 1/(1-p)
        kept.append(alive.mean())
        whole_batch.append(alive.all() or dead.all())
    if mode == "batch":
        assert all(whole_batch)
    samples = draws * (n if mode == "row" else 1)
    assert abs(np.mean(kept) - (1 - p)) < 4 * np.sqrt(p * (1 - p) / samples)   # survival rate 1 - p


def test_stochastic_depth_backward_uses_the_forwards_draw():
    x = np.random.default_rng(2).standard_normal((6, 3, 2))
    H.check_grads("stochastic_depth", [x], {}, {"p": 0.5, "mode": "row"},
                  make_ctx=H.ctx_factory(training=True, seed=4))


# ------------------------------------------------------- causal conv on a signal
@pytest.mark.parametrize("k, d", [(3, 1), (2, 4)])
def test_causal_conv_is_pytorchs_conv1d_after_a_left_pad(compile_src, k, d):
    from cnnc.runtime.plan import Plan
    c = compile_src(f"network N {{\n    input s: [2, 12]\n    s -> conv(3, {k}, dilation = {d}, pad = causal)\n}}\n")
    plan = Plan(c.net, c.analysis.params, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 12))
    y = plan.forward({"s": x})[0][plan.outputs[0]]
    key = next(iter(c.analysis.params))
    ref = F.conv1d(F.pad(torch.tensor(x), (d * (k - 1), 0)), torch.tensor(plan.params[f"{key}.weight"]),
                   torch.tensor(plan.params[f"{key}.bias"]), dilation=d).numpy()
    H.assert_close(y, ref, 1e-12, "causal conv")
    x2 = x.copy()
    x2[:, :, 7:] += 1.0                                    # a change in the future ...
    y2 = plan.forward({"s": x2})[0][plan.outputs[0]]
    np.testing.assert_array_equal(y2[:, :, :7], y[:, :, :7])   # ... leaves the past's outputs alone


# ------------------------------------------------------- the constructs on a signal, through every back end
SIGNAL = """
block mixer(p) {
    t = conv(channels(in), 3, dilation = 2, pad = causal, groups = channels(in))
        -> layernorm(over = channels) -> linear(2 * channels(in), over = channels) -> silu
        -> linear(channels(in), over = channels) -> layer_scale(0.5) -> stochastic_depth(p)
    (in + t, min(in, t))
}

network S {
    input s: [4, 16]
    a, b = s -> mixer(0.1)
    (a * b) -> global_avgpool -> flatten -> linear(3)
}
"""


class TorchSignal(torch.nn.Module):
    """The same network written with torch.nn, independently of cnnc's exporter."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv, self.norm = nn.Conv1d(4, 4, 3, dilation=2, groups=4), nn.LayerNorm(4)
        self.up, self.down, self.fc = nn.Linear(4, 8), nn.Linear(8, 4), nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.full((4, 1), 0.5))

    def forward(self, s):
        t = self.norm(self.conv(F.pad(s, (4, 0))).transpose(1, 2))
        t = (self.down(F.silu(self.up(t))).transpose(1, 2)) * self.scale
        return self.fc(((s + t) * torch.minimum(s, t)).mean(2))


def test_the_constructs_on_a_signal_match_pytorch_and_every_export(compile_src, tmp_path):
    from cnnc.runtime.export import codegen
    from cnnc.runtime.export.onnx import export_onnx
    from cnnc.runtime.export.torch_module import module_source
    from cnnc.runtime.plan import Plan
    import importlib.util
    import onnxruntime
    c = compile_src(SIGNAL)
    plan = Plan(c.net, c.analysis.params, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    for key in plan.params:
        plan.params[key] += rng.uniform(-0.3, 0.3, plan.params[key].shape)
    twin = TorchSignal().double().eval()
    names = dict(zip(["conv.weight", "conv.bias", "norm.weight", "norm.bias", "up.weight", "up.bias",
                      "down.weight", "down.bias", "scale", "fc.weight", "fc.bias"], plan.params))
    twin.load_state_dict({k: torch.tensor(plan.params[v]) for k, v in names.items()})
    x = rng.standard_normal((3, 4, 16))
    want = plan.forward({"s": x})[0][c.net.outputs[0]]
    H.assert_close(twin(torch.tensor(x)).detach().numpy(), want, 1e-10, "pytorch")
    store = {k: np.float32(v) for k, v in plan.params.items()}
    x32 = x.astype(np.float32)
    codegen.emit(c, str(tmp_path / "plan.py"))
    spec = importlib.util.spec_from_file_location("plan", tmp_path / "plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    H.assert_close(module.forward(x32, params=_folded(c, store)), want, 1e-5, "--emit numpy")
    text, cls = module_source(c.net, "w.pt", "test", torch)
    namespace: dict = {}
    exec(compile(text, "exported", "exec"), namespace)
    model = namespace[cls]().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in store.items()})
    H.assert_close(model(torch.from_numpy(x32)).detach().numpy(), want, 1e-5, "--to torch")
    from cnnc.runtime import checkpoint as checkpoints
    checkpoints.save_training_state(tmp_path / "w.npz", store, {}, {"network": "S", "epoch": 1})
    export_onnx(c, str(tmp_path / "m.onnx"), str(tmp_path / "w.npz"))
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    H.assert_close(session.run(None, {"s": x32})[0], want, 1e-5, "--to onnx")


def _folded(c, store):
    """The eval store of the fused graph `--emit numpy` writes (batchnorm and affine folding)."""
    from cnnc.compiler.fusion import fuse
    from cnnc.runtime.fused import fold_parameters
    return fold_parameters(fuse(c.net, "eval").net, store)
