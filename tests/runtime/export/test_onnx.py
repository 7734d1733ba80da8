"""`cnnc export --to onnx`: the model passes onnx's full check, and ONNX Runtime computes what the
NumPy runtime computes — every layer of networks using every op, every example, symbolic sizes
at several sizes through one file — and what ONNX cannot express is a located error."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")   # the `test` extra installs both (cnnc[onnx])
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from cnnc.cli import main as cli  # noqa: E402
from cnnc.compiler.driver import compile_file
from cnnc.compiler.fusion import FUSED_OPS, fuse
from cnnc.compiler.ops import OPS
from cnnc.dsl.source import CnncError
from cnnc.runtime.export import onnx as exporter
from cnnc.runtime.export.onnx import OPSET, build_model, checked_bytes, emitter
from cnnc.runtime.fused import fold_parameters
from cnnc.runtime.plan import Plan

from .test_codegen import EVERY, NEW_OPS, UNPOOL, checkpoint_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = sorted(EXAMPLES.glob("*.cnn"))
TOL = 1e-5
# Small sizes for the examples declared with symbolic sizes (each a size the network accepts).
BIND = {"sobel": (1, 20, 24), "sobel_xy": (1, 21, 17), "mean_blur": (1, 19, 23), "deeplab": (3, 33, 35),
        "segnet": (3, 32, 32), "unet": (1, 32, 48), "fcn32s": (3, 20, 28), "unet_paper": (1, 188, 188),
        "emboss": (1, 18, 21), "sharpen": (1, 20, 17), "gaussian_blur": (1, 19, 22), "rgb_edges": (3, 16, 19),
        "deeplabv3": (3, 33, 35)}
# The 224x224 ImageNet examples run at 64x64 (a copy with the input declaration rewritten): their
# adaptive or global pools take any size, and the ops and weights are the same.
SMALLER = ("resnet18", "resnet50", "resnet152", "se_resnet", "densenet121", "googlenet", "mobilenet_v1", "vgg16",
           "alexnet", "mobilenet_v3")
# The examples whose fused graph differs (batchnorm folded, epilogues): exported with --fuse too.
FUSED = ("small_resnet", "resnet18", "mobilenet_v1", "segnet", "deeplab", "small_unet", "cifar_resnet20")


def parameters(c, inputs=None, seed: int = 0) -> dict[str, np.ndarray]:
    """A store for the network's parameter specs (symbolic networks' at `inputs`), drawn here in
    float32 (quicker than the trainer's draw for VGG-sized weights): He-uniform weights, fixed
    weights as given, biases and batchnorm statistics away from 0 and 1 (so folding shows), scaled
    so that ResNet-1001's residual stream stays finite."""
    if inputs:
        c = compile_file(c.net.source, inputs=inputs)
    rng = np.random.default_rng(seed)
    out = {}
    for owner, specs in c.analysis.params.items():
        bn = c.net.node(owner).op == "batchnorm"
        for name, spec in specs.items():
            shape = tuple(int(d) for d in spec.shape)
            if spec.value is not None:
                v = np.asarray(spec.value).reshape(shape)
            elif name == "running_var":
                v = rng.uniform(0.5, 2.0, shape)
            elif name in ("running_mean", "bias"):
                v = rng.normal(0, 0.1, shape)
            elif name == "weight" and len(shape) == 1:
                v = rng.uniform(0.2, 0.6, shape) if bn else rng.uniform(0.5, 1.5, shape)
            else:
                bound = np.float32(np.sqrt(6.0 / spec.fan_in))   # He-uniform: the variance of He-normal
                v = rng.random(shape, dtype=np.float32) * (2 * bound) - bound
            out[f"{owner}.{name}"] = np.asarray(v, np.float32)
    return out


def reference(c, params, x: np.ndarray) -> np.ndarray:
    """The NumPy runtime's output (compiled at x's size when the network is symbolic)."""
    name = next(iter(c.net.inputs))
    bound = compile_file(c.net.source, inputs={name: x.shape[1:]}) if _symbolic(c) else c
    plan = Plan(bound.net, bound.analysis.params, params=params)
    return plan.forward(x)[0][plan.outputs[0]]


def _symbolic(c) -> bool:
    return any(not isinstance(d, int) for s in c.net.inputs.values() for d in s)


def session(model) -> ort.InferenceSession:
    """ONNX Runtime on the model's bytes, once onnx's full check passed on them."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(checked_bytes(model), options, providers=["CPUExecutionProvider"])


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.isfinite(ref).all()
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def sample(c, seed: int = 1, batch: int = 2) -> np.ndarray:
    shape = BIND.get(Path(c.net.source).stem) if _symbolic(c) else next(iter(c.net.inputs.values()))
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


# ------------------------------------------------------------- the registry
def test_every_op_and_fused_op_has_an_onnx_emitter():
    missing = [op for op in [*OPS, *FUSED_OPS] if emitter(op) is None]
    assert not missing, f"ops without an ONNX emitter (register('onnx', op) in runtime/export/onnx.py): {missing}"


def test_the_op_networks_use_every_op():
    used = set()
    for src in (EVERY, NEW_OPS, UNPOOL):
        used |= {n.op for n in _compile_text(src).net.order()}
    assert used == set(OPS)


_TEXTS: dict[str, object] = {}


def _compile_text(src: str):
    """The network of a source text, compiled once per session (from a file in a temporary folder)."""
    if src not in _TEXTS:
        import tempfile
        path = Path(tempfile.mkdtemp()) / "net.cnn"
        path.write_text(src)
        _TEXTS[src] = compile_file(path, allow={"all"})
    return _TEXTS[src]


# ------------------------------------------------------- every op, every layer
@pytest.mark.parametrize("name, src", [("every", EVERY), ("new_ops", NEW_OPS), ("unpool", UNPOOL)],
                         ids=["every", "new_ops", "unpool"])
def test_every_layer_equals_the_runtime(name, src):
    """Each layer's tensor is a graph output, compared with the runtime's tensor of that layer."""
    c = _compile_text(src)
    params = parameters(c)
    model = build_model(c.net, params)
    layers = [n.name for n in c.net.layers()]
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, exporter.dims(c.net, c.net.shapes[n]))
                              for n in layers if n not in c.net.outputs)
    x = sample(c)
    if name == "new_ops":
        x = np.abs(x)   # lppool(p = 3) of a negative value is nan, in the runtime and ONNX alike
    plan = Plan(c.net, c.analysis.params, params=params)
    plan.outputs = layers
    ref = plan.forward(x)[0]
    s = session(model)
    got = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x})))
    errors = {n: relative_error(got[n], ref[n]) for n in layers if np.abs(ref[n]).max() > 0}
    assert max(errors.values()) <= TOL, {n: e for n, e in errors.items() if e > TOL}
    # The fused graph (batchnorm folded, epilogues) computes the same output.
    fused = fuse(c.net, "eval").net
    out = session(build_model(fused, fold_parameters(fused, params))).run(None, {"x": x})[0]
    assert relative_error(out, ref[c.net.outputs[0]]) <= TOL


# ------------------------------------------------------------ every example
def example(path: Path, tmp_path: Path):
    """The example compiled, at 64x64 if it is one of SMALLER."""
    if path.stem == "efficientnet":   # its input is [3, resolution, resolution]: B0's blocks at 64x64
        return compile_file(path, args={"resolution": 64})
    if path.stem not in SMALLER:
        return compile_file(path)
    text, n = re.subn(r"input x: \[3, 224, 224\]", "input x: [3, 64, 64]", path.read_text())
    assert n == 1
    for other in FILES:   # the files it imports, beside it
        (tmp_path / other.name).write_text(other.read_text())
    (tmp_path / path.name).write_text(text)
    return compile_file(tmp_path / path.name)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_example_equals_the_runtime(path, tmp_path):
    c = example(path, tmp_path)
    x = sample(c, batch=1 if path.stem in ("vgg16", "alexnet", "alexnet_lrn", "unet_paper", "fcn32s") else 2)
    params = parameters(c, {next(iter(c.net.inputs)): x.shape[1:]} if _symbolic(c) else None)
    ref = reference(c, params, x)
    got = session(build_model(c.net, params)).run(None, {next(iter(c.net.inputs)): x})[0]
    err = relative_error(got, ref)
    print(f"{path.stem}: max error {err:.1e} relative to the largest value")
    assert err <= TOL
    if path.stem in FUSED:
        fused = fuse(c.net, "eval").net
        got = session(build_model(fused, fold_parameters(fused, params))).run(None, {next(iter(c.net.inputs)): x})[0]
        assert relative_error(got, ref) <= TOL


def test_a_symbolic_network_runs_at_two_sizes_through_one_file(tmp_path, capsys):
    """deeplab ([3, H, W], a crop to the input computed in the graph) exported once, without --input."""
    out = tmp_path / "deeplab.onnx"
    assert cli(["export", str(EXAMPLES / "deeplab.cnn"), "--to", "onnx", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET == 21
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input]
    assert dims == [["N", 3, "H", "W"]]
    assert [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output] \
        == [["N", 21, "H", "W"]]
    c = compile_file(EXAMPLES / "deeplab.cnn")
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    bound = compile_file(c.net.source, inputs={"x": (3, 17, 30)})
    params = Plan(bound.net, bound.analysis.params, seed=0).params   # the weights the command wrote
    for shape in ((3, 17, 30), (3, 40, 24)):
        x = np.random.default_rng(2).standard_normal((3, *shape)).astype(np.float32)
        got = s.run(None, {"x": x})[0]
        assert got.shape == (3, 21, *shape[1:])
        assert relative_error(got, reference(c, params, x)) <= TOL


def test_segnet_unpools_at_two_sizes_through_one_model():
    """segnet's unpool shapes come from the pools' inputs in the graph: one model, two sizes (odd ones
    included: each unpool restores its pool's input size)."""
    c = compile_file(EXAMPLES / "segnet.cnn")
    params = parameters(c, {"x": (3, 32, 32)})
    s = session(build_model(c.net, params))
    for shape in ((3, 32, 32), (3, 33, 47)):
        x = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
        assert relative_error(s.run(None, {"x": x})[0], reference(c, params, x)) <= TOL


SAME = """
network Same {
    input x: [3, H, W]
    x -> conv(4, 3, stride = 2, pad = same) -> relu -> maxpool(3, stride = 2, pad = same) -> conv(2, 1)
}
"""


def test_symbolic_same_padding_is_onnx_same_upper(write):
    """TensorFlow's 'same' with a stride on a symbolic size: auto_pad SAME_UPPER, exact at odd and even sizes."""
    c = compile_file(write(SAME))
    params = parameters(c, {"x": (3, 9, 9)})
    model = build_model(c.net, params)
    auto_pad = {n.name: {a.name: a.s for a in n.attribute}.get("auto_pad") for n in model.graph.node}
    assert auto_pad["conv_1"] == auto_pad["maxpool"] == b"SAME_UPPER" and auto_pad["conv_2"] is None
    s = session(model)
    for shape in ((3, 9, 9), (3, 12, 7)):
        x = np.random.default_rng(4).standard_normal((2, *shape)).astype(np.float32)
        assert relative_error(s.run(None, {"x": x})[0], reference(c, params, x)) <= TOL


# Ops whose ONNX form differs with the sizes, attributes or symbolic shapes: each body runs on
# [2, 9, 12] and [2, 10, 7] inputs, declared fixed and symbolic ([2, H, W]), one model per declaration.
EDGES = {
    "avgpool ceil pad": "x -> avgpool(3, stride = 2, pad = 1, ceil_mode = true)",
    "avgpool ceil": "x -> avgpool(2, stride = 2, ceil_mode = true)",
    "avgpool ceil pad excluded": "x -> avgpool(3, stride = 2, pad = 1, ceil_mode = true, count_include_pad = false)",
    "lppool p=1": "x -> lppool(3, stride = 2, p = 1)",
    "lppool p=4": "x -> lppool(3, stride = 1, p = 4)",
    "unpool dilated": "x -> p: maxpool(3, stride = 2, pad = 1, dilation = 2) -> conv(2, 1) -> unpool(p)",
    "unpool ceil": "x -> p: maxpool(2, stride = 2, ceil_mode = true) -> unpool(p)",
    "unpool same": "x -> p: maxpool(3, stride = 2, pad = same) -> conv(2, 1) -> unpool(p)",
    "upsample bilinear": "x -> upsample((3, 2), mode = bilinear)",
    "upsample nearest": "x -> upsample((3, 2))",
    "deconv groups": "x -> deconv(4, 3, stride = 2, groups = 2, dilation = 2)",
    "gate": "a = x -> global_avgpool -> sigmoid\n    (x * a) * x",
}


@pytest.mark.parametrize("body", EDGES.values(), ids=EDGES.keys())
def test_size_dependent_forms_at_two_sizes_fixed_and_symbolic(write, body):
    for declared in ("[2, H, W]", "[2, 9, 12]", "[2, 10, 7]"):
        c = compile_file(write(f"network E {{\n    input x: {declared}\n    {body}\n}}\n"))
        shapes = [(2, 9, 12), (2, 10, 7)] if _symbolic(c) else [tuple(c.net.inputs["x"])]
        params = parameters(c, {"x": shapes[0]} if _symbolic(c) else None)
        s = session(build_model(c.net, params))
        for shape in shapes:
            x = np.random.default_rng(5).standard_normal((2, *shape)).astype(np.float32)
            x = np.abs(x) if "lppool" in body else x   # an odd power of a negative value: nan in both
            assert relative_error(s.run(None, {"x": x})[0], reference(c, params, x)) <= TOL, (declared, shape)


# ------------------------------------------------------------------ names
def test_names_come_from_the_cnn():
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    params = parameters(c)
    model = build_model(c.net, params)
    assert {i.name for i in model.graph.initializer} == set(params)
    layer_nodes = {n.name for n in model.graph.node if "/" not in n.name}
    assert layer_nodes == {n.name for n in c.net.layers()}
    produced = {o for n in model.graph.node for o in n.output}
    assert {n.name for n in c.net.layers()} <= produced
    assert [i.name for i in model.graph.input] == list(c.net.inputs)
    assert [o.name for o in model.graph.output] == list(c.net.outputs)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert re.fullmatch(r"conv at .*\.cnn:\d+:\d+", conv.doc_string)


def test_the_batch_axis_is_renamed_when_the_network_has_a_size_named_N(write):
    c = compile_file(write("network M {\n    input x: [1, N, W]\n    x -> conv(2, 3, pad = 1)\n}\n"))
    model = build_model(c.net, parameters(c, {"x": (1, 5, 6)}))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "N", "W"]
    x = np.random.default_rng(0).standard_normal((3, 1, 7, 4)).astype(np.float32)
    assert session(model).run(None, {"x": x})[0].shape == (3, 2, 7, 4)


SHARED = """
network Shared {
    input x: [2, 6, 6]
    a = x -> enc: conv(2, 3, pad = 1) -> relu
    b = a -> enc -> relu
    b -> flatten -> linear(3)
}
"""


def test_a_layer_sharing_weights_reads_the_owners_initializer(write):
    c = compile_file(write(SHARED))
    params = parameters(c)
    model = build_model(c.net, params)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and convs[0].input[1:] == convs[1].input[1:] == ["enc.weight", "enc.bias"]
    assert sorted(i.name for i in model.graph.initializer) == sorted(params)
    x = sample(c)
    assert relative_error(session(model).run(None, {"x": x})[0], reference(c, params, x)) <= TOL


def test_fused_graph_keeps_the_tensor_names_and_folds_batchnorm():
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    fused = fuse(c.net, "eval").net
    model = build_model(fused, fold_parameters(fused, parameters(c)))
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    produced = {o for n in model.graph.node for o in n.output}
    tails = {n.attrs["fused_from"][-1][0] for n in fused.layers() if "fused_from" in n.attrs}
    assert tails and tails <= produced


# -------------------------------------------------------- the command line
def test_checkpoint_weights_are_exported_and_no_warning(tmp_path, capsys):
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    plan, ckpt = checkpoint_for(c, tmp_path / "ck.npz", seed=3)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref = plan.forward(x)[0][plan.outputs[0]]
    for extra in ([], ["--fuse"]):
        out = tmp_path / f"m{len(extra)}.onnx"
        assert cli(["export", str(EXAMPLES / "small_resnet.cnn"), "--to", "onnx", "-o", str(out),
                    "--checkpoint", str(ckpt), *extra]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        assert captured.out.startswith(f"wrote {out} (ONNX opset 21, ") and f"checkpoint {ckpt}" in captured.out
        assert ("fused" in captured.out) == bool(extra)
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert relative_error(got, ref) <= TOL
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m0.onnx")).graph.initializer}
    assert set(stored) == set(plan.params)
    for key, value in plan.params.items():   # the checkpoint's values, bit for bit
        np.testing.assert_array_equal(stored[key], value)


def test_without_a_checkpoint_the_seeded_weights_and_a_warning(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "onnx", "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: no --checkpoint: {out} holds untrained weights (initial weights, seed 0)"]
    c = compile_file(EXAMPLES / "lenet5.cnn")
    plan = Plan(c.net, c.analysis.params, seed=0)
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    assert set(stored) == set(plan.params)
    for k, v in plan.params.items():
        np.testing.assert_array_equal(stored[k], v)


def test_a_missing_onnx_package_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # `import onnx` now raises ImportError
    out = tmp_path / "m.onnx"
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "onnx", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[0] == "cnnc: error: exporting to ONNX needs the onnx package: pip install 'cnnc[onnx]'"
    assert len(err.splitlines()) == 1 and not out.exists()


def test_never_writes_over_the_source_or_the_checkpoint(tmp_path, capsys):
    src = tmp_path / "net.cnn"
    src.write_text((EXAMPLES / "lenet5.cnn").read_text())
    before = src.read_bytes()
    assert cli(["export", str(src), "--to", "onnx", "-o", str(src)]) == 1
    assert "net.cnn" in capsys.readouterr().err and src.read_bytes() == before
    c = compile_file(src)
    _, ckpt = checkpoint_for(c, tmp_path / "ck.npz")
    saved = ckpt.read_bytes()
    assert cli(["export", str(src), "--to", "onnx", "-o", str(ckpt), "--checkpoint", str(ckpt)]) == 1
    assert "ck.npz" in capsys.readouterr().err and ckpt.read_bytes() == saved


def test_a_checkpoint_of_another_network_is_refused(tmp_path, capsys):
    _, ckpt = checkpoint_for(compile_file(EXAMPLES / "small_resnet.cnn"), tmp_path / "ck.npz")
    out = tmp_path / "m.onnx"
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "onnx", "-o", str(out), "--checkpoint", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert f"cnnc: error: checkpoint '{ckpt}' does not fit LeNet5: it has no 'conv_1.weight'" in err
    assert not out.exists()


def test_output_flag_is_required(capsys):
    with pytest.raises(SystemExit) as info:   # a usage error: exit status 2
        cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "onnx"])
    assert info.value.code == 2
    assert "the following arguments are required: -o/--output" in capsys.readouterr().err


