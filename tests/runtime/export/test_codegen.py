"""`--emit numpy`: the generated module imports only NumPy and predicts what the runtime predicts."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnc.cli import main as cli
from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError
from cnnc.runtime.checkpoint import save_checkpoint
from cnnc.compiler.ops import OPS
from cnnc.runtime.export.codegen import emit, variable_names
from cnnc.runtime.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

UNPOOL = """
network Un {
    input x: [2, 9, 9]
    a = x -> conv(3, 3, pad = 1) -> relu
    a -> p: maxpool(3, stride = 2, pad = 1) -> conv(3, 1) -> unpool(p) -> q: maxpool(2) -> unpool(q)
      -> conv(2, 1)
}
"""

# Every op of the compiler's table (the test below checks it still is), and the three fused ops.
EVERY = """
block two_ways { (in -> relu, in -> tanh) }

network Every(classes = 5) {
    input x: [4, 12, 12]
    a = x -> conv(8, 3, pad = ((1, 1), (2, 0))) -> batchnorm -> relu6
    b = a -> depthwise_conv(3, pad = 1) -> batchnorm -> leaky_relu(0.2)
    c = b -> conv(8, 3, pad = 2, dilation = 2, groups = 4) -> elu(0.5)
    d = c -> p: maxpool(3, stride = 2, pad = 1, ceil_mode = true)
    e = d -> avgpool(2, stride = 2, ceil_mode = true, count_include_pad = false)
    u = e -> upsample(2, mode = bilinear) -> deconv(6, 3, stride = 2, pad = 1, output_padding = 1)
    v = u -> lrn(3) -> groupnorm(2) -> hardswish
    n = d -> upsample(2) -> pad(((2, 1), (1, 2)), value = 0.5) -> instancenorm -> swish
    w = n -> crop(like = v)
    g = concat(v, w) -> layernorm -> mish
    s = g -> global_maxpool -> sigmoid
    h = (g * s) + g
    m = h -> avgpool(3, stride = 1, pad = 1) -> adaptive_maxpool(5, 3) -> adaptive_avgpool(3, 2)
      -> dropout(0.3, mode = downgrade_in_infer)
      -> spatial_dropout(0.2) -> tanh -> flatten -> linear(16, bias = false) -> batchnorm -> relu
    k = d -> unpool(p) -> local(4, 3, tile = 2) -> gelu -> hardsigmoid -> batchnorm -> lppool(2, stride = 2)
      -> identity
      -> global_avgpool -> flatten -> linear(16) -> layernorm -> relu
    r = concat(x[2:], x[:2]) -> channel_shuffle(2) -> q: maxpool(2, stride = 2, pad = ((0, 1), (1, 0))) -> unpool(q)
      -> avgpool(3, stride = 2, pad = ((1, 0), (0, 1)), count_include_pad = false)
      -> avgpool(2, pad = ((1, 0), (0, 1))) -> local(3, 2, stride = 2, pad = ((1, 0), (0, 1)), bias = false)
      -> global_avgpool -> flatten -> linear(16) -> relu
    t = max(h, 1 - h * 0.5, -h) -> upsample(size = (5, 7), mode = bilinear, align_corners = true)
      -> upsample(like = g) -> upsample(size = (7, 9), mode = bilinear) -> global_avgpool -> flatten
      -> linear(16) -> relu
    z = g -> layernorm(over = channels) -> conv(6, 1) -> affine(0.5, 1) -> relu
      -> linear(12, over = channels) -> silu -> layer_scale(0.5)
      -> stochastic_depth(0.1) -> adaptive_avgpool((3, 2))
    y = min(z, 1 - z) -> flatten -> linear(16) -> relu
    o1, o2 = z -> two_ways
    o = (o1 * o2) -> flatten -> linear(16) -> relu
    (m + k + r + t + y + o) -> dropout(0.5) -> linear(classes) -> softmax
}
"""

NEW_OPS = """
network New {
    input x: [3, 10, 10]
    a = x -> local(4, 3, stride = 2, pad = 1) -> gelu
    b = x -> lppool(3, stride = 2, p = 3, ceil_mode = true) -> conv(4, 1)
    c = x -> local(4, 2, tile = (2, 3)) -> gelu -> lppool(2)
    concat(a, b) -> crop(like = c, offset = (1, 0)) -> gelu
}
"""

RUNNER = textwrap.dedent("""
    import importlib.util, json, sys
    sys.modules["cnnc"] = None            # from here on, any `import cnnc...` raises ImportError
    import numpy as np
    for name, module, x, out in json.loads(sys.argv[1]):
        spec = importlib.util.spec_from_file_location(name, module)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        np.save(out, mod.forward(np.load(x)))
    cnnc = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "cnnc" and v is not None)
    print(json.dumps({"cnnc_modules": cnnc, "torch": "torch" in sys.modules}))
