"""Exported models predict what `cnnc predict` predicts: the checkpoint's preprocessing and class names travel.

For every preprocessing record kind of the train vocabulary (`PREPROCESS`), alone, and for a chain
of all of them, a small network is trained for one epoch; then `cnnc predict`, the exported PyTorch
module, the `--emit numpy` module and ONNX Runtime on the exported model give the same class
probabilities on photographs (the shipped CC0 photos, resized to the network's 32x32 and saved as
PNG files). With `--raw` the models leave the preprocessing out: fed the inputs after the records
(runtime/preprocess.py `apply`), they give the same probabilities again. The class names travel as
the modules' `CLASSES` and the ONNX model's `metadata_props`, through `py_literal` when they are hostile.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnc
from cnnc.cli import main as cli
from cnnc.compiler.train_vocab import PREPROCESS, REQUIRED
from cnnc.runtime import checkpoint, preprocess
from cnnc.runtime.data.images import read_image
from cnnc.runtime.export import codegen, onnx as onnx_export, torch_module

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[3]
PHOTOS = [ROOT / "runtime" / "datasets" / "images" / "camera.png", ROOT / "runtime" / "datasets" / "images" / "chelsea.png",
          *sorted(Path("/work/shared/data/images").glob("*.png"))]
# A value for each option an entry requires (the test fails by name for an entry missing here).
REQUIRED_VALUES = {("scale", "factor"): "0.5"}
CLASSES = ["cat", "camera", "other"]


def record_text(name: str) -> str:
    """`name(option = value, ...)` with a value for each required option."""
    entry = PREPROCESS.entries[name]
    needed = [o.name for o in entry.options if o.default is REQUIRED]
    missing = [o for o in needed if (name, o) not in REQUIRED_VALUES]
    assert not missing, f"give REQUIRED_VALUES a value of {name}'s {missing}"
    args = ", ".join(f"{o} = {REQUIRED_VALUES[(name, o)]}" for o in needed)
    return f"{name}({args})" if args else name


# case -> (the train section's preprocess value, the records it makes)
CASES = {name: (record_text(name), [name]) for name in PREPROCESS.entries}
CASES["all in a chain"] = ("[" + ", ".join(record_text(n) for n in PREPROCESS.entries) + "]", list(PREPROCESS.entries))
CASES["normalize, given"] = ("normalize(mean = (0.5, 0.4, 0.3), std = (0.2, 0.25, 0.3))", ["normalize"])


def network(preprocessing: str) -> str:
    classes = ", ".join(f'"{c}"' for c in CLASSES)
    return f"""network Tiny(classes = 3) {{
    input x: [3, 32, 32]
    x -> conv(4, 3, stride = 2, pad = 1) -> batchnorm -> relu -> global_avgpool -> flatten -> linear(classes)
}}
train Tiny {{
    data = synthetic(n = 48)
    epochs = 1
    batch = 16
    preprocess = {preprocessing}
    classes = [{classes}]
}}
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """Each photograph resized to 32x32 RGB, as a PNG file (what a user hands `cnnc predict`)."""
    from PIL import Image
    folder = tmp_path_factory.mktemp("photos")
    out = []
    for k, path in enumerate(PHOTOS):
        target = folder / f"{k}-{path.name}"
        Image.open(path).convert("RGB").resize((32, 32)).save(target)
        out.append(str(target))
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained(tmp_path: Path, preprocessing: str):
    net = cnnc.compile(network(preprocessing))
    run = cnnc.train(net, out=tmp_path / "run", progress=False, log=lambda line: None)
    return net, run.last


