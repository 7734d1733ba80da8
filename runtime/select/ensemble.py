"""Stage 3 (runtime): ensembles — several trained checkpoints predicting as one.

A member is a checkpoint with the network it was trained for (one network or
several; each member replays its own checkpoint's preprocessing). The members
must predict the same classes: the same output shape and, where the
checkpoints name their classes, the same names. `combine` merges their class
probabilities (softmax over axis 1, so a segmentation network's masks too)
by averaging them (`mean`) or by majority vote (`vote`: the share of members
choosing each class, ties broken by the averaged probability).
`evaluate_ensemble` scores every member and the ensemble on the same test
split (else validation split): accuracy, mean negative log-likelihood (not
for a vote, whose shares are no probabilities) and macro F1 / mean IoU.
The members come from different seeds, from bagging (`bootstrap = true`)
or from one run's snapshots (`snapshots = true`, runtime/train/trainer.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...compiler.train_spec import train_config, with_data
from ...dsl.files import describe_path
from ...dsl.source import CnncError
from .. import checkpoint
from .. import preprocess
from ..data.image_policy import ImagePolicy
from ..data.pipeline import inputs, prepare
from ..data.targets import CLASS, PIXEL_CLASS, NetworkShapes
from ..train.evaluation import Confusion, report
from ..train.losses import loss_for
from ..predict import Predictions, predict as predict_one

COMBINE = ("mean", "vote")


@dataclass(frozen=True)
class Member:
    compiled: Any
    path: str
    flag: str          # how the user named it, for messages: "checkpoint a.npz", "--member b.cnn c.npz"

    @property
    def name(self) -> str:
        return describe_path(self.path)


@dataclass(frozen=True)
class Score:
    name: str
    accuracy: float
    loss: float | None
    macro: float | None       # macro F1 (classes) or mean IoU (masks)


@dataclass(frozen=True)
class EnsembleReport:
    rows: list[Score]          # every member, then the ensemble
    samples: int
    split: str
    data: str
    combine: str


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def combine(probabilities: Sequence[np.ndarray], how: str) -> np.ndarray:
    """One [N, K, ...] array whose argmax over axis 1 is the ensemble's choice."""
    if how not in COMBINE:
        raise CnncError(f"--combine {how}: must be one of {', '.join(COMBINE)}")
    stack = np.stack([np.asarray(p, np.float64) for p in probabilities])
    mean = stack.mean(axis=0)
    if how == "mean":
        return mean
    k = stack.shape[2]
    votes = np.eye(k)[stack.argmax(axis=2)]                  # [M, N, ..., K] one-hot choices
    shares = np.moveaxis(votes.mean(axis=0), -1, 1)           # back to [N, K, ...]
    # Shares differ by at least 1/M; the averaged probability only decides between equal shares.
    return shares + mean * 1e-9


def check_members(members: Sequence[Member]) -> None:
    """Members must predict the same classes (output shape, and class names where recorded)."""
    first = members[0]
    shape = _output_shape(first)
    names = checkpoint.load(first.path).classes
    for m in members[1:]:
        other = _output_shape(m)
        if other != shape:
            raise CnncError(f"{m.flag}: its network '{m.compiled.net.name}' has outputs of shape {list(other)}, "
                            f"the first member's '{first.compiled.net.name}' {list(shape)}",
                            hint="an ensemble's members must predict the same classes")
        theirs = checkpoint.load(m.path).classes
        if names is not None and theirs is not None and list(theirs) != list(names):
            raise CnncError(f"{m.flag}: its classes {theirs[:5]} differ from the first member's {names[:5]}",
                            hint="an ensemble's members must predict the same classes, in the same order")


def _output_shape(m: Member) -> tuple:
    net = m.compiled.net
    return tuple(net.shapes[net.outputs[0]])


def predict_ensemble(members: Sequence[Member], inputs: Sequence[str], limit: int, how: str,
                     resize: tuple[int, int] | None = None) -> Predictions:
    """Every member's prediction of the same inputs (or test samples), combined."""
    check_members(members)
    each = [predict_one(m.compiled, m.path, inputs, limit, resize) for m in members]
    first = each[0]
    for m, p in zip(members[1:], each[1:]):
        if p.labels is not None and first.labels is not None and not np.array_equal(p.labels, first.labels):
            raise CnncError(f"{m.flag}: its network's test split differs from the first member's",
                            hint="give the members the same data (--data)")
    return Predictions(first.names, combine([p.probabilities for p in each], how), first.labels, first.classes)


