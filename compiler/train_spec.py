"""Stage 2 (compiler): the `train` section — its keys, their values, validated and resolved into one record.

The compiler checks a train section against the vocabulary in `train_vocab`
(unknown keys, wrong kinds of value, bad option names, missing options and
non-finite numbers all point at the source) and resolves it into a
`TrainConfig` of plain Python values that the runtime executes.

**One meaning, whatever the order.** Every key expands into *settings*, one
per thing a run is made of (`TrainConfig`'s fields): most keys set one, and
three spellings set two — `optimizer = adam(lr = 0.1)` sets the optimizer
and the learning rate, `data = mnist10k(val = 0.1, test = 0.2)` the data and
its splits, `normalize = …` the preprocessing. A *layer* is a set of
settings given together: the file's section, then the command line's flags
(`--train KEY=VALUE`, `--lr`, …), then a search's axes. Within a layer two
keys that set the same thing must agree (`lr = 0.1` beside `optimizer =
adam(lr = 0.1)` is fine); if they differ the later one is refused, naming
both. A higher layer replaces a lower one's value setting by setting, so
`--train optimizer=adam` keeps the file's learning rate and `--train
data=cifar10` keeps its `val`. The record is then resolved from the settings
alone — never from the order they came in — and checked as a whole
(a monitor that needs a validation split, one loss per output, …).

Every choice comes out in one canonical form: its options by name
(positional arguments and aliases resolved). `record` is the JSON form of
what a run trains with (every option, defaults filled in), `summary` its
one-line form, `key_text` a key's resolved value written back in the train
language (`--train KEY=<it>` sets it again).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Sequence

from ..dsl import ast
from ..dsl.source import CnncError, Loc, did_you_mean
from .attrs import describe
from .lints import softmax_cross_entropy_lints
from .train_vocab import KEYS, LOSS, OPTIMIZER, REQUIRED, SCHEDULE, Family, Invalid


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

    def without(self, *names: str) -> "Spec":
        return Spec(self.name, self.args, tuple((k, v) for k, v in self.kwargs if k not in names))


@dataclass(frozen=True)
class Loss:
    """One output's loss: a weighted sum of built-in losses (`loss = mse` is one term of weight 1)."""

    terms: tuple[tuple[float, Spec], ...]

    @property
    def names(self) -> list[str]:
        return [spec.name for _, spec in self.terms]


def _default(key: str, name: str) -> Spec:
    """A choice of `key`'s family at its defaults, canonical (as a file giving just its name makes it)."""
    return _spec(Spec(name), KEYS[key].family, None)


@dataclass(frozen=True)
class TrainConfig:
    """A resolved train section: what a run trains with. Equal configs run the same.

    `data` holds the source and its own options (`limit`, `targets`); its split fractions are `val` and
    `test`. `optimizer` holds every option but the rate, which is `lr`. `loss` has one loss per output,
    in the order of `output`."""

    data: Spec = field(default_factory=lambda: _default("data", "mnist10k").without("val", "test"))
    epochs: int = 10
    batch: int = 64
    drop_last: bool = False
    seed: int = 0
    loss: tuple[Loss, ...] = field(default_factory=lambda: (Loss(((1.0, _default("loss", "cross_entropy")),)),))
    loss_weights: tuple[float, ...] | None = None
    optimizer: Spec = field(default_factory=lambda: _default("optimizer", "sgd").without("lr"))
    lr: float = 0.01
    schedule: Spec | None = None
    augment: tuple[Spec, ...] = ()
    preprocess: tuple[Spec, ...] = ()
    l1: float = 0.0
    l2: float = 0.0
    early_stop: Spec | None = None
    val: float | None = None
    test: float | None = None
    classes: tuple[str, ...] | None = None
    sync_bn: bool = False
    init: Spec | None = None
    kfold: int | None = None
    bootstrap: bool = False
    snapshots: bool = False
    outputs: tuple[str, ...] = ()          # the network's outputs the losses are for (() when unknown)
    locs: dict[str, Loc] = field(default_factory=dict, compare=False, repr=False)
    given: tuple["Setting", ...] = field(default=(), compare=False, repr=False)

    @property
    def validates(self) -> bool:
        """Whether the run has a validation split (a val fraction, or k-fold's held-out folds)."""
        return bool(self.val) or bool(self.kfold)


