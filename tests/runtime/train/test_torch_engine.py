"""`cnnc run --engine torch`: the same train section on PyTorch, in one process or several.

The NumPy engine is the reference: for the same seed the torch engine starts
from the same weights, and one step on one batch gives the same loss and the
same updated weights (<= 1e-5) for every optimizer of the train vocabulary,
with L1/L2 penalties and with batchnorm; checkpoints written by either engine
resume on the other; metrics.jsonl has one schema. Several processes
(DistributedDataParallel on gloo, 2 local CPU processes) reach the weights of
one process with the same global batch — without batchnorm, and with
batchnorm under `sync_bn = true` — and a killed 2-process run resumes to the
weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.train_vocab import OPTIMIZER
from cnnc.runtime import checkpoint
from cnnc.runtime.train.optim import OPTIMIZERS
from cnnc.runtime.train.trainer import Trainer

torch = pytest.importorskip("torch")

PLAIN = "x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> flatten -> linear(8) -> tanh -> linear(3)"
NORMED = "x -> conv(4, 3, pad = 1) -> batchnorm -> relu -> maxpool(2) -> flatten -> linear(3)"


def program(net: str = PLAIN, **keys: str) -> str:
    train = {"data": "synthetic(n = 96, classes = 3)", "epochs": "1", "batch": "16", "seed": "3",
             "optimizer": "sgd(lr = 0.1, momentum = 0.9)", **keys}
    body = "\n".join(f"    {k} = {v}" for k, v in train.items())
    return f"network N {{\n    input x: [1, 8, 8]\n    {net}\n}}\ntrain N {{\n{body}\n}}\n"


def trainer(compiled, out, engine: str) -> Trainer:
    return Trainer(compiled, compiled.net.train, out, progress=False, log=lambda s: None, threads=1, engine=engine)


def relative(a, b) -> float:
    """|a - b| against b's largest value, no smaller than 0.01 (a conv bias before batchnorm gets
    a zero gradient, so it stays at rounding noise around 0 on both engines)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-2))


def one_step(compile_src, tmp_path, source: str):
    c = compile_src(source, allow={"all"})
    a, b = trainer(c, tmp_path / "np", "numpy"), trainer(c, tmp_path / "pt", "torch")
    first = {k: v.copy() for k, v in a.engine.params().items()}
    assert set(first) == set(b.engine.params())
    assert all(np.array_equal(first[k], b.engine.params()[k]) for k in first), "same initial weights"
    x, y = a.ds.train.x[:16], a.ds.train.y[:16]
    losses = []
    for t in (a, b):
        t.engine.begin_epoch(0)
        losses.append(t.engine.forward_backward(x, y, t.objective, np.random.default_rng(0))[0])
        t.engine.step(t.schedule.lr(0))
    return losses, a, b


OPTIMIZER_CASES = {
    "sgd": "sgd(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01)",
    "sgd-dampened": "sgd(lr = 0.1, momentum = 0.5, dampening = 0.3)",
    "adam": "adam(lr = 0.01, amsgrad = true, weight_decay = 0.001)",
    "adamw": "adamw(lr = 0.01)",
    "adagrad": "adagrad(lr = 0.05, lr_decay = 0.01, initial_accumulator_value = 0.1)",
    "rmsprop": "rmsprop(lr = 0.01, momentum = 0.5, centered = true)",
}


def test_every_optimizer_of_the_vocabulary_is_checked_and_has_a_torch_class():
    assert {case.split("-")[0] for case in OPTIMIZER_CASES} == set(OPTIMIZER.entries)
    for name, cls in OPTIMIZERS.items():
        assert isinstance(getattr(torch.optim, cls.torch_name, None), type), name


