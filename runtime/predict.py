"""Stage 3 (runtime): predictions and evaluation of a trained checkpoint.

`predict` runs a network on input files (images, `.npy`, `.npz`) or on the
first samples of its data set's test split, after the preprocessing records
the checkpoint carries (the very `preprocess.apply` the trainer used), and
returns class probabilities, computed by the fused, planned eval path
(`fused_predict`), with the inputs as read, before preprocessing, for
pictures such as mask overlays; `evaluate` scores a checkpoint on the test (or
validation) split. Both return values: the command line prints them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..compiler.train_spec import train_config
from ..dsl.files import describe_path
from ..dsl.source import CnncError
from . import checkpoint
from .data.image_policy import ImagePolicy
from .data.inputs import load_inputs
from .data.pipeline import prepare
from .data.targets import NetworkShapes
from . import preprocess
from .train.losses import loss_for   # which targets the network's loss takes: its data is checked against them


@dataclass(frozen=True)
class Predictions:
    names: list[str]              # the file, or "test #i"
    probabilities: np.ndarray     # [N, classes]
    labels: np.ndarray | None     # the data set's labels, when the inputs came from it
    classes: list[str] | None     # class names in label order, as the trainer recorded them
    images: np.ndarray | None = None  # the inputs [N, C, H, W] as read, before preprocessing (for overlays)

    def ranked(self, k: int = 1) -> list[list[tuple[int, str | None, float]]]:
        """Per input, its k most likely classes, most likely first: (index, name or None, probability)."""
        if self.probabilities.ndim != 2:
            raise CnncError(f"the network predicts masks {list(self.probabilities.shape[1:])}, not one class "
                            "per input", hint="take probabilities.argmax(axis=1) for each pixel's class")
        named = self.classes if self.classes is not None else [None] * self.probabilities.shape[1]
        return [[(int(c), named[c], float(row[c])) for c in row.argsort()[::-1][:k]] for row in self.probabilities]


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float | None
    samples: int
    epoch: int | None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fused_predict(plan, x: np.ndarray, batch: int = 64, threads: int | None = None) -> np.ndarray:
    """The plan's first output for every sample of x by the fastest eval path: the fused graph
    (batchnorm folded into the convs, runtime/fused.py) run on preallocated arenas, one per thread
    (runtime/memory_plan.py `ShardedArena`; default: a thread per core), batch by batch. Equal to
    `plan.predict(x)` up to float rounding."""
    from .fused import FusedPlan
    from .memory_plan import ShardedArena
    if not len(x):
        return plan.predict(x)
    arena = ShardedArena(FusedPlan.from_plan(plan), threads or os.cpu_count() or 1)
    out = plan.outputs[0]
    try:
        return np.concatenate([arena.run({plan.inputs[0]: x[i:i + batch]})[out] for i in range(0, len(x), batch)])
    finally:
        arena.close()


def predict(compiled, checkpoint_path: str, inputs: Sequence[str] = (), limit: int = 10,
            resize: tuple[int, int] | None = None) -> Predictions:
    """Class probabilities of a trained network for input files, or for `limit` test samples; image
    files follow the image policy (`resize`, else the training's recorded size: image_policy.py)."""
    from .plan import Plan
    ck = checkpoint.load(checkpoint_path)
    records = preprocess.check_records(ck.preprocess, f"checkpoint '{describe_path(checkpoint_path)}'")
    plan = Plan(compiled.net, compiled.analysis.params)
    plan.load_state(ck.params, checkpoint_path)
    shape = compiled.net.shapes[plan.inputs[0]]
    labels = None
    if resize is not None and not (inputs and len(shape) == 3):
        raise CnncError(f"--resize {resize[0]}x{resize[1]}: resizes image files given to predict; "
                        + ("the network's input is no image" if inputs else "the test split is read as the train "
                                                                           "section says"))
    if inputs:
        policy = ImagePolicy(compiled.net.name, tuple(shape), resize, ck.image_size) if len(shape) == 3 else None
        if policy is not None:
            policy.check()
        x = load_inputs(list(inputs), shape, policy)
        if x.ndim == len(shape):  # [N, H, W] for one-channel images
            x = x[:, None]
        names = list(inputs) if len(inputs) == len(x) else [f"#{i}" for i in range(len(x))]
        if tuple(x.shape[1:]) != tuple(shape):
            raise CnncError(f"the inputs have shape {list(x.shape[1:])}, the network expects {list(shape)}")
    else:
        cfg = train_config(compiled.net)
        # read without preprocessing (records=[]) to keep the samples as they are, then apply it below
        ds = prepare(cfg, NetworkShapes.of(compiled.net), loss_for(cfg), records=[])
        split = ds.test if ds.test is not None else ds.train
        x, labels = split.x[:limit], split.y[:limit]
        names = [f"test #{i}" for i in range(len(x))]
    raw = x
    x = preprocess.apply(records, x)  # what the trainer did to every sample it saw
    prob = _softmax(fused_predict(plan, x))
    classes = ck.classes
    if classes is not None and len(classes) != prob.shape[1]:
        raise CnncError(f"checkpoint '{describe_path(checkpoint_path)}' names {len(classes)} classes, the network "
                        f"has {prob.shape[1]} outputs")
    return Predictions(names, prob, labels, classes, raw)


def evaluate(trainer, path: str | Path) -> Evaluation:
    """Load `path` into the trainer's engine and score it on the test split (else validation)."""
    ck = checkpoint.load(path)
    trainer.engine.load_state(ck.params, {}, str(path))
    split = trainer.ds.test if trainer.ds.test is not None else trainer.ds.val
    if split is None:
        raise CnncError(f"the data '{trainer.ds.name}' has no test or validation split to evaluate on")
    stats = trainer.evaluate(split)
    epoch = ck.meta.get("epoch")
    return Evaluation(stats.mean_loss, stats.accuracy, len(split), epoch if isinstance(epoch, int) else None)
