"""Training runs: resume is exact, checkpoints survive failures, data is checked, outputs are right."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError
from cnnc.runtime import checkpoint
from cnnc.runtime.checkpoint import load_checkpoint
from cnnc.runtime.train.losses import Objective
from cnnc.runtime.train.trainer import Trainer

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
    assert set(lines[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                             "layers"}
    assert lines[-1].keys() == {"split", "loss", "accuracy", "confusion", "classes", "precision", "recall", "f1",
                                "macro_f1"}
    arrays, meta = load_checkpoint(tmp_path / "last.npz")
    assert lines[-1]["classes"] == meta["classes"] and len(lines[-1]["classes"]) == len(lines[-1]["confusion"])
    assert 0 <= lines[-1]["accuracy"] <= 1
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

    # 5 batches of 2 shards an epoch: NaN in the second epoch
    t.objective = Objective({c.net.outputs[0]: Explodes()}, {c.net.outputs[0]: 1.0})
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
    assert main(["run", str(path), "--out", str(out), "--allow", "all", "--epochs", "2"]) == 0
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


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("norm", ["identity", "batchnorm"])
def test_blas_runs_on_no_more_threads_than_the_run_has(compile_src, tmp_path, threads, norm):
    """--threads N holds BLAS to N threads in a training step and in predictions: with one thread the
    batch runs whole (a batchnorm network) or shard after shard, never with BLAS on every core."""
    from dataclasses import replace
    from threadpoolctl import threadpool_info
    c = compile_src(TINY.format(epochs=1, extra="").replace("dropout(0.2)", norm), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, threads=threads)
    seen = []
    step = next(s for s in t.plan.steps if s.op == "conv")

    def forward(*args):
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return kernel.forward(*args)
    kernel = step.kernel
    t.plan.steps[t.plan.steps.index(step)] = replace(step, kernel=type(kernel)(forward, kernel.backward))
    t.engine.forward_backward(t.ds.train.x[:16], t.ds.train.y[:16], t.objective, np.random.default_rng(0))
    t.engine.predict(t.ds.train.x[:1])
    t.engine.close()
    assert seen and max(seen) <= threads and (threads == 1 or min(seen) == 1), seen


def test_sharded_gradients_equal_whole_batch_gradients(compile_src, tmp_path):
    c = compile_src(TINY.format(epochs=1, extra="").replace("dropout(0.2)", "identity"), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, threads=2)
    x, y = t.ds.train.x[:16], t.ds.train.y[:16]
    loss, _, _ = t.engine.forward_backward(x, y, t.objective, np.random.default_rng(0))
    grads = t.engine._grads
    from cnnc.runtime.train.numpy_engine import _shard
    whole_loss, _, whole = _shard(t.plan, t.objective, x, y, np.random.default_rng(0), 1.0)
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    for k in whole:
        np.testing.assert_allclose(grads[k], whole[k], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ the trainer loses nothing
def _strict_lines(path):
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _finite_checkpoint(path):
    ck = checkpoint.load(path)
    return all(np.isfinite(v).all() for v in list(ck.params.values()) + list(ck.optimizer.values()))


@pytest.mark.parametrize("lr", ["1e300", "1e20"])
def test_an_exploding_run_writes_no_non_finite_checkpoint_and_names_only_real_files(tmp_path, write, capsys, lr):
    path = write(TINY.format(epochs=3, extra=""))
    out = tmp_path / "run"
    code = main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all", "--lr", lr])
    text = capsys.readouterr().out
    stopped = [l for l in text.splitlines() if l.startswith("stopped:")]
    assert code == 1 and len(stopped) == 1, text
    assert "became" in stopped[0]
    for name in ("last.npz", "best.npz"):
        if (out / name).exists():
            assert _finite_checkpoint(out / name), name
    if "the last good checkpoint is" in stopped[0]:
        assert (out / "last.npz").exists() and str(out / "last.npz") in stopped[0]
    else:
        assert "no checkpoint was written" in stopped[0] and not (out / "last.npz").exists()
    _strict_lines(out / "metrics.jsonl")  # strict JSON: no bare NaN or Infinity


def test_weights_that_turn_non_finite_with_a_finite_loss_are_never_saved(compile_src, tmp_path):
    c = tiny(compile_src, epochs=3)
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None)
    real, calls = t.optimizer.step, []

    def poisons_the_last_step_of_epoch_two(grads, lr=None):
        real(grads, lr)
        calls.append(1)
        if len(calls) == 10:  # 5 batches an epoch: the last step of epoch 2, after which no loss is computed
            t.plan.params["linear.weight"][0, 0] = np.inf

    t.optimizer.step = poisons_the_last_step_of_epoch_two
    result = t.run()
    assert result.stopped == "the weights became non-finite in epoch 2 (parameter 'linear.weight')"
    assert checkpoint.load(tmp_path / "last.npz").epoch == 1 and _finite_checkpoint(tmp_path / "last.npz")
    assert _finite_checkpoint(tmp_path / "best.npz")


def test_metrics_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
    from cnnc.runtime.train.rundir import MetricsFile
    m = MetricsFile(tmp_path / "metrics.jsonl", 0)
    m.append({"epoch": 1, "train_loss": float("nan"), "val_loss": float("inf"), "lr": 0.1})
    assert (tmp_path / "metrics.jsonl").read_text() == \
        '{"epoch": 1, "train_loss": null, "val_loss": null, "lr": 0.1}\n'


def test_a_second_run_into_a_used_directory_is_refused_unless_resumed_or_overwritten(tmp_path, write, capsys):
    path = write(TINY.format(epochs=1, extra=""))
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "--quiet", "--allow", "all"]
    assert main(args) == 0
    before = {n: (out / n).read_bytes() for n in ("metrics.jsonl", "best.npz", "last.npz")}
    capsys.readouterr()
    assert main(args) == 1
    refused = capsys.readouterr()
    err = refused.err
    assert refused.out == ""  # refused before it announces a run
    assert f"error: run directory '{out}' already holds a run (last.npz, best.npz, metrics.jsonl)" in err
    assert "continue it with --resume, replace it with --overwrite, or choose another --out" in err
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing was touched
    assert main(args + ["--overwrite"]) == 0
    assert [r.get("epoch") for r in _strict_lines(out / "metrics.jsonl")] == [1, None]
    assert main(args + ["--resume", "--epochs", "2"]) == 0
    assert [r.get("epoch") for r in _strict_lines(out / "metrics.jsonl")] == [1, 2, None]


def test_a_locked_run_directory_is_refused_at_once(tmp_path, write, capsys):
    import fcntl
    import os
    path = write(TINY.format(epochs=1, extra=""))
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another run holds the directory
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all"]) == 1
        err = capsys.readouterr().err
        assert f"error: run directory '{out}' is in use by another cnnc run (pid 4242)" in err
        assert sorted(os.listdir(out)) == [".lock"]
    assert main(["run", str(path), "--out", str(out), "--quiet", "--allow", "all"]) == 0  # released: it runs


def test_a_symlinked_metrics_file_is_never_written_through(tmp_path, write, capsys):
    path = write(TINY.format(epochs=1, extra=""))
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "--quiet", "--allow", "all"]
    assert main(args) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(victim)
    capsys.readouterr()
    assert main(args + ["--resume", "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert f"error: metrics file '{out / 'metrics.jsonl'}' is a symbolic link; cnnc does not write through links" \
        in err
    assert victim.read_text() == "precious\n"
    assert main(args + ["--overwrite"]) == 0  # the link is replaced, its target left alone
    assert victim.read_text() == "precious\n" and not (out / "metrics.jsonl").is_symlink()


def test_an_out_that_is_not_a_usable_directory_is_one_line(tmp_path, write, capsys):
    path = write(TINY.format(epochs=1, extra=""))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["run", str(path), "--out", str(a_file), "--quiet", "--allow", "all"]) == 1
    err = capsys.readouterr().err
    assert f"error: --out '{a_file}' is not a directory" in err and "Traceback" not in err
    assert main(["run", str(path), "--out", str(a_file / "sub"), "--quiet", "--allow", "all"]) == 1
    err = capsys.readouterr().err
    assert f"--out '{a_file / 'sub'}' cannot be used: not a directory" in err and "Traceback" not in err


def test_predicting_from_files_equals_predicting_from_the_data_set(tmp_path, capsys):
    """The training normalisation is one record: written by the trainer, replayed by predict."""
    from pathlib import Path

    from PIL import Image

    from cnnc.runtime.data.standard import load_mnist10k
    lenet = str(Path(__file__).resolve().parents[3] / "examples" / "lenet5.cnn")
    out = tmp_path / "run"
    assert main(["run", lenet, "--epochs", "1", "--limit", "512", "--out", str(out), "--quiet"]) == 0
    ck = checkpoint.load(out / "last.npz")
    assert [r["op"] for r in ck.preprocess] == ["normalize"] and ck.preprocess[0]["std"][0] < 0.5
    digits = np.rint(load_mnist10k().test.x[:8, 0] * 255).astype(np.uint8)
    pngs = []
    for i, d in enumerate(digits):
        pngs.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(d).save(pngs[-1])
    np.save(tmp_path / "digits.npy", digits)
    capsys.readouterr()

    def guesses(*argv):
        assert main(["predict", lenet, str(out / "last.npz"), *argv, "--top", "10"]) == 0
        return [line.split(": ", 1)[1].split("  [label")[0] for line in capsys.readouterr().out.splitlines()]

    from_data = guesses("--limit", "8")
    assert len(from_data) == 8
    assert guesses(*pngs) == from_data
    assert guesses(str(tmp_path / "digits.npy")) == from_data


def test_engine_predictions_do_not_depend_on_the_thread_count(compile_src, tmp_path):
    """Eval-mode predictions are cut into a shard per thread (samples never meet in eval): equal to
    the single-thread ones, for a batch smaller than the thread count too."""
    c = compile_src(TINY.format(epochs=1, extra=""), allow={"all"})
    engines = [Trainer(c, c.net.train, tmp_path / str(n), progress=False, log=lambda s: None, threads=n).engine
               for n in (1, 2, 3)]
    first = engines[0].plan.params  # same seed: same initial weights in every engine
    assert all(np.array_equal(first[k], e.plan.params[k]) for e in engines[1:] for k in first)
    xb = np.random.default_rng(0).standard_normal((11, *c.net.shapes[engines[0].plan.inputs[0]])).astype(np.float32)
    out = c.net.outputs[0]
    one = engines[0].predict(xb)[out]
    for e in engines[1:]:
        np.testing.assert_allclose(e.predict(xb)[out], one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(e.predict(xb[:2])[out], one[:2], rtol=1e-5, atol=1e-6)
        e.close()


def test_in_parallel_raises_a_jobs_error_and_gives_blas_its_threads_back():
    from concurrent.futures import ThreadPoolExecutor
    from threadpoolctl import threadpool_info
    from cnnc.runtime.kernels import shards

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    before = blas()

    def fail():
        raise ValueError("shard 1 failed")
    with ThreadPoolExecutor(2) as pool:
        assert shards.in_parallel(pool, [lambda: blas()[0], lambda: 7]) == [1, 7]   # BLAS at 1 inside
        with pytest.raises(ValueError, match="shard 1 failed"):
            shards.in_parallel(pool, [lambda: 1, fail])
    assert blas() == before
    assert shards.bounds(7, 3) == [(0, 2), (2, 5), (5, 7)] and shards.bounds(2, 2) == [(0, 1), (1, 2)]


# ------------------------------------------------------------------ what ran is shown and kept
def test_the_resolved_record_is_printed_and_kept_in_every_checkpoint(tmp_path, write, capsys):
    path = write(TINY.format(epochs=1, extra="lr = 0.2").replace("sgd(lr = 0.05, momentum = 0.9, nesterov = true, "
                                                                  "weight_decay = 0.0001)", "adam"))
    assert main(["run", str(path), "--train", "optimizer=rmsprop", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("train: "))
    assert line == ("train: rmsprop(lr = 0.2), cosine; 1 epoch of batch 16, seed 7; synthetic(n = 96, classes = 3, "
                    "val = 0.25); hflip -> gaussian_noise(std = 0.05); loss cross_entropy")
    c = compile_file(path)
    for name in ("last.npz", "best.npz"):
        meta = checkpoint.load(tmp_path / "r" / name).meta
        assert meta["train"]["optimizer"] == {"name": "rmsprop", "lr": 0.2, "alpha": 0.99, "eps": 1e-08,
                                              "weight_decay": 0.0, "momentum": 0.0, "centered": False}
        assert meta["train"]["epochs"] == 1 and meta["train"]["augment"][0] == {"name": "hflip", "p": 0.5}
        assert meta["train"]["data"]["name"] == "synthetic" and meta["train"]["val"] == 0.25
    assert c.net.train.lr == 0.2 and meta["history"][0]["lr"] == 0.2


@pytest.mark.parametrize("engine", ["numpy", pytest.param("torch", marks=pytest.mark.torch)])
def test_a_rate_before_its_optimizer_is_the_rate_that_steps(compile_src, tmp_path, engine):
    """Issue 20, first item: `lr = 0.1` then `optimizer = adam` ran at adam's 0.01."""
    if engine == "torch":
        pytest.importorskip("torch")
    src = TINY.format(epochs=1, extra="").replace("optimizer = sgd(lr = 0.05, momentum = 0.9, nesterov = true, "
                                                  "weight_decay = 0.0001)", "lr = 0.1\n    optimizer = adam")
    c = compile_src(src, allow={"all"})
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, engine=engine)
    assert t.base_lr == 0.1
    if engine == "torch":
        assert t.engine.optimizer.param_groups[0]["lr"] == 0.1
        t.engine.step(t.schedule.lr(0))
        assert t.engine.optimizer.param_groups[0]["lr"] == 0.1
    else:
        assert t.engine.optimizer.lr == 0.1