@pytest.mark.parametrize("case", sorted(OPTIMIZER_CASES))
def test_two_steps_give_the_numpy_engines_loss_weights_and_state(compile_src, tmp_path, case):
    losses, a, b = one_step(compile_src, tmp_path, program(optimizer=OPTIMIZER_CASES[case]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    x, y = a.ds.train.x[16:32], a.ds.train.y[16:32]
    for t in (a, b):    # a second step reads the optimizer state the first one left
        t.engine.forward_backward(x, y, t.objective, np.random.default_rng(1))
        t.engine.step(0.5 * t.schedule.lr(0))
    pa, pb = a.engine.params(), b.engine.params()
    assert max(relative(pb[k], pa[k]) for k in pa) <= 1e-5
    sa, sb = a.engine.optimizer_state(), b.engine.optimizer_state()
    assert set(sa) == set(sb)
    assert max(relative(sb[k].astype(np.float64), sa[k].astype(np.float64)) for k in sa) <= 1e-5


def test_penalties_and_batchnorm_take_the_same_first_step(compile_src, tmp_path):
    losses, a, b = one_step(compile_src, tmp_path, program(NORMED, l1="0.001", l2="0.01"))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    pa, pb = a.engine.params(), b.engine.params()
    assert any(".running_mean" in k for k in pa)
    assert max(relative(pb[k], pa[k]) for k in pa) <= 1e-5


def test_the_train_sections_init_gives_both_engines_the_same_weights(compile_src, tmp_path):
    c = compile_src(program(init="xavier_normal"), allow={"all"})
    plain = compile_src(program(), allow={"all"})
    a, b = trainer(c, tmp_path / "np", "numpy"), trainer(c, tmp_path / "pt", "torch")
    pa, pb = a.engine.params(), b.engine.params()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    default = trainer(plain, tmp_path / "default", "torch").engine.params()
    assert not np.array_equal(pb["conv.weight"], default["conv.weight"])


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_checkpoints_resume_on_the_other_engine(compile_src, tmp_path):
    """Two epochs on numpy == one on torch, resumed on numpy (and the other way round); one schema."""
    c = compile_src(program(epochs="2", optimizer="adam(lr = 0.01)"), allow={"all"})
    whole = trainer(c, tmp_path / "whole", "numpy")
    whole.run()
    halves = {}
    for first, second in (("torch", "numpy"), ("numpy", "torch")):
        out = tmp_path / f"{first}-{second}"
        one = compile_src(program(epochs="1", optimizer="adam(lr = 0.01)"), allow={"all"})
        trainer(one, out, first).run()
        resumed = trainer(c, out, second)
        resumed.run(resume=True)
        halves[first] = resumed.engine.params()
        assert [sorted(r) for r in _metrics(out)] == [sorted(r) for r in _metrics(tmp_path / "whole")]
    ref = whole.engine.params()
    for params in halves.values():
        assert max(relative(params[k], ref[k]) for k in ref) <= 1e-4


def test_a_torch_checkpoint_serves_predict_viz_and_export(compile_src, write, tmp_path, capsys):
    path = write(program())
    out = tmp_path / "run"
    assert main(["run", str(path), "--engine", "torch", "--out", str(out), "--quiet"]) == 0
    ck = out / "last.npz"
    assert checkpoint.load(ck).epoch == 1
    assert main(["predict", str(path), str(ck), "--limit", "2"]) == 0
    assert main(["export", str(path), "--to", "onnx", "--checkpoint", str(ck), "-o", str(tmp_path / "m.onnx")]) == 0
    assert main(["viz", str(path), "--style", "kernels", "--checkpoint", str(ck), "-o", str(tmp_path / "k.png")]) == 0


# ------------------------------------------------------------------ mistakes
@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda: the numpy engine runs on the CPU"),
    (["--engine", "torch", "--device", "tpu"], "--device tpu: unknown device"),
    (["--nproc", "2"], "--nproc 2: only the torch engine trains in several processes"),
    (["--engine", "torch", "--nproc", "0"], "--nproc 0: must be at least 1"),
    (["--engine", "torch", "--nproc", "2", "--eval", "x.npz"], "--nproc 2: --eval runs in one process"),
])
def test_flag_mistakes_are_one_line_errors(write, tmp_path, capsys, flags, message):
    path = write(program())
    assert main(["run", str(path), "--out", str(tmp_path / "o"), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "last.npz").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_is_named(write, tmp_path, capsys):
    assert main(["run", str(write(program())), "--engine", "torch", "--device", "cuda",
                 "--out", str(tmp_path / "o")]) == 1
    assert "--device cuda: PyTorch sees no CUDA device" in capsys.readouterr().err


def test_a_launcher_environment_without_the_torch_engine_is_refused(write, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", str(write(program())), "--out", str(tmp_path / "o")]) == 1
    assert "only the torch engine trains in several processes" in capsys.readouterr().err


def test_an_incomplete_launcher_environment_is_named(write, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    assert main(["run", str(write(program())), "--engine", "torch", "--out", str(tmp_path / "o")]) == 1
    assert "sets WORLD_SIZE but not RANK" in capsys.readouterr().err


def test_sync_bn_on_a_network_without_batchnorm_is_refused_at_its_line(write, tmp_path, capsys):
    path = write(program(sync_bn="true"))
    assert main(["run", str(path), "--engine", "torch", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{path.name}:11:5: error: sync_bn = true" in err and "no layer that uses batch statistics" in err


def test_a_missing_torch_names_the_extra_to_install(write, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["run", str(write(program())), "--engine", "torch", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "pip install 'cnnc[torch]'" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------ several processes
def cnnc(*args: str, cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([sys.executable, "-m", "cnnc", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return out


def weights(out) -> dict:
    return checkpoint.load(out / "last.npz").params


@pytest.mark.slow
@pytest.mark.parametrize("net, keys", [(PLAIN, {}), (NORMED, {"sync_bn": "true"})], ids=["plain", "sync_bn"])
def test_two_processes_reach_the_weights_of_one(write, tmp_path, net, keys):
    path = write(program(net, epochs="2", batch="48", **keys))   # four steps
    one = cnnc("run", str(path), "--engine", "torch", "--out", str(tmp_path / "one"), "--threads", "1", cwd=tmp_path)
    two = cnnc("run", str(path), "--engine", "torch", "--nproc", "2", "--out", str(tmp_path / "two"), cwd=tmp_path)
    out_two = finished(two)
    finished(one)
    assert out_two.count("epoch 2/2") == 1, out_two     # rank 0 alone reports
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    errors = {k: relative(b[k], a[k]) for k in a}
    assert max(errors.values()) <= 1e-5, errors
    losses = [[r["train_loss"] for r in _metrics(tmp_path / d) if "epoch" in r] for d in ("one", "two")]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.slow
def test_sync_bn_changes_what_two_processes_compute(write, tmp_path):
    finals = []
    for sync in ("false", "true"):
        out = tmp_path / sync
        finished(cnnc("run", str(write(program(NORMED, sync_bn=sync))), "--engine", "torch", "--nproc", "2",
                      "--out", str(out), cwd=tmp_path))
        finals.append(weights(out))
    assert max(relative(finals[1][k], finals[0][k]) for k in finals[0]) > 1e-4


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(write, tmp_path):
    path = write(program(epochs="4", data="synthetic(n = 2000, classes = 3)"))
    base = ["run", str(path), "--engine", "torch", "--nproc", "2"]
    finished(cnnc(*base, "--out", str(tmp_path / "whole"), cwd=tmp_path))
    p = cnnc(*base, "--out", str(tmp_path / "cut"), cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (tmp_path / "cut" / "last.npz").exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    cut_at = checkpoint.load(tmp_path / "cut" / "last.npz").epoch
    assert cut_at < 4, "the run ended before it could be interrupted"
    out = finished(cnnc(*base, "--out", str(tmp_path / "cut"), "--resume", cwd=tmp_path))
    assert f"resuming N after epoch {cut_at}" in out
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_workers_read_the_launchers_environment(write, tmp_path):
    path = write(program(epochs="1", batch="24"))
    one = cnnc("run", str(path), "--engine", "torch", "--out", str(tmp_path / "one"), "--threads", "1", cwd=tmp_path)
    launched = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "cnnc", "run", str(path), "--engine", "torch", "--out", str(tmp_path / "two")],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert finished(launched).count("epoch 1/1") == 1
    finished(one)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max(relative(b[k], a[k]) for k in a) <= 1e-5
