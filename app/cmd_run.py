"""Command line: `cnnc run` (train, or `--eval` a checkpoint) and `cnnc predict`.

Turns flags into train-section overrides (checked by the compiler's train
vocabulary, so a flag and a file key fail the same way), starts the trainer
or the predictor, and prints what they return.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .compiler.driver import Compiled
from .compiler.train_spec import TrainConfig, set_key, set_key_text
from .compiler.train_vocab import DATA, Invalid
from .dsl.files import describe_path, write_atomic
from .dsl.source import CnncError


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def config_from_args(args: argparse.Namespace, compiled: Compiled) -> TrainConfig:
    cfg = compiled.net.train or TrainConfig()
    for assignment in getattr(args, "train", None) or ():
        cfg = set_key_text(cfg, assignment, "--train")
    for key in ("epochs", "batch", "seed", "lr", "kfold", "bootstrap"):
        value = getattr(args, key, None)
        if value is not None:
            try:
                cfg = set_key(cfg, key, value, None)
            except CnncError as err:
                raise CnncError(f"--{key} {value}: {err.message}", hint=err.hint) from None
    return cfg


def _limit(args: argparse.Namespace) -> int | None:
    """--limit N, checked as the data sets' `limit` option is (N >= 1; 0 is not "no limit")."""
    if args.limit is None:
        return None
    try:
        return next(o for o in DATA.common if o.name == "limit").check(args.limit)
    except Invalid as bad:
        raise CnncError(f"--limit {args.limit}: must be {bad}") from None


def run(args: argparse.Namespace, compiled: Compiled) -> int:
    from .runtime.processes import LostPeer, watch_parent
    if args.threads is not None and args.threads < 1:
        raise CnncError(f"--threads {args.threads}: must be at least 1")
    cfg = config_from_args(args, compiled)
    limit = _limit(args)
    out = Path(args.out) if args.out else Path("runs") / compiled.net.name
    if _processes(args) > 1:
        if cfg.kfold:
            raise CnncError(f"--nproc {args.nproc}: k-fold cross-validation trains its folds in one process",
                            hint="drop --nproc, or train one fold's configuration without kfold")
        from .launch import launch
        return launch(args.argv, args.nproc, out)
    # A worker of `--nproc`: it ends as soon as its launcher does, and leaves naming a lost peer to it.
    launched = watch_parent(f"cnnc: error: training process {os.environ.get('RANK', '?')}: its launcher "
                            "is gone; stopping")
    try:
        return _train(args, compiled, cfg, out, limit)
    except LostPeer:
        if not launched:
            raise
        from .launch import LOST_PEER
        return LOST_PEER


def _train(args: argparse.Namespace, compiled: Compiled, cfg: TrainConfig, out: Path, limit: int | None) -> int:
    from .runtime.train.trainer import Trainer
    if compiled.net.train is None and os.environ.get("RANK", "0") == "0":
        print(f"note: {compiled.net.name} has no train section; using defaults "
              f"(mnist10k, {_plural(cfg.epochs, 'epoch')}, batch {cfg.batch}, sgd lr 0.01)", file=sys.stderr)
    progress = not args.quiet and sys.stderr.isatty()
    if cfg.kfold and not args.eval:
        return _kfold(args, compiled, cfg, out, limit, progress)
    trainer = Trainer(compiled, cfg, out, data_override=args.data, limit=limit, progress=progress,
                      threads=args.threads, engine=args.engine, device=args.device)
    if args.eval:
        return _evaluate(trainer, args.eval)
    ds = trainer.ds
    header = (f"{compiled.net.name}: {len(ds.train):,} training samples"
              + (" (a bootstrap resample)" if cfg.bootstrap else "")
              + (f", {len(ds.val):,} validation" if ds.val is not None else "")
              + (f", {len(ds.test):,} test" if ds.test is not None else "")
              + f" from {ds.name}; {_plural(cfg.epochs, 'epoch')} of batch {cfg.batch}; {cfg.optimizer.name} "
              f"lr {trainer.base_lr:g}; checkpoints in {describe_path(trainer.out)}")
    result = trainer.run(resume=args.resume, overwrite=args.overwrite, started=lambda: print(header))
    return 1 if result.non_finite else 0