LONE = """
network N {
    input x: [4]
    x -> linear(8) -> batchnorm -> relu -> linear(2)
}
train N {
    data = npz("DATA")
    loss = cross_entropy
    epochs = 1
    batch = 64
    EXTRA
}
"""


@pytest.mark.parametrize("engine", ["numpy", pytest.param("torch", marks=pytest.mark.torch)])
def test_a_last_batch_of_one_sample_into_batchnorm_is_refused_at_batch_or_dropped(tmp_path, write, capsys, engine):
    """Issue 20: 193 samples in batches of 64 left one sample for a batchnorm on flat features, an
    internal error on both engines. Now it is refused before training, at `batch`, or `drop_last` drops it."""
    if engine == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((193, 4)).astype(np.float32), y=rng.integers(0, 2, 193))
    path = write(LONE.replace("DATA", str(tmp_path / "d.npz")).replace("EXTRA", ""))
    argv = ["run", str(path), "--engine", engine]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:9:5: error: the last batch of each epoch holds 1 sample (193 training samples "
                          "in batches of 64)") and "drop_last = true" in err and "internal error" not in err
    assert not (tmp_path / "a" / "last.npz").exists()
    assert main(argv + ["--out", str(tmp_path / "b"), "--train", "drop_last=true"]) == 0
    assert "1 epoch of batch 64 (a last smaller batch dropped)" in capsys.readouterr().out
    assert main(argv + ["--out", str(tmp_path / "c"), "--batch", "1"]) == 1
    assert "batch = 1: batchnorm 'batchnorm' normalises [8] features over the batch, which needs at least 2 samples" \
        in capsys.readouterr().err