""")


def trained_like(plan: Plan, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Parameters as a checkpoint would hold them: every tensor nonzero, BN statistics away from 0/1."""
    out = {}
    for key, v in plan.params.items():
        name = key.rsplit(".", 1)[1]
        if name == "running_var":
            out[key] = rng.uniform(0.5, 2.0, v.shape)
        elif name in ("running_mean", "bias"):
            out[key] = rng.normal(0, 0.3, v.shape)
        elif name == "weight" and v.ndim == 1:
            out[key] = rng.uniform(0.5, 1.5, v.shape)
        else:
            out[key] = v * rng.uniform(0.5, 1.5)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def checkpoint_for(c, path: Path, seed: int = 0) -> tuple[Plan, Path]:
    plan = Plan(c.net, c.analysis.params, seed=seed)
    params = trained_like(plan, np.random.default_rng(seed))
    save_checkpoint(path, {f"param/{k}": v for k, v in params.items()},
                    {"format": "cnnc-checkpoint-1", "network": c.net.name, "epoch": 1})
    plan.load_state(params)
    return plan, path


def run_generated(jobs: list[tuple[str, Path, Path, Path]]) -> dict:
    spec = json.dumps([[n, str(m), str(x), str(o)] for n, m, x, o in jobs])
    r = subprocess.run([sys.executable, "-c", RUNNER, spec], capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_generated_modules_predict_what_the_runtime_predicts_without_importing_cnnc(tmp_path, write):
    sources = {"small_resnet": EXAMPLES / "small_resnet.cnn", "small_unet": EXAMPLES / "small_unet.cnn",
               "small_inception": EXAMPLES / "small_inception.cnn", "lenet5": EXAMPLES / "lenet5.cnn",
               "unpool": write(UNPOOL, "unpool.cnn"),
               "every": write(EVERY, "every.cnn"), "new_ops": write(NEW_OPS, "new_ops.cnn")}
    jobs, expected = [], {}
    for i, (name, src) in enumerate(sources.items()):
        c = compile_file(src, allow={"all"})
        plan, ckpt = checkpoint_for(c, tmp_path / f"{name}.ckpt.npz", seed=i)
        module = tmp_path / "gen" / f"{name}_model.py"
        info = emit(c, str(module), str(ckpt))
        assert info["source"] == f"checkpoint {ckpt}" and Path(info["weights"]).exists()
        x = np.random.default_rng(i).standard_normal((3, *c.net.shapes[plan.inputs[0]])).astype(np.float32)
        if name == "new_ops":
            x = np.abs(x)  # lppool(p = 3) of a negative value is nan, in the runtime and the module alike
        np.save(tmp_path / f"{name}_x.npy", x)
        expected[name] = plan.forward(x)[0][plan.outputs[0]]
        jobs.append((f"{name}_model", module, tmp_path / f"{name}_x.npy", tmp_path / f"{name}_y.npy"))
    status = run_generated(jobs)
    assert status == {"cnnc_modules": [], "torch": False}
    for name, ref in expected.items():
        got = np.load(tmp_path / f"{name}_y.npy")
        assert got.shape == ref.shape and got.dtype == np.float32
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err <= 1e-5, (name, err)
        if got.ndim == 2:
            assert (got.argmax(axis=1) == ref.argmax(axis=1)).all(), name


def test_the_module_imports_only_numpy_and_reads_straight_line(tmp_path):
    c = compile_file(EXAMPLES / "resnet18.cnn")
    info = emit(c, str(tmp_path / "model.py"))
    text = (tmp_path / "model.py").read_text()
    imports = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imports |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module)
    assert imports == {"os", "numpy"}
    assert info["functions"] == ["conv2d", "linear", "relu", "max_pool2d", "global_avg_pool", "flatten"]
    assert info["source"] == "initial weights, seed 0" and info["arrays"] == 2 * 20 + 2
    forward = text[text.index("def forward("):]
    assert forward.count(" = ") >= 24                        # one named variable per fused layer
    assert 'basic_1_conv = relu(conv2d(basic_1_conv_bn_relu_conv, p["basic_1.conv.weight"]' in forward
    assert "+ maxpool)" in forward                           # the residual add, folded into the line
    assert "batchnorm" not in forward.split("# ")[0]         # folded: no batchnorm call anywhere
    with np.load(tmp_path / "model.npz") as z:
        assert set(z.files) >= {"stem.conv.weight", "stem.conv.bias", "fc.weight"}
        assert "stem.batchnorm.running_mean" not in z.files