def _processes(args: argparse.Namespace) -> int:
    """How many processes --nproc asks for (checked); 1 inside a launcher's process."""
    launched = "WORLD_SIZE" in os.environ
    if launched and args.engine != "torch":
        raise CnncError(f"this process was started by a launcher (WORLD_SIZE={os.environ['WORLD_SIZE']}), but "
                        "only the torch engine trains in several processes", hint="add --engine torch")
    if args.nproc is None:
        return 1
    if args.nproc < 1:
        raise CnncError(f"--nproc {args.nproc}: must be at least 1")
    if args.engine != "torch":
        raise CnncError(f"--nproc {args.nproc}: only the torch engine trains in several processes",
                        hint="add --engine torch (pip install 'cnnc[torch]')")
    if launched:
        raise CnncError(f"--nproc {args.nproc}: this process was already started by a launcher "
                        f"(WORLD_SIZE={os.environ['WORLD_SIZE']})", hint="drop --nproc under torchrun")
    if args.eval:
        raise CnncError(f"--nproc {args.nproc}: --eval runs in one process", hint="drop --nproc")
    return args.nproc


def _kfold(args: argparse.Namespace, compiled: Compiled, cfg: TrainConfig, out: Path, limit: int | None,
           progress: bool) -> int:
    """K models, one per fold; each fold's figures and their mean ± std."""
    from .runtime.select.kfold import SUMMARY, run_kfold
    from .runtime.train.trainer import Trainer

    def make_trainer(fold_cfg, fold_out, resplit, log):
        return Trainer(compiled, fold_cfg, fold_out, data_override=args.data, limit=limit, progress=progress,
                       log=log, threads=args.threads, resplit=resplit, engine=args.engine, device=args.device)

    def started(n: int) -> None:
        print(f"{compiled.net.name}: {cfg.kfold}-fold cross-validation of {n:,} training samples (the test "
              f"split is kept out); {_plural(cfg.epochs, 'epoch')} per fold; folds in {describe_path(out)}")
    result = run_kfold(compiled, cfg, out, make_trainer, resume=args.resume, overwrite=args.overwrite,
                       started=started)
    names = [n for n in ("train_loss", "train_accuracy", "val_loss", "val_accuracy") if n in result.summary]
    print("fold  " + "  ".join(f"{n:>14}" for n in names))
    for f in result.folds:
        print(f"{f.index:>4}  " + "  ".join(f"{_figure(n, f.figures[n]):>14}" for n in names))
    print("mean  " + "  ".join(f"{_figure(n, result.summary[n]['mean']):>14}" for n in names))
    print(" std  " + "  ".join(f"{_figure(n, result.summary[n]['std']):>14}" for n in names))
    print(f"wrote {describe_path(out / SUMMARY)}")
    return 1 if any(f.non_finite for f in result.folds) else 0


