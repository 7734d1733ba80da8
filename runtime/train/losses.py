"""Stage 3 (runtime): loss functions and their gradients, with PyTorch semantics.

Every loss is a plain function `loss_fn(pred, target, **options) -> (loss,
dpred)`: `pred` is the network output (logits for the classification losses),
`loss` a Python float averaged the way PyTorch's `reduction="mean"` averages
it, and `dpred` the gradient of that mean with respect to `pred`, in `pred`'s
dtype. The arithmetic runs in float64 whatever the input dtype, because the
reductions are cheap next to the network and the extra precision makes the
reported loss stable across batch sizes. `LOSSES` maps each name to a
`LossSpec`, which also names the kind of target the loss takes (a kind of
data/targets.py, whose checks read it) and how to count "correct" predictions for the accuracy
the trainer reports; `make_loss(name, **options)` binds options such as
`label_smoothing` or `ignore_index`. The names and options are those the
train vocabulary declares (compiler/train_vocab.py `LOSS`): each function's
keyword-only parameters are exactly its entry's options.

A train section's `loss` (compiler/train_spec.py `Loss`) is, per output, a
weighted sum of these; `WeightedLoss` sums them (a single term of weight 1 is
the `LossSpec` itself), and `Objective` is the whole of what a network is
trained on: each output's loss times its `loss_weights` entry, summed, with
each output's own loss and accuracy counts kept for the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from ...compiler.train_spec import Loss, TrainConfig
from ...compiler.train_vocab import LOSS
from ...dsl.source import CnncError, did_you_mean
from ..data.targets import BINARY, CLASS, MULTILABEL, PIXEL_CLASS, REAL

LossResult = tuple[float, np.ndarray]
LossFn = Callable[..., LossResult]
CountFn = Callable[..., tuple[int, int]]


# ---------------------------------------------------------------- helpers

def _as_float64(pred: np.ndarray) -> np.ndarray:
    return np.asarray(pred, dtype=np.float64)


def _grad_dtype(pred: np.ndarray) -> np.dtype:
    """Gradients come back in the prediction's float dtype (float64 for ints)."""
    dtype = np.asarray(pred).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _match_target(pred: np.ndarray, target: np.ndarray, loss: str) -> np.ndarray:
    """Targets of the same size as pred ([N] vs [N, 1]) are reshaped to pred's shape."""
    target = np.asarray(target)
    if target.shape == pred.shape:
        return target
    if target.size == pred.size and target.shape[:1] == pred.shape[:1]:
        return target.reshape(pred.shape)
    raise CnncError(
        f"{loss}: the targets have shape {list(target.shape)} but the network output has "
        f"shape {list(pred.shape)}",
        hint="the target of each sample must have as many values as the network's last layer")


def _int_labels(labels: np.ndarray, loss: str) -> np.ndarray:
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64, copy=False)
    if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)  # integral floats, e.g. labels stored as float32
    raise CnncError(f"{loss}: class labels must be integers, got dtype {labels.dtype}",
                    hint="use a regression loss (mse, smooth_l1) for real-valued targets")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis, shifted by the max for stability."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function that never overflows: exp only sees non-positive numbers."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---------------------------------------------------------------- classification

def _softmax_ce_rows(logits: np.ndarray, labels: np.ndarray, label_smoothing: float,
                     ignore_index: int | None, loss: str) -> tuple[float, np.ndarray]:
    """Mean CE over rows of `logits` [M, K] whose label is not ignored (PyTorch rules)."""
    m, k = logits.shape
    if not 0.0 <= label_smoothing <= 1.0:
        raise CnncError(f"{loss}: label_smoothing must lie in [0, 1], got {label_smoothing}")
    valid = np.ones(m, dtype=bool) if ignore_index is None else labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= k))
    if bad.any():
        raise CnncError(f"{loss}: label {int(labels[bad][0])} is outside [0, {k})",
                        hint=f"the network has {k} outputs, so labels must be 0..{k - 1}")
    count = int(valid.sum())
    grad = np.zeros((m, k))
    if count == 0:
        # Everything ignored: PyTorch returns nan; a zero loss and gradient keep training sane.
        return 0.0, grad
    z, y = logits[valid], labels[valid]
    logp = _log_softmax(z)
    # Target distribution: (1 - eps) on the label plus eps spread uniformly over K classes.
    q = np.full(z.shape, label_smoothing / k)
    q[np.arange(len(y)), y] += 1.0 - label_smoothing
    loss_value = float(-(q * logp).sum() / count)
    grad[valid] = (np.exp(logp) - q) / count
    return loss_value, grad


