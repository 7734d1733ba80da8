"""`--emit numpy` under hostile names and faults: nothing a user wrote runs, nothing is lost.

Every value that reaches a generated module goes through `py_literal`; these tests generate from
hostile source, checkpoint and output paths and a `pad(value = 1e400)`, then compile and import the
result in a fresh interpreter, compare its predictions with the runtime's, and check that no code
smuggled in a name ran. The outputs never replace the command's inputs, and a failed write leaves
the old files as they were.
"""
from __future__ import annotations

import ast
import errno
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnc.cli import main as cli
from cnnc.compiler.driver import compile_file
from cnnc.runtime.export import codegen
from cnnc.runtime.checkpoint import save_training_state
from cnnc.runtime.export.codegen import py_literal
from cnnc.runtime.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

HOSTILE_NET = """
network Hostile {
    input x: [2, 6, 6]
    a = x -> conv(3, 3, pad = 1) -> batchnorm -> relu
    b = a -> pad(1, value = 1e400) -> maxpool(2) -> tanh
    c = a -> pad(1, value = -1e400) -> relu -> avgpool(2)
    d = a -> pad(1, value = 1e-310) -> gelu -> lppool(2)
    concat(b, c, d) -> flatten -> linear(4)
}
"""

SOURCE_NAMES = [
    'x""";open("PWNED","w").write("1");"""y.cnn',
    "C:\\Users\\me\\net.cnn",
    "na\u00efve \u2028 \x85 \x1b]0;title\x07 \x1b[2J\ttab\r.cnn",
    "x'''\\\n# comment\nopen('PWNED','w').write('1') #.cnn",
]

RUNNER = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np
    module, x, out = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location("generated", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    np.save(out, mod.forward(np.load(x)))
    print(json.dumps({"source": mod.SOURCE, "origin": mod.ORIGIN, "weights": mod.WEIGHTS}))
""")


# ------------------------------------------------------------ py_literal
literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4),
    max_leaves=12)


def same(a, b) -> bool:
    """Equality that treats nan as equal to nan and keeps types (1 != 1.0 != True here)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def evaluate(text: str):
    return eval(compile(text, "<literal>", "eval"), {"__builtins__": {}, "float": float})


@settings(max_examples=300, deadline=None)
@given(literals)
def test_py_literal_round_trips_and_stays_on_one_printable_line(value):
    text = py_literal(value)
    assert same(evaluate(text), value)
    assert codegen._is_literal(ast.parse(text, mode="eval").body)   # what check_module accepts
    assert text.isprintable()                     # no newline, CR, escape, NUL, U+2028 or U+0085
    tree = ast.parse(f"# {text}\nX = 1")        # and so it cannot leave a comment
    assert len(tree.body) == 1


@pytest.mark.parametrize("value, text", [
    (1e400, 'float("inf")'), (-1e400, 'float("-inf")'), (0.1, "0.1"), (-0.0, "-0.0"), (3, "3"),
    ((1,), "(1,)"), ((), "()"), ("a.b", '"a.b"'), ('say "hi"', "'say \"hi\"'"),
    ('x""";y', "'x\"\"\";y'"), ("a\nb", '"a\\nb"'), ("C:\\Users", '"C:\\\\Users"'),
    (np.float32(0.5), "0.5"), (np.int64(7), "7"), (np.bool_(True), "True"),
])
def test_py_literal_examples(value, text):
    assert py_literal(value) == text
    assert same(evaluate(text), float(value) if isinstance(value, np.floating) else
                int(value) if isinstance(value, np.integer) else
                bool(value) if isinstance(value, np.bool_) else value)


def test_py_literal_nan_and_refusals():
    assert py_literal(float("nan")) == 'float("nan")' and math.isnan(evaluate(py_literal(float("nan"))))
    for bad in (object(), np.zeros(2), {1, 2}, b"bytes", len):
        with pytest.raises(TypeError, match="no Python literal"):
            py_literal(bad)


# ------------------------------------------------------------ hostile names
def trained_checkpoint(c, path: Path) -> Plan:
    """Weights away from the initial ones, saved as a training checkpoint; the plan holding them."""
    plan = Plan(c.net, c.analysis.params, seed=1)
    rng = np.random.default_rng(1)
    params = {k: np.asarray(np.abs(v) + 0.5 if k.endswith("running_var") else v + rng.normal(0, 0.2, v.shape),
                            np.float32) for k, v in plan.params.items()}
    save_training_state(path, params, {}, {"network": c.net.name, "epoch": 1})
    plan.load_state(params)
    return plan


def hostile_layout(tmp_path: Path, name: str, text: str) -> tuple[Path, Path, Plan, Path, Path]:
    """A source `name` (holding `text`) in a folder with a hostile name, a trained checkpoint and a
    module path with hostile names, and an empty working folder: (source, checkpoint, plan, module, work)."""
    src_dir = tmp_path / "src\nnext line \"\"\" \\"
    src_dir.mkdir()
    source = src_dir / name
    source.write_text(text, encoding="utf-8")
    ckpt = tmp_path / 'ck """\n\\x\'.npz'
    plan = trained_checkpoint(compile_file(source), ckpt)
    module = tmp_path / "out \"\"\"\n\\" / "model x\"\"\";import os;os.system('touch PWNED');\"\"\"\r\x1b.py"
    work = tmp_path / "work"
    work.mkdir()
    return source, ckpt, plan, module, work


def run_module(module: Path, x: np.ndarray, work: Path) -> tuple[np.ndarray, dict]:
    np.save(work / "x.npy", x)
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([str(module), str(work / "x.npy"),
                                                                   str(work / "y.npy")])],
                       capture_output=True, text=True, timeout=300, cwd=work, check=False)
    assert r.returncode == 0, r.stderr
    return np.load(work / "y.npy"), json.loads(r.stdout)


