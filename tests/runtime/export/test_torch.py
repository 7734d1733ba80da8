"""`cnnc export --to torch`: the generated PyTorch module against the NumPy runtime.

For every example (small inputs bound where the example is symbolic or large), the exported
module's state_dict keys are the parameter store's keys, its eval outputs equal the runtime's
(float32, <= 1e-5 of the largest value), and in training mode (dropout at p = 0, batchnorm on
batch statistics) its outputs, every parameter gradient and the updated running statistics equal
the runtime's (float64, so a near-tie in a max pool cannot pick another window). Then the command:
weights, the checkpoint helper, hostile names, outputs never over inputs, the missing extra.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from cnnc.cli import main as cli
from cnnc.compiler.driver import compile_file
from cnnc.compiler.graph import build_graph
from cnnc.compiler.ops import OPS
from cnnc.runtime.export import torch_rules
from cnnc.runtime.export.torch_module import module_source
from cnnc.runtime.export.torch_rules import rule_of
from cnnc.runtime.plan import Plan

from .test_codegen import EVERY
from .test_codegen_safety import SOURCE_NAMES, hostile_layout, trained_checkpoint

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = sorted(EXAMPLES.glob("*.cnn"))

# Small inputs: the symbolic examples need a size; the ImageNet ones run at 16x16 or 32x32 (their
# classifiers' sizes do not depend on it; ResNet-152 stays at 32x32, where batchnorm still sees more
# than one value per sample in all but its last stage), fcn32s at 8x8 (its first convolution pads by
# 100, so its maps are about 200x200 whatever the input).
BIND = {"alexnet": (3, 63, 63), "alexnet_lrn": (3, 67, 67), "vgg16": (3, 32, 32), "resnet18": (3, 32, 32),
        "resnet50": (3, 16, 16), "resnet152": (3, 32, 32), "densenet121": (3, 32, 32),
        "googlenet": (3, 32, 32), "se_resnet": (3, 16, 16), "mobilenet_v1": (3, 16, 16),
        "deeplab": (3, 16, 16), "fcn32s": (3, 8, 8), "segnet": (3, 32, 32), "unet": (1, 32, 32),
        "unet_paper": (1, 188, 188), "sobel": (1, 8, 8), "sobel_xy": (1, 8, 8), "mean_blur": (1, 8, 8),
        "inception_block": (192, 8, 8), "emboss": (1, 8, 8), "sharpen": (1, 8, 8), "gaussian_blur": (1, 9, 8),
        "rgb_edges": (3, 8, 8), "mobilenet_v3": (3, 32, 32), "efficientnet": (3, 64, 64), "deeplabv3": (3, 16, 16)}
SETTINGS = {"resnet1001": {"n": 2}}   # 2 bottlenecks per stage instead of 111: the same blocks


def compiled_example(path: Path):
    shape = BIND.get(path.stem)
    net_inputs = None
    if shape is not None:
        first = compile_file(path, allow={"all"}, with_train=False).net.inputs
        net_inputs = {next(iter(first)): shape}
    return compile_file(path, inputs=net_inputs, args=SETTINGS.get(path.stem), allow={"all"})


def load_module(text: str, name: str = "exported") -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(text, name, "exec"), module.__dict__)
    return module


def build(net, store=None):
    """The exported class of `net`, built on the meta device and given the store's arrays (shared,
    but for the running statistics, which training updates in place)."""
    text, cls = module_source(net, "w.pt", "test", torch)
    module = load_module(text)
    with torch.device("meta"):
        model = getattr(module, cls)()
    if store is not None:
        model.load_state_dict({k: torch.from_numpy(np.array(v) if ".running_" in k else v)
                               for k, v in store.items()}, assign=True)
    return model, text


def without_dropout(net):
    """A test-only variant: every random drop at p = 0, so both sides keep every unit."""
    nodes = [n.replace(attrs={**n.attrs, "p": 0.0}) if OPS[n.op].has("random_drop") else n for n in net.order()]
    return dataclasses.replace(net, graph=build_graph(nodes))


def outputs_of(model, net, xs):
    got = model(*[torch.from_numpy(xs[k]) for k in net.inputs])
    return got if isinstance(got, dict) else {net.outputs[0]: got}


def relative(a, b, floor: float = 1e-30) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), floor))


def small_batch(net) -> int:
    """1, or 4 where batchnorm normalises over the batch (with 2 samples a 1x1 map normalises to
    exactly +-1, where the backward pass amplifies rounding a millionfold)."""
    return 4 if any(OPS[n.op].has("batch_statistics") for n in net.layers()) else 1


def check_eval(c, batch: int | None = None, store=None) -> float:
    plan = Plan(c.net, c.analysis.params, seed=1, params=store)
    model, _ = build(c.net, plan.params)
    assert sorted(model.state_dict()) == sorted(plan.params)
    rng = np.random.default_rng(0)
    batch = batch or small_batch(c.net)
    xs = {k: rng.standard_normal((batch, *c.net.shapes[k])).astype(np.float32) for k in c.net.inputs}
    expected = plan.forward(xs)[0]
    with torch.no_grad():
        got = outputs_of(model.eval(), c.net, xs)
    return max(relative(got[o].numpy(), expected[o]) for o in c.net.outputs)


def check_training(c, batch: int | None = None) -> tuple[float, float, float, dict]:
    """Errors of the outputs, gradients and running statistics; and the float64 store it drew."""
    net = without_dropout(c.net)
    plan = Plan(net, c.analysis.params, seed=1, dtype=np.float64)
    store = {k: v.astype(np.float32) for k, v in plan.params.items()}
    model, _ = build(net, plan.params)
    rng = np.random.default_rng(0)
    batch = batch or small_batch(net)
    xs = {k: rng.standard_normal((batch, *net.shapes[k])) for k in net.inputs}
    out, tape = plan.forward(xs, training=True)
    seeds = {o: rng.standard_normal(out[o].shape) for o in net.outputs}
    grads = plan.backward(tape, seeds)
    got = outputs_of(model.train(), net, xs)
    named = dict(model.named_parameters())
    assert sorted(grads) == sorted(k for k, p in named.items() if p.requires_grad)
    grad = 0.0
    if grads:
        sum((got[o] * torch.from_numpy(seeds[o])).sum() for o in net.outputs).backward()
        # A bias before a batchnorm has a zero gradient (the batch mean removes it): measure every
        # gradient against its own largest value, but no smaller than a millionth of the largest of all.
        floor = 1e-6 * max(np.abs(g).max() for g in grads.values())
        grad = max(float(np.abs(named[k].grad.numpy() - g).max() / max(np.abs(g).max(), floor))
                   for k, g in grads.items())
    state = model.state_dict()
    # A batchnorm fed by a 1x1 convolution of another batchnorm's output (MobileNetV3's and EfficientNet's
    # linear bottlenecks, ShuffleNet's bias-free branches) sees a batch mean of zero up to rounding: measure
    # each running statistic against its own largest value, but no smaller than a millionth of the largest
    # of all (as the gradients).
    keys = [k for k in plan.params if ".running_" in k]
    floor = 1e-6 * max((np.abs(plan.params[k]).max() for k in keys), default=0.0)
    running = [relative(state[k].numpy(), plan.params[k], max(floor, 1e-30)) for k in keys]
    out_error = max(relative(got[o].detach().numpy(), out[o]) for o in net.outputs)
    return out_error, grad, max(running, default=0.0), store


# ------------------------------------------------------------ coverage
def test_every_op_has_a_torch_rule():
    # Graph inputs (inputs=0) become forward's arguments; every other op needs a rule.
    missing = [op for op, spec in OPS.items() if spec.inputs != 0 and rule_of(op) is None]
    assert missing == [], f"ops without a torch rule (register one in runtime/export/torch_rules.py): {missing}"


# EVERY (every op, and asymmetric pools and padded local layers) is shared with the other back ends' tests.



def test_the_every_network_exercises_every_op(compile_src):
    c = compile_src(EVERY, allow={"all"})
    assert sorted(set(OPS) - {"input"} - {n.op for n in c.net.layers()}) == []


def test_every_op_matches_the_runtime_in_eval_and_training(compile_src):
    c = compile_src(EVERY, allow={"all"})
    out, grad, running, store = check_training(c, batch=3)
    assert check_eval(c, batch=3, store=store) <= 1e-5
    assert out <= 1e-7 and grad <= 1e-6 and running <= 1e-7   # float64; cnnc's erf is a 1e-8 fit


# ------------------------------------------------------------ every example
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_example_matches_the_runtime(path):
    c = compiled_example(path)
    out, grad, running, store = check_training(c)
    error = check_eval(c, store=store)
    print(f"{path.stem}: eval {error:.1e}; training: outputs {out:.1e}, gradients {grad:.1e}, "
          f"running statistics {running:.1e}")
    assert error <= 1e-5, "eval outputs"
    assert out <= 1e-7, "training-mode outputs"
    assert grad <= 1e-6, "parameter gradients"
    assert running <= 1e-7, "running statistics"


def test_every_example_is_checked_with_its_real_blocks():
    # The bound sizes and settings name real examples (a renamed file would silently lose its binding).
    stems = {f.stem for f in FILES}
    assert set(BIND) | set(SETTINGS) <= stems


# ------------------------------------------------------------ the module's shape
def test_repeated_blocks_share_a_class_with_their_parameters_as_arguments():
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    text, cls = module_source(c.net, "w.pt", "x", torch)
    assert cls == "SmallResNet"
    assert "class ConvBnRelu(nn.Module):\n    def __init__(self, in_channels, channels, stride):" in text
    # basic(16) keeps its input as the shortcut; basic(32, stride = 2) and basic(64, ...) project it.
    assert "self.basic_1 = Basic()" in text
    assert "self.basic_2 = Basic_2(16, 32)" in text and "self.basic_3 = Basic_2(32, 64)" in text
    assert "self.conv_2 = nn.Conv2d(in_channels, channels, 1, stride=2, bias=False)" in text
    tree = ast.parse(text)
    assert [n.names[0].name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))] == \
        ["torch", "nn", "functional"]


def test_names_an_attribute_cannot_carry_still_give_the_store_keys(compile_src):
    c = compile_src("""
        block eval(c) { forward: conv(c, 3, pad = 1) -> cpu: batchnorm -> relu }
        network N {
            input x: [2, 6, 6]
            x -> eval(4) -> eval(4) -> state_dict: conv(3, 1) -> flatten -> cuda: linear(2)
        }
    """)
    plan = Plan(c.net, c.analysis.params, seed=0)
    model, text = build(c.net, plan.params)
    assert sorted(model.state_dict()) == sorted(plan.params)
    assert "eval_1.forward.weight" in model.state_dict()
    assert 'self._modules["forward"] = nn.Conv2d(' in text
    assert check_eval(c) <= 1e-5


def test_a_name_pytorch_keeps_for_itself_is_refused_at_the_layer(write, capsys):
    path = write("network T {\n  input x: [2, 6, 6]\n  x -> training: conv(3, 1)\n}\n")
    assert cli(["export", str(path), "--to", "torch", "-o", str(path.with_suffix(".py"))]) == 1
    err = capsys.readouterr().err
    assert "net.cnn:3:" in err and "cannot export layer 'training' (conv)" in err and "nn.Module" in err


def test_shared_weights_are_one_module_called_twice(compile_src):
    c = compile_src("""
        network S {
            input x: [3, 6, 6]
            a = x -> c: conv(3, 3, pad = 1) -> relu -> c -> relu -> flatten
        }
    """)
    plan = Plan(c.net, c.analysis.params, seed=0)
    model, text = build(c.net, plan.params)
    assert sorted(model.state_dict()) == sorted(plan.params) == ["c.bias", "c.weight"]
    assert text.count("= self.c(") == 2
    assert check_eval(c) <= 1e-5
    assert check_training(c)[1] <= 1e-9


def test_fixed_weights_are_frozen(tmp_path):
    c = compile_file(EXAMPLES / "sobel.cnn", inputs={"img": (1, 8, 8)})
    model, text = build(c.net, Plan(c.net, c.analysis.params).params)
    assert ".requires_grad_(False)" in text
    assert not any(p.requires_grad for p in model.parameters())


def test_what_pytorch_cannot_express_is_refused_with_the_layer_and_its_place(write, capsys):
    # A ceil-mode window that starts in the right padding: PyTorch (padding first) keeps it, cnnc not.
    path = write("network R {\n  input x: [1, 4, 4]\n\n  x -> mp: maxpool(4, stride = 4, pad = ((0, 2), (0, 0)), "
                 "ceil_mode = true)\n}\n")
    assert cli(["export", str(path), "--to", "torch", "-o", str(path.with_suffix(".py"))]) == 1
    err = capsys.readouterr().err
    assert "net.cnn:4:12" in err and "cannot export layer 'mp' (maxpool) to PyTorch" in err
    assert "PyTorch's pooled size is [2, 1], cnnc's [1, 1]" in err and "Traceback" not in err
    assert not path.with_suffix(".py").exists()


# ------------------------------------------------------------ the command
RUNNER = textwrap.dedent("""
    import importlib.util, json, sys
    sys.modules["cnnc"] = None            # the module and its helper work without cnnc
    import torch
    module, ckpt, x, out = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location("generated", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from_helper = mod.load_cnnc_checkpoint(ckpt).eval()
    weights = torch.load(module[:-3] + ".pt", weights_only=True)
    keys = sorted(weights)
    from_pt = type(from_helper)()
    from_pt.load_state_dict(weights)
    x = torch.load(x, weights_only=True)
    with torch.no_grad():
        torch.save({"helper": from_helper(x), "pt": from_pt.eval()(x)}, out)
    print(json.dumps({"source": mod.SOURCE, "origin": mod.ORIGIN, "weights": mod.WEIGHTS, "keys": keys,
                      "prefix": mod.CHECKPOINT_PARAM}))
""")

def run_module(module: Path, ckpt: Path, x: np.ndarray, work: Path) -> tuple[dict, dict]:
    torch.save(torch.from_numpy(x), work / "x.pt")
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([str(module), str(ckpt), str(work / "x.pt"),
                                                                   str(work / "y.pt")])],
                       capture_output=True, text=True, timeout=300, cwd=work, check=False)
    assert r.returncode == 0, r.stderr
    return torch.load(work / "y.pt", weights_only=True), json.loads(r.stdout)


@pytest.mark.parametrize("index", range(len(SOURCE_NAMES)))
def test_hostile_paths_reach_the_module_only_as_data(tmp_path, monkeypatch, capsys, index):
    text = ((EXAMPLES / "small_resnet.cnn").read_text().replace('import "resnet18.cnn"', "")
            + (EXAMPLES / "resnet18.cnn").read_text().split("network ResNet18")[0])
    source, ckpt, plan, module, work = hostile_layout(tmp_path, SOURCE_NAMES[index], text)
    monkeypatch.chdir(work)
    assert cli(["export", str(source), "--to", "torch", "-o", str(module), "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and out.count("wrote ") == 2
    text = module.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(text))
    assert "PWNED" not in docstring and "Users" not in docstring
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    got, info = run_module(module, ckpt, x, work)
    assert info["source"] == str(source) and info["origin"] == f"checkpoint {ckpt}"
    assert info["weights"] == module.with_suffix(".pt").name and info["prefix"] == "param/"
    assert info["keys"] == sorted(plan.params)
    expected = plan.forward({"x": x})[0]["fc"]
    for name in ("helper", "pt"):
        assert relative(got[name].numpy(), expected) <= 1e-5, name
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def test_without_a_checkpoint_the_weights_are_the_seeded_initial_ones(tmp_path, capsys):
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "torch", "-o", str(tmp_path / "m.py")]) == 0
    out = capsys.readouterr().out
    assert "seeded initial weights" in out and "initial weights, seed 0" in out
    c = compile_file(EXAMPLES / "lenet5.cnn")
    store = Plan(c.net, c.analysis.params, seed=c.net.train.seed).params
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert sorted(saved) == sorted(store)
    for k, v in store.items():
        np.testing.assert_array_equal(saved[k].numpy(), v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.py"]


def test_the_checkpoint_layout_comes_from_the_checkpoint_module(monkeypatch):
    from cnnc.runtime import checkpoint
    monkeypatch.setattr(checkpoint, "PARAM", 'p"\n/')
    c = compile_file(EXAMPLES / "lenet5.cnn")
    text, _ = module_source(c.net, "w.pt", "x", torch)
    assert 'CHECKPOINT_PARAM = "p\\"\\n/"' in text or "CHECKPOINT_PARAM = 'p\"\\n/'" in text
    assert load_module(text).CHECKPOINT_PARAM == 'p"\n/'


def test_outputs_never_replace_the_inputs(tmp_path, capsys):
    c = compile_file(EXAMPLES / "lenet5.cnn")
    ckpt = tmp_path / "m.pt"
    trained_checkpoint(c, ckpt)
    before = ckpt.read_bytes()
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "torch", "-o", str(tmp_path / "m.py"),
                "--checkpoint", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert f"--to torch would write its weights to '{ckpt}'" in err and "which is the checkpoint it reads" in err
    assert ckpt.read_bytes() == before and not (tmp_path / "m.py").exists()
    source = tmp_path / "net.py"
    source.write_text((EXAMPLES / "lenet5.cnn").read_text())
    assert cli(["export", str(source), "--to", "torch", "-o", str(source)]) == 1
    assert f"--to torch would write its module to '{source}', which is the source file it compiles" \
        in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "net.py"]


def test_flag_mistakes_are_one_line_errors(tmp_path, capsys):
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "torch", "-o", str(tmp_path / "m.onnx")]) == 1
    assert "--to torch writes a .py file" in capsys.readouterr().err
    assert cli(["export", str(EXAMPLES / "unet.cnn"), "--to", "torch", "-o", str(tmp_path / "u.py")]) == 1
    err = capsys.readouterr().err
    assert "needs concrete sizes" in err and "--input" in err
    assert cli(["export", str(EXAMPLES / "unet.cnn"), "--to", "torch", "-o", str(tmp_path / "u.py"),
                "--input", "x=1x32x32"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.pt", "u.py"]


def test_a_missing_torch_names_the_extra_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)    # `import torch` now raises ImportError
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "torch", "-o", str(tmp_path / "m.py")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'cnnc[torch]'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_export_choices_come_from_one_registry():
    from cnnc.cli import build_parser
    from cnnc.cmd_export import EXPORTERS
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["export"]
    assert next(a for a in sub._actions if a.dest == "to").choices == tuple(EXPORTERS)
    import tomllib
    extras = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXPORTERS) <= set(extras)  # each target's missing-extra message names `cnnc[TARGET]`
    assert torch_rules.EXTRA == "pip install 'cnnc[torch]'"


def test_the_torch_extra_admits_the_test_extras_pinned_torch():
    # `pip install '.[test]'` (or '.[test,torch]') must keep resolving to the pinned oracle.
    import tomllib
    from packaging.requirements import Requirement
    extras = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    torch_extra = [Requirement(r) for r in extras["torch"]]
    pinned = next(Requirement(r) for r in extras["test"] if r.startswith("torch"))
    assert [r.name for r in torch_extra] == ["torch"] and str(pinned.specifier).startswith("==")
    assert torch_extra[0].specifier.contains(str(pinned.specifier)[2:])


# ------------------------------------------------------------ the generated loader's header checks
def _checkpoint_with(path: Path, member: str, raw: bytes, declared: int | None = None) -> Path:
    """A checkpoint archive holding `raw` as `member` (its zip entry declaring `declared` bytes if given)."""
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, raw)
    if declared is not None:  # patch the sizes both zip headers record
        data = bytearray(path.read_bytes())
        for start, field in ((data.find(b"PK\x03\x04"), 22), (data.find(b"PK\x01\x02"), 24)):
            data[start + field:start + field + 4] = declared.to_bytes(4, "little")
        path.write_bytes(bytes(data))
    return path


def _npy(shape: tuple, dtype: str = "<f4", data: bytes = b"") -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


@pytest.mark.parametrize("member, raw, declared, message", [
    ("param/conv.weight.npy", _npy((10**9,)), None,
     "param/conv.weight.npy has shape [1000000000], Tiny needs [4, 1, 3, 3]"),
    ("param/conv.weight.npy", _npy((4, 1, 3, 3), data=bytes(144)), 3_000_000_000,
     "member 'param/conv.weight.npy' declares 272 bytes of array but holds 3000000000"),
    ("param/nothing.npy", _npy((1,), data=bytes(4)), None, "param/nothing.npy: Tiny has no tensor 'nothing'"),
    ("param/conv.weight.npy", b"\x93NUMPY\x01\x00" + (60_000).to_bytes(2, "little"), None,
     "member 'param/conv.weight.npy' has a header of 60,000 bytes"),
    ("param/conv.weight.npy", _npy((4, 1, 3, 3), "|O"), None, "param/conv.weight.npy: unsupported array type |O"),
], ids=["a-shape-the-model-lacks", "more-bytes-than-declared", "an-unknown-tensor", "a-huge-header", "pickled"])
def test_the_generated_loader_refuses_a_lying_checkpoint_from_its_header(tmp_path, member, raw, declared, message):
    """Each member is checked (with runtime/checkpoint.py's own npy_header and check_npy_size, copied
    into the module) before its data is read."""
    c = compile_file(tmp_path_net(tmp_path))
    text, cls = module_source(c.net, "w.pt", "test", torch)
    module = load_module(text)
    path = _checkpoint_with(tmp_path / "ck.npz", member, raw, declared)
    with pytest.raises(ValueError) as err:
        module.load_cnnc_checkpoint(str(path))
    assert str(err.value) == message


def test_the_header_checks_are_cnncs_own_functions_copied():
    from cnnc.runtime import checkpoint
    c = compile_file(EXAMPLES / "lenet5.cnn")
    text, _ = module_source(c.net, "w.pt", "x", torch)
    for fn in (checkpoint.npy_header, checkpoint.check_npy_size):
        assert textwrap.dedent(__import__("inspect").getsource(fn)).strip() in text


def tmp_path_net(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text("network Tiny {\n    input x: [1, 8, 8]\n    x -> conv(4, 3, pad = 1) -> relu -> flatten"
                    " -> linear(4)\n}\n")
    return path
