"""The train vocabulary: declared once, implemented exactly, and every word of it does something.

`compiler/train_vocab.py` declares every key and option; these tests hold the
runtime to it (each factory takes exactly the declared options, with the
declared defaults) and walk the whole vocabulary: for every key and every
option `cnnc check` accepts, a run with it differs observably from a run
without it (data, loss, weights after an epoch, the schedule's rates, the
epochs run) — or the value is refused with a located error.
"""
from __future__ import annotations

import hashlib
import inspect
import struct

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.train_spec import Spec, set_key, TrainConfig
from cnnc.compiler.train_vocab import (AUGMENT, DATA, FAMILIES, KEYS, LOSS, OPTIMIZER, PREPROCESS, REQUIRED,
                                       SCHEDULE)
from cnnc.dsl.source import CnncError
from cnnc.runtime.data import augment, sources
from cnnc.runtime.train import losses, monitors, optim, schedules, trainer as train
from cnnc.runtime import preprocess
from cnnc.runtime.data.pipeline import inputs
from cnnc.runtime.train.trainer import Trainer



# ------------------------------------------------------------------ the runtime implements the declaration
def _params(fn, drop=()) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if n not in ("self", *drop) and p.kind is not p.VAR_KEYWORD}


def _implemented(family, runtime: dict, drop=(), skip_default=()):
    assert set(family.entries) == set(runtime), family.key
    for name, entry in family.entries.items():
        taken = _params(runtime[name], drop)
        declared = {o.target: o for o in entry.options}
        assert set(taken) == set(declared), f"{family.key} {name}: runtime {sorted(taken)}, declared {sorted(declared)}"
        for target, option in declared.items():
            default = taken[target].default
            if option.required:
                assert default is inspect.Parameter.empty, f"{name}.{option.name} is required but has a default"
            elif option.name not in skip_default:
                assert default == option.default, f"{family.key} {name}.{option.name}: {default} != {option.default}"


def test_losses_take_exactly_the_declared_options():
    _implemented(LOSS, {n: s.fn for n, s in losses.LOSSES.items()}, drop=("logits", "labels", "pred", "targets"))


def test_optimizers_take_exactly_the_declared_options():
    # lr: the classes default to None (their own rate); the trainer always passes the declared one.
    _implemented(OPTIMIZER, {n: c.__init__ for n, c in optim.OPTIMIZERS.items()}, drop=("params",),
                 skip_default=("lr",))


def test_schedules_take_exactly_the_declared_options():
    _implemented(SCHEDULE, {n: c.__init__ for n, c in schedules.SCHEDULES.items()}, drop=("base_lr", "epochs"))


def test_augmentations_take_exactly_the_declared_options():
    _implemented(AUGMENT, {n: c.__init__ for n, c in augment.AUGMENTATIONS.items()})


def test_preprocessing_takes_exactly_the_declared_options():
    _implemented(PREPROCESS, preprocess.FITTERS, drop=("x",))
    assert set(preprocess.RECORD_FIELDS) == set(PREPROCESS.entries)
    assert set(preprocess.MAPS) == set(PREPROCESS.entries)   # each record is a per-channel map exporters write


def test_early_stopping_takes_exactly_the_declared_options():
    _implemented(KEYS["early_stop"].family, {"early_stop": monitors.EarlyStop.__init__})


def test_data_loaders_take_exactly_the_declared_options():
    _implemented(DATA, sources.DATA_LOADERS, drop=("shapes",))


def test_every_key_has_a_check_or_a_family():
    for key in KEYS.values():
        assert (key.check is None) != (key.family is None), key.name
    assert set(FAMILIES) <= set(KEYS)