# The settings (TrainConfig's fields) that keys set, and what each is called in messages.
SETTINGS = {f.name: f.name for f in fields(TrainConfig) if f.name not in ("outputs", "locs", "given")}
SETTINGS.update({"lr": "the learning rate", "preprocess": "the preprocessing", "val": "the validation fraction",
                 "test": "the test fraction"})


@dataclass(frozen=True)
class Setting:
    """One setting given by one key: its checked value, where and how it was written."""

    name: str                 # the field of TrainConfig it sets
    value: Any
    key: str                  # the key that set it
    shown: str                # the key as written, for messages: `lr = 0.1`, `--train lr=0.1`
    loc: Loc | None = None    # the key's place in a file; None for a flag


@dataclass(frozen=True)
class Given:
    """A key and its value (evaluated, not yet checked), from a file line or a flag."""

    key: str
    value: Any
    loc: Loc | None = None       # the value's place: where a bad value is refused
    flag: str | None = None      # the flag as typed (`--train lr=0.1`, `--lr 0.1`); None in a file
    key_loc: Loc | None = None   # the key's place: where a setting that does not fit the others is refused


# ------------------------------------------------------------------ values
def _finite(value: float, loc: Loc) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise CnncError(f"{value} is not a finite number", loc,
                        "numbers in a train section must be finite (1e400 overflows to inf)")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sum(v: Any) -> Loss | None:
    """A loss term (a name or call) or a weighted sum of them, as a Loss; None for anything else."""
    if isinstance(v, Loss):
        return v
    if isinstance(v, Spec):
        return Loss(((1.0, v),))
    return None


def _loss_arithmetic(op: str, a: Any, b: Any, loc: Loc) -> Loss:
    """`0.5 * mse`, `mse * 0.5`, `mse / 2`, `a + b` of loss terms: a weighted sum."""
    if op == "+" and _sum(a) and _sum(b):
        return Loss(_sum(a).terms + _sum(b).terms)
    if op == "*" and _is_number(a) and _sum(b):
        a, b = b, a
    if op in ("*", "/") and _sum(a) and _is_number(b):
        if b <= 0:
            raise CnncError("division by zero" if op == "/" and b == 0 else
                            f"a loss's weight must be positive, got {b:g}", loc)
        factor = float(b) if op == "*" else 1.0 / float(b)
        return Loss(tuple((_finite(w * factor, loc), s) for w, s in _sum(a).terms))
    raise CnncError("a weighted sum of losses is written `0.5 * mse + smooth_l1`: numbers times losses, added",
                    loc)


def _value(expr: ast.Expr) -> Any:
    """Evaluate a train-section expression: literals, names, specs, lists, tuples, sums of losses."""
    if isinstance(expr, ast.Float):
        return _finite(expr.value, expr.loc)
    if isinstance(expr, (ast.Int, ast.Str, ast.Bool)):
        return expr.value
    if isinstance(expr, ast.Name):
        return Spec(expr.id)
    if isinstance(expr, ast.UnaryOp) and expr.op == "-":
        v = _value(expr.operand)
        if _is_number(v):
            return -v
    if isinstance(expr, (ast.ListExpr, ast.TupleExpr)):
        return tuple(_value(e) for e in expr.items)
    if isinstance(expr, ast.Call):
        return Spec(expr.func, tuple(_value(a) for a in expr.args),
                    tuple((k.name, _value(k.value)) for k in expr.kwargs))
    if isinstance(expr, ast.BinOp) and expr.op in ("*", "/", "+", "-"):
        a, b = _value(expr.left), _value(expr.right)
        if _is_number(a) and _is_number(b):
            if expr.op == "/" and b == 0:
                raise CnncError("division by zero", expr.loc)
            try:
                result = {"*": lambda: a * b, "/": lambda: a / b, "+": lambda: a + b, "-": lambda: a - b}[expr.op]()
            except OverflowError:
                result = math.inf
            return _finite(result, expr.loc) if isinstance(result, float) else result
        return _loss_arithmetic(expr.op, a, b, expr.loc)
    raise CnncError("expected a number, a name, a call like sgd(lr = 0.1) or a list", expr.loc)


