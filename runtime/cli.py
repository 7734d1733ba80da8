"""Stage 3 (runtime): `cnnc run` and `cnnc predict`.

Turns command-line flags into `train` overrides (validated by the compiler's
train-section table, so a flag and a file key fail the same way), runs the
trainer, evaluates a checkpoint, or prints predictions.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..compiler.train_spec import TrainConfig, set_key
from ..compiler.train_vocab import DATA, Invalid
from ..dsl.source import CnncError
from . import checkpoint
from . import data as data_mod
from . import preprocess


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def config_from_args(args, compiled) -> TrainConfig:
    cfg = compiled.net.train or TrainConfig()
    for key in ("epochs", "batch", "seed", "lr"):
        value = getattr(args, key, None)
        if value is not None:
            try:
                cfg = set_key(cfg, key, value, None)
            except CnncError as err:
                raise CnncError(f"--{key} {value}: {err.message}", hint=err.hint) from None
    return cfg


def _limit(args) -> int | None:
    """--limit N, checked as the data sets' `limit` option is (N >= 1; 0 is not "no limit")."""
    value = getattr(args, "limit", None)
    if value is None:
        return None
    try:
        return next(o for o in DATA.common if o.name == "limit").check(value)
    except Invalid as bad:
        raise CnncError(f"--limit {value}: must be {bad}") from None


def _out_dir(args, compiled) -> Path:
    return Path(args.out) if args.out else Path("runs") / compiled.net.name


def _threads(args) -> None:
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise CnncError(f"--threads {args.threads}: must be at least 1")


def run(args, compiled) -> int:
    from .train import Trainer
    _threads(args)
    cfg = config_from_args(args, compiled)
    limit = _limit(args)
    if compiled.net.train is None:
        print(f"note: {compiled.net.name} has no train section; using defaults "
              f"(mnist10k, {_plural(cfg.epochs, 'epoch')}, batch {cfg.batch}, sgd lr 0.01)", file=sys.stderr)
    progress = not args.quiet and sys.stderr.isatty()
    trainer = Trainer(compiled, cfg, _out_dir(args, compiled), data_override=args.data, limit=limit,
                      progress=progress, threads=args.threads)
    if args.eval:
        return evaluate_checkpoint(trainer, Path(args.eval))
    ds = trainer.ds
    header = (f"{compiled.net.name}: {len(ds.train):,} training samples"
              + (f", {len(ds.val):,} validation" if ds.val is not None else "")
              + (f", {len(ds.test):,} test" if ds.test is not None else "")
              + f" from {ds.name}; {_plural(cfg.epochs, 'epoch')} of batch {cfg.batch}; {cfg.optimizer.name} "
              f"lr {trainer.base_lr:g}; checkpoints in {trainer.out}")
    result = trainer.run(resume=args.resume, overwrite=getattr(args, "overwrite", False),
                         started=lambda: print(header))
    return 1 if result.non_finite else 0


def evaluate_checkpoint(trainer, path: Path) -> int:
    ck = checkpoint.load(path)
    trainer.plan.load_state(ck.params, str(path))
    split = trainer.ds.test if trainer.ds.test is not None else trainer.ds.val
    if split is None:
        raise CnncError(f"the data '{trainer.ds.name}' has no test or validation split to evaluate on")
    stats = trainer.evaluate(split)
    acc = f", accuracy {stats.accuracy:.2%}" if stats.accuracy is not None else ""
    print(f"{path} (epoch {ck.meta.get('epoch')}): loss {stats.mean_loss:.4f}{acc} on {len(split):,} samples")
    return 0


def _load_inputs(paths: list[str], sample_shape=None) -> np.ndarray:
    # One reader for prediction inputs (images, .npy, .npz): bounded, validated, errors name the file.
    return data_mod.load_inputs(paths, sample_shape)


def predict(args, compiled) -> int:
    from .plan import Plan
    ck = checkpoint.load(args.checkpoint)
    records = preprocess.check_records(ck.preprocess, f"checkpoint '{args.checkpoint}'")
    plan = Plan(compiled.net, compiled.analysis.params)
    plan.load_state(ck.params, args.checkpoint)
    shape = compiled.net.shapes[plan.inputs[0]]
    labels = None
    if args.inputs:
        x = _load_inputs(args.inputs, shape)
        if x.ndim == len(shape):  # [N, H, W] for one-channel images
            x = x[:, None]
        names = args.inputs if len(args.inputs) == len(x) else [f"#{i}" for i in range(len(x))]
        if tuple(x.shape[1:]) != tuple(shape):
            raise CnncError(f"the inputs have shape {list(x.shape[1:])}, the network expects {list(shape)}")
        x = preprocess.apply(records, x)  # what the trainer did to every sample it saw
    else:
        from .train import load_data
        cfg = compiled.net.train or TrainConfig()
        ds, _ = load_data(cfg, compiled, records=records)
        split = ds.test if ds.test is not None else ds.train
        x, labels = split.x[:args.limit], split.y[:args.limit]
        names = [f"test #{i}" for i in range(len(x))]
    logits = plan.predict(x)
    k = max(1, min(args.top, logits.shape[1]))
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    for i, name in enumerate(names):
        top = np.argsort(-prob[i])[:k]
        guesses = ", ".join(f"{c} ({prob[i, c]:.1%})" for c in top)
        truth = f"  [label {int(labels[i])}]" if labels is not None else ""
        print(f"{name}: {guesses}{truth}")
    return 0