def test_a_model_over_the_size_limit_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(exporter, "MAX_BYTES", 1000)
    out = tmp_path / "m.onnx"
    assert cli(["export", str(EXAMPLES / "lenet5.cnn"), "--to", "onnx", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cnnc: error: the ONNX model of 'LeNet5' would hold 0.0 GB of weights; cnnc writes models up to " \
           "0 GB (protobuf's limit; no external-data files)" in err
    assert not out.exists()


def test_the_size_is_refused_before_any_weight_is_made(tmp_path, capsys, monkeypatch):
    """640 M parameters (2.6 GB) from `--input x=1x8000x8000`: refused from the declared shapes."""
    src = tmp_path / "big.cnn"
    src.write_text("network Big {\n    input x: [1, H, W]\n    x -> flatten -> linear(10)\n}\n")
    monkeypatch.setattr(exporter, "parameter_store", lambda *a: pytest.fail("the weights were made"))
    out = tmp_path / "m.onnx"
    assert cli(["export", str(src), "--to", "onnx", "--input", "x=1x8000x8000", "-o", str(out)]) == 1
    assert "cnnc: error: the ONNX model of 'Big' would hold 2.6 GB of weights; cnnc writes models up to 2 GB" \
        in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- refusals
REFUSED = [
    ("lrn even", """
     network R {
         input x: [6, 8, 8]
         x -> conv(6, 3) -> lrn(4)
     }
     """, 3, "cannot export layer 'lrn' (lrn) to ONNX: ONNX's LRN sums the channels c-1..c+2 for an even "
             "size 4, cnnc (and PyTorch) c-2..c+1"),
    ("local symbolic", """
     network R {
         input x: [2, H, W]
         x -> local(3, 3, tile = 2)
     }
     """, 3, "cannot export layer 'local' (local) to ONNX: its ONNX form needs a concrete output size, but it "
             "depends on the input size (3, H - 2, W - 2)"),
    ("adaptive symbolic", """
     network R {
         input x: [2, H, W]
         x -> conv(2, 3) -> adaptive_avgpool(3)
     }
     """, 3, "cannot export layer 'adaptive_avgpool' (adaptive_avgpool) to ONNX: its ONNX form needs a "
             "concrete input size (its bins depend on it)"),
    ("dilated same symbolic", """
     network R {
         input x: [2, H, W]
         x -> conv(3, 3, stride = 2, dilation = 2, pad = same)
     }
     """, 3, "cannot export layer 'conv' (conv) to ONNX: its ONNX form needs a concrete padding"),
    ("lppool ceil symbolic", """
     network R {
         input x: [2, H, W]
         x -> lppool(2, stride = 2, ceil_mode = true)
     }
     """, 3, "cannot export layer 'lppool' (lppool) to ONNX: its ONNX form needs a concrete input size"),
    ("avgpool same symbolic", """
     network R {
         input x: [2, H, W]
         x -> avgpool(3, stride = 2, pad = same)
     }
     """, 3, "cannot export layer 'avgpool' (avgpool) to ONNX: its ONNX form needs a concrete padding"),
]


@pytest.mark.parametrize("name, src, line, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_what_onnx_cannot_express_is_a_located_error(write, tmp_path, capsys, name, src, line, message):
    path = write(src)
    c = compile_file(path)
    with pytest.raises(CnncError) as info:
        build_model(c.net, parameters(c, {"x": (2, 12, 12)} if _symbolic(c) else None))
    assert info.value.message.startswith(message), info.value.message
    assert info.value.diagnostic.loc.line == line
    out = tmp_path / "r.onnx"
    assert cli(["export", str(path), "--to", "onnx", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"net.cnn:{line}:" in err and "cannot export layer" in err and not out.exists()
    if _symbolic(c):
        assert "--input NAME=CxHxW" in err
