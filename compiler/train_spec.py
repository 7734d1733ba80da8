"""Stage 2 (compiler): the `train` section — its keys, their values, validated.

The compiler checks a train section against the vocabulary in `train_vocab`
(unknown keys, wrong kinds of value, bad option names, missing options and
non-finite numbers all point at the source) and produces a `TrainConfig` of
plain Python values that the runtime executes. Every choice comes out in one
canonical form: its options by name (positional arguments and aliases
resolved), so the runtime reads them without guessing. Command-line overrides
go through the same checks (`set_key` with the flag's name).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..dsl import ast
from ..dsl.source import CnncError, Loc, did_you_mean
from .attrs import describe
from .lints import softmax_cross_entropy_lints
from .train_vocab import KEYS, Family, Invalid


@dataclass(frozen=True)
class Spec:
    """`name(arg, key = value)` in a train section."""

    name: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def arguments(self) -> dict[str, Any]:
        """The options as the runtime's factories take them: a tuple value (a size, numbers) as a list."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.kwargs}

    def get(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


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
    classes: tuple[str, ...] | None = None
    sync_bn: bool = False
    test: float | None = None
    init: Spec | None = None
    kfold: int | None = None
    bootstrap: bool = False
    snapshots: bool = False
    locs: dict[str, Loc] = field(default_factory=dict)


def _finite(value: float, loc: Loc) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise CnncError(f"{value} is not a finite number", loc,
                        "numbers in a train section must be finite (1e400 overflows to inf)")
    return value


def _value(expr: ast.Expr) -> Any:
    """Evaluate a train-section expression: literals, names, specs, lists, tuples."""
    if isinstance(expr, ast.Float):
        return _finite(expr.value, expr.loc)
    if isinstance(expr, (ast.Int, ast.Str, ast.Bool)):
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
            if expr.op == "/" and b == 0:
                raise CnncError("division by zero", expr.loc)
            try:
                result = {"*": lambda: a * b, "/": lambda: a / b, "+": lambda: a + b, "-": lambda: a - b}[expr.op]()
            except OverflowError:
                result = math.inf
            return _finite(result, expr.loc) if isinstance(result, float) else result
    raise CnncError("expected a number, a name, a call like sgd(lr = 0.1) or a list", expr.loc)


def _spec(value: Any, family: Family, loc: Loc | None) -> Spec:
    """Check one choice of `family` and return it with every option named."""
    what, table = family.what, family.entries
    if isinstance(value, str):
        value = Spec(value)
    if not isinstance(value, Spec):
        raise CnncError(f"{what} must be one of {', '.join(table)}; got {describe(value)}", loc)
    entry = table.get(value.name)
    if entry is None:
        raise CnncError(f"unknown {what} '{value.name}'", loc,
                        did_you_mean(value.name, table, f"choose one of: {', '.join(table)}"))
    options = family.options_of(entry)
    names = [o.name for o in options]
    if len(value.args) > len(entry.positional):
        raise CnncError(f"{what} '{value.name}' takes {len(entry.positional) or 'no'} unnamed "
                        f"argument{'s' if len(entry.positional) != 1 else ''}, got {len(value.args)}", loc,
                        f"name them: {', '.join(names) or 'it has no options'}")
    given: dict[str, Any] = dict(zip(entry.positional, value.args))
    for key, v in value.kwargs:
        option = next((o for o in options if key == o.name or key in o.aliases), None)
        if option is None:
            raise CnncError(f"{what} '{value.name}' has no option '{key}'", loc,
                            did_you_mean(key, names, f"its options: {', '.join(sorted(names)) or 'none'}"))
        if option.name in given:
            raise CnncError(f"{what} '{value.name}': option '{option.name}' is given twice", loc)
        given[option.name] = v
    checked: list[tuple[str, Any]] = []
    for option in options:
        if option.name not in given:
            if option.required:
                raise CnncError(f"{what} '{value.name}' needs option '{option.name}'", loc,
                                f"{option.name}: {option.doc}")
            continue
        v = given[option.name]
        if family.key == "schedule" and option.name == "then":
            v = _spec(v, family, loc)
        else:
            try:
                v = option.check(v)
            except Invalid as bad:
                raise CnncError(f"{what} '{value.name}': {option.name} must be {bad}, got {describe(v)}",
                                loc) from None
        checked.append((option.name, v))
    return Spec(value.name, (), tuple(checked))


def _specs(value: Any, family: Family, loc: Loc | None) -> tuple[Spec, ...]:
    items = value if isinstance(value, tuple) else (value,)
    return tuple(_spec(v, family, loc) for v in items)


def _plain(key: str, value: Any, loc: Loc | None) -> Any:
    try:
        return KEYS[key].check(value)
    except Invalid as bad:
        raise CnncError(f"{key} must be {bad}, got {describe(value)}", loc) from None


def set_key(cfg: TrainConfig, key: str, value: Any, loc: Loc | None) -> TrainConfig:
    """Validate one key and return the updated config."""
    if key not in KEYS:
        raise CnncError(f"unknown train key '{key}'", loc,
                        did_you_mean(key, KEYS, f"keys: {', '.join(sorted(KEYS))}"))
    family = KEYS[key].family
    if key == "data":
        if isinstance(value, str):  # a path: the kind follows from what is there
            value = Spec("path", (value,))
        return replace(cfg, data=_spec(value, family, loc))
    if key in ("epochs", "batch", "seed", "l1", "l2", "val", "test", "classes", "sync_bn", "kfold", "bootstrap",
               "snapshots"):
        v = _plain(key, value, loc)
        return replace(cfg, **{key: float(v) if key in ("l1", "l2", "val", "test") else v})
    if key == "lr":
        opts = dict(cfg.optimizer.kwargs)
        opts["lr"] = float(_plain(key, value, loc))
        return replace(cfg, optimizer=Spec(cfg.optimizer.name, cfg.optimizer.args, tuple(opts.items())))
    if key in ("loss", "optimizer", "schedule", "init"):
        return replace(cfg, **{key: _spec(value, family, loc)})
    if key == "augment":
        return replace(cfg, augment=_specs(value, family, loc))
    if key in ("normalize", "preprocess"):
        if key == "normalize":
            value = Spec("normalize", value.args, value.kwargs) if isinstance(value, Spec) else \
                Spec("normalize", tuple(value) if isinstance(value, tuple) else (value,))
        return replace(cfg, preprocess=_specs(value, family, loc))
    if key == "early_stop":
        spec = value if isinstance(value, Spec) else Spec("early_stop", (value,))
        if spec.name != "early_stop" or len(spec.args) > 1 or set(spec.options) - {"patience"}:
            raise CnncError("early_stop must be a number of epochs or early_stop(patience = N)", loc)
        patience = spec.args[0] if spec.args else spec.options.get("patience", 5)
        _plain("early_stop", patience, loc)
        return replace(cfg, early_stop=Spec("early_stop", (), (("patience", patience),)))
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
    if net is not None:
        net.warnings.extend(softmax_cross_entropy_lints(net, cfg.loss.name))
    return cfg


def set_key_text(cfg: TrainConfig, assignment: str, flag: str) -> TrainConfig:
    """`KEY=VALUE` from the command line (`--train`, `cnnc search --grid`): the value is read as a
    train section's line would be and checked by `set_key`; an error names the flag."""
    from ..dsl.parser import parse
    key, sep, text = assignment.partition("=")
    key, text = key.strip(), text.strip()
    try:
        if not sep or not key or not text:
            raise CnncError("expected KEY=VALUE, e.g. optimizer=adam or lr=0.01")
        if key not in KEYS:
            set_key(cfg, key, None, None)  # raises the unknown-key error with its suggestion
        if "\n" in text or "\r" in text:
            raise CnncError("the value must be one line")
        program = parse(f"train _ {{\n    {key} = {text}\n}}\n", flag)
        entries = program.items[0].entries if len(program.items) == 1 else ()
        if len(entries) != 1 or not isinstance(program.items[0], ast.Train):
            raise CnncError("expected one KEY=VALUE")
        return set_key(cfg, key, _value(entries[0].value), None)
    except CnncError as err:
        raise CnncError(f"{flag} {assignment}: {err.message}", hint=err.hint) from None