# ------------------------------------------------------------------ every word does something
NETS = {
    "classes": "input x: [1, 8, 8]\n    x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> flatten -> linear(3)",
    "rgb": "input x: [3, 8, 8]\n    x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> flatten -> linear(3)",
    "rgb16": "input x: [3, 16, 16]\n    x -> conv(2, 3, pad = 1) -> relu -> maxpool(4) -> flatten -> linear(2)",
    "grey16": "input x: [1, 16, 16]\n    x -> conv(2, 3, pad = 1) -> relu -> maxpool(4) -> flatten -> linear(2)",
    "rgb8": "input x: [3, 8, 8]\n    x -> conv(2, 3, pad = 1) -> relu -> maxpool(4) -> flatten -> linear(2)",
    "pixels": "input x: [1, 8, 8]\n    x -> conv(3, 3, pad = 1)",
    "regression": "input x: [4]\n    x -> linear(8) -> relu -> linear(1)",
    "seg16": "input x: [3, 16, 16]\n    x -> conv(4, 3, pad = 1)",
    "seg8": "input x: [3, 8, 8]\n    x -> conv(4, 3, pad = 1)",
    "seggrey16": "input x: [1, 16, 16]\n    x -> conv(4, 3, pad = 1)",
    "autoencoder": "input x: [1, 8, 8]\n    x -> conv(4, 3, pad = 1) -> relu -> conv(1, 3, pad = 1)",
}
BASE = {"data": "synthetic(n = 64, classes = 3)", "epochs": "1", "batch": "16", "loss": "cross_entropy",
        "optimizer": "sgd(lr = 0.05)", "seed": "1"}
DATA_BASE = {"classes": {}, "rgb": {}, "pixels": {"data": "synthetic(n = 32)", "loss": "pixel_cross_entropy"},
             "regression": {"data": "synthetic(n = 64, kind = regression)", "loss": "smooth_l1"},
             "rgb16": {"data": 'images("{tmp}/rgb16")'}, "grey16": {"data": 'images("{tmp}/rgb16")'},
             "rgb8": {"data": 'images("{tmp}/rgb16")'},
             **{net: {"data": 'segmentation("{tmp}/seg16")', "loss": "pixel_cross_entropy"}
                for net in ("seg16", "seg8", "seggrey16")}}

# (family or key, entry, option) -> (net, base overrides, variant overrides); "" entry for plain keys.
P = {}


def probe(key, entry, option, variant, base=None, net="classes"):
    P[(key, entry, option)] = (net, base or {}, variant)


def call(name: str, base: str, option: str, value: str) -> str:
    """name(base options, with `option = value` added or replacing the base's)."""
    kept = [o.strip() for o in base.split(",") if o.strip() and o.split("=")[0].strip() != option]
    return f"{name}({', '.join(kept + [f'{option} = {value}'])})"


# data
probe("data", "synthetic", "val", {"data": "synthetic(n = 64, classes = 3, val = 0.25)"})
probe("data", "synthetic", "test", {"data": 'npz("{tmp}/a.npz", test = 0.25)'}, {"data": 'npz("{tmp}/a.npz")'})
probe("test", "", "", {"test": "0.25"}, {"data": 'npz("{tmp}/a.npz")'})
probe("data", "synthetic", "limit", {"data": "synthetic(n = 64, classes = 3, limit = 20)"})
probe("data", "synthetic", "n", {"data": "synthetic(n = 40, classes = 3)"})
probe("data", "synthetic", "classes", {"data": "synthetic(n = 64, classes = 2)"})
probe("data", "synthetic", "shape", {"data": "synthetic(n = 64, classes = 3, shape = (1, 6, 6))"})
probe("data", "synthetic", "kind", {"data": "synthetic(n = 64, classes = 3, kind = segmentation)"})
probe("data", "synthetic", "seed", {"data": "synthetic(n = 64, classes = 3, seed = 5)"})
probe("data", "synthetic", "noise", {"data": "synthetic(n = 64, classes = 3, noise = 0.9)"})
probe("data", "synthetic", "targets", {"data": "synthetic(n = 64, kind = regression, targets = inputs)"},
      {"data": "synthetic(n = 64, kind = regression)", "loss": "mse"}, net="autoencoder")
for kind in ("npz", "path"):
    probe("data", kind, "path", {"data": f'{kind}("{{tmp}}/b.npz")'}, {"data": f'{kind}("{{tmp}}/a.npz")'})
