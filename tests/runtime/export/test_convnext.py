"""examples/convnext_tiny.cnn is torchvision's convnext_tiny: figures, weights by name, outputs.

torchvision (random weights, no download) is the independent reference: its
published figures, and a model whose state dict the module `cnnc export --to
torch` writes loads with its names mapped and nothing reshaped; that module and
cnnc's own runtime then give torchvision's outputs at float64.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.runtime.plan import Plan
from torchvision_models import import_torchvision

torch = pytest.importorskip("torch")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "convnext_tiny.cnn"
STAGES = (3, 3, 9, 3)


def test_convnext_tiny_has_torchvisions_figures():
    totals = compile_file(EXAMPLE).analysis.totals()
    assert totals["params"] == 28_589_128                 # torchvision docs: 28,589,128 parameters
    assert round(totals["macs"] / 1e9, 2) == 4.46         # torchvision docs: 4.46 GFLOPS (multiply-adds)
    assert compile_file(EXAMPLE).net.shapes["fc"] == (1000,)


def cnnc_name(key: str) -> str:
    """torchvision's state-dict key -> cnnc's parameter name (the names only; no tensor is touched)."""
    rules = [(r"features\.0\.0\.", "stem."), (r"features\.0\.1\.", "stem_norm."),
             (r"classifier\.0\.", "head_norm."), (r"classifier\.2\.", "fc.")]
    for pattern, name in rules:
        if re.match(pattern, key):
            return re.sub(pattern, name, key)
    stage, rest = re.match(r"features\.(\d+)\.(.*)", key).groups()
    stage = int(stage)
    if stage % 2 == 0:   # features.2, .4, .6: layer norm, then the stride-2 conv
        part, tail = rest.split(".", 1)
        return f"downsample_{stage // 2}.{('layernorm', 'conv')[int(part)]}.{tail}"
    block, tail = rest.split(".", 1)
    number = sum(STAGES[:stage // 2]) + int(block) + 1
    if tail == "layer_scale":
        return f"cnblock_{number}.layer_scale.weight"
    layer, param = re.match(r"block\.(\d)\.(\w+)", tail).groups()
    return f"cnblock_{number}.{ {'0': 'depthwise_conv', '2': 'layernorm', '3': 'linear_1', '5': 'linear_2'}[layer]}.{param}"


@pytest.mark.slow
def test_exported_module_loads_torchvisions_state_dict_by_name_and_gives_its_outputs(tmp_path):
    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed (the test extra installs it)")
    from cnnc.runtime.export.torch_module import module_source
    reference = tv.models.convnext_tiny(weights=None).double().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():   # torchvision starts layer scales at 1e-6 and biases at 0: make every tensor count
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1 + (1.0 if p.ndim == 1 else 0.0))
    state = {cnnc_name(k): v for k, v in reference.state_dict().items()}
    c = compile_file(EXAMPLE, inputs={"x": (3, 64, 64)})
    expected_shapes = {f"{o}.{p}": tuple(s.shape) for o, ps in c.analysis.params.items() for p, s in ps.items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes   # same names, same shapes

    text, cls = module_source(c.net, "w.pt", "test", torch)
    namespace: dict = {}
    exec(compile(text, "exported", "exec"), namespace)
    model = namespace[cls]().double().eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = reference(x).numpy()
        got = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())

    plan = Plan(c.net, c.analysis.params, dtype=np.float64,
                params={k: v.numpy().copy() for k, v in state.items()})
    runtime = plan.forward({"x": x.numpy()})[0]["fc"]
    np.testing.assert_allclose(runtime, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.slow
def test_drop_path_rates_rise_as_torchvisions(tmp_path):
    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed (the test extra installs it)")
    reference = tv.models.convnext_tiny(weights=None)
    want = [m.p for m in reference.modules() if type(m).__name__ == "StochasticDepth"]
    c = compile_file(EXAMPLE)
    got = [n.attrs["p"] for n in c.net.order() if n.op == "stochastic_depth"]
    np.testing.assert_allclose(got, want, rtol=1e-12)
