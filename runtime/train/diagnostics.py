"""Stage 3 (runtime), training: per-layer statistics of a run and the warnings read from them.

`LayerWatch` collects, for every layer of the user's `.cnn` that has
parameters and every activation, one record per epoch that the trainer
puts into the epoch's record of metrics.jsonl as its `layers` (the format is
compiler/metrics_format.py's, documented in docs/diagnostics.md).

What is sampled, so that it stays cheap enough to leave on: gradient norms
are taken at every step from the engine's own gradients (one norm per
parameter tensor; `grad_norm` is their mean over the epoch, `grad_growth` the
largest ratio of a step's norm to the mean of the epoch's steps before it);
the update-to-weight ratio |dw|/|w| is measured on the epoch's last step (and
every `every` steps of the run, each of which also writes a step record: that
step's figures and the probe's activations); weight norms and batchnorm
drift (the relative change of the running statistics since the last record)
at the end of the epoch, with the histograms of the weights (then), of the
gradients (the epoch's last step) and of the activations (the probe); activation statistics on a fixed probe of the first
PROBE training samples, run in eval mode through the NumPy runtime (runtime/
plan.py) with the epoch's weights, whichever engine trained them.

`Rules` reads the records and names what looks wrong, once per rule and layer,
as one line located in the source (`TRAINING_WARNINGS` in compiler/lints.py
holds the names `--allow` silences; the thresholds are here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...compiler.lints import ALL, TRAINING_WARNINGS
from ...compiler.metrics_format import HIST_BINS, LAYERS, STEP
from ...compiler.ops import OPS
from ...dsl.source import Loc, printable
from ..plan import Plan

PROBE = 64           # training samples the activation statistics are measured on (the first ones)

# The thresholds of the rules (docs/diagnostics.md gives each with its suggestion).
DEAD_FRACTION = 0.5          # dead-units: at least this share of a rectifier's units never positive
SATURATED_FRACTION = 0.5     # saturated-units: at least this share of a sigmoid/tanh's outputs at its ends
SATURATION_MARGIN = 0.01     # ...within this share of the output range of either end
VANISHING_RATIO = 1e-3       # vanishing-gradients: first weight's gradient norm below this times the last's
EXPLODING_GROWTH = 10.0      # exploding-gradients: a step's gradient norm this many times the epoch's mean before it
UPDATE_RATIO_RANGE = (1e-6, 1e-1)   # update-ratio: |dw|/|w| outside this range (a healthy step is ~1e-3)
FLAT_LOSS_EPOCHS, FLAT_LOSS_CHANGE = 3, 1e-3   # flat-loss: relative change below this over these epochs
# overfitting: val loss up and train loss down this many epochs in a row, and the val loss this far (relative)
# above its best so far. A validation split of 800 digits wanders by ~10% from epoch to epoch: the README's
# LeNet-5 rose 4 epochs in a row to 13% above its best, then fell to a new best (a healthy run).
OVERFIT_EPOCHS = 5
OVERFIT_MARGIN = 0.10
EXPLODING_EPOCH_GROWTH = 2.0  # exploding-gradients after epoch 1: the epoch's mean norm this many times the last's


def _norm(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    return math.sqrt(float(np.dot(a, a)))


@dataclass
class _ParamTrack:
    grad_sum: float = 0.0
    steps: int = 0
    growth: float = 0.0
    ratios: list[float] = field(default_factory=list)

    def gradient(self, norm: float) -> None:
        """A step's norm; its growth is against the mean of the epoch's earlier steps (one step's
        norm dipping near zero would make the next one's ratio to it huge in a healthy run)."""
        if self.steps and self.grad_sum > 0 and math.isfinite(norm):
            self.growth = max(self.growth, norm / (self.grad_sum / self.steps))
        self.grad_sum += norm
        self.steps += 1


class LayerWatch:
    """The per-layer statistics of one run (see the module docstring)."""

    def __init__(self, compiled, probe: np.ndarray, every: int | None = None, kernels: str | None = None):
        net = compiled.net
        self.net, self.every = net, every
        specs = compiled.analysis.params
        self.layers = []   # (node, param names, watched activation)
        for node in net.layers():
            owned = list(specs.get(node.name, {})) if node.shares is None else []
            activation = OPS[node.op].family == "activation" and (
                OPS[node.op].has("rectifier") or OPS[node.op].has("saturating"))
            if owned or activation:
                self.layers.append((node, owned, activation))
        self.trainable = {f"{n.name}.{p}" for n, ps, _ in self.layers for p in ps
                          if specs[n.name][p].trainable and not specs[n.name][p].buffer}
        watched = [n.name for n, _, act in self.layers if act]
        self.probe_x = probe
        self.plan = Plan(net, specs, kernels=kernels) if watched else None
        if self.plan is not None:
            self.plan.outputs = watched
        self.tracks: dict[str, _ParamTrack] = {}
        self.previous_buffers: dict[str, np.ndarray] = {}
        # the probe's outputs of the watched activations at the last record (TensorBoard's feature maps)
        self.activations: dict[str, np.ndarray] = {}
        self.last_grads: dict[str, np.ndarray] = {}   # the epoch's last step's gradients (their histograms)
        self.epoch = self.first_step = 0
        self.step_norms: dict[str, float] = {}        # the last step's gradient norms
        self.step_ratios: dict[str, float] = {}       # and update ratios (a sampled step's)

    # ------------------------------------------------------------ steps
    def begin_epoch(self, epoch: int = 0, steps: int = 0) -> None:
        """Epoch `epoch` (0-based) of `steps` steps begins: its steps are counted on from epoch * steps."""
        self.tracks = {k: _ParamTrack() for k in self.trainable}
        self.epoch, self.first_step = epoch, epoch * steps

    def gradients(self, engine, step: int, steps: int) -> None:
        """Step `step` (0-based) of `steps`: its gradient norm per parameter tensor (the engine's `grad_norms`,
        before its step); the last step's gradients themselves, for their histograms."""
        norms = self.step_norms = engine.grad_norms()
        for k, track in self.tracks.items():
            if k in norms:
                track.gradient(norms[k])
        if step == steps - 1:
            self.last_grads = {k: g for k, g in engine.grads().items() if k in self.trainable}

    def watched_step(self, step: int) -> bool:
        """Does step `step` (0-based, of this epoch) write a step record (`--watch-every K`: every K-th step
        of the run, counted from its first)?"""
        return self.every is not None and (self.first_step + step + 1) % self.every == 0

    def sampled(self, step: int, steps: int) -> bool:
        """Is the update ratio measured at this step (0-based) of an epoch of `steps`?"""
        return step == steps - 1 or self.watched_step(step)

    def before_step(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.array(params[k], dtype=np.float64) for k in self.tracks}

    def after_step(self, before: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]) -> None:
        self.step_ratios = {}
        for k, w0 in before.items():
            size = _norm(w0)
            if size > 0:
                ratio = self.step_ratios[k] = _norm(np.asarray(params[k], dtype=np.float64) - w0) / size
                self.tracks[k].ratios.append(ratio)

    def step_record(self, step: int, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The record of a watched step (0-based, of this epoch), after its optimizer step: the run's step
        (from 1), the epoch it is in (from 1), and per layer that step's gradient norm and update ratio,
        the weights' norms and the probe's activation figures (compiler/metrics_format.py)."""
        acts = self._activations(params)
        layers = []
        for node, owned, activation in self.layers:
            figures = {p: {"norm": _norm(params[k]), "grad_norm": self.step_norms.get(k), "grad_growth": None,
                           "update_ratio": self.step_ratios.get(k)}
                       for p in owned if (k := f"{node.name}.{p}") in self.trainable}
            r = _layer_record(node, figures, acts.get(node.name) if activation else None)
            if len(r) > 3:      # (a layer with a figure)
                layers.append(r)
        return {STEP: self.first_step + step + 1, "epoch": self.epoch + 1, LAYERS: layers}

    # ------------------------------------------------------------ records
    def records(self, params: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """The epoch's record per layer, in the order of the network (its record's `layers`)."""
        acts = self.activations = self._activations(params)
        out = []
        for node, owned, activation in self.layers:
            figures = {p: self._param(f"{node.name}.{p}", params) for p in owned}
            r = _layer_record(node, {p: f for p, f in figures.items() if f is not None},
                              acts.get(node.name) if activation else None)
            drift = self._drift(node.name, owned, params)
            if drift:
                r["drift"] = drift
            histograms = self._histograms(node.name, owned, params, acts.get(node.name) if activation else None)
            if histograms:
                r["histograms"] = histograms
            out.append(r)
        self.last_grads = {}
        return out

    def _histograms(self, name: str, owned, params, activation: np.ndarray | None) -> dict[str, Any]:
        keys = [(p, f"{name}.{p}") for p in owned if f"{name}.{p}" in self.trainable]
        out: dict[str, Any] = {}
        if keys:
            out["params"] = {p: histogram(params[k]) for p, k in keys}
        grads = {p: histogram(self.last_grads[k]) for p, k in keys if k in self.last_grads}
        if grads:
            out["gradients"] = grads
        if activation is not None:
            out["activation"] = histogram(activation)
        return out

    def _param(self, key: str, params) -> dict[str, float | None] | None:
        if key not in self.trainable:
            return None
        t = self.tracks.get(key, _ParamTrack())
        return {"norm": _norm(params[key]), "grad_norm": t.grad_sum / t.steps if t.steps else None,
                "grad_growth": t.growth if t.steps > 1 else None,
                "update_ratio": float(np.mean(t.ratios)) if t.ratios else None}

    def _drift(self, name: str, owned, params) -> dict[str, float]:
        """Batchnorm's running statistics: their relative change since the last record."""
        out = {}
        for p in owned:
            key = f"{name}.{p}"
            if p.startswith("running_") and key in params:
                now = np.array(params[key], dtype=np.float64)
                before = self.previous_buffers.get(key)
                if before is not None:
                    out[p] = _norm(now - before) / max(_norm(before), 1e-12)
                self.previous_buffers[key] = now
        return out

    def _activations(self, params) -> dict[str, np.ndarray]:
        if self.plan is None or not len(self.probe_x):
            return {}
        self.plan.params = {k: params[k] for k in self.plan.specs}
        with np.errstate(all="ignore"):
            return self.plan.forward({self.plan.inputs[0]: self.probe_x})[0]