probe("data", "idx", "path", {"data": 'idx("{tmp}/idx_b")'}, {"data": 'idx("{tmp}/idx_a")'})
probe("data", "images", "path", {"data": 'images("{tmp}/rgb16b")'}, net="rgb16")
probe("data", "images", "size", {"data": 'images("{tmp}/rgb16", size = 8)'}, net="rgb8")
probe("data", "images", "channels", {"data": 'images("{tmp}/rgb16", channels = 1)'}, net="grey16")
probe("data", "segmentation", "path", {"data": 'segmentation("{tmp}/seg16b")'}, net="seg16")
probe("data", "segmentation", "size", {"data": 'segmentation("{tmp}/seg16", size = 8)'}, net="seg8")
probe("data", "segmentation", "channels", {"data": 'segmentation("{tmp}/seg16", channels = 1)'}, net="seggrey16")
# losses
probe("loss", "cross_entropy", "label_smoothing", {"loss": "cross_entropy(label_smoothing = 0.3)"})
probe("loss", "cross_entropy", "ignore_index", {"loss": "cross_entropy(ignore_index = 2)"})
probe("loss", "pixel_cross_entropy", "label_smoothing", {"loss": "pixel_cross_entropy(label_smoothing = 0.3)"},
      net="pixels")
probe("loss", "pixel_cross_entropy", "ignore_index", {"loss": "pixel_cross_entropy(ignore_index = 0)"},
      net="pixels")
probe("loss", "smooth_l1", "beta", {"loss": "smooth_l1(beta = 0.05)"}, net="regression")
# optimizers
for name, opt, value, base in [
        ("sgd", "lr", "0.2", ""), ("sgd", "momentum", "0.9", ""), ("sgd", "dampening", "0.5", "momentum = 0.9"),
        ("sgd", "nesterov", "true", "momentum = 0.9"), ("sgd", "weight_decay", "0.5", ""),
        ("adam", "lr", "0.1", ""), ("adam", "betas", "(0.5, 0.6)", ""), ("adam", "eps", "0.5", ""),
        ("adam", "weight_decay", "0.5", ""), ("adam", "amsgrad", "true", "betas = (0.5, 0.5)"),
        ("adamw", "lr", "0.1", ""), ("adamw", "betas", "(0.5, 0.6)", ""), ("adamw", "eps", "0.5", ""),
        ("adamw", "weight_decay", "0.5", ""), ("adamw", "amsgrad", "true", "betas = (0.5, 0.5)"),
        ("adagrad", "lr", "0.2", ""), ("adagrad", "lr_decay", "0.5", ""), ("adagrad", "weight_decay", "0.5", ""),
        ("adagrad", "initial_accumulator_value", "0.5", ""), ("adagrad", "eps", "0.5", ""),
        ("rmsprop", "lr", "0.1", ""), ("rmsprop", "alpha", "0.5", ""), ("rmsprop", "eps", "0.5", ""),
        ("rmsprop", "weight_decay", "0.5", ""), ("rmsprop", "momentum", "0.9", ""),
        ("rmsprop", "centered", "true", "")]:
    probe("optimizer", name, opt, {"optimizer": call(name, base, opt, value)},
          {"optimizer": f"{name}({base})"})
# schedules: observed through the rates of 8 epochs, fed a fixed validation-loss sequence
for name, opt, value, base in [
        ("step", "step_size", "3", "step_size = 2"), ("step", "gamma", "0.5", "step_size = 2"),
        ("cosine", "T_max", "3", ""), ("cosine", "eta_min", "0.01", ""),
        ("cosine_restarts", "T_0", "3", "T_0 = 2"), ("cosine_restarts", "T_mult", "2", "T_0 = 2"),
        ("cosine_restarts", "eta_min", "0.01", "T_0 = 2"),
        # a mode that contradicts the monitor is refused (it follows the monitor: the file means one thing)
        ("plateau", "mode", "max", "monitor = train_loss, patience = 0"),
        ("plateau", "monitor", "train_accuracy", "monitor = train_loss, patience = 0"),
        ("plateau", "factor", "0.5", "monitor = train_loss, patience = 0"),
        ("plateau", "patience", "2", "monitor = train_loss, patience = 0"),
        ("plateau", "threshold", "0.2", "monitor = train_loss, patience = 0"),
        ("plateau", "threshold_mode", "abs", "monitor = train_loss, patience = 0, threshold = 0.05"),
        ("plateau", "cooldown", "2", "monitor = train_loss, patience = 0"),
        ("plateau", "min_lr", "0.004", "monitor = train_loss, patience = 0"),
        ("plateau", "eps", "0.04", "monitor = train_loss, patience = 0"),
        ("warmup", "epochs", "4", "epochs = 2"), ("warmup", "then", "cosine", "epochs = 2"),
        ("warmup", "start_factor", "0.9", "epochs = 2")]:
    probe("schedule", name, opt, {"schedule": call(name, base, opt, value)},
          {"schedule": f"{name}({base})"})