# ------------------------------------------------------------------ one key
def _spec(value: Any, family: Family, loc: Loc | None) -> Spec:
    """Check one choice of `family` and return it with every option it takes, by name, in declaration
    order (given, or its default)."""
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
    for option in entry.options + family.common:   # the choice's own options first, as one writes them
        if option.name not in given:
            if option.required:
                raise CnncError(f"{what} '{value.name}' needs option '{option.name}'", loc,
                                f"{option.name}: {option.doc}")
            checked.append((option.name, option.default))   # canonical: every option, so equal meanings are equal
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
    if "monitor" in entry.names:
        checked = _with_mode(checked, what, value.name, loc)
    return Spec(value.name, (), tuple(checked))


def _with_mode(options: list[tuple[str, Any]], what: str, name: str, loc: Loc | None) -> list[tuple[str, Any]]:
    """A watcher's `mode` follows its monitor (a loss is better lower, an accuracy higher); a `mode` that
    says otherwise is refused, so `mode` and `monitor` never pull two ways."""
    given = dict(options)
    monitor, mode = given["monitor"], given["mode"]
    natural = "max" if monitor.endswith("accuracy") else "min"
    if mode not in (None, natural):
        raise CnncError(f"{what} '{name}': mode = {mode} says {'higher' if mode == 'max' else 'lower'} is better, "
                        f"but it watches {monitor}, which is better {'higher' if natural == 'max' else 'lower'}",
                        loc, f"drop mode (it follows the monitor), or watch another figure: monitor = "
                             f"{'val_accuracy' if natural == 'min' else 'val_loss'}")
    return [(k, natural if k == "mode" else v) for k, v in options]


def _specs(value: Any, family: Family, loc: Loc | None) -> tuple[Spec, ...]:
    items = value if isinstance(value, tuple) else (value,)
    return tuple(_spec(v, family, loc) for v in items)


def _plain(key: str, value: Any, loc: Loc | None) -> Any:
    try:
        return KEYS[key].check(value)
    except Invalid as bad:
        raise CnncError(f"{key} must be {bad}, got {describe(value)}", loc) from None


def _loss(value: Any, loc: Loc | None) -> tuple[Loss, ...]:
    """`mse`, `0.5 * mse + smooth_l1(beta = 0.5)`, or a list with one of those per output."""
    items = value if isinstance(value, tuple) else (value,)
    if not items:
        raise CnncError("loss must be a loss or a list with one loss per output; got an empty list", loc)
    out = []
    for item in items:
        summed = _sum(item)
        if summed is None:
            raise CnncError(f"loss must be one of {', '.join(LOSS.entries)} (or a weighted sum of them); "
                            f"got {describe(item)}", loc)
        out.append(Loss(tuple((weight, _spec(spec, LOSS, loc)) for weight, spec in summed.terms)))
    return tuple(out)


def _early_stop(value: Any, loc: Loc | None) -> Spec:
    if _is_number(value):   # `early_stop = 5`: the patience
        try:
            return _spec(Spec("early_stop", (KEYS["early_stop"].family.entries["early_stop"].option("patience")
                                              .check(value),)), KEYS["early_stop"].family, loc)
        except Invalid as bad:
            raise CnncError(f"early_stop must be {bad}, got {describe(value)}", loc) from None
    return _spec(value, KEYS["early_stop"].family, loc)


def _settings(given: Given) -> list[Setting]:
    """Check one key and expand it into the settings it gives."""
    key, value, loc = given.key, given.value, given.loc
    if key not in KEYS:
        raise CnncError(f"unknown train key '{key}'", loc,
                        did_you_mean(key, KEYS, f"keys: {', '.join(sorted(KEYS))}"))
    family = KEYS[key].family

    def settings(whole: Any, *parts: tuple[str, Any, str]) -> list[Setting]:
        """Settings (name, value, part of the key) of one key, each shown as the whole key was written."""
        shown = given.flag or f"{key} = {text(whole, family)}"
        return [Setting(name, v, key if part is None else f"{key}({part})", shown, given.key_loc or loc)
                for name, v, part in parts]

    if key == "data":
        if isinstance(value, str):  # a path: the kind follows from what is there
            value = Spec("path", (value,))
        whole = _spec(value, family, loc)
        splits = [(part, float(whole.options[part]), part) for part in ("val", "test")
                  if whole.options[part] is not None]
        return settings(whole, ("data", whole.without("val", "test"), None), *splits)
    if key == "optimizer":
        whole = _spec(value, family, loc)
        given_lr = isinstance(value, Spec) and (value.args or any(k == "lr" for k, _ in value.kwargs))
        lr = [("lr", float(whole.options["lr"]), "lr")] if given_lr else []
        return settings(whole, ("optimizer", whole.without("lr"), None), *lr)
    if key == "loss":
        whole = _loss(value, loc)
        return settings(whole if len(whole) > 1 else whole[0], ("loss", whole, None))
    if key in ("normalize", "augment", "preprocess"):
        if key == "normalize":
            value = Spec("normalize", value.args, value.kwargs) if isinstance(value, Spec) else \
                Spec("normalize", tuple(value) if isinstance(value, tuple) else (value,))
        whole = _specs(value, family, loc)
        return settings(whole, ("preprocess" if key == "normalize" else key, whole, None))
    if key == "early_stop":
        whole = _early_stop(value, loc)
    elif family is not None:
        whole = _spec(value, family, loc)
    else:
        whole = _plain(key, value, loc)
        whole = float(whole) if key in ("lr", "l1", "l2", "val", "test") else whole
    return settings(whole, (key, whole, None))