class Unwatched:
    """A trainer's `layers` without per-layer statistics (what bench/bench_diagnostics.py compares with)."""

    trainable: frozenset[str] = frozenset()
    activations: dict[str, np.ndarray] = {}

    def begin_epoch(self, epoch: int = 0, steps: int = 0) -> None:
        pass

    def watched_step(self, step: int) -> bool:
        return False

    def gradients(self, engine, step: int, steps: int) -> None:
        pass

    def sampled(self, step: int, steps: int) -> bool:
        return False

    def records(self, params) -> list[dict[str, Any]]:
        return []


def _layer_record(node, params: dict[str, Any], activation: np.ndarray | None) -> dict[str, Any]:
    """A layer record's name, op and line, its parameters' figures and its activation's (where it has them)."""
    r: dict[str, Any] = {"layer": node.name, "op": node.op, "line": node.loc.line if node.loc else None}
    if params:
        r["params"] = params
    if activation is not None:
        r["activation"] = _activation(node.op, activation)
    return r


def histogram(values: np.ndarray) -> dict[str, Any]:
    """A histogram as metrics.jsonl holds it (compiler/metrics_format.py): the finite values in HIST_BINS
    equal bins from their least to their greatest."""
    v = np.asarray(values).ravel()
    if v.size and not (np.isfinite(v.min()) and np.isfinite(v.max())):   # (one pass when all are finite)
        v = v[np.isfinite(v)]
    if not v.size:
        return {"lo": 0.0, "hi": 0.0, "counts": [0] * HIST_BINS}
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        # a value's bin in the array's own precision and one bincount: 60% of np.histogram's time,
        # which works in float64 and mends each index against the exact edges (a value within rounding of
        # an edge may fall in the bin on either side of it here)
        kind = v.dtype.type if v.dtype.kind == "f" else np.float64
        bins = ((v - kind(lo)) * kind(HIST_BINS / (hi - lo))).astype(np.int32)
        counts = np.bincount(np.minimum(bins, HIST_BINS - 1, out=bins), minlength=HIST_BINS)
    else:
        counts = np.zeros(HIST_BINS, dtype=np.int64)
        counts[0] = v.size
    return {"lo": lo, "hi": hi, "counts": [int(c) for c in counts]}