def cross_entropy(logits: np.ndarray, labels: np.ndarray, *, label_smoothing: float = 0.0,
                  ignore_index: int | None = None) -> LossResult:
    """Softmax cross-entropy of logits [N, K] against int labels [N] (torch.nn.CrossEntropyLoss)."""
    z = _as_float64(logits)
    if z.ndim != 2:
        raise CnncError(f"cross_entropy: expects logits of shape [N, K], got {list(z.shape)}",
                        hint="add a `flatten`/`linear` before the loss, or use pixel_cross_entropy")
    y = _int_labels(labels, "cross_entropy").reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise CnncError(f"cross_entropy: {y.shape[0]} labels for {z.shape[0]} samples")
    value, grad = _softmax_ce_rows(z, y, label_smoothing, ignore_index, "cross_entropy")
    return value, grad.astype(_grad_dtype(logits))


def pixel_cross_entropy(logits: np.ndarray, labels: np.ndarray, *, label_smoothing: float = 0.0,
                        ignore_index: int | None = None) -> LossResult:
    """Per-pixel CE: logits [N, K, H, W], int labels [N, H, W]; mean over non-ignored pixels."""
    z = _as_float64(logits)
    if z.ndim != 4:
        raise CnncError(f"pixel_cross_entropy: expects logits [N, K, H, W], got {list(z.shape)}")
    n, k, h, w = z.shape
    y = _int_labels(labels, "pixel_cross_entropy")
    if y.shape != (n, h, w):
        raise CnncError(f"pixel_cross_entropy: the masks have shape {list(y.shape)} but the "
                        f"network output needs [N, H, W] = {[n, h, w]}",
                        hint="each mask must have one class index per output pixel")
    rows = z.transpose(0, 2, 3, 1).reshape(-1, k)  # class axis last: one row per pixel
    value, grad = _softmax_ce_rows(rows, y.reshape(-1), label_smoothing, ignore_index,
                                   "pixel_cross_entropy")
    grad = grad.reshape(n, h, w, k).transpose(0, 3, 1, 2)
    return value, np.ascontiguousarray(grad, dtype=_grad_dtype(logits))


def _bce_core(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    # max(z, 0) - z t + log(1 + exp(-|z|)) is log(1 + e^z) - z t without overflow.
    per = np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))
    return float(per.mean()), (_sigmoid(z) - t) / z.size


def bce(logits: np.ndarray, targets: np.ndarray) -> LossResult:
    """Binary CE on logits (sigmoid inside), targets in [0, 1] (torch BCEWithLogitsLoss)."""
    z = _as_float64(logits)
    t = _match_target(z, targets, "bce").astype(np.float64)
    value, grad = _bce_core(z, t)
    return value, grad.astype(_grad_dtype(logits))


def multilabel_bce(logits: np.ndarray, targets: np.ndarray) -> LossResult:
    """Independent sigmoid CE per label: logits [N, K], 0/1 targets [N, K], mean over N*K."""
    z = _as_float64(logits)
    t = np.asarray(targets)
    if z.ndim != 2 or t.shape != z.shape:
        raise CnncError(f"multilabel_bce: expects logits and targets of the same shape [N, K], "
                        f"got {list(z.shape)} and {list(t.shape)}",
                        hint="each sample needs one 0/1 target per output")
    value, grad = _bce_core(z, t.astype(np.float64))
    return value, grad.astype(_grad_dtype(logits))


# ---------------------------------------------------------------- regression

def is_class_labels(pred: np.ndarray, targets: np.ndarray) -> bool:
    """Integer targets, one per sample, for a prediction of K > 1 values per sample: class labels."""
    t, p = np.asarray(targets), np.asarray(pred)
    return t.dtype.kind in "iu" and t.ndim == 1 and p.ndim == 2 and p.shape[1] > 1 and len(t) == len(p)


def one_hot(labels: np.ndarray, k: int, loss: str) -> np.ndarray:
    """Labels [N] in [0, k) as float64 rows [N, k] with a 1 at each label."""
    labels = np.asarray(labels, dtype=np.int64)
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        raise CnncError(f"{loss}: label {int(labels[bad][0])} is outside [0, {k})",
                        hint=f"the network has {k} outputs, so labels must be 0..{k - 1}")
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def mse(pred: np.ndarray, targets: np.ndarray) -> LossResult:
    """Mean squared error (torch.nn.MSELoss); class labels [N] against K outputs become one-hot
    targets (LeCun et al. 1989 trained with tanh outputs and squared error this way)."""
    p = _as_float64(pred)
    if is_class_labels(p, targets):
        targets = one_hot(targets, p.shape[1], "mse")
    d = p - _match_target(p, targets, "mse").astype(np.float64)
    return float((d * d).mean()), (2.0 * d / d.size).astype(_grad_dtype(pred))


