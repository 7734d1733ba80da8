"""Stage 2 (compiler), a file format: the per-layer records of metrics.jsonl, declared once.

The runtime writes them (runtime/train/diagnostics.py `LayerWatch`), viz and the
TensorBoard writer read them; both ask this module what a record holds, and
`layers_problem` is the one check of them read back. An epoch's record (one
line of metrics.jsonl) holds them as `layers`, one per watched layer in the
order of the network:

    "layers": [{"layer": "conv_1", "op": "conv", "line": 7,
                "params": {"weight": {"norm", "grad_norm", "grad_growth", "update_ratio"}, "bias": {...}},
                "activation": {"mean", "std", "inactive", "dead", "saturated"},
                "drift": {"running_mean", "running_var"},
                "histograms": {"params": {"weight": H, ...}, "gradients": {"weight": H, ...}, "activation": H}},
               ...]

where a histogram H = {"lo": min, "hi": max, "counts": [HIST_BINS counts]} counts the finite values in
HIST_BINS equal bins from lo to hi (all of them in the first bin when lo == hi): `params` the values at the
end of the epoch, `gradients` those of the epoch's last step, `activation` the probe's outputs.

(an epoch stays one line, so every reader of metrics.jsonl by epochs goes on working.)

With `--watch-every K`, every K-th step of the run also writes a step record, between the epochs' lines:

    {"step": 40, "epoch": 2, "layers": [...]}

`step` counts the run's optimizer steps from 1, `epoch` is the epoch it falls in (from 1, so a resumed
run keeps the step records of the epochs it keeps); its layer records hold that step's figures
(`grad_norm` and `update_ratio` of the step itself, `grad_growth` null) and the probe's activation
figures, without histograms or drift. A reader of epochs tells them apart by `step`.

`params`, `activation` and `drift` are each present only where they apply; a
figure that was not measured (or was not finite) is null. docs/diagnostics.md
says what each figure means.
"""
from __future__ import annotations

import math
from typing import Any

PARAM_FIGURES = ("norm", "grad_norm", "grad_growth", "update_ratio")
ACTIVATION_FIGURES = ("mean", "std", "inactive", "dead", "saturated")
DRIFT_FIGURES = ("running_mean", "running_var")
HIST_BINS = 30
HISTOGRAM_FIELDS = ("lo", "hi", "counts")
HISTOGRAM_GROUPS = ("params", "gradients", "activation")
BY_PARAMETER = ("params", "gradients")   # the groups that hold a histogram per parameter (the others: one)
# field -> the figures of its object (None: a plain value)
LAYERS = "layers"   # the field of an epoch's record
STEP = "step"       # the field that makes a record a step record
LAYER_FIELDS: dict[str, tuple[str, ...] | None] = {
    "layer": None, "op": None, "line": None,
    "params": PARAM_FIGURES, "activation": ACTIVATION_FIGURES, "drift": DRIFT_FIGURES,
    "histograms": HISTOGRAM_GROUPS,
}


def _figure(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value))


def _figures(value: Any, names: tuple[str, ...], where: str) -> str | None:
    if not isinstance(value, dict):
        return f"'{where}' must be an object of figures"
    for name, figure in value.items():
        if name not in names:
            return f"'{where}.{name}' is not a figure of a layer record ({', '.join(names)})"
        if not _figure(figure):
            return f"'{where}.{name}' must be a number or null, got {figure!r}"
    return None


def histogram_problem(value: Any, where: str) -> str | None:
    """What makes `value` other than a histogram H as cnnc run writes it, or None."""
    if not isinstance(value, dict) or set(value) != set(HISTOGRAM_FIELDS):
        return f"'{where}' must be an object of {', '.join(HISTOGRAM_FIELDS)}"
    lo, hi, counts = value["lo"], value["hi"], value["counts"]
    if not (_figure(lo) and _figure(hi)) or lo is None or hi is None or lo > hi:
        return f"'{where}' needs lo <= hi, got {lo!r} and {hi!r}"
    if (not isinstance(counts, list) or len(counts) != HIST_BINS
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
        return f"'{where}.counts' must be {HIST_BINS} counts"
    return None


def _histograms_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "'histograms' must be an object"
    for group, entry in value.items():
        if group not in HISTOGRAM_GROUPS:
            return f"'histograms.{group}' is not a histogram group ({', '.join(HISTOGRAM_GROUPS)})"
        if group not in BY_PARAMETER:
            problem = histogram_problem(entry, f"histograms.{group}")
        elif not isinstance(entry, dict):
            problem = f"'histograms.{group}' must be an object of parameter names"
        else:
            problem = next((p for name, h in entry.items()
                            if (p := histogram_problem(h, f"histograms.{group}.{name}")) is not None), None)
        if problem is not None:
            return problem
    return None


def step_record_problem(record: dict) -> str | None:
    """What makes `record` other than a step record as cnnc run writes it, or None."""
    for name in record:
        if name not in (STEP, "epoch", LAYERS):
            return f"unknown field '{name}' in a step record"
    for name in (STEP, "epoch"):
        value = record.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"a step record's '{name}' must be a count from 1, got {value!r}"
    return layers_problem(record.get(LAYERS))


def layers_problem(value: Any) -> str | None:
    """What makes an epoch's `layers` other than cnnc run writes them, or None."""
    if not isinstance(value, list):
        return f"'{LAYERS}' must be a list of layer records"
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            return f"{LAYERS}[{i}] must be an object"
        if (problem := layer_record_problem(record)) is not None:
            return f"{LAYERS}[{i}]: {problem}"
    return None


def layer_record_problem(record: dict) -> str | None:
    """What makes `record` other than a layer record as cnnc run writes it, or None."""
    for name in record:
        if name not in LAYER_FIELDS:
            return f"unknown field '{name}' in a layer record"
    if not isinstance(record.get("layer"), str) or not isinstance(record.get("op"), str):
        return "a layer record needs the layer's name and op as text"
    if record.get("line") is not None and not isinstance(record["line"], int):
        return "'line' must be a line number or null"
    if "params" in record:
        if not isinstance(record["params"], dict):
            return "'params' must be an object of parameter names"
        for p, figures in record["params"].items():
            if (problem := _figures(figures, PARAM_FIGURES, f"params.{p}")) is not None:
                return problem
    for name in ("activation", "drift"):
        if name in record and (problem := _figures(record[name], LAYER_FIELDS[name], name)) is not None:
            return problem
    if "histograms" in record:
        return _histograms_problem(record["histograms"])
    return None
