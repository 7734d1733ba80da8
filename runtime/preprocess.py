"""Stage 3 (runtime): input preprocessing — fitted once on the training split, recorded, replayed.

The `preprocess` choices of a train section (compiler/train_vocab.py
`PREPROCESS`: `normalize`, `center`, `scale`) are fitted in order on the
training inputs, each producing a *record* of plain numbers
(`{"op": "normalize", "mean": [...], "std": [...]}`). The records are the
whole of the preprocessing: the trainer applies them to every split with
`apply`, writes them into every checkpoint, and `cnnc predict` applies the
checkpoint's records with the same `apply` — so an input file and the same
sample from the data set reach the network as the same numbers. Every record
is a per-channel affine map (`MAPS`); `affine` composes a list of them into
one `x * scale + shift`, which `apply` computes and every exporter
(runtime/export/) writes as the first operation of its model.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..dsl.source import CnncError

Record = dict[str, Any]


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    return x64.mean(axis=axes), x64.std(axis=axes)


def _per_channel(value: Any, channels: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.size == 1:
        return np.repeat(arr, channels)
    if arr.size != channels:
        raise CnncError(f"normalize: {arr.size} {what} values for data with {channels} channels",
                        hint=f"give one value, or one per channel ({channels})")
    return arr


# ------------------------------------------------------------- fitting (one per vocabulary entry)
def fit_normalize(x: np.ndarray, mean: Any = None, std: Any = None) -> Record:
    """(x - mean) / std per channel (axis 1); None means "measure it on the training split"."""
    channels = x.shape[1]
    measured_mean, measured_std = _channel_stats(x)
    m = measured_mean if mean is None else _per_channel(mean, channels, "mean")
    s = measured_std if std is None else _per_channel(std, channels, "std")
    if np.any(s <= 0):
        raise CnncError(f"normalize: std must be positive, got {s.tolist()}",
                        hint="a constant channel has std 0; give std explicitly")
    return {"op": "normalize", "mean": m.tolist(), "std": s.tolist()}


def fit_center(x: np.ndarray) -> Record:
    """Subtract the per-channel mean of the training split."""
    m, _ = _channel_stats(x)
    return {"op": "center", "mean": m.tolist()}


def fit_scale(x: np.ndarray, factor: float) -> Record:
    """Multiply every value by `factor` (e.g. 1/255 for raw bytes)."""
    return {"op": "scale", "factor": float(factor)}


FITTERS = {"normalize": fit_normalize, "center": fit_center, "scale": fit_scale}
# The numbers each record holds (what `check_records` demands of a checkpoint's records).
RECORD_FIELDS = {"normalize": ("mean", "std"), "center": ("mean",), "scale": ("factor",)}


def fit(specs: Sequence[tuple[str, Mapping[str, Any]]], x_train: np.ndarray) -> list[Record]:
    """Records for `specs` fitted in order: each sees the training inputs the previous ones made."""
    records: list[Record] = []
    x = x_train
    for name, options in specs:
        record = FITTERS[name](x, **dict(options))
        records.append(record)
        x = apply([record], x)
    return records


# ------------------------------------------------------------- replaying
def _channels(values: Any, channels: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size not in (1, channels):
        raise CnncError(f"the preprocessing has {arr.size} {what} values, the inputs have {channels} "
                        f"channel{'' if channels == 1 else 's'}")
    return np.broadcast_to(arr, (channels,))


def _normalize_map(r: Record, channels: int) -> tuple[np.ndarray, np.ndarray]:
    inverse = 1.0 / _channels(r["std"], channels, "std")
    return inverse, -_channels(r["mean"], channels, "mean") * inverse


# What each record does, as a per-channel map x -> x * scale + shift (one per vocabulary entry).
MAPS = {
    "normalize": _normalize_map,
    "center": lambda r, channels: (np.ones(channels), -_channels(r["mean"], channels, "mean")),
    "scale": lambda r, channels: (np.full(channels, float(r["factor"])), np.zeros(channels)),
}


def affine(records: Sequence[Record], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Every record, in order, as one per-channel map `x * scale + shift` (float64 [channels] each):
    what `apply` computes, and what an exported model does to its input first."""
    scale, shift = np.ones(channels), np.zeros(channels)
    for r in records:
        if r.get("op") not in MAPS:
            raise CnncError(f"unknown preprocessing step {str(r.get('op'))[:40]!r}")
        step_scale, step_shift = MAPS[r["op"]](r, channels)
        scale, shift = scale * step_scale, shift * step_scale + step_shift
    return scale, shift


def apply(records: Sequence[Record], x: np.ndarray) -> np.ndarray:
    """The inputs `x` [N, C, ...] after every record, in order, as float32 (channels on axis 1)."""
    if not records:
        return x
    if x.ndim < 2:
        raise CnncError(f"the preprocessing works per channel, the inputs have shape {list(x.shape[1:])}")
    scale, shift = affine(records, x.shape[1])
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    return (x * scale.reshape(per_channel) + shift.reshape(per_channel)).astype(np.float32)


def check_records(records: Any, source: str) -> list[Record]:
    """Records read from a checkpoint, refused with one line unless they are what `fit` writes."""
    def bad(why: str) -> CnncError:
        return CnncError(f"{source}: its preprocessing record is not valid ({why})",
                         hint="only use checkpoints written by cnnc run")

    if not isinstance(records, list):
        raise bad("not a list")
    for r in records:
        if not isinstance(r, dict) or r.get("op") not in RECORD_FIELDS:
            raise bad(f"unknown step {str(r)[:40]}")
        for key in RECORD_FIELDS[r["op"]]:
            values = r.get(key)
            flat = values if isinstance(values, list) else [values]
            if not flat or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in flat):
                raise bad(f"'{r['op']}' {key} is not a finite number or list of numbers")
            if key == "std" and any(v <= 0 for v in flat):
                raise bad("normalize std must be positive")
    return records