def _member_split(m: Member, data_override: str | None,
                  resize: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, str, str, Any]:
    """The member's test (else validation) split after its own checkpoint's preprocessing; a folder of
    images is read by the image policy (`resize`, else the training's recorded size)."""
    ck = checkpoint.load(m.path)
    records = preprocess.check_records(ck.preprocess, f"checkpoint '{m.name}'")
    cfg = with_data(train_config(m.compiled.net), data_override)
    loss = loss_for(cfg)
    net = m.compiled.net
    shape = tuple(next(iter(net.inputs.values())))
    images = ImagePolicy(net.name, shape, resize, ck.image_size) if len(shape) == 3 else None
    if images is not None:
        images.check()
    ds = prepare(cfg, NetworkShapes.of(net), loss, records=records, images=images)
    if loss.target_kind not in (CLASS, PIXEL_CLASS):
        raise CnncError(f"{m.flag}: network '{m.compiled.net.name}' is trained with a {loss.name} loss; "
                        "ensembles combine class probabilities", hint="only classifiers and segmenters combine")
    split, name = (ds.test, "test") if ds.test is not None and len(ds.test) else (ds.val, "validation")
    if split is None or not len(split):
        raise CnncError(f"the data '{ds.name}' has no test or validation split to evaluate on")
    return inputs(ds, split.x), split.y, name, ds.name, loss


def _probabilities(m: Member, x: np.ndarray) -> np.ndarray:
    from ..plan import Plan
    ck = checkpoint.load(m.path)
    plan = Plan(m.compiled.net, m.compiled.analysis.params)
    plan.load_state(ck.params, m.path)
    out = [softmax(plan.predict(x[i:i + 256]).astype(np.float64)) for i in range(0, len(x), 256)]
    return np.concatenate(out)


def score(name: str, prob: np.ndarray, y: np.ndarray, dense: bool, with_loss: bool) -> Score:
    """Accuracy, mean NLL and macro F1 (mean IoU for masks) of probabilities against labels."""
    labels = y.astype(np.int64)
    guess = prob.argmax(axis=1)
    valid = (labels >= 0) & (labels < prob.shape[1])
    accuracy = float((guess == labels)[valid].mean()) if valid.any() else float("nan")
    loss = None
    if with_loss:
        picked = np.take_along_axis(prob, np.clip(labels, 0, prob.shape[1] - 1)[:, None], axis=1)[:, 0]
        loss = float(-np.log(np.maximum(picked[valid], 1e-12)).mean())
    confusion = Confusion(prob.shape[1])
    confusion.add(prob, labels)
    figures = report(confusion, dense)
    return Score(name, accuracy, loss, figures.get("mean_iou") if dense else figures.get("macro_f1"))


def evaluate_ensemble(members: Sequence[Member], how: str, data_override: str | None = None,
                      resize: tuple[int, int] | None = None) -> EnsembleReport:
    """Every member and the ensemble, scored on the same split."""
    if how not in COMBINE:
        raise CnncError(f"--combine {how}: must be one of {', '.join(COMBINE)}")
    check_members(members)
    probs, rows = [], []
    labels = split = data = None
    for m in members:
        x, y, split_name, data_name, loss = _member_split(m, data_override, resize)
        if labels is None:
            labels, split, data = y, split_name, data_name
        elif y.shape != labels.shape or not np.array_equal(y, labels):
            raise CnncError(f"{m.flag}: its {split_name} split ({data_name}, {len(y):,} samples) is not the first "
                            f"member's ({data}, {len(labels):,} samples)", hint="give them the same data (--data)")
        p = _probabilities(m, x)
        probs.append(p)
        rows.append(score(m.name, p, y, p.ndim > 2, True))
    combined = combine(probs, how)
    rows.append(score(f"ensemble ({how})", combined, labels, combined.ndim > 2, how == "mean"))
    return EnsembleReport(rows, len(labels), split, data, how)