def _figure(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if name.endswith("accuracy") else f"{value:.4f}"


def _evaluate(trainer, path: str) -> int:
    from .runtime.predict import evaluate
    e = evaluate(trainer, path)
    acc = f", accuracy {e.accuracy:.2%}" if e.accuracy is not None else ""
    print(f"{describe_path(path)} (epoch {e.epoch}): loss {e.loss:.4f}{acc} on {e.samples:,} samples")
    return 0


def predict(args: argparse.Namespace, compiled: Compiled) -> int:
    if args.top < 1:
        raise CnncError(f"--top {args.top}: must be at least 1")
    if args.limit < 1:
        raise CnncError(f"--limit {args.limit}: must be at least 1")
    overlay = getattr(args, "overlay", False)
    if overlay and not args.output:
        raise CnncError("--overlay: needs -o DIR, the folder the overlays (and masks) are written to")
    p = _predictions(args, compiled)
    if p.probabilities.ndim > 2:
        return _print_masks(args, p)
    if overlay:
        raise CnncError("--overlay: only a segmentation network's masks can be overlaid",
                        hint="this network predicts one class per input, not a mask [classes, H, W]")
    if args.output:
        raise CnncError(f"-o {describe_path(args.output)}: only a segmentation network's masks are written",
                        hint="this network predicts one class per input; its predictions are printed")
    k = min(args.top, p.probabilities.shape[1])

    def named(c: int) -> str:
        return f"{c} {describe_path(p.classes[c])}" if p.classes and 0 <= c < len(p.classes) else str(c)
    for i, name in enumerate(p.names):
        prob = p.probabilities[i]
        guesses = ", ".join(f"{named(c)} ({prob[c]:.1%})" for c in prob.argsort()[::-1][:k])
        truth = f"  [label {named(int(p.labels[i]))}]" if p.labels is not None else ""
        print(f"{describe_path(name)}: {guesses}{truth}")
    return 0


def _predictions(args: argparse.Namespace, compiled: Compiled):
    """One checkpoint's predictions, or (with --ensemble / --member) the ensemble's."""
    from .runtime.predict import predict as run_predictions
    if not args.ensemble and not args.member:
        if args.combine is not None:
            raise CnncError(f"--combine {args.combine}: an ensemble needs --ensemble or --member checkpoints")
        return run_predictions(compiled, args.checkpoint, args.inputs, args.limit)
    from .cmd_evaluate import members
    from .runtime.select.ensemble import predict_ensemble
    group = members(args, compiled, [args.checkpoint, *args.ensemble])
    return predict_ensemble(group, args.inputs, args.limit, args.combine or "mean")


def _print_masks(args: argparse.Namespace, p) -> int:
    """A dense output: per input its mask's class shares (and pixel accuracy against a label mask);
    with -o DIR each mask as a palette PNG, and with --overlay each input blended with its mask."""
    from .viz.masks import mask_png, overlay_png
    classes = p.probabilities.shape[1]
    masks = p.probabilities.argmax(axis=1)
    out = Path(args.output) if args.output else None
    for i, (name, mask) in enumerate(zip(p.names, masks)):
        counts = np.bincount(mask.ravel(), minlength=classes) / mask.size
        shares = ", ".join(f"{c} ({counts[c]:.1%})" for c in np.argsort(-counts)[:args.top] if counts[c] > 0)
        line = f"{describe_path(name)}: mask {mask.shape[0]}x{mask.shape[1]}, classes {shares}"
        if p.labels is not None and p.labels[i].shape == mask.shape:
            line += f"  [pixel accuracy {(p.labels[i] == mask).mean():.1%}]"
        if out is not None:
            target = out / f"mask_{i:04d}.png"
            write_atomic(target, mask_png(mask, classes), "mask", inputs=[args.checkpoint, *args.inputs])
            line += f" -> {describe_path(target)}"
        if out is not None and getattr(args, "overlay", False):
            target = out / f"overlay_{i:04d}.png"
            write_atomic(target, overlay_png(_overlay_image(p, i, mask), mask, classes), "overlay",
                         inputs=[args.checkpoint, *args.inputs])
            line += f", {describe_path(target)}"
        print(line)
    return 0


def _overlay_image(p, i: int, mask: np.ndarray) -> np.ndarray:
    """Input i as read (before preprocessing), checked to be a picture the size of its mask."""
    image = p.images[i]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise CnncError(f"--overlay: input {describe_path(p.names[i])} has shape {list(image.shape)}; "
                        "an overlay needs a grey or RGB image")
    if image.shape[1:] != mask.shape:
        raise CnncError(f"--overlay: the network's masks are {mask.shape[1]}x{mask.shape[0]} pixels, its inputs "
                        f"{image.shape[2]}x{image.shape[1]}; an overlay needs masks of the input's size")
    return image