def _activation(op: str, y: np.ndarray) -> dict[str, float | None]:
    """mean, std; for rectifiers the share of values not above 0 (`inactive`) and of units (channels,
    or features of a flat tensor) never above 0 over the probe (`dead`); for sigmoid/tanh the share of
    values within SATURATION_MARGIN of the range's ends (`saturated`)."""
    y = np.asarray(y)          # float32 values, float64 sums (a float64 copy of every map costs more than the probe)
    r: dict[str, float | None] = {"mean": float(y.mean(dtype=np.float64)), "std": float(y.std(dtype=np.float64)),
                                  "inactive": None, "dead": None, "saturated": None}
    spec = OPS[op]
    if spec.has("rectifier"):
        r["inactive"] = np.count_nonzero(y <= 0) / y.size
        units = y.max(axis=tuple(a for a in range(y.ndim) if a != 1))   # each channel (feature) over all else
        r["dead"] = np.count_nonzero(units <= 0) / units.size
    if spec.has("saturating"):
        lo = 0.0 if spec.has("gate") else -1.0
        margin = SATURATION_MARGIN * (1.0 - lo)
        r["saturated"] = np.count_nonzero((y <= lo + margin) | (y >= 1.0 - margin)) / y.size
    return r


# ---------------------------------------------------------------- rules
@dataclass(frozen=True)
class TrainingWarning:
    code: str
    epoch: int
    message: str
    hint: str
    layer: str | None = None
    loc: Loc | None = None

    def line(self) -> str:
        """`net.cnn:7: conv_3 (relu): 84% of units dead after epoch 2 — try ... [dead-units]`"""
        where = f"{printable(self.loc.file)}:{self.loc.line}: " if self.loc else "cnnc: "
        return f"{where}warning: {self.message} — {self.hint} [{self.code}]"