# ------------------------------------------------------------------ layers
def _conflict(a: Setting, b: Setting) -> CnncError:
    """Two keys of one layer setting one thing differently: refused at the later, naming both (in an
    order of their own, so the message does not depend on which came first)."""
    first, later = sorted((a, b), key=lambda s: (s.loc.line, s.loc.col) if s.loc else (0, 0))
    one, two = sorted((a, b), key=lambda s: (s.key, s.shown))
    if a.key == b.key:
        err = CnncError(f"train key '{a.key}' is given twice: {one.shown} and {two.shown}", later.loc,
                        "give each key once")
    else:
        err = CnncError(f"{one.shown} and {two.shown} both set {SETTINGS[a.name]}, differently", later.loc,
                        "give it once (or the same value in both)")
    if first.loc is not None and later.loc is not None:
        err.add_note("also set here", first.loc)
    return err


def layer(givens: Iterable[Given]) -> dict[str, Setting]:
    """The settings of keys given together (a section, or the flags), every one checked. Two that set
    one thing must agree; of several disagreements the one reported does not depend on the order."""
    by_name: dict[str, list[Setting]] = {}
    for g in givens:
        try:
            expanded = _settings(g)
        except CnncError as err:
            if g.flag is None:
                raise
            raise CnncError(f"{g.flag}: {err.message}", hint=err.hint) from None
        for s in expanded:
            by_name.setdefault(s.name, []).append(s)
    for name in sorted(by_name):
        group = sorted(by_name[name], key=lambda s: (s.key, s.shown))
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.key == b.key or a.value != b.value:
                    raise _conflict(a, b)
    return {name: group[0] for name, group in by_name.items()}


# ------------------------------------------------------------------ resolving
def resolve(settings: dict[str, Setting], outputs: Sequence[str] = (), net: Any = None) -> TrainConfig:
    """The record of these settings (each at its default where not given), checked as a whole."""
    values = {name: s.value for name, s in settings.items()}
    cfg = replace(TrainConfig(), **values, outputs=tuple(outputs), given=tuple(settings.values()),
                  locs={name: s.loc for name, s in settings.items() if s.loc is not None})
    _check(cfg, settings)
    if net is not None:
        for loss in cfg.loss[:1]:
            net.warnings.extend(softmax_cross_entropy_lints(net, loss.names[0]))
    return cfg


def _refuse(settings: dict[str, Setting], name: str, message: str, hint: str | None = None) -> CnncError:
    """An error at the key that gave setting `name` (named, when a flag gave it; none when it is the default)."""
    s = settings.get(name)
    if s is None or s.loc is not None:
        return CnncError(message, s.loc if s is not None else None, hint)
    return CnncError(f"{s.shown}: {message}", hint=hint)


def _check(cfg: TrainConfig, settings: dict[str, Setting]) -> None:
    """What no single key can check: settings that must fit each other, and the network."""
    opt = cfg.optimizer.options
    if cfg.optimizer.name == "sgd" and opt["nesterov"] and (opt["momentum"] <= 0 or opt["dampening"] != 0):
        raise _refuse(settings, "optimizer", "sgd(nesterov = true) needs momentum > 0 and dampening 0 "
                      "(Nesterov momentum looks ahead along the momentum)", "set momentum (e.g. 0.9), or drop nesterov")
    if cfg.snapshots and not _restarts(cfg.schedule):
        raise _refuse(settings, "snapshots", "snapshots = true needs a schedule with warm restarts",
                      "e.g. schedule = cosine_restarts(T_0 = 5): a snapshot is kept at the end of each cycle")
    for name, spec in (("schedule", _watching(cfg.schedule)), ("early_stop", cfg.early_stop)):
        if spec is not None:
            _check_monitor(cfg, settings, name, spec)
    _check_losses(cfg, settings)


