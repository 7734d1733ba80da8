"""Training runs: resume is exact, checkpoints survive failures, data is checked, outputs are right."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.dsl.source import CnncError
from cnnc.runtime.checkpoint import load_checkpoint
from cnnc.runtime.train import Trainer

TINY = """
network Tiny {{
    input x: [1, 8, 8]
    x -> conv(4, 3, pad = 1) -> relu -> dropout(0.2) -> maxpool(2) -> flatten -> linear(3)
}}
train Tiny {{
    data      = synthetic(n = 96, classes = 3, val = 0.25)
    epochs    = {epochs}
    batch     = 16
    loss      = cross_entropy
    optimizer = sgd(lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.0001)
    schedule  = cosine
    augment   = [hflip, gaussian_noise(std = 0.05)]
    seed      = 7
    {extra}
}}
"""


def tiny(compile_src, epochs=3, extra=""):
    return compile_src(TINY.format(epochs=epochs, extra=extra), allow={"all"})


class Interrupt(Exception):
    pass


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(compile_src, tmp_path):
    c = tiny(compile_src)
    straight = Trainer(c, c.net.train, tmp_path / "a", progress=False, log=lambda s: None)
    straight.run()
    interrupted = Trainer(c, c.net.train, tmp_path / "b", progress=False, log=lambda s: None)
    real = interrupted.train_epoch

    def dies_in_third_epoch(epoch):
        if epoch == 2:
            raise Interrupt
        return real(epoch)

    interrupted.train_epoch = dies_in_third_epoch
    with pytest.raises(Interrupt):
        interrupted.run()
    assert load_checkpoint(tmp_path / "b" / "last.npz")[1]["epoch"] == 2
    resumed = Trainer(c, c.net.train, tmp_path / "b", progress=False, log=lambda s: None)
    resumed.run(resume=True)
    for key, value in straight.plan.params.items():
        assert np.array_equal(value, resumed.plan.params[key]), key
    lines = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [l.get("epoch") for l in lines] == [1, 2, 3, None] and lines[-1]["split"] == "test"
    a_lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    strip = lambda ls: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in ls]
    assert strip(a_lines) == strip((tmp_path / "b" / "metrics.jsonl").read_text().splitlines())


def test_same_seed_same_run_bit_for_bit(compile_src, tmp_path):
    c = tiny(compile_src, epochs=1)
    runs = []
    for name in ("a", "b"):
        t = Trainer(c, c.net.train, tmp_path / name, progress=False, log=lambda s: None)
        t.run()
        runs.append(t.plan.params)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_metrics_and_checkpoints(compile_src, tmp_path):
    c = tiny(compile_src, epochs=2)
    Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None).run()
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert lines[-1].keys() == {"split", "loss", "accuracy"} and 0 <= lines[-1]["accuracy"] <= 1
    arrays, meta = load_checkpoint(tmp_path / "last.npz")
    assert meta["epoch"] == 2 and meta["network"] == "Tiny"
    assert {"param/conv.weight", "param/linear.bias"} <= set(arrays)
    assert (tmp_path / "best.npz").exists()
    with np.load(tmp_path / "last.npz", allow_pickle=False) as z:  # no pickle anywhere
        assert "param/conv.weight" in z.files


def test_a_non_finite_loss_stops_with_the_last_good_checkpoint(compile_src, tmp_path):
    c = tiny(compile_src, epochs=4)
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None)
    real = t.loss

    class Explodes:
        def __init__(self):
            self.calls = 0

        def __call__(self, pred, target):
            self.calls += 1
            loss, grad = real(pred, target)
            return (float("nan") if self.calls > 12 else loss), grad

        def correct(self, pred, target):
            return real.correct(pred, target)

    t.loss = Explodes()  # 5 batches of 2 shards an epoch: NaN in the second epoch
    result = t.run()
    assert result.stopped.startswith("the loss became nan in epoch 2")
    _, meta = load_checkpoint(tmp_path / "last.npz")
    assert meta["epoch"] == 1


def test_data_that_does_not_fit_is_refused_before_training(compile_src, tmp_path):
    c = compile_src("""
    network RGB {
        input x: [3, 28, 28]
        x -> conv(4, 3) -> flatten -> linear(10)
    }
    train RGB { data = mnist10k }
    """)
    with pytest.raises(CnncError) as info:
        Trainer(c, c.net.train, tmp_path, progress=False)
    assert "3 channels" in str(info.value) or "[3, 28, 28]" in str(info.value)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_early_stopping(compile_src, tmp_path):
    c = tiny(compile_src, epochs=30, extra="early_stop = early_stop(patience = 1)")
    c.net.train.optimizer.__class__  # config is validated by the compiler
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None)
    t.optimizer.step = lambda grads, lr=None: None  # nothing improves: stop after patience epochs
    result = t.run()
    assert result.epochs_run == 2 and result.stopped.startswith("early stop")


def test_cli_run_eval_and_predict(tmp_path, write, capsys):
    path = write(TINY.format(epochs=1, extra=""))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all", "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1/2" in text and "epoch 2/2" in text and "test: loss" in text
    assert main(["run", str(path), "--out", str(out), "--eval", str(out / "best.npz"), "--allow", "all"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", str(path), str(out / "last.npz"), "--limit", "3", "--top", "2", "--allow", "all"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3 and rows[0].startswith("test #0: ") and "[label" in rows[0]


def test_cli_errors(tmp_path, write, capsys):
    path = write(TINY.format(epochs=1, extra=""))
    assert main(["run", str(path), "--out", str(tmp_path), "--resume", "--allow", "all"]) == 1
    assert "--resume: no checkpoint at" in capsys.readouterr().err
    assert main(["run", str(path), "--epochs", "0", "--allow", "all"]) == 1
    assert "--epochs 0: epochs must be a positive integer" in capsys.readouterr().err
    assert main(["run", str(path), "--data", str(tmp_path / "nothing.npz"), "--allow", "all"]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["predict", str(path), str(bad), "--allow", "all"]) == 1
    assert str(bad) in capsys.readouterr().err


def test_results_do_not_depend_on_the_thread_count(compile_src, tmp_path):
    c = tiny(compile_src, epochs=1)  # no batchnorm: batches are split into shards
    runs = []
    for threads in (1, 2):
        t = Trainer(c, c.net.train, tmp_path / str(threads), progress=False, log=lambda s: None, threads=threads)
        assert t.plan.batch_independent
        t.run()
        runs.append(t.plan.params)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_sharded_gradients_equal_whole_batch_gradients(compile_src, tmp_path):
    c = compile_src(TINY.format(epochs=1, extra="").replace("dropout(0.2)", "identity"), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, threads=2)
    x, y = t.ds.train.x[:16], t.ds.train.y[:16]
    loss, _, grads = t._loss_and_grads(x, y, np.random.default_rng(0))
    from cnnc.runtime.train import _shard
    whole_loss, _, whole = _shard(t.plan, t.loss, x, y, np.random.default_rng(0), 1.0)
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    for k in whole:
        np.testing.assert_allclose(grads[k], whole[k], rtol=1e-4, atol=1e-6)
