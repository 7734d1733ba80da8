"""Command line: `cnnc run` (train, or `--eval` a checkpoint) and `cnnc predict`.

A thin layer over the Python API (app/api.py): the flags become the
arguments of `api.train` (train-section overrides checked by the compiler's
train vocabulary, so a flag and a file key fail the same way) or of the
predictor, and what they return is printed. `--nproc` starts the processes
(app/launch.py) that each run this command again.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import api
from .compiler.driver import Compiled
from .compiler.train_spec import Given, train_config
from .dsl.files import describe_path, write_atomic
from .dsl.source import CnncError
from .image_flag import resize_of
from .runtime.progress import wanted


def train_flags(args: argparse.Namespace) -> list[Given]:
    """The flags that set train keys (api.KEY_OPTIONS) and --train: one layer over the file's section,
    compiled with it (cli.py), so the record is checked as a whole with them (api.train_layer)."""
    return api.train_layer(getattr(args, "train", None) or (),
                           **{key: getattr(args, key, None) for key in api.KEY_OPTIONS})


def _options(args: argparse.Namespace) -> api.Options:
    """How the run reads its data and computes, from the flags (checked as api.Options checks them)."""
    return api.Options(args.data, args.limit, args.threads, args.engine, args.device, wanted(sys.stderr, args.quiet),
                       kernels=args.kernels, tensorboard=args.tensorboard, watch_every=args.watch_every,
                       quiet=args.quiet)


def run(args: argparse.Namespace, compiled: Compiled) -> int:
    """`cnnc run`: the file compiled with the flags over its train section (cli.py), run by `api.run`
    (with --nproc: checked, then the processes start)."""
    from .runtime.processes import LostPeer, watch_parent
    options = _options(args)
    cfg = train_config(compiled.net)
    if _processes(args) > 1:
        if cfg.kfold:
            raise CnncError(f"--nproc {args.nproc}: k-fold cross-validation trains its folds in one process",
                            hint="drop --nproc, or train one fold's configuration without kfold")
        from .launch import launch
        return launch(args.argv, args.nproc, api.run_directory(compiled, args.out))
    # A worker of `--nproc`: it ends as soon as its launcher does, and leaves naming a lost peer to it.
    launched = watch_parent(f"cnnc: error: training process {os.environ.get('RANK', '?')}: its launcher "
                            "is gone; stopping")
    try:
        return _train(args, compiled, cfg, options)
    except LostPeer:
        if not launched:
            raise
        from .launch import LOST_PEER
        return LOST_PEER


def _train(args: argparse.Namespace, compiled: Compiled, cfg, options: api.Options) -> int:
    if args.eval:
        return _evaluate(args, compiled, cfg, options)
    result = api.run(compiled, cfg, options, args.out, args.resume, args.overwrite)
    if isinstance(result, api.Run):
        return 1 if result.non_finite else 0
    return _print_kfold(result, api.run_directory(compiled, args.out))


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


def _print_kfold(result, out: Path) -> int:
    """Each fold's figures and their mean ± std."""
    from .runtime.select.kfold import FIGURES, SUMMARY
    from .runtime.select.search import figure_text
    names = [n for n in FIGURES if n in result.summary]
    print("fold  " + "  ".join(f"{n:>14}" for n in names))
    for f in result.folds:
        print(f"{f.index:>4}  " + "  ".join(f"{figure_text(n, f.figures[n]):>14}" for n in names))
    print("mean  " + "  ".join(f"{figure_text(n, result.summary[n]['mean']):>14}" for n in names))
    print(" std  " + "  ".join(f"{figure_text(n, result.summary[n]['std']):>14}" for n in names))
    print(f"wrote {describe_path(out / SUMMARY)}")
    return 1 if any(f.non_finite for f in result.folds) else 0


def _evaluate(args: argparse.Namespace, compiled: Compiled, cfg, options: api.Options) -> int:
    """`--eval CHECKPOINT`: score it on the test split (else validation) with the run's data."""
    from .runtime.predict import evaluate
    e = evaluate(options.trainer(compiled, cfg, api.run_directory(compiled, args.out)), args.eval)
    acc = f", accuracy {e.accuracy:.2%}" if e.accuracy is not None else ""
    print(f"{describe_path(args.eval)} (epoch {e.epoch}): loss {e.loss:.4f}{acc} on {e.samples:,} samples")
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

    def named(c: int) -> str:
        return f"{c} {describe_path(p.classes[c])}" if p.classes and 0 <= c < len(p.classes) else str(c)
    for i, (name, best) in enumerate(zip(p.names, p.ranked(args.top))):
        guesses = ", ".join(f"{named(c)} ({prob:.1%})" for c, _, prob in best)
        truth = f"  [label {named(int(p.labels[i]))}]" if p.labels is not None else ""
        print(f"{describe_path(name)}: {guesses}{truth}")
    return 0


def _predictions(args: argparse.Namespace, compiled: Compiled):
    """One checkpoint's predictions, or (with --ensemble / --member) the ensemble's."""
    from .runtime.predict import predict as run_predictions
    if not args.ensemble and not args.member:
        if args.combine is not None:
            raise CnncError(f"--combine {args.combine}: an ensemble needs --ensemble or --member checkpoints")
        return run_predictions(compiled, args.checkpoint, args.inputs, args.limit, resize_of(args))
    from .cmd_evaluate import members
    from .runtime.select.ensemble import predict_ensemble
    group = members(args, compiled, [args.checkpoint, *args.ensemble])
    return predict_ensemble(group, args.inputs, args.limit, args.combine or "mean", resize_of(args))


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
