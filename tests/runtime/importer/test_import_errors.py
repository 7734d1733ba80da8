"""Every mistake `cnnc import` can meet is a one-line error naming its cause — the ONNX node, its op type
and what cnnc lacks, or the file or flag at fault — with exit status 1 and no file written."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnc.dsl.source import CnncError  # noqa: E402
from cnnc.runtime.importer.importer import import_onnx  # noqa: E402


def model(nodes, inits=(), opset=17, inputs=None, output="y", domain=None):
    """A small model: input x [N, 3, 8, 8] (or `inputs`), the nodes, the output `output`."""
    ins = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", ins, [out], [numpy_helper.from_array(np.asarray(v, np.float32), k)
                                                    for k, v in inits])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, producer_name="test")


def conv(out="c"):
    return helper.make_node("Conv", ["x", "w"], [out], name="conv_0", kernel_shape=[3, 3], pads=[1, 1, 1, 1])


W = ("w", np.ones((4, 3, 3, 3)))


def write(tmp_path, m, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(m.SerializeToString())      # as given: no checker in the way of a broken model
    return path


def error(tmp_path, m) -> str:
    path = write(tmp_path, m)
    with pytest.raises(CnncError) as info:
        import_onnx(str(path), str(tmp_path / "net.cnn"))
    assert not (tmp_path / "net.cnn").exists() and not (tmp_path / "net.npz").exists()
    return info.value.message + "\n" + (info.value.hint or "")


CASES = [
    ("an op cnnc lacks", [conv(), helper.make_node("Sin", ["c"], ["y"], name="sin_1")], [W],
     "node 1 'sin_1' (Sin): cnnc has no layer for the ONNX operator Sin"),
    ("erf alone", [conv(), helper.make_node("Erf", ["c"], ["y"], name="erf")], [W],
     "node 1 'erf' (Erf): cnnc has no erf on its own (GELU's erf form"),
    ("division by a tensor", [helper.make_node("Conv", ["x", "w2"], ["c2"], name="conv_1", kernel_shape=[1, 1]),
                              helper.make_node("Div", ["x", "c2"], ["y"], name="div")],
     [("w2", np.ones((3, 3, 1, 1)))], "node 1 'div' (Div): cnnc has no division by a tensor"),
    ("a tanh gelu", [conv(), helper.make_node("Gelu", ["c"], ["y"], name="g", approximate="tanh")], [W],
     "cnnc has no tanh approximation of GELU"),
    ("another hard sigmoid", [conv(), helper.make_node("HardSigmoid", ["c"], ["y"], name="h", alpha=0.2)], [W],
     "cnnc has no hard sigmoid with slope 0.2"),
    ("a clip to other bounds", [conv(), helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip")],
     [W, ("lo", np.array(-1.0)), ("hi", np.array(1.0))], "cnnc has no clip to [-1.0, 1.0]"),
    ("a batch norm in training mode",
     [conv(), helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1)],
     [W] + [(k, np.ones(4)) for k in "sbmv"], "TrainingMode.PRESERVE"),
    ("a channels-last output", [conv(), helper.make_node("Transpose", ["c"], ["y"], name="t", perm=[0, 2, 3, 1])],
     [W], "the output 'y' is channels-last"),
    ("a transpose of other axes", [conv(), helper.make_node("Transpose", ["c"], ["t"], name="t", perm=[0, 1, 3, 2]),
                                   helper.make_node("Relu", ["t"], ["y"], name="r")], [W],
     "node 1 't' (Transpose): cnnc has no transpose [0, 1, 3, 2]"),
    ("a constant output", [helper.make_node("Identity", ["w"], ["y"], name="i")], [W], "the output 'y' is a constant"),
]


@pytest.mark.parametrize("nodes, inits, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_cnnc_lacks_is_an_error_naming_the_node(tmp_path, nodes, inits, message):
    assert message in error(tmp_path, model(nodes, inits))


def test_an_unmappable_node_no_output_reads_is_no_error(tmp_path):
    nodes = [conv("y"), helper.make_node("Sin", ["y"], ["dead"], name="unused")]
    info = import_onnx(str(write(tmp_path, model(nodes, [W]))), str(tmp_path / "net.cnn"))
    assert info["layers"] == 1


def test_files_cnnc_cannot_import(tmp_path):
    assert "opset 12 is outside the opsets cnnc imports (13 to 21)" in error(tmp_path, model([conv("y")], [W], opset=12))
    assert "is not ONNX's own" in error(tmp_path, model([helper.make_node("Relu", ["x"], ["y"], domain="com.x")], [],
                                                        domain="com.x"))
    flat_channels = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", 8, 8])]
    assert "no fixed number of channels" in error(tmp_path, model([helper.make_node("Relu", ["x"], ["y"])], [],
                                                                  inputs=flat_channels))
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model" * 10)
    with pytest.raises(CnncError, match="not an ONNX model"):
        import_onnx(str(tmp_path / "junk.onnx"), str(tmp_path / "net.cnn"))
    with pytest.raises(CnncError, match="no such file"):
        import_onnx(str(tmp_path / "none.onnx"), str(tmp_path / "net.cnn"))
    m = model([conv("y")], [W])
    m.graph.initializer[0].data_location = TensorProto.EXTERNAL
    assert "stored in an external file" in error(tmp_path, m)


def test_the_output_must_be_a_cnn_file_and_never_the_model(tmp_path):
    path = write(tmp_path, model([conv("y")], [W]), "net.npz")
    with pytest.raises(CnncError, match="the imported network is a .cnn file"):
        import_onnx(str(path), str(tmp_path / "net.txt"))
    with pytest.raises(CnncError, match="over the model it reads"):
        import_onnx(str(path), str(tmp_path / "net.cnn"))      # its weights would be net.npz: the model


def test_the_command_line_says_the_error_and_exits_1(tmp_path):
    path = write(tmp_path, model([conv(), helper.make_node("Sin", ["c"], ["y"], name="sin_1")], [W]))
    r = subprocess.run([sys.executable, "-m", "cnnc", "import", str(path), "-o", str(tmp_path / "net.cnn")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "m.onnx: node 1 'sin_1' (Sin): cnnc has no layer for the ONNX operator Sin" in r.stderr
    r = subprocess.run([sys.executable, "-m", "cnnc", "import", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "-o" in r.stderr


def test_names_become_legal_identifiers(tmp_path):
    """`input` is a keyword: it is written as an identifier; a size keeps its name where cnnc can write it."""
    ins = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "rows", "width"])]
    nodes = [helper.make_node("Conv", ["input", "w"], ["y"], name="/2d.conv/Conv", kernel_shape=[3, 3])]
    path = write(tmp_path, model(nodes, [W], inputs=ins))
    import_onnx(str(path), str(tmp_path / "net.cnn"))
    text = (tmp_path / "net.cnn").read_text()
    assert "input input_: [3, rows, W]" in text          # `width` is a built-in function: W instead


def test_the_command_line_writes_the_file_and_its_checkpoint_and_says_what_next(tmp_path):
    path = write(tmp_path, model([conv("c"), helper.make_node("Relu", ["c"], ["y"], name="/act/Relu")], [W]))
    r = subprocess.run([sys.executable, "-m", "cnnc", "import", str(path), "-o", str(tmp_path / "net.cnn")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote " in r.stdout and "net.cnn (network M: " in r.stdout and "net.npz (the weights" in r.stdout
    assert "108 parameters" in r.stdout and "the MACs depend on" not in r.stdout
    assert (tmp_path / "net.npz").exists()
    r = subprocess.run([sys.executable, "-m", "cnnc", "import", str(path), "-o", str(tmp_path / "only.cnn"),
                        "--no-weights"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not (tmp_path / "only.npz").exists() and "the weights" not in r.stdout