def smooth_l1(pred: np.ndarray, targets: np.ndarray, *, beta: float = 1.0) -> LossResult:
    """Huber-like loss (torch.nn.SmoothL1Loss): quadratic below |d| < beta, linear above."""
    if beta < 0:
        raise CnncError(f"smooth_l1: beta must be non-negative, got {beta}")
    p = _as_float64(pred)
    d = p - _match_target(p, targets, "smooth_l1").astype(np.float64)
    a = np.abs(d)
    if beta == 0:  # PyTorch: beta == 0 is exactly L1
        return float(a.mean()), (np.sign(d) / d.size).astype(_grad_dtype(pred))
    quad = a < beta
    per = np.where(quad, 0.5 * d * d / beta, a - 0.5 * beta)
    grad = np.where(quad, d / beta, np.sign(d)) / d.size
    return float(per.mean()), grad.astype(_grad_dtype(pred))


# ---------------------------------------------------------------- accuracy counters

def _count_argmax(logits: np.ndarray, labels: np.ndarray, *,
                  ignore_index: int | None = None, **_: Any) -> tuple[int, int]:
    """(correct, counted) for argmax over axis 1: works for [N, K] and [N, K, H, W]."""
    guess = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels).reshape(guess.shape)
    valid = np.ones(guess.shape, dtype=bool) if ignore_index is None else labels != ignore_index
    return int(((guess == labels) & valid).sum()), int(valid.sum())


def _count_class_labels(pred: np.ndarray, targets: np.ndarray, **_: Any) -> tuple[int, int] | None:
    """(correct, counted) by argmax when the targets are class labels (mse on labels), else None."""
    return _count_argmax(pred, targets) if is_class_labels(pred, targets) else None


def _count_threshold(logits: np.ndarray, targets: np.ndarray, **_: Any) -> tuple[int, int]:
    """(correct, counted) per output value: sigmoid(z) > 0.5 is z > 0, target >= 0.5 is positive."""
    z = np.asarray(logits)
    t = np.asarray(targets).reshape(z.shape)
    return int(((z > 0) == (t >= 0.5)).sum()), int(z.size)


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class LossSpec:
    """A named loss: the function, its target kind, and its accuracy counter (None: no accuracy)."""

    name: str
    fn: LossFn
    target_kind: str
    count_correct: CountFn | None = None
    options: dict[str, Any] = field(default_factory=dict)
    one_hot_labels: bool = False   # a REAL loss that also takes class labels, compared as one-hot targets

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> LossResult:
        return self.fn(pred, target, **self.options)

    def correct(self, pred: np.ndarray, target: np.ndarray) -> tuple[int, int] | None:
        """(correct, counted) for summing over batches; None for regression losses."""
        if self.count_correct is None:
            return None
        return self.count_correct(pred, target, **self.options)

    def accuracy(self, pred: np.ndarray, target: np.ndarray) -> float | None:
        """Fraction correct in [0, 1] for this batch, or None when accuracy is meaningless."""
        counts = self.correct(pred, target)
        if counts is None:
            return None
        right, total = counts
        return right / total if total else 0.0

    @property
    def classification(self) -> bool:
        return self.target_kind in (CLASS, PIXEL_CLASS)


LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec("cross_entropy", cross_entropy, CLASS, _count_argmax),
    "pixel_cross_entropy": LossSpec("pixel_cross_entropy", pixel_cross_entropy, PIXEL_CLASS,
                                    _count_argmax),
    "bce": LossSpec("bce", bce, BINARY, _count_threshold),
    "multilabel_bce": LossSpec("multilabel_bce", multilabel_bce, MULTILABEL, _count_threshold),
    "mse": LossSpec("mse", mse, REAL, _count_class_labels, one_hot_labels=True),
    "smooth_l1": LossSpec("smooth_l1", smooth_l1, REAL),
}

def get_loss(name: str) -> LossSpec:
    """The registered spec for `name`, or a CnncError suggesting the closest known name."""
    try:
        return LOSSES[name]
    except KeyError:
        raise CnncError(f"unknown loss '{name}'",
                        hint=did_you_mean(name, LOSSES, "known losses: " + ", ".join(LOSSES))) from None


