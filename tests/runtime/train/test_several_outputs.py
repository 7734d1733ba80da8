"""A network with several outputs trains every one of them, on both engines, with a metric per output.

Issue 20 found `output cls, box` training `cls` alone: `box`'s weights kept their initial values. The
class-level test: for every output of a multi-output network, the parameters only it depends on have
changed after an epoch (numpy and torch engines); the losses are summed with their weights; each output's
figures reach metrics.jsonl and the epoch line; a file that would leave an output untrained is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.driver import compile_file
from cnnc.compiler.train_spec import Spec, set_key, with_data
from cnnc.dsl.source import CnncError
from cnnc.runtime import checkpoint
from cnnc.runtime.train.trainer import Trainer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

THREE = """
network Three {
    input x: [1, 8, 8]
    f = x -> conv(4, 3, pad = 1) -> relu -> maxpool(2)
    f -> flatten -> a: linear(3)
    f -> flatten -> b: linear(2)
    f -> conv(1, 3, pad = 1) -> c: upsample(2)
    output a, b, c
}
train Three {
    data         = npz("DATA")
    loss         = [cross_entropy, 0.5 * mse + smooth_l1, mse]
    loss_weights = [1, 2, 0.5]
    optimizer    = sgd(lr = 0.1)
    epochs       = 1
    batch        = 8
    val          = 0.25
}
"""


@pytest.fixture
def three(tmp_path, write):
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "three.npz", x_train=x, y_train_a=rng.integers(0, 3, 32),
             y_train_b=rng.standard_normal((32, 2)).astype(np.float32), y_train_c=x * 0.5)
    return write(THREE.replace("DATA", str(tmp_path / "three.npz")))


def _heads(net) -> dict[str, set[str]]:
    """Each output's own layers: those it depends on and no other output does."""
    ancestors = {o: nx.ancestors(net.graph, o) | {o} for o in net.outputs}
    return {o: a - set().union(*(ancestors[p] for p in net.outputs if p != o)) for o, a in ancestors.items()}


@pytest.mark.parametrize("engine", ["numpy", pytest.param("torch", marks=pytest.mark.torch)])
@pytest.mark.parametrize("example", ["three", "two_heads.cnn"])
def test_every_output_has_changed_weights_after_an_epoch(three, tmp_path, engine, example):
    if engine == "torch":
        pytest.importorskip("torch")
    path = three if example == "three" else EXAMPLES / example
    c = compile_file(path)
    cfg = c.net.train
    if example != "three":   # an epoch on a few samples
        cfg = set_key(set_key(cfg, "epochs", 1), "data", Spec("synthetic", (), (("n", 64), ("val", 0.25))))
    t = Trainer(c, cfg, tmp_path / "run", progress=False, log=lambda s: None, threads=1, engine=engine)
    before = {k: v.copy() for k, v in t.engine.params().items()}
    t.run()
    after = t.engine.params()
    for output, layers in _heads(c.net).items():
        keys = [k for k in after if k.rsplit(".", 1)[0] in layers]
        assert keys, output
        assert any(not np.array_equal(before[k], after[k]) for k in keys), f"output {output} did not train"


def test_the_total_is_the_weighted_sum_and_each_output_is_reported(three, tmp_path, capsys):
    c = compile_file(three)
    t = Trainer(c, c.net.train, tmp_path / "run", progress=False, log=print, threads=1)
    xb, yb = t.ds.train.x[:8], {k: v[:8] for k, v in t.ds.train.y.items()}
    preds = t.engine.predict(xb)
    total, grads, each = t.objective(preds, yb)
    a = t.objective.losses["a"](preds["a"], yb["a"])[0]
    mse = ((preds["b"] - yb["b"]) ** 2).mean()
    d = np.abs(preds["b"] - yb["b"])
    huber = np.where(d < 1, 0.5 * d * d, d - 0.5).mean()
    cc = ((preds["c"] - yb["c"]) ** 2).mean()
    assert each["b"] == pytest.approx(0.5 * mse + huber, rel=1e-6)
    assert total == pytest.approx(a + 2 * (0.5 * mse + huber) + 0.5 * cc, rel=1e-6)
    assert set(grads) == {"a", "b", "c"}
    t.run()
    out = capsys.readouterr().out
    assert "[a: loss" in out and "[b: loss" in out and "[c: loss" in out
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(record["outputs"]) == {"a", "b", "c"}
    assert record["outputs"]["a"]["train_accuracy"] is not None and record["outputs"]["b"]["train_accuracy"] is None
    assert record["outputs"]["c"]["val_loss"] is not None and record["train_accuracy"] is None
    meta = checkpoint.load(tmp_path / "run" / "last.npz").meta
    assert meta["train"]["loss"]["b"] == [
        {"weight": 0.5, "name": "mse"}, {"weight": 1.0, "name": "smooth_l1", "beta": 1.0}]
    assert meta["train"]["loss_weights"] == [1, 2, 0.5]