@pytest.mark.parametrize("index", range(len(SOURCE_NAMES)))
def test_hostile_paths_reach_the_module_only_as_data(tmp_path, monkeypatch, index, capsys):
    source, ckpt, plan, module, work = hostile_layout(tmp_path, SOURCE_NAMES[index], textwrap.dedent(HOSTILE_NET))
    monkeypatch.chdir(work)
    assert cli(["compile", str(source), "--emit", "numpy", "-o", str(module), "--checkpoint", str(ckpt)]) == 0
    text = module.read_text(encoding="utf-8")
    compile(text, str(module), "exec")
    docstring = ast.get_docstring(ast.parse(text))
    assert "PWNED" not in docstring and "Users" not in docstring and "x\"\"\"" not in docstring
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    got, info = run_module(module, x, work)
    assert info == {"source": str(source), "origin": f"checkpoint {ckpt}", "weights": str(module.with_suffix(".npz"))}
    expected = plan.forward({"x": x})[0][plan.outputs[0]]
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def test_inf_padding_values_are_exact(tmp_path, write):
    c = compile_file(write("network P {\n  input x: [1, 3, 3]\n  x -> pad(1, value = 1e400) -> maxpool(2)\n}\n"))
    codegen.emit(c, str(tmp_path / "p.py"))
    assert 'value=float("inf")' in (tmp_path / "p.py").read_text()
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    got, _ = run_module(tmp_path / "p.py", x, tmp_path)
    assert got.tolist() == [[[[math.inf, math.inf], [math.inf, 8.0]]]]   # the last window is x[1:3, 1:3]


# ------------------------------------------------ exit 0 only for a sound module
@pytest.mark.parametrize("broken", [
    "def forward(:\n",                                              # does not compile
    '"""doc"""\nimport os\nopen("PWNED", "w").write("1")\n',        # compiles, but runs code on import
    '"""doc"""\nimport subprocess\n',                               # imports more than NumPy
    "x = 1\n",                                                      # no docstring first
    '"""doc"""\nX = open("PWNED", "w")\n',                        # an assignment that is no literal
    '"""doc"""\nW = os.path.join(os.path.dirname(os.path.abspath(__file__)), open("PWNED"))\n',
])
def test_cnnc_exits_0_only_when_the_module_is_sound(tmp_path, monkeypatch, capsys, broken):
    monkeypatch.setattr(codegen, "module_source", lambda net, weights, origin: (broken, []))
    monkeypatch.chdir(tmp_path)
    status = cli(["compile", str(EXAMPLES / "lenet5.cnn"), "--emit", "numpy", "-o", "model.py"])
    assert status == 70
    assert "internal error" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------ nothing lost
def test_weights_never_replace_the_checkpoint_they_are_read_from(tmp_path, monkeypatch, capsys):
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    run = tmp_path / "runs" / "e"
    run.mkdir(parents=True)
    trained_checkpoint(c, run / "best.npz")
    before = (run / "best.npz").read_bytes()
    monkeypatch.chdir(tmp_path)
    status = cli(["compile", str(EXAMPLES / "small_resnet.cnn"), "--emit", "numpy", "-o", "runs/e/best.py",
                  "--checkpoint", "runs/e/best.npz"])
    err = capsys.readouterr().err
    assert status == 1
    first = err.splitlines()[0]
    assert "'runs/e/best.npz'" in first and "'runs/e/best.py'" in first and "checkpoint" in first
    assert "Traceback" not in err
    assert (run / "best.npz").read_bytes() == before and not (run / "best.py").exists()
    # Another spelling of the same file is the same file.
    status = cli(["compile", str(EXAMPLES / "small_resnet.cnn"), "--emit", "numpy", "-o",
                  str(tmp_path / "runs" / ".." / "runs" / "e" / "best.py"), "--checkpoint", "runs/e/best.npz"])
    assert status == 1 and (run / "best.npz").read_bytes() == before


def test_outputs_never_replace_the_source_file(tmp_path, capsys):
    for name, out in (("net.py", "net.py"), ("net.npz", "net.py")):
        source = tmp_path / name
        source.write_text((EXAMPLES / "lenet5.cnn").read_text())
        before = source.read_bytes()
        status = cli(["compile", str(source), "--emit", "numpy", "-o", str(tmp_path / out)])
        err = capsys.readouterr().err.splitlines()[0]
        assert status == 1 and "source file" in err and f"'{source}'" in err
        assert source.read_bytes() == before
        source.unlink()


def test_a_failed_write_leaves_both_old_outputs_whole(tmp_path, monkeypatch, capsys):
    module, weights = tmp_path / "model.py", tmp_path / "model.npz"
    module.write_text("old module\n")
    weights.write_bytes(b"old weights")

    def full_disk(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(codegen.np, "savez", full_disk)
    status = cli(["compile", str(EXAMPLES / "lenet5.cnn"), "--emit", "numpy", "-o", str(module)])
    err = capsys.readouterr().err
    assert status == 1 and "no space left on device" in err and "model.npz" in err
    assert module.read_text() == "old module\n" and weights.read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.py"]   # no temporary left


def test_both_outputs_are_written_when_all_is_well(tmp_path, capsys):
    module = tmp_path / "model.py"
    module.write_text("old module\n")
    assert cli(["compile", str(EXAMPLES / "lenet5.cnn"), "--emit", "numpy", "-o", str(module)]) == 0
    assert module.read_text().startswith('"""A network as a standalone NumPy module')
    with np.load(tmp_path / "model.npz") as z:
        assert len(z.files) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.py"]