def _after_warmup(schedule: Spec | None) -> Spec | None:
    """The schedule that follows any warm-up (what decides restarts and what is watched)."""
    while schedule is not None and schedule.name == "warmup":
        schedule = schedule.get("then")
    return schedule


def _restarts(schedule: Spec | None) -> bool:
    schedule = _after_warmup(schedule)
    return schedule is not None and schedule.name == "cosine_restarts"


def _watching(schedule: Spec | None) -> Spec | None:
    """The schedule that watches a monitor (plateau, also after a warm-up), if any."""
    schedule = _after_warmup(schedule)
    return schedule if schedule is not None and schedule.name == "plateau" else None


def _check_monitor(cfg: TrainConfig, settings: dict[str, Setting], name: str, spec: Spec) -> None:
    monitor = spec.options["monitor"]
    what = "schedule plateau" if name == "schedule" else "early_stop"
    if monitor.startswith("val_") and not cfg.validates:
        raise _refuse(settings, name, f"{what} watches {monitor}, but the run has no validation split",
                      "hold one out (val = 0.1, or data = …(val = 0.1)), or watch a training figure: "
                      f"monitor = {monitor.replace('val_', 'train_')}")
    if monitor.endswith("accuracy") and len(cfg.outputs) > 1:
        raise _refuse(settings, name, f"{what} watches {monitor}, but the network has {len(cfg.outputs)} outputs, "
                      "each with its own accuracy", "watch the total loss: monitor = val_loss")


def _check_losses(cfg: TrainConfig, settings: dict[str, Setting]) -> None:
    n = len(cfg.outputs)
    if n and len(cfg.loss) != n:
        names = ", ".join(cfg.outputs)
        if len(cfg.loss) == 1:
            raise _refuse(settings, "loss", f"the network has {n} outputs ({names}); give a loss for each, in that "
                          f"order", f"e.g. loss = [{', '.join(['cross_entropy'] + ['mse'] * (n - 1))}]")
        raise _refuse(settings, "loss", f"{len(cfg.loss)} losses for {n} output{'s' if n != 1 else ''} ({names})",
                      "give one loss per output, in the order of `output`")
    if cfg.loss_weights is not None and len(cfg.loss_weights) != len(cfg.loss):
        raise _refuse(settings, "loss_weights", f"{len(cfg.loss_weights)} loss weights for {len(cfg.loss)} "
                      f"loss{'es' if len(cfg.loss) != 1 else ''}", "give one weight per output, in its order")


# ------------------------------------------------------------------ the entry points
def validate_train(section: ast.Train | None, net: Any = None, layers: Sequence[Sequence[Given]] = ()
                   ) -> TrainConfig:
    """A file's train section (None: the defaults) with `layers` of keys over it (the flags, a search
    trial's axes), resolved and checked as a whole (against the network when given)."""
    seen: dict[str, Loc] = {}
    givens = []
    for entry in section.entries if section is not None else ():
        if entry.key in seen:
            raise CnncError(f"train key '{entry.key}' is given twice", entry.loc).add_note("first given here",
                                                                                         seen[entry.key])
        seen[entry.key] = entry.loc
        givens.append(Given(entry.key, _value(entry.value), entry.value.loc, key_loc=entry.loc))
    settings = layer(givens)
    for given in layers:
        settings.update(layer(given))
    return resolve(settings, tuple(net.outputs) if net is not None else (), net)


def for_network(cfg: TrainConfig, outputs: Sequence[str]) -> TrainConfig:
    """cfg checked against a network's outputs, when it was resolved without them (built in Python)."""
    outputs = tuple(outputs)
    if cfg.outputs == outputs:
        return cfg
    cfg = replace(cfg, outputs=outputs)
    _check(cfg, {s.name: s for s in cfg.given})
    return cfg


def defaults_for(net: Any) -> TrainConfig:
    """The record of a network without a train section: every setting at its default."""
    return resolve({}, tuple(net.outputs))