def test_the_engines_agree_on_a_first_step_of_several_outputs(three, tmp_path):
    pytest.importorskip("torch")
    c = compile_file(three)
    runs = [Trainer(c, c.net.train, tmp_path / e, progress=False, log=lambda s: None, threads=1, engine=e)
            for e in ("numpy", "torch")]
    x, y = runs[0].ds.train.x[:8], {k: v[:8] for k, v in runs[0].ds.train.y.items()}
    losses = [t.engine.forward_backward(x, y, t.objective, np.random.default_rng(0)) for t in runs]
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-5)
    for o in ("a", "b", "c"):
        assert losses[0][2][o] == pytest.approx(losses[1][2][o], rel=1e-5)
    for t in runs:
        t.engine.step(0.1)
    pa, pb = runs[0].engine.params(), runs[1].engine.params()
    assert max(float(np.abs(pa[k] - pb[k]).max()) for k in pa) < 1e-5


@pytest.mark.parametrize("line, message", [
    ("loss = cross_entropy", "the network has 3 outputs (a, b, c); give a loss for each, in that order"),
    ("loss = [cross_entropy, mse]", "2 losses for 3 outputs (a, b, c)"),
    ("loss = [cross_entropy, mse, mse]\n    loss_weights = [1, 2]", "2 loss weights for 3 losses"),
    ("loss = [cross_entropy, mse, mse]\n    early_stop = early_stop(monitor = val_accuracy)",
     "early_stop watches val_accuracy, but the network has 3 outputs, each with its own accuracy"),
])
def test_a_file_that_would_leave_an_output_untrained_is_refused_at_its_line(write, capsys, line, message):
    source = THREE.replace("    loss         = [cross_entropy, 0.5 * mse + smooth_l1, mse]\n"
                           "    loss_weights = [1, 2, 0.5]", "    " + line)
    path = write(source)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and message in err, err


def test_several_targets_are_named_after_their_outputs(three, tmp_path):
    c = compile_file(three)
    rng = np.random.default_rng(1)
    x = rng.random((8, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "short.npz", x_train=x, y_train_a=rng.integers(0, 3, 8), y_train_b=np.zeros((8, 2)))
    with pytest.raises(CnncError) as e:
        Trainer(c, with_data(c.net.train, str(tmp_path / "short.npz")), tmp_path / "r", progress=False)
    assert "no targets for output c; the data has targets for a, b" in e.value.message
    np.savez(tmp_path / "one.npz", x_train=x, y_train=rng.integers(0, 3, 8))
    with pytest.raises(CnncError) as e:
        Trainer(c, with_data(c.net.train, str(tmp_path / "one.npz")), tmp_path / "r", progress=False)
    assert "the network has 3 outputs (a, b, c), but the data has one target per sample" in e.value.message
    assert "y_train_NAME" in e.value.hint


def test_the_two_heads_example_trains_both_heads(tmp_path, capsys):
    assert main(["run", str(EXAMPLES / "two_heads.cnn"), "--epochs", "3", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    lines = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    first, last = lines[0]["outputs"], lines[2]["outputs"]
    assert last["cls"]["val_accuracy"] > 0.9                          # the classifier learns
    assert last["box"]["val_loss"] < 0.5 * first["box"]["train_loss"]  # and so does the box regressor
    assert set(lines[-1]["outputs"]) == {"cls", "box"} and lines[-1]["split"] == "test"


def test_synthetic_data_for_several_outputs_of_a_flat_input_is_refused_not_an_internal_error(write, tmp_path,
                                                                                              capsys):
    path = write("network T {\n    input x: [4]\n    x -> a: linear(3)\n    x -> b: linear(2)\n    output a, b\n}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet", "--train", "loss=[mse, mse]",
                 "--train", "data=synthetic(n = 32)"]) == 1
    err = capsys.readouterr().err
    assert "synthetic data for a network with several outputs is made of images, but its input is [4]" in err
    assert "internal error" not in err