# augmentation: the weights after an epoch of augmented batches
for name, opt, value, base, net in [
        ("random_crop", "padding", "2", "padding = 1", "classes"),
        ("random_rotation", "degrees", "90", "degrees = 10", "classes"),
        ("random_resized_crop", "scale", "(0.2, 0.3)", "", "classes"),
        ("random_resized_crop", "ratio", "(0.2, 0.3)", "", "classes"),
        ("hflip", "p", "1.0", "p = 0.0", "classes"),
        ("color_jitter", "brightness", "0.5", "", "classes"),
        ("color_jitter", "contrast", "0.5", "", "classes"),
        ("color_jitter", "saturation", "0.5", "", "rgb"),
        ("color_jitter", "hue", "0.3", "", "rgb"),
        ("gaussian_noise", "std", "0.5", "", "classes")]:
    probe("augment", name, opt, {"augment": f"[{call(name, base, opt, value)}]"},
          {"augment": f"[{name}({base})]"}, net=net)
probe("preprocess", "normalize", "mean", {"preprocess": "normalize(mean = 0.25)"}, {"preprocess": "normalize"})
probe("preprocess", "normalize", "std", {"preprocess": "normalize(std = 3)"}, {"preprocess": "normalize"})
probe("preprocess", "scale", "factor", {"preprocess": "scale(factor = 1000)"}, {"preprocess": "scale(factor = 1)"})
# initialisation: the weights drawn before training differ, so the weights after it do
for name, opt, value, base in [
        ("kaiming_normal", "a", "3", ""), ("kaiming_normal", "mode", "fan_out", ""),
        ("kaiming_uniform", "a", "3", ""), ("kaiming_uniform", "mode", "fan_out", ""),
        ("xavier_normal", "gain", "3", ""), ("xavier_uniform", "gain", "3", ""),
        ("normal", "std", "0.5", "std = 0.1"), ("normal", "mean", "0.5", "std = 0.1"),
        ("uniform", "a", "0.5", "a = 0.1")]:
    probe("init", name, opt, {"init": call(name, base, opt, value)}, {"init": f"{name}({base})"})
probe("init", "", "", {"init": "zeros"})
# early stopping: the epochs a run lasts (and the weights it ends with), on a run with a validation split
STOPPING = {"data": "synthetic(n = 64, classes = 3, val = 0.25)", "epochs": "6", "optimizer": "sgd(lr = 0.05)"}
probe("early_stop", "early_stop", "monitor", {"early_stop": "early_stop(monitor = val_accuracy, patience = 1)"},
      {**STOPPING, "early_stop": "early_stop(monitor = train_loss, patience = 1)"})
probe("early_stop", "early_stop", "patience", {"early_stop": "early_stop(monitor = train_loss, patience = 3)"},
      {**STOPPING, "optimizer": "sgd(lr = 1e-9)", "early_stop": "early_stop(monitor = train_loss, patience = 1)"})
probe("early_stop", "early_stop", "min_delta",
      {"early_stop": "early_stop(monitor = train_loss, patience = 1, min_delta = 0.5)"},
      {**STOPPING, "early_stop": "early_stop(monitor = train_loss, patience = 1)"})
probe("early_stop", "early_stop", "mode", {"early_stop": "early_stop(monitor = train_loss, mode = max)"},
      {**STOPPING, "early_stop": "early_stop(monitor = train_loss)"})
# plain keys
for key, value in [("epochs", "3"), ("batch", "8"), ("seed", "2"), ("lr", "0.3"), ("l1", "0.01"), ("l2", "0.1"),
                   ("val", "0.25"), ("early_stop", "1"), ("normalize", "normalize"),
                   ("preprocess", "center"), ("augment", "[hflip]"), ("loss", "cross_entropy(label_smoothing = 0.5)"),
                   ("optimizer", "adam"), ("schedule", "step(1)"), ("data", "synthetic(n = 48, classes = 3)"),
                   ("classes", '["circle", "square", "ring"]'),
                   # refused here (no batchnorm); what it changes under --nproc: tests/runtime/train/test_torch_engine.py
                   ("sync_bn", "true"), ("kfold", "2"), ("bootstrap", "true"), ("loss_weights", "[2]")]:
    probe(key, "", "", {key: value}, {**STOPPING, "optimizer": "sgd(lr = 1e-9)", "epochs": "4"} if key == "early_stop"
          else {"optimizer": "sgd"} if key == "lr" else None)