def train_config(net: Any) -> TrainConfig:
    """The network's train section, resolved; the defaults when it has none."""
    return net.train if net.train is not None else defaults_for(net)


def override(cfg: TrainConfig, givens: Sequence[Given]) -> TrainConfig:
    """cfg with a layer of keys given on top: each setting they give replaces cfg's (see the docstring).
    (A file whose own record does not hold together takes its flags through `validate_train`'s layers.)"""
    if not givens:
        return cfg
    merged = {s.name: s for s in cfg.given}
    merged.update(layer(givens))
    return resolve(merged, cfg.outputs)


def set_key(cfg: TrainConfig, key: str, value: Any, loc: Loc | None = None, flag: str | None = None) -> TrainConfig:
    """cfg with one key given on top (a layer of one key)."""
    return override(cfg, [Given(key, value, loc, flag)])


def with_data(cfg: TrainConfig, source: str | None = None, limit: int | None = None) -> TrainConfig:
    """cfg with `--data SOURCE` (a path or a data set's name, read as `data = "SOURCE"` is) and `--limit N`
    in place of its data and its limit; the data's other options (`targets`) and its splits stay."""
    data = cfg.data
    if source is not None:
        data = _spec(Spec("path", (source,)), KEYS["data"].family, None).without("val", "test")
        data = Spec(data.name, (), tuple((k, cfg.data.options.get(k, v) if k != "path" else v) for k, v in data.kwargs))
    if limit is not None:
        data = Spec(data.name, (), tuple((k, limit if k == "limit" else v) for k, v in data.kwargs))
    return cfg if data == cfg.data else replace(cfg, data=data)


def given_text(assignment: str, flag: str) -> Given:
    """`KEY=VALUE` from the command line (`--train`, `cnnc search --grid`): the value is read as a
    train section's line would be; its errors name the flag."""
    from ..dsl.parser import parse
    key, sep, value = assignment.partition("=")
    key, value = key.strip(), value.strip()
    shown = f"{flag} {assignment}"
    try:
        if not sep or not key or not value:
            raise CnncError("expected KEY=VALUE, e.g. optimizer=adam or lr=0.01")
        if key not in KEYS:
            _settings(Given(key, None))  # raises the unknown-key error with its suggestion
        if "\n" in value or "\r" in value:
            raise CnncError("the value must be one line")
        program = parse(f"train _ {{\n    {key} = {value}\n}}\n", flag)
        entries = program.items[0].entries if len(program.items) == 1 else ()
        if len(entries) != 1 or not isinstance(program.items[0], ast.Train):
            raise CnncError("expected one KEY=VALUE")
        return Given(key, _value(entries[0].value), None, shown)
    except CnncError as err:
        raise CnncError(f"{shown}: {err.message}", hint=err.hint) from None


def set_key_text(cfg: TrainConfig, assignment: str, flag: str) -> TrainConfig:
    return override(cfg, [given_text(assignment, flag)])


# ------------------------------------------------------------------ what ran, written out
class _Word(str):
    """A choice's word (`min`, `val_loss`): written bare, where a path is written in quotes."""


def _given_options(spec: Spec, family: Family | None) -> tuple[tuple[str, Any], ...]:
    """The options of a canonical choice that differ from their defaults (what a reader needs to see),
    a choice's words marked to be written bare."""
    if family is None or spec.name not in family.entries:
        return spec.kwargs
    options = {o.name: o for o in family.options_of(family.entries[spec.name])}
    defaults = {k: o.default for k, o in options.items()}
    if "monitor" in defaults:   # a watcher's mode defaults to what its monitor wants
        defaults["mode"] = "max" if spec.options["monitor"].endswith("accuracy") else "min"

    def shown(k: str, v: Any) -> Any:
        return _Word(v) if isinstance(v, str) and hasattr(options[k].check, "words") else v
    return tuple((k, shown(k, v)) for k, v in spec.kwargs if k not in defaults or v != defaults[k])