class Exported:
    """The three exports of one checkpoint, each as a function images [N, 3, 32, 32] -> probabilities."""

    def __init__(self, net, ck: Path, folder: Path, raw: bool = False):
        tag = "raw" if raw else "full"
        folder.mkdir()
        torch_module.export(net.compiled, str(folder / f"t_{tag}.py"), str(ck), raw=raw)
        codegen.emit(net.compiled, str(folder / f"n_{tag}.py"), str(ck), raw=raw)
        onnx_export.export_onnx(net.compiled, str(folder / f"o_{tag}.onnx"), str(ck), raw=raw)
        self.torch = load(folder / f"t_{tag}.py", f"exported_torch_{folder.parent.name}_{tag}")
        self.model = self.torch.Tiny()
        self.model.load_state_dict(torch.load(folder / f"t_{tag}.pt"))
        self.model.eval()
        self.numpy = load(folder / f"n_{tag}.py", f"exported_numpy_{folder.parent.name}_{tag}")
        self.onnx = ort.InferenceSession(str(folder / f"o_{tag}.onnx"))
        self.metadata = dict(self.onnx.get_modelmeta().custom_metadata_map)

    def probabilities(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            by_torch = self.model(torch.from_numpy(x)).numpy()
        return {"torch": softmax(by_torch), "numpy": softmax(self.numpy.forward(x)),
                "onnx": softmax(self.onnx.run(None, {"x": x})[0])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exports_predict_what_cnnc_predict_predicts(tmp_path, photos, case):
    preprocessing, ops = CASES[case]
    net, ck = trained(tmp_path, preprocessing)
    predicted = cnnc.predict(net, ck, photos)
    assert predicted.classes == CLASSES
    x = np.stack([read_image(p) for p in photos]).astype(np.float32)   # the files as cnnc reads them
    records = preprocess.check_records(checkpoint.load(ck).preprocess, "checkpoint")
    assert [r["op"] for r in records] == ops

    full = Exported(net, ck, tmp_path / "full")
    for engine, prob in full.probabilities(x).items():
        np.testing.assert_allclose(prob, predicted.probabilities, atol=2e-6, err_msg=engine)
    assert full.torch.CLASSES == full.numpy.CLASSES == CLASSES
    assert full.torch.PREPROCESS == full.numpy.PREPROCESS == records
    assert json.loads(full.metadata["classes"]) == CLASSES
    assert json.loads(full.metadata["preprocess"]) == records and full.metadata["preprocess_in_graph"] == "true"

    raw = Exported(net, ck, tmp_path / "raw", raw=True)
    prepared = preprocess.apply(records, x)
    for engine, prob in raw.probabilities(prepared).items():
        np.testing.assert_allclose(prob, predicted.probabilities, atol=2e-6, err_msg=f"{engine} --raw")
    assert raw.metadata["preprocess_in_graph"] == "false" and raw.torch.PREPROCESS == records
    if not np.allclose(prepared, x):   # left out: raw inputs give other numbers
        assert not np.allclose(raw.probabilities(x)["onnx"], predicted.probabilities, atol=1e-4)


def test_the_affine_map_is_the_records_applied_one_by_one():
    """preprocess.affine against each record done by hand, in float64, in order."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5, 3, 4, 4))
    records = [{"op": "center", "mean": [0.1, 0.2, 0.3]}, {"op": "scale", "factor": 2.5},
               {"op": "normalize", "mean": [0.5], "std": [0.2, 0.4, 0.8]}]
    by_hand = (x - np.array([0.1, 0.2, 0.3])[None, :, None, None]) * 2.5
    by_hand = (by_hand - 0.5) / np.array([0.2, 0.4, 0.8])[None, :, None, None]
    scale, shift = preprocess.affine(records, 3)
    np.testing.assert_allclose(x * scale[None, :, None, None] + shift[None, :, None, None], by_hand, rtol=1e-12)
    np.testing.assert_allclose(preprocess.apply(records, x.astype(np.float32)), by_hand, rtol=1e-6, atol=1e-6)


def test_hostile_class_names_reach_the_modules_as_data(tmp_path, photos):
    """Class names come from the checkpoint: every generated file carries them through py_literal."""
    net, ck = trained(tmp_path, "normalize")
    hostile = ['"""; import os; os.mkdir("PWNED") #', "a'b\nc", "\\x00\u2028</script>"]
    loaded = checkpoint.load(ck)
    checkpoint.save_training_state(ck, loaded.params, loaded.optimizer, {**loaded.meta, "classes": hostile})
    full = Exported(net, ck, tmp_path / "hostile")
    assert full.torch.CLASSES == full.numpy.CLASSES == hostile
    assert json.loads(full.metadata["classes"]) == hostile
    assert not Path("PWNED").exists() and not (tmp_path / "PWNED").exists()


def test_the_commands_say_what_the_model_does_with_its_input(tmp_path, photos, capsys):
    net, ck = trained(tmp_path, "[center, normalize]")
    source = tmp_path / "tiny.cnn"
    source.write_text(network("[center, normalize]"))
    for argv in (["export", str(source), "--to", "torch", "-o", str(tmp_path / "m.py"), "--checkpoint", str(ck)],
                 ["export", str(source), "--to", "onnx", "-o", str(tmp_path / "m.onnx"), "--checkpoint", str(ck)],
                 ["compile", str(source), "--emit", "numpy", "-o", str(tmp_path / "n.py"), "--checkpoint", str(ck)]):
        assert cli(argv) == 0
        assert "applies the training's preprocessing (center, normalize) to its input" in capsys.readouterr().out
        assert cli(argv + ["--raw"]) == 0
        assert "takes preprocessed inputs (--raw)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["export", "{src}", "--to", "onnx", "-o", "{tmp}/m.onnx", "--raw"],
                                  ["compile", "{src}", "--emit", "numpy", "-o", "{tmp}/m.py", "--raw"]])
def test_raw_without_a_checkpoint_is_refused(tmp_path, capsys, argv):
    source = tmp_path / "tiny.cnn"
    source.write_text(network("normalize"))
    assert cli([a.format(src=source, tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnnc: error: --raw: leaves out the preprocessing a checkpoint recorded") \
        or "error: --raw: leaves out the preprocessing" in err
    assert "--checkpoint" in err and not list(tmp_path.glob("m.*"))


def test_a_checkpoint_of_other_channels_is_refused_with_the_hint(tmp_path):
    net, ck = trained(tmp_path, "normalize")
    grey = cnnc.compile(network("normalize").replace("[3, 32, 32]", "[1, 32, 32]"))
    with pytest.raises(cnnc.CnncError, match="does not fit Tiny: the preprocessing has 3 std values, the inputs "
                                             "have 1 channel\n") as info:
        codegen.preparation(grey.compiled.net, str(ck))
    assert "--raw" in info.value.hint
    assert not codegen.preparation(grey.compiled.net, str(ck), raw=True).in_model


def teardown_module(module):
    shutil.rmtree(Path("PWNED"), ignore_errors=True)
    for name in [n for n in sys.modules if n.startswith("exported_")]:
        del sys.modules[name]