def test_cli_emit_with_a_checkpoint(tmp_path, capsys):
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    _, ckpt = checkpoint_for(c, tmp_path / "last.npz")
    out = tmp_path / "deploy" / "model.py"
    assert cli(["compile", str(EXAMPLES / "small_resnet.cnn"), "--emit", "numpy", "-o", str(out),
                "--checkpoint", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (" in printed and f"wrote {out.with_suffix('.npz')} (20 arrays" in printed
    assert f"checkpoint {ckpt}" in printed and out.exists()


def test_emit_refuses_an_op_without_a_numpy_emitter(tmp_path, write, monkeypatch):
    monkeypatch.delitem(OPS["gelu"].impls, "numpy")
    net = compile_file(write("network L {\n  input x: [1, 8, 8]\n  x -> relu -> gelu\n}\n"))
    with pytest.raises(CnncError, match="does not support 'gelu'") as info:
        emit(net, str(tmp_path / "u.py"))
    assert info.value.loc is not None and info.value.loc.line == 3
    assert not (tmp_path / "u.py").exists() and not (tmp_path / "u.npz").exists()


def test_emit_refuses_what_it_cannot_write(tmp_path, write):
    with pytest.raises(CnncError, match="concrete sizes"):
        emit(compile_file(EXAMPLES / "unet.cnn"), str(tmp_path / "unet.py"))
    c = compile_file(EXAMPLES / "lenet5.cnn")
    with pytest.raises(CnncError, match="must be a .py file"):
        emit(c, str(tmp_path / "model.txt"))
    _, ckpt = checkpoint_for(compile_file(EXAMPLES / "small_resnet.cnn"), tmp_path / "other.npz")
    with pytest.raises(CnncError, match="does not fit LeNet5"):
        emit(c, str(tmp_path / "m.py"), str(ckpt))


def test_variable_names_are_distinct_identifiers(compile_src):
    c = compile_src("network N {\n  input x: [1, 4, 4]\n  x -> relu: conv(2, 1) -> flatten\n}\n")
    names = variable_names(c.net)
    assert len(set(names.values())) == len(names)
    assert all(v.isidentifier() for v in names.values()) and names["relu"] != "relu"


# ------------------------------------------------------------ coverage
def test_every_op_of_the_compiler_and_every_fused_op_has_a_numpy_emitter():
    from cnnc.compiler.fusion import FUSED_OPS
    from cnnc.runtime.export.codegen import emitter
    # Graph inputs (inputs=0) become forward's arguments; every other op needs an emitter.
    missing = [op for op, spec in {**OPS, **FUSED_OPS}.items() if spec.inputs != 0 and emitter(op) is None]
    assert missing == [], f"ops without a numpy emitter (register one in runtime/export/codegen.py): {missing}"


def test_the_every_network_exercises_every_op(tmp_path, write):
    from cnnc.compiler.fusion import FUSED_OPS, fuse
    c = compile_file(write(EVERY, "every.cnn"), allow={"all"})
    missing = sorted(set(OPS) - {"input"} - {n.op for n in c.net.layers()})
    assert missing == [], f"add these ops to EVERY in tests/runtime/export/test_codegen.py: {missing}"
    assert set(FUSED_OPS) <= {n.op for n in fuse(c.net, "eval").net.layers()}


def test_the_generated_functions_are_the_real_functions_copied(compile_src):
    import inspect
    from cnnc.compiler.ops import window_out
    from cnnc.runtime.export import standalone
    from cnnc.runtime.export.codegen import module_source
    from cnnc.runtime.kernels import _erf
    c = compile_src("network G {\n  input x: [2, 6, 6]\n  x -> conv(3, 3) -> gelu -> avgpool(2)\n}\n")
    source, functions = module_source(c.net, "w.npz", "test")
    assert functions == ["conv2d", "gelu", "avg_pool2d"]
    # The helpers come from reading the code, not from a list: the compiler's window rule, the
    # kernels' erf with its import-time table (as a literal) and avgpool's divisor.
    for fn in (window_out, _erf.erf, standalone._windows, standalone.conv2d, standalone.gelu,
               standalone.avg_pool2d, standalone.window_counts):
        assert inspect.getsource(fn) in source, fn.__name__
    namespace = {}
    exec(compile(source, "<generated>", "exec"), {"__file__": "x.py"} | namespace)
    assert "_FITS = {8: (6.0, [" in source and "def _fit(" not in source
    assert "relu" not in source.split("def forward")[0]   # only what the network uses


def test_no_kernel_is_kept_as_a_string_literal_in_the_generator():
    import ast as pyast
    import inspect
    from cnnc.runtime.export import codegen
    literals = [n.value for n in pyast.walk(pyast.parse(inspect.getsource(codegen)))
                if isinstance(n, pyast.Constant) and isinstance(n.value, str)]
    assert not [t for t in literals if "def " in t and "return" in t and "np." in t]