def text(v: Any, family: Family | None = None) -> str:
    """A value in the train language, a choice's options at their defaults left out (what `--train
    KEY=<text>` reads back to the same setting)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, _Word):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Spec):
        args = [text(a) for a in v.args] + [f"{k} = {text(x, family)}" for k, x in _given_options(v, family)]
        return f"{v.name}({', '.join(args)})" if args else v.name
    if isinstance(v, Loss):
        return " + ".join(text(s, LOSS) if w == 1 else f"{text(w)} * {text(s, LOSS)}" for w, s in v.terms)
    if isinstance(v, tuple):
        inner = ", ".join(text(x, family) for x in v)
        return f"({inner})" if v and all(_is_number(x) for x in v) else f"[{inner}]"
    if v is None:
        return "none"
    raise TypeError(type(v).__name__)


def key_text(cfg: TrainConfig, key: str) -> str:
    """The value `key` resolved to, as `--train KEY=<text>` would give it again: the optimizer with its
    rate, the data with its splits, every other key as it is."""
    family = KEYS[key].family
    if key == "optimizer":   # always with its rate: `--train optimizer=sgd` alone would keep another layer's
        options = [f"lr = {text(cfg.lr)}"] + [f"{k} = {text(v)}" for k, v in _given_options(cfg.optimizer, family)]
        return f"{cfg.optimizer.name}({', '.join(options)})"
    if key == "data":        # with its splits, for the same reason
        splits = tuple((k, getattr(cfg, k)) for k in ("val", "test") if getattr(cfg, k) is not None)
        return text(Spec(cfg.data.name, cfg.data.args, cfg.data.kwargs + splits), family)
    if key == "loss":
        return text(cfg.loss[0]) if len(cfg.loss) == 1 else text(cfg.loss)
    return text(getattr(cfg, "preprocess" if key == "normalize" else key), family)


def _json(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    if isinstance(v, Spec):
        return {"name": v.name, **{k: _json(x) for k, x in v.kwargs}}
    return v


def record(cfg: TrainConfig) -> dict[str, Any]:
    """What a run trains with, as JSON: every setting, every option with its default filled in; the
    optimizer carries its rate, the losses are named by output."""
    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        name, value = f.name, getattr(cfg, f.name)
        if name in ("locs", "given", "lr"):
            continue
        if name == "optimizer":
            value = {"name": value.name, "lr": cfg.lr, **_json(value.without("name"))}
            value.pop("name", None)
            value = {"name": cfg.optimizer.name, **value}
        elif name == "loss":
            names = cfg.outputs or tuple(f"output {i + 1}" for i in range(len(value)))
            value = {o: [{"weight": w, **_json(s)} for w, s in loss.terms] for o, loss in zip(names, value)}
        out[name] = _json(value)
    return out


def summary(cfg: TrainConfig) -> str:
    """The record in one line: optimizer with its rate, schedule, epochs and batch, data and splits,
    augmentation then preprocessing (the order they run in), losses, what is monitored."""
    parts = [key_text(cfg, "optimizer") + (f", {key_text(cfg, 'schedule')}" if cfg.schedule else ""),
             f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} of batch {cfg.batch}"
             + (" (a last smaller batch dropped)" if cfg.drop_last else "") + f", seed {cfg.seed}"]
    data = key_text(cfg, "data")
    if cfg.kfold:
        data += f", {cfg.kfold} folds"
    if cfg.bootstrap:
        data += ", bootstrap"
    parts.append(data)
    family = KEYS["augment"].family, KEYS["preprocess"].family
    steps = [text(a, family[0]) for a in cfg.augment] + [text(p, family[1]) for p in cfg.preprocess]
    if steps:
        parts.append(" -> ".join(steps))
    losses = [text(loss) for loss in cfg.loss]
    if len(cfg.outputs) > 1:
        weights = cfg.loss_weights or (1.0,) * len(losses)
        losses = [f"{o}: {l}" if w == 1 else f"{o}: {w:g} * ({l})" for o, l, w in zip(cfg.outputs, losses, weights)]
    parts.append("loss " + ", ".join(losses))
    if cfg.l1 or cfg.l2:
        parts.append(", ".join(f"{k} {getattr(cfg, k):g}" for k in ("l1", "l2") if getattr(cfg, k)))
    if cfg.early_stop:
        es = cfg.early_stop.options
        parts.append(f"early stop on {es['monitor']} (patience {es['patience']}"
                     + (f", min_delta {es['min_delta']:g}" if es["min_delta"] else "") + ")")
    watched = _watching(cfg.schedule)
    if watched is not None:
        parts.append(f"plateau on {watched.options['monitor']}")
    return "; ".join(parts)
