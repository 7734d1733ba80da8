"""Stage 2 (compiler): the `train` section — its keys, their values, validated.

The compiler checks a train section against this table (unknown keys, wrong
kinds of value, bad option names all point at the source) and produces a
`TrainConfig` of plain Python values that the runtime executes. Command-line
overrides go through the same checks (`apply_overrides`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from ..dsl import ast
from ..dsl.source import CnncError, Loc
from .attrs import describe


@dataclass(frozen=True)
class Spec:
    """`name(arg, key = value)` in a train section."""

    name: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)


@dataclass
class TrainConfig:
    data: Spec = Spec("mnist10k")
    epochs: int = 10
    batch: int = 64
    loss: Spec = Spec("cross_entropy")
    optimizer: Spec = Spec("sgd", (), (("lr", 0.01),))
    schedule: Spec | None = None
    seed: int = 0
    augment: tuple[Spec, ...] = ()
    preprocess: tuple[Spec, ...] = ()
    l1: float = 0.0
    l2: float = 0.0
    early_stop: Spec | None = None
    val: float | None = None
    locs: dict[str, Loc] = field(default_factory=dict)


# name -> allowed keyword options (None: any); positional args allowed where listed.
DATASETS = {"mnist10k": {"val", "limit"}, "idx": {"val", "limit"}, "npz": {"val", "limit"},
            "images": {"val", "limit", "size", "channels"}, "synthetic": {"val", "n", "classes", "shape", "kind",
                                                                        "seed", "noise"}}
LOSSES = {"cross_entropy": {"label_smoothing"}, "bce": set(), "multilabel_bce": set(), "mse": set(),
          "smooth_l1": {"beta"}, "pixel_cross_entropy": {"ignore_index"}}
OPTIMIZERS = {"sgd": {"lr", "momentum", "nesterov", "weight_decay", "dampening"},
              "adam": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
              "adamw": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
              "adagrad": {"lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value"},
              "rmsprop": {"lr", "alpha", "eps", "momentum", "weight_decay", "centered"}}
SCHEDULES = {"step": {"step_size", "gamma", "every"}, "cosine": {"eta_min", "min_lr", "T_max"},
             "plateau": {"factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "mode"},
             "warmup": {"epochs", "then", "start_factor"}, "constant": set()}
AUGMENTATIONS = {"random_crop": {"padding"}, "random_rotation": {"degrees"},
                 "random_resized_crop": {"scale", "ratio"}, "hflip": {"p"},
                 "color_jitter": {"brightness", "contrast", "saturation"}, "gaussian_noise": {"std"}}
PREPROCESS = {"normalize": {"mean", "std"}, "center": set(), "scale": {"factor"}}

KEYS = {"data", "epochs", "batch", "loss", "optimizer", "schedule", "seed", "augment", "normalize",
        "preprocess", "l1", "l2", "early_stop", "val", "lr"}


def _value(expr: ast.Expr) -> Any:
    """Evaluate a train-section expression: literals, names, specs, lists, tuples."""
    if isinstance(expr, (ast.Int, ast.Float, ast.Str, ast.Bool)):
        return expr.value
    if isinstance(expr, ast.Name):
        return Spec(expr.id)
    if isinstance(expr, ast.UnaryOp) and expr.op == "-":
        v = _value(expr.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    if isinstance(expr, (ast.ListExpr, ast.TupleExpr)):
        return tuple(_value(e) for e in expr.items)
    if isinstance(expr, ast.Call):
        return Spec(expr.func, tuple(_value(a) for a in expr.args),
                    tuple((k.name, _value(k.value)) for k in expr.kwargs))
    if isinstance(expr, ast.BinOp) and expr.op in ("*", "/", "+", "-"):
        a, b = _value(expr.left), _value(expr.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            return {"*": a * b, "/": a / b if b else None, "+": a + b, "-": a - b}[expr.op]
    raise CnncError("expected a number, a name, a call like sgd(lr = 0.1) or a list", expr.loc)


def _spec(value: Any, table: dict, what: str, loc: Loc) -> Spec:
    if isinstance(value, str):
        value = Spec(value)
    if not isinstance(value, Spec):
        raise CnncError(f"{what} must be one of {', '.join(table)}; got {describe(value)}", loc)
    if value.name not in table:
        close = difflib.get_close_matches(value.name, list(table), n=1)
        raise CnncError(f"unknown {what} '{value.name}'", loc,
                        f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(table)}")
    allowed = table[value.name]
    for key, _ in value.kwargs:
        if allowed is not None and key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            raise CnncError(f"{what} '{value.name}' has no option '{key}'", loc,
                            f"did you mean '{close[0]}'?" if close else
                            f"its options: {', '.join(sorted(allowed)) or 'none'}")
    for key, v in value.kwargs:
        if key in ("lr", "momentum", "weight_decay", "eps") and not _is_number(v):
            raise CnncError(f"{what} option '{key}' must be a number, got {describe(v)}", loc)
        if key in ("lr", "eps") and _is_number(v) and v <= 0:
            raise CnncError(f"{what} option '{key}' must be positive, got {v}", loc)
        if key == "val" and (not _is_number(v) or not 0 <= v < 1):
            raise CnncError(f"the validation fraction must satisfy 0 <= val < 1, got {v}", loc)
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(value: Any, key: str, loc: Loc) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnncError(f"{key} must be a positive integer, got {describe(value)}", loc)
    if value > 10**7:
        raise CnncError(f"{key} = {value} is unreasonably large", loc)
    return value


def _penalty(value: Any, key: str, loc: Loc) -> float:
    if not _is_number(value) or value < 0:
        raise CnncError(f"{key} must be a non-negative number, got {describe(value)}", loc)
    return float(value)


def _specs(value: Any, table: dict, what: str, loc: Loc) -> tuple[Spec, ...]:
    items = value if isinstance(value, tuple) else (value,)
    return tuple(_spec(v, table, what, loc) for v in items)


def set_key(cfg: TrainConfig, key: str, value: Any, loc: Loc | None) -> TrainConfig:
    """Validate one key and return the updated config."""
    if key not in KEYS:
        close = difflib.get_close_matches(key, sorted(KEYS), n=1)
        raise CnncError(f"unknown train key '{key}'", loc,
                        f"did you mean '{close[0]}'?" if close else f"keys: {', '.join(sorted(KEYS))}")
    if key == "data":
        if isinstance(value, str):  # a path: the kind follows from what is there
            value = Spec("path", (value,))
            return replace(cfg, data=value)
        return replace(cfg, data=_spec(value, DATASETS, "data set", loc))
    if key in ("epochs", "batch", "seed"):
        if key == "seed":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CnncError(f"seed must be a non-negative integer, got {describe(value)}", loc)
            return replace(cfg, seed=value)
        return replace(cfg, **{key: _positive_int(value, key, loc)})
    if key == "loss":
        return replace(cfg, loss=_spec(value, LOSSES, "loss", loc))
    if key == "optimizer":
        return replace(cfg, optimizer=_spec(value, OPTIMIZERS, "optimizer", loc))
    if key == "lr":
        if not _is_number(value) or value <= 0:
            raise CnncError(f"lr must be a positive number, got {describe(value)}", loc)
        opts = dict(cfg.optimizer.kwargs)
        opts["lr"] = float(value)
        return replace(cfg, optimizer=Spec(cfg.optimizer.name, cfg.optimizer.args, tuple(opts.items())))
    if key == "schedule":
        return replace(cfg, schedule=_spec(value, SCHEDULES, "schedule", loc))
    if key == "augment":
        return replace(cfg, augment=_specs(value, AUGMENTATIONS, "augmentation", loc))
    if key in ("normalize", "preprocess"):
        if key == "normalize":
            value = Spec("normalize", value.args, value.kwargs) if isinstance(value, Spec) else \
                Spec("normalize", tuple(value) if isinstance(value, tuple) else (value,))
        return replace(cfg, preprocess=_specs(value, PREPROCESS, "preprocessing", loc))
    if key in ("l1", "l2"):
        return replace(cfg, **{key: _penalty(value, key, loc)})
    if key == "early_stop":
        spec = value if isinstance(value, Spec) else Spec("early_stop", (value,))
        patience = spec.args[0] if spec.args else spec.options.get("patience", 5)
        _positive_int(patience, "early_stop patience", loc)
        return replace(cfg, early_stop=Spec("early_stop", (), (("patience", patience),)))
    if key == "val":
        if not _is_number(value) or not 0 <= value < 1:
            raise CnncError(f"val must satisfy 0 <= val < 1, got {describe(value)}", loc)
        return replace(cfg, val=float(value))
    raise AssertionError(key)


def validate_train(section: ast.Train, net: Any = None) -> TrainConfig:
    cfg = TrainConfig()
    seen: dict[str, Loc] = {}
    for entry in section.entries:
        if entry.key in seen:
            raise CnncError(f"train key '{entry.key}' is given twice", entry.loc).add_note("first given here",
                                                                                         seen[entry.key])
        seen[entry.key] = entry.loc
        cfg = set_key(cfg, entry.key, _value(entry.value), entry.value.loc)
    cfg.locs = seen
    return cfg