probe("snapshots", "", "", {"snapshots": "true"}, {"schedule": "cosine_restarts(1)"})
probe("drop_last", "", "", {"drop_last": "true"}, {"batch": "20"})   # 64 samples: a last batch of 4, or none

METRICS = [1.0, 0.9, 0.89, 0.95, 0.94, 0.93, 0.5, 0.46]


def _program(net: str, overrides: dict[str, str], tmp) -> str:
    keys = {**BASE, **DATA_BASE.get(net, {}), **overrides}
    body = "\n".join(f"    {k} = {v}" for k, v in keys.items()).replace("{tmp}", str(tmp))
    return f"network N {{\n    {NETS[net]}\n}}\ntrain N {{\n{body}\n}}\n"


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes() if isinstance(a, np.ndarray) else repr(a).encode())
    return h.hexdigest()[:16]


def observe(compile_src, program: str, out) -> dict:
    """What a run shows: the data, the weights after training, the rates and the epochs run."""
    try:
        c = compile_src(program, allow={"all"})
        t = Trainer(c, c.net.train, out, progress=False, log=lambda s: None, threads=1)
    except CnncError as err:
        return {"refused": err.message}
    if c.net.train.kfold:  # K trainers: what shows is each fold's figures
        from cnnc.runtime.select.kfold import run_kfold
        folds = run_kfold(c, c.net.train, out, lambda cfg, o, resplit, log: Trainer(
            c, cfg, o, progress=False, log=log, threads=1, resplit=resplit), log=lambda s: None).folds
        return {"folds": [f.figures for f in folds]}
    ds = t.ds
    seen = {"data": _digest(ds.train.x, ds.train.y, *(s.x for s in (ds.val, ds.test) if s is not None))}
    rates = []
    for e, metric in enumerate(METRICS):
        rates.append(t.schedule.lr(e))
        t.schedule.observe(metric)
    seen["rates"] = rates + [t.schedule.lr(len(METRICS))]
    t.schedule = schedules.make_schedule(None, t.base_lr, 1) if not c.net.train.schedule else \
        schedules.make_schedule(train._schedule_spec(c.net.train.schedule), t.base_lr, c.net.train.epochs)
    result = t.run()
    seen["epochs"] = result.epochs_run
    seen["weights"] = _digest(*(t.plan.params[k] for k in sorted(t.plan.params)))
    seen["classes"] = t.class_names
    seen["files"] = sorted(p.name for p in out.iterdir())
    return seen


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vocab")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        x = rng.random((40, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 3, 40)
        np.savez(tmp / f"{name}.npz", x_train=x, y_train=y)
        folder = tmp / f"idx_{name}"
        folder.mkdir()
        imgs = (rng.random((40, 8, 8)) * 255).astype(np.uint8)
        labels = rng.integers(0, 3, 40).astype(np.uint8)
        for stem, arr in (("train-images-idx3-ubyte", imgs), ("train-labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (folder / stem).write_bytes(header + arr.tobytes())
    from PIL import Image
    for folder, seed in (("rgb16", 1), ("rgb16b", 2)):
        r = np.random.default_rng(seed)
        for cls in ("a", "b"):
            (tmp / folder / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray((r.random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp / folder / cls / f"{i}.png")
    from cnnc.cmd_shapes import write_shapes
    for folder, seed in (("seg16", 1), ("seg16b", 2)):
        write_shapes(tmp / folder, n=8, test=0, size=16, channels=3, seed=seed)
    return tmp


def _declared():
    out = set()
    for key, family in FAMILIES.items():
        for entry in family.entries.values():
            options = family.common + entry.options if entry.name == "synthetic" else entry.options
            out |= {(key, entry.name, o.name) for o in options}
    return out | {(k, "", "") for k in KEYS}


def test_the_walk_covers_the_whole_vocabulary():
    assert set(P) == _declared()


@pytest.mark.parametrize("word", sorted(P), ids=["-".join(filter(None, w)) for w in sorted(P)])
def test_every_word_changes_what_runs(compile_src, files_dir, tmp_path, word):
    net, base, variant = P[word]
    before = observe(compile_src, _program(net, base, files_dir), tmp_path / "a")
    after = observe(compile_src, _program(net, {**base, **variant}, files_dir), tmp_path / "b")
    if word[1:] in (("images", "size"), ("images", "channels"), ("segmentation", "size"),
                    ("segmentation", "channels")):
        # Without the option these images do not fit the network; with it they do.
        assert "refused" in before and "refused" not in after, (before, after)
    assert "refused" not in before or word[1] in ("images", "segmentation"), before
    assert before != after, f"{word}: {variant} changes nothing"
    if "refused" in after:  # a refusal counts only when it says what is wrong
        assert any(w in after["refused"] for w in ("shape", "label", "[", "expects", "the network has no",
                                                   "but it watches")), after


# ------------------------------------------------------------------ the drifts, end to end
def test_ignore_index_is_accepted_by_check_and_matches_torch(compile_src, tmp_path, write, capsys):
    torch = pytest.importorskip("torch")
    path = write(_program("classes", {"loss": "cross_entropy(ignore_index = 2)"}, tmp_path))
    assert main(["check", str(path), "--allow", "all"]) == 0
    c = compile_src(_program("classes", {"loss": "cross_entropy(ignore_index = 2)"}, tmp_path), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path / "run", progress=False, log=lambda s: None)
    z = np.random.default_rng(0).standard_normal((6, 3))
    y = np.array([0, 2, 1, 2, 2, 0])
    ours = t.loss(z, y)[0]
    theirs = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y), ignore_index=2).item()
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert t.loss.correct(z, y)[1] == 3  # ignored samples do not count for the accuracy either


def test_scale_scales_the_inputs(compile_src, tmp_path):
    plain = compile_src(_program("classes", {}, tmp_path), allow={"all"})
    scaled = compile_src(_program("classes", {"preprocess": "scale(factor = 1000)"}, tmp_path), allow={"all"})
    a = Trainer(plain, plain.net.train, tmp_path / "a", progress=False, log=lambda s: None)
    b = Trainer(scaled, scaled.net.train, tmp_path / "b", progress=False, log=lambda s: None)
    np.testing.assert_array_equal(b.ds.train.x, a.ds.train.x)   # the data set holds the samples as read
    np.testing.assert_allclose(inputs(b.ds, b.ds.train.x), a.ds.train.x * 1000, rtol=1e-6)
    assert b.ds.meta["preprocess"] == [{"op": "scale", "factor": 1000.0}]
    assert a.train_epoch(0).mean_loss != b.train_epoch(0).mean_loss


def test_images_size_resizes(compile_src, files_dir, tmp_path):
    c = compile_src(_program("rgb8", {"data": f'images("{files_dir}/rgb16", size = 8)'}, tmp_path), allow={"all"})
    t = Trainer(c, c.net.train, tmp_path / "run", progress=False, log=lambda s: None)
    assert t.ds.train.x.shape[1:] == (3, 8, 8)


# ------------------------------------------------------------------ nonsense is refused where it is written
BAD = [
    ("schedule = step(step_size = 1e400)", "inf is not a finite number", 33),
    ("data = synthetic(n = -5)", "data set 'synthetic': n must be a positive integer, got the integer -5", 12),
    ("optimizer = sgd(lr = 1e400)", "inf is not a finite number", 26),
    ("l2 = 1e300 * 1e300", "inf is not a finite number", 16),
    ("lr = 1 / 0", "division by zero", 12),
    ("val = 1.5", "val must be a number in [0, 1), got the number 1.5", 11),
    ("loss = cross_entropy(label_smoothing = 2)", "loss 'cross_entropy': label_smoothing must be a number in [0, 1]",
     12),
    ("schedule = step(gamma = 0.5)", "schedule 'step' needs option 'step_size'", 16),
    ("augment = [hflip(p = 0.5, q = 1)]", "augmentation 'hflip' has no option 'q'", 15),
    ("preprocess = scale", "preprocessing 'scale' needs option 'factor'", 18),
    ("data = images()", "data set 'images' needs option 'path'", 12),
    ("data = images(\"d\", size = 0)", "data set 'images': size must be a positive integer", 12),
    ("data = images(\"d\", channels = 2)", "data set 'images': channels must be 1 or 3", 12),
    ("optimizer = adam(betas = (0.9, 1.0))", "optimizer 'adam': betas must be a number in [0, 1)", 17),
    ("schedule = plateau(mode = maxi)", "schedule 'plateau': mode must be one of min, max", 16),
    ("early_stop = 0", "early_stop must be a positive integer", 18),
    ("early_stop = early_stop(monitor = loss)", "early stopping 'early_stop': monitor must be one of val_loss", 18),
    ("loss = mse + 2", "a weighted sum of losses is written `0.5 * mse + smooth_l1`", 16),
    ("loss = [mse, 3]", "loss must be one of cross_entropy", 12),
    ("loss_weights = [1, -1]", "loss_weights must be a list of numbers, each a non-negative number", 20),
    ("augment = [color_jitter(hue = 0.7)]", "augmentation 'color_jitter': hue must be a number in [0, 0.5]", 15),
    ("seed = -1", "seed must be an integer >= 0", 12),
    ("optimizer = sgd(1)", "optimizer 'sgd' takes no unnamed arguments, got 1", 17),
]


@pytest.mark.parametrize("line, message, col", BAD, ids=[b[0] for b in BAD])
def test_nonsense_is_refused_with_its_location(error_of, line, message, col):
    err = error_of(f"network N {{\n    input x: [4]\n    x -> linear(2)\n}}\ntrain N {{\n    {line}\n}}\n")
    assert err.message.startswith(message), err.render()
    assert (err.loc.line, err.loc.col) == (6, col), err.render()


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "nan", "--lr nan: lr must be a positive number, got the number nan"),
    ("--lr", "inf", "--lr inf: lr must be a positive number, got the number inf"),
    ("--lr", "1e400", "--lr inf: lr must be a positive number, got the number inf"),
    ("--lr", "-1", "--lr -1.0: lr must be a positive number"),
    ("--limit", "0", "--limit 0: must be a positive integer"),
    ("--epochs", "0", "--epochs 0: epochs must be a positive integer"),
])
def test_nonsense_flags_are_refused(write, tmp_path, capsys, flag, value, message):
    path = write(_program("classes", {}, tmp_path))
    assert main(["run", str(path), flag, value, "--out", str(tmp_path / "r"), "--allow", "all", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "r").exists()


def test_a_run_and_check_agree_on_defaults():
    cfg = TrainConfig()
    assert cfg.lr == OPTIMIZER.entries["sgd"].option("lr").default
    assert set_key(cfg, "lr", 0.5, None).lr == 0.5
    for key in KEYS.values():   # a plain key's declared default is the record's
        if key.check is not None and key.default is not None:
            assert getattr(cfg, key.name) == key.default, key.name
    # a choice given by its name alone means the same as the default record: every option at its default
    assert set_key(cfg, "optimizer", Spec("sgd")) == cfg and set_key(cfg, "loss", Spec("cross_entropy")) == cfg
    assert REQUIRED is not None


def test_the_language_reference_names_every_key_and_option():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[3] / "docs" / "language.md").read_text()
    section = text[text.index("## The `train` section"):]
    missing = [key for key in KEYS if f"`{key}`" not in section]
    for family in FAMILIES.values():
        for entry in family.entries.values():
            if entry.name != "path":
                missing += [f"{entry.name}" for _ in [0] if entry.name not in section]
            for option in family.options_of(entry):
                if option.name not in section:
                    missing.append(f"{entry.name}.{option.name}")
    assert not missing, missing


def test_a_data_kind_that_does_not_match_its_path_is_refused(compile_src, files_dir, tmp_path):
    for data_text, message in [(f'npz("{files_dir}/idx_a")', "that is a folder, not an .npz file"),
                               (f'idx("{files_dir}/a.npz")', "not a folder of MNIST IDX files"),
                               (f'images("{files_dir}/seg16")', "holds images and masks")]:
        c = compile_src(_program("classes", {"data": data_text}, tmp_path), allow={"all"})
        with pytest.raises(CnncError) as e:
            Trainer(c, c.net.train, tmp_path / "run", progress=False, log=lambda s: None)
        assert message in e.value.message