class Rules:
    """The warnings of TRAINING_WARNINGS, each given once per layer (or once per run), unless allowed."""

    def __init__(self, net, allow: frozenset[str] = frozenset()):
        self.net = net
        self.allow = frozenset(allow)
        self.fired: set[tuple[str, str | None]] = set()
        self.history: list[dict] = []
        self.grad_last: dict[str, float] = {}   # each layer's epoch-mean weight gradient norm in the last epoch

    def check(self, record: dict) -> list[TrainingWarning]:
        """The warnings an epoch's record (with its `layers`) gives for the first time."""
        self.history.append(record)
        layers = record.get(LAYERS) or []
        found = [*self._units(record["epoch"], layers), *self._gradients(record["epoch"], layers),
                 *self._loss(record)]
        out = []
        for w in found:
            if ALL in self.allow or w.code in self.allow or (w.code, w.layer) in self.fired:
                continue
            assert w.code in TRAINING_WARNINGS, w.code
            self.fired.add((w.code, w.layer))
            out.append(w)
        return out

    def _warn(self, code: str, epoch: int, layer: dict | None, text: str, hint: str) -> TrainingWarning:
        node = self.net.node(layer["layer"]) if layer else None
        head = f"{node.name} ({node.op}): " if node else ""
        return TrainingWarning(code, epoch, head + text, hint, node.name if node else None,
                               node.loc if node else None)

    def _units(self, epoch: int, layers: list[dict]):
        for r in layers:
            a = r.get("activation") or {}
            if a.get("dead") is not None and a["dead"] >= DEAD_FRACTION:
                yield self._warn("dead-units", epoch, r, f"{a['dead']:.0%} of units dead after epoch {epoch}",
                                 "try a lower lr, leaky_relu, or a smaller negative bias")
            if a.get("saturated") is not None and a["saturated"] >= SATURATED_FRACTION:
                yield self._warn("saturated-units", epoch, r, f"{a['saturated']:.0%} of outputs saturated after "
                                 f"epoch {epoch}", "try relu, batchnorm before it, or normalised inputs")

    def _gradients(self, epoch: int, layers: list[dict]):
        weights = [(r, f) for r in layers for p, f in (r.get("params") or {}).items()
                   if p == "weight" and f.get("grad_norm") is not None]
        if len(weights) >= 2:
            (first, f0), (_, f1) = weights[0], weights[-1]
            if f1["grad_norm"] > 0 and f0["grad_norm"] < VANISHING_RATIO * f1["grad_norm"]:
                yield self._warn("vanishing-gradients", epoch, first,
                                 f"gradient norm {f0['grad_norm']:.2g} is {f0['grad_norm'] / f1['grad_norm']:.1e} "
                                 f"of the last layer's in epoch {epoch}",
                                 "try relu instead of sigmoid/tanh, batchnorm, or residual connections")
        for r, f in weights:
            # After epoch 1 a step's jump counts only while the epoch's mean grows too: late in a healthy
            # run most batches are learnt and one hard batch is 10x their mean (README's LeNet-5, epoch 28).
            growth, last = f.get("grad_growth"), self.grad_last.get(r["layer"])
            self.grad_last[r["layer"]] = f["grad_norm"]
            if growth is not None and growth >= EXPLODING_GROWTH and \
                    (last is None or f["grad_norm"] >= EXPLODING_EPOCH_GROWTH * last):
                yield self._warn("exploding-gradients", epoch, r, f"gradient norm jumped to {f['grad_growth']:.0f}x "
                                 f"its mean so far in epoch {epoch}", "try a lower lr, gradient clipping or batchnorm")
            ratio = f.get("update_ratio")
            low, high = UPDATE_RATIO_RANGE
            if ratio is not None and ratio > 0 and not low <= ratio <= high:   # (0: nothing flows, named above)
                yield self._warn("update-ratio", epoch, r, f"update-to-weight ratio {ratio:.1e} in epoch {epoch} "
                                 "(a healthy step is about 1e-3)",
                                 "try a lower lr" if ratio > high else "try a higher lr")

    def _loss(self, record: dict):
        epoch, h = record["epoch"], self.history
        losses = [r.get("train_loss") for r in h[-FLAT_LOSS_EPOCHS:]]
        if len(losses) == FLAT_LOSS_EPOCHS and all(isinstance(v, float) and math.isfinite(v) for v in losses):
            change = abs(losses[-1] - losses[0]) / max(abs(losses[0]), 1e-12)
            if change < FLAT_LOSS_CHANGE:
                yield self._warn("flat-loss", epoch, None, f"the training loss moved {change:.1e} (relative) over "
                                 f"{FLAT_LOSS_EPOCHS} epochs up to epoch {epoch}",
                                 "try a higher lr, normalised inputs, or relu instead of sigmoid")
        recent = h[-(OVERFIT_EPOCHS + 1):]
        if len(recent) == OVERFIT_EPOCHS + 1 and all(r.get("val_loss") is not None for r in recent):
            pairs = list(zip(recent, recent[1:]))
            best = min(r["val_loss"] for r in h if r.get("val_loss") is not None)
            if all(b["val_loss"] > a["val_loss"] and b["train_loss"] < a["train_loss"] for a, b in pairs) \
                    and recent[-1]["val_loss"] >= (1 + OVERFIT_MARGIN) * best:
                yield self._warn("overfitting", epoch, None, f"validation loss rising since epoch "
                                 f"{recent[0]['epoch']} while the training loss falls (epoch {epoch})",
                                 "try more data or augmentation, dropout, weight decay, or early_stop")