def test_nesterov_without_momentum_is_refused_at_its_line_on_either_engine(tmp_path, write, capsys):
    path = write(LONE.replace('npz("DATA")', "synthetic(n = 64, classes = 2)").replace("batchnorm -> ", "")
                 .replace("EXTRA", "optimizer = sgd(nesterov = true)"))
    for engine in ("numpy", "torch"):
        assert main(["run", str(path), "--engine", engine, "--out", str(tmp_path / engine), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{path}:10:5: error: sgd(nesterov = true) needs momentum > 0 and dampening 0"), err
    assert main(["check", str(path)]) == 1


def test_synthetic_regression_for_an_image_network_is_denoising_and_trains(compile_src, tmp_path):
    """Issue 20: `synthetic(kind = regression)` refused an image network. Its images are now noisy blobs
    whose targets are the clean ones (the output's shape), and a conv network learns them with mse."""
    c = compile_src("""
network Denoise {
    input x: [1, 12, 12]
    x -> conv(8, 3, pad = 1) -> relu -> conv(1, 3, pad = 1)
}
train Denoise {
    data = synthetic(n = 128, kind = regression, val = 0.25)
    loss = mse
    optimizer = adam(lr = 0.01)
    epochs = 6
    batch = 16
}
""")
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None, threads=1)
    assert t.ds.train.y.shape[1:] == (1, 12, 12) and t.ds.train.y.dtype == np.float32
    noise = float(((t.ds.val.x - t.ds.val.y) ** 2).mean())       # the inputs themselves as the guess
    history = t.run().history
    assert history[-1]["val_loss"] < 0.5 * noise < history[0]["train_loss"]