@dataclass(frozen=True)
class WeightedLoss:
    """Σ w_i · loss_i on one output: the value and the gradient are the weighted sums; the accuracy is
    counted by the first term that counts one. Every term takes the same kind of target."""

    terms: tuple[tuple[float, LossSpec], ...]

    @property
    def name(self) -> str:
        return " + ".join(f"{w:g} * {spec.name}" if w != 1 else spec.name for w, spec in self.terms)

    @property
    def target_kind(self) -> str:
        return self.terms[0][1].target_kind

    @property
    def one_hot_labels(self) -> bool:
        return all(spec.one_hot_labels or spec.target_kind != REAL for _, spec in self.terms)

    @property
    def options(self) -> dict[str, Any]:
        return {k: v for _, spec in self.terms for k, v in spec.options.items()}

    @property
    def classification(self) -> bool:
        return self.target_kind in (CLASS, PIXEL_CLASS)

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> LossResult:
        value, grad = 0.0, None
        for w, spec in self.terms:
            v, g = spec(pred, target)
            value += w * v
            grad = w * g if grad is None else grad + w * g
        return value, grad.astype(_grad_dtype(pred), copy=False)

    def correct(self, pred: np.ndarray, target: np.ndarray) -> tuple[int, int] | None:
        for _, spec in self.terms:
            counts = spec.correct(pred, target)
            if counts is not None:
                return counts
        return None


def output_loss(loss: Loss, where: Any = None) -> LossSpec | WeightedLoss:
    """One output's loss as the train section resolved it (a sum's terms must take one kind of target)."""
    terms = tuple((w, make_loss(spec.name, **spec.arguments)) for w, spec in loss.terms)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    kinds = {spec.target_kind for _, spec in terms}
    if len(kinds) > 1:
        raise CnncError(f"loss {' + '.join(spec.name for _, spec in terms)}: its terms take different targets "
                        f"({', '.join(sorted(kinds))}), so no data fits them all", where,
                        "add losses that compare the output with the same kind of target")
    return WeightedLoss(terms)


def loss_for(cfg: TrainConfig) -> LossSpec | WeightedLoss:
    """The loss of the network's first output, with its options bound (what its targets are checked against)."""
    return output_loss(cfg.loss[0], cfg.locs.get("loss"))


@dataclass(frozen=True)
class Objective:
    """What a network trains on: per output its loss and weight (Keras's loss_weights), summed."""

    losses: dict[str, LossSpec | WeightedLoss]
    weights: dict[str, float]

    @classmethod
    def of(cls, cfg: TrainConfig, outputs: tuple[str, ...]) -> "Objective":
        losses = {o: output_loss(loss, cfg.locs.get("loss")) for o, loss in zip(outputs, cfg.loss)}
        weights = dict(zip(outputs, cfg.loss_weights or (1.0,) * len(outputs)))
        return cls(losses, weights)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.losses)

    @property
    def first(self) -> LossSpec | WeightedLoss:
        return next(iter(self.losses.values()))

    def targets(self, y: Any) -> dict[str, np.ndarray]:
        """Targets by output: a dict as given (several outputs), or the one array for the one output."""
        return y if isinstance(y, Mapping) else {self.outputs[0]: y}

    def __call__(self, preds: Mapping[str, np.ndarray], y: Any
                 ) -> tuple[float, dict[str, np.ndarray], dict[str, float]]:
        """(the weighted total, the gradient of the total per output, each output's own loss)."""
        targets = self.targets(y)
        total, grads, each = 0.0, {}, {}
        for o, loss in self.losses.items():
            value, grad = loss(preds[o], targets[o])
            w = self.weights[o]
            total += w * value
            grads[o] = grad if w == 1.0 else (grad * w).astype(grad.dtype, copy=False)
            each[o] = value
        return total, grads, each

    def correct(self, preds: Mapping[str, np.ndarray], y: Any) -> dict[str, tuple[int, int] | None]:
        targets = self.targets(y)
        return {o: loss.correct(preds[o], targets[o]) for o, loss in self.losses.items()}


def make_loss(name: str, **options: Any) -> LossSpec:
    """A spec with options bound, e.g. make_loss("cross_entropy", label_smoothing=0.1)."""
    spec = get_loss(name)
    declared = LOSS.entries[name].names
    unknown = sorted(set(options) - set(declared))
    if unknown:
        allowed = ", ".join(declared) or "none"
        raise CnncError(f"loss '{name}' has no option '{unknown[0]}'", hint=f"its options: {allowed}")
    return replace(spec, options=dict(options))

