"""Stage 3 (runtime): hyper-parameter search behind `cnnc search` — the plan, the trials, the ranking.

A search has axes: a network parameter (what `--set` binds) or a train key
(what `--train` sets), each with a list of values (`lr=0.1,0.01`) or, for a
random search, a distribution (`lr=loguniform(1e-4, 1e-1)`). `plan_grid`
takes the cartesian product, `plan_random` draws N distinct trials from a
seeded generator. Every trial is checked before any runs: its network
compiles with its parameters and its train keys pass the train checker
(compiler/train_spec.py: the `--train` flags one layer over the file, the
trial's axes one layer over them), so a bad value — or two axes that set one
thing differently — is an error naming its flag, not a failed trial.
A trial's record holds what it trained with: the resolved record (`train`,
as in its checkpoints) and each axis's value read back from it (`trained`:
the drawn learning rate, the optimizer with its rate), which the ranked table
and the "best" command show.

`run_trial(spec)` trains one trial in its own run directory (a plain,
picklable dict goes in, a JSON-able record comes out) and never raises: a
trial that fails is a record with its error. `execute` runs trials in
supervised worker processes (pool.py: a dead worker costs only its own
trial), or on a Dask cluster (`connect_scheduler`: a handshake with a
deadline); results.jsonl (rewritten atomically after every trial) is the
record of what finished, so a resumed search runs only what is missing; a
record that is not what the search writes (`RECORD_FIELDS`) is an error
naming the file, line and field. `rank` orders the finished trials by a
metric (accuracy: higher is better; loss: lower is better).

Successive halving (`halving = ETA`): every trial first trains
epochs/ETA^(R-1) epochs (R rungs, the largest R with at least one epoch per
rung), the best 1/ETA of them continue (resumed from their checkpoint) to
ETA times as many epochs, and so on until the survivors reach the full
epochs. A stopped trial keeps its record with the epochs it ran.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ...compiler.driver import compile_file, parse_assignment, parse_shape, with_train
from ...compiler.train_spec import TrainConfig, given_text, key_text, set_key_text, text, train_config
from ...compiler.train_vocab import KEYS
from ...dsl import files
from ...dsl.source import CnncError, did_you_mean
from ..progress import Progress

RESULTS = "results.jsonl"
# What a trial reports, and which way is better.
METRICS = {"val_accuracy": "max", "val_loss": "min", "test_accuracy": "max", "test_loss": "min",
           "train_accuracy": "max", "train_loss": "min"}
AUTO_ORDER = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")  # never the test split unasked


def figure_text(name: str, value: float | None) -> str:
    """How a run's figure is printed everywhere (trials, the table, k-fold): accuracies as percentages,
    losses with four decimals."""
    if value is None:
        return "-"
    return f"{value:.2%}" if name.endswith("accuracy") else f"{value:.4f}"
SIGNIFICANT = 4   # drawn numbers are rounded to this many significant digits (readable, reproducible)


# ------------------------------------------------------------------ distributions
@dataclass(frozen=True)
class Distribution:
    name: str
    args: tuple

    def draw(self, rng: np.random.Generator) -> str:
        low, high = self.args[0], self.args[-1]
        if self.name == "uniform":
            return _short(rng.uniform(low, high))
        if self.name == "loguniform":
            return _short(math.exp(rng.uniform(math.log(low), math.log(high))))
        if self.name == "randint":
            return str(int(rng.integers(int(low), int(high) + 1)))
        return self.args[int(rng.integers(len(self.args)))]   # choice


def _short(value: float) -> str:
    return repr(float(f"{value:.{SIGNIFICANT}g}"))


def _numbers(name: str, items: list[str]) -> tuple[float, float]:
    if len(items) != 2:
        raise CnncError(f"{name} takes two numbers (low, high), got {len(items)}")
    try:
        low, high = float(items[0]), float(items[1])
    except ValueError:
        raise CnncError(f"{name} takes two numbers (low, high)") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise CnncError(f"{name}({low:g}, {high:g}): low must be below high, both finite")
    return low, high


def _uniform(items: list[str]) -> tuple:
    return _numbers("uniform", items)


def _loguniform(items: list[str]) -> tuple:
    low, high = _numbers("loguniform", items)
    if low <= 0:
        raise CnncError(f"loguniform({low:g}, {high:g}): low must be positive")
    return low, high


def _randint(items: list[str]) -> tuple:
    low, high = _numbers("randint", items)
    if low != int(low) or high != int(high):
        raise CnncError("randint takes two integers (low, high), both included")
    return int(low), int(high)


def _choice(items: list[str]) -> tuple:
    if not items or not all(items):
        raise CnncError("choice takes one or more values")
    return tuple(items)


DISTRIBUTIONS: dict[str, Callable[[list[str]], tuple]] = {
    "uniform": _uniform, "loguniform": _loguniform, "randint": _randint, "choice": _choice}


# ------------------------------------------------------------------ axes
@dataclass(frozen=True)
class Axis:
    name: str
    train: bool                                   # a train key (else a network parameter)
    values: tuple[str, ...] = ()                  # a grid's values, as text
    distribution: Distribution | None = None
    text: str = ""                                # as the user wrote it, for messages

    def draw(self, rng: np.random.Generator) -> str:
        if self.distribution is not None:
            return self.distribution.draw(rng)
        return self.values[int(rng.integers(len(self.values)))]


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: `adam(lr=0.1),sgd` -> ['adam(lr=0.1)', 'sgd']."""
    parts, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _call(text: str) -> tuple[str, str] | None:
    """'name(args)' -> (name, args), else None."""
    head, paren, rest = text.partition("(")
    if paren and rest.endswith(")") and head.strip().isidentifier():
        return head.strip(), rest[:-1]
    return None


def parse_axis(text: str, network_params: Sequence[str], flag: str = "--grid") -> Axis:
    """`NAME=V1,V2,...` or `NAME=DIST(args)`, for a train key or a parameter of the network."""
    name, sep, rest = text.partition("=")
    name, rest = name.strip(), rest.strip()
    shown = f"{flag} {text}"
    if not sep or not name or not rest:
        raise CnncError(f"{shown}: expected NAME=V1,V2,... or NAME=DISTRIBUTION(...)",
                        hint="e.g. --grid lr=0.1,0.01 or --grid lr=loguniform(1e-4, 1e-1) with --random N")
    train = name in KEYS
    if not train and name not in network_params:
        raise CnncError(f"{shown}: '{name}' is neither a train key nor a parameter of the network",
                        hint=did_you_mean(name, list(KEYS) + list(network_params),
                                          f"network parameters: {', '.join(network_params) or 'none'}; "
                                          f"train keys: {', '.join(sorted(KEYS))}"))
    items = split_top_level(rest)
    call = _call(rest) if len(items) == 1 else None
    # A call is a distribution unless it is a train key's own kind of value (optimizer=adam(lr=0.1)).
    family = train and KEYS[name].family is not None
    if call and (call[0] in DISTRIBUTIONS or not family):
        dist_name, args = call
        make = DISTRIBUTIONS.get(dist_name)
        if make is None:
            raise CnncError(f"{shown}: unknown distribution '{dist_name}'",
                            hint=did_you_mean(dist_name, DISTRIBUTIONS,
                                              f"distributions: {', '.join(DISTRIBUTIONS)}"))
        try:
            return Axis(name, train, distribution=Distribution(dist_name, make(split_top_level(args))), text=text)
        except CnncError as err:
            raise CnncError(f"{shown}: {err.message}") from None
    if any(not v for v in items):
        raise CnncError(f"{shown}: an empty value", hint="separate values with single commas: lr=0.1,0.01")
    if len(set(items)) != len(items):
        raise CnncError(f"{shown}: a value is given twice")
    return Axis(name, train, values=tuple(items), text=text)


# ------------------------------------------------------------------ plans
Settings = dict[str, str]   # axis name -> value as text


def plan_grid(axes: Sequence[Axis]) -> list[Settings]:
    """Every combination, the first axis varying slowest."""
    for a in axes:
        if a.distribution is not None:
            raise CnncError(f"--grid {a.text}: a distribution needs --random N",
                            hint="a grid takes lists of values: --grid lr=0.1,0.01")
    return [dict(zip((a.name for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]


def plan_random(axes: Sequence[Axis], n: int, seed: int) -> list[Settings]:
    """n distinct draws (fewer when the axes have fewer combinations), from a generator seeded by `seed`."""
    rng = np.random.default_rng([seed, 9])
    out: list[Settings] = []
    seen: set[str] = set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        s = {a.name: a.draw(rng) for a in axes}
        if settings_key(s) not in seen:
            seen.add(settings_key(s))
            out.append(s)
    return out


def settings_key(settings: Settings) -> str:
    return json.dumps(settings, sort_keys=True)


def trial_id(settings: Settings) -> str:
    return hashlib.sha256(settings_key(settings).encode()).hexdigest()[:10]


# ------------------------------------------------------------------ the base of every trial
@dataclass
class Base:
    """What every trial shares: the file and the flags given once."""
    file: str
    network: str | None = None
    inputs: list[str] = field(default_factory=list)      # --input texts
    params: list[str] = field(default_factory=list)      # --set texts
    allow: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)       # --train KEY=VALUE texts
    data: str | None = None
    limit: int | None = None
    threads: int = 1
    tensorboard: str | None = None   # --tensorboard DIR: each trial's event files in DIR/TRIAL (its run folder's name)


def compile_trial(base: Base, settings: Settings, axes: Sequence[Axis]):
    """(compiled network, train config) of one trial; errors name the flag at fault."""
    params = dict(parse_assignment(p) for p in base.params)
    net_axes = {a.name: a for a in axes if not a.train}
    for name, value in settings.items():
        if name in net_axes:
            params[name] = parse_assignment(f"{name}={value}", f"--grid {net_axes[name].text}:")[1]
    try:
        compiled = compile_file(base.file, base.network, dict(parse_shape(s) for s in base.inputs), params,
                                set(base.allow), with_train=False)
    except CnncError as err:
        shown = ", ".join(f"{k}={settings[k]}" for k in settings if k in net_axes)
        if shown:
            raise CnncError(f"--grid with {shown}: {err.message}", hint=err.hint) from None
        raise
    train_axes = {a.name: a for a in axes if a.train}
    flags = [given_text(assignment, "--train") for assignment in base.train]   # one layer; the axes one more
    trial = [given_text(f"{name}={value}", f"--grid {train_axes[name].text}:")
             for name, value in settings.items() if name in train_axes]
    compiled = with_train(compiled, base.file, [flags, trial])
    cfg = train_config(compiled.net)
    if cfg.kfold:
        raise CnncError("cnnc search trains one model per trial; kfold is for cnnc run",
                        cfg.locs.get("kfold"), "remove kfold from the search")
    return compiled, cfg


def trained(cfg, settings: Settings, axes: Sequence[Axis]) -> Settings:
    """Each axis's value as the trial trained with it: a train key read back from the resolved record
    (so `lr` is the rate the optimizer stepped with), a network parameter as `--set` bound it."""
    train = {a.name for a in axes if a.train}
    return {name: key_text(cfg, name) if name in train else text(parse_assignment(f"{name}={value}")[1])
            for name, value in settings.items()}


def shown_settings(record: dict[str, Any]) -> Settings:
    """A trial's settings as it trained with them (older records: as planned)."""
    return {**record["settings"], **record.get("trained", {})}


def network_parameters(base: Base) -> list[str]:
    """The names `--set` may bind in the chosen network."""
    from ...compiler.loader import choose_network, load
    defs = load(base.file)
    return [p.name for p in defs.networks[choose_network(defs, base.network)].params]


# ------------------------------------------------------------------ one trial
def trial_spec(base: Base, settings: Settings, axes: Sequence[Axis], out: Path, epochs: int | None = None,
               resume: bool = False) -> dict[str, Any]:
    """The picklable description a worker runs."""
    return {"base": vars(base), "settings": settings, "axes": [vars(a) | {"distribution": None} for a in axes],
            "out": str(out), "epochs": epochs, "resume": resume, "id": trial_id(settings)}


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one trial in its run directory; a record of its figures, or of its failure (never raises)."""
    from threadpoolctl import threadpool_limits
    from ..kernels import keep_freed_memory
    from ..train.trainer import Trainer
    t0 = time.perf_counter()
    record: dict[str, Any] = {"trial": spec["id"], "settings": spec["settings"], "out": spec["out"]}
    try:
        keep_freed_memory()
        base = Base(**spec["base"])
        axes = [Axis(**a) for a in spec["axes"]]
        compiled, cfg = compile_trial(base, spec["settings"], axes)
        if spec.get("epochs"):
            cfg = set_key_text(cfg, f"epochs={spec['epochs']}", "--halving")
        with threadpool_limits(base.threads):
            events = Path(base.tensorboard) / Path(spec["out"]).name if base.tensorboard else None
            trainer = Trainer(compiled, cfg, Path(spec["out"]), data_override=base.data, limit=base.limit,
                              progress=False, log=lambda s: None, threads=base.threads, tensorboard=events)
            result = trainer.run(resume=spec.get("resume", False), overwrite=not spec.get("resume", False))
        record.update(train=trainer.record, trained=trained(trainer.cfg, spec["settings"], axes))
        last = result.history[-1] if result.history else {}
        figures = {k: last.get(k) for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
        if result.test:
            figures.update({"test_loss": result.test.get("loss"), "test_accuracy": result.test.get("accuracy")})
        record.update(status="failed" if result.non_finite else "ok", epochs=result.epochs_run,
                      figures={k: v for k, v in figures.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        if result.non_finite:
            record["error"] = result.stopped
    except CnncError as err:
        record.update(status="failed", error=err.message)
    except Exception as err:   # a trial's failure is recorded, never the end of the search
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


# ------------------------------------------------------------------ running many
def execute(specs: Sequence[dict[str, Any]], workers: int, client: Any,
            done: Callable[[dict[str, Any]], None]) -> None:
    """Run the trials in `workers` supervised local processes (select/pool.py: a dead worker costs only
    its own trial), or on a Dask cluster (`client`, from `connect_scheduler`); call `done(record)` in
    this process as each finishes."""
    if not specs:
        return
    if client is not None:
        return _execute_dask(specs, client, done)
    from .pool import run_supervised
    run_supervised(f"{__name__}:run_trial", specs, workers,
                   lambda spec, record, failure: done(record if failure is None else _failed(spec, failure)))


def _failed(spec: dict[str, Any], why: str) -> dict[str, Any]:
    """The record of a trial whose worker died (killed, out of memory)."""
    return {"trial": spec["id"], "settings": spec["settings"], "out": spec["out"], "status": "failed",
            "error": why}


def _outcome(future: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """A Dask worker's record; a worker that died (killed, out of memory) is a failed trial."""
    try:
        return future.result()
    except Exception as err:
        return _failed(spec, f"the worker died: {type(err).__name__}: {err}")


DASK_EXTRA = "pip install 'cnnc[dask]'"
SCHEDULER_DEADLINE = 10.0       # seconds for a Dask scheduler to answer (connection and handshake)
SCHEDULER_SCHEMES = ("tcp", "tls")


def check_scheduler(address: str) -> Any:
    """Dask's security settings for `address` if it can name a Dask scheduler cnnc reaches (tcp:// or
    tls://, or HOST:PORT), else a one-line error; nothing is contacted."""
    shown = _scheduler_flag(address)
    try:
        import distributed  # noqa: F401  (the package itself: a cached submodule would not tell)
        from distributed.security import Security
    except ImportError:
        raise CnncError(f"{shown}: running trials on a Dask cluster needs Dask's distributed, which is not "
                        f"installed: run {DASK_EXTRA}") from None
    scheme, sep, rest = address.strip().partition("://")
    if not address.strip() or (sep and (scheme not in SCHEDULER_SCHEMES or not rest)):
        raise CnncError(f"{shown}: expected the address of a Dask scheduler, tcp://HOST:PORT or tls://HOST:PORT",
                        hint="a scheduler listens on port 8786 unless told otherwise")
    security = Security()   # Dask's configuration
    if scheme == "tls" and security.get_connection_args("client").get("ssl_context") is None:
        raise CnncError(f"{shown}: tls:// needs Dask's TLS configuration (distributed.comm.tls.ca-file, "
                        "distributed.comm.tls.client.cert and .key)", hint="or reach the scheduler with tcp://")
    return security


def connect_scheduler(address: str, deadline: float = SCHEDULER_DEADLINE) -> Any:
    """A Dask client of the scheduler at `address`, or a one-line error within `deadline` seconds.

    Before the client is made, a handshake of cnnc's own — connect, ask the
    server what it is — must finish within the deadline: Dask's client waits
    for ever on a server that accepts and then says nothing, or speaks HTTP.
    tls:// takes its certificates from Dask's configuration (distributed.comm.tls.*).
    """
    security = check_scheduler(address)
    from distributed import Client
    shown = _scheduler_flag(address)
    try:
        identity = asyncio.run(asyncio.wait_for(_identify(address, security, deadline), deadline))
    except (asyncio.TimeoutError, TimeoutError):
        raise CnncError(f"{shown}: no Dask scheduler answered within {deadline:g} s",
                        hint="is it the address of a running Dask scheduler (dask scheduler prints it)?") from None
    except Exception as err:   # whatever Dask's connection raises: the address is unusable
        raise CnncError(f"{shown}: cannot reach the Dask scheduler ({_reason(err)})") from None
    if not isinstance(identity, dict) or identity.get("type") != "Scheduler":
        raise CnncError(f"{shown}: the server there answers, but is not a Dask scheduler")
    try:
        return Client(address, timeout=deadline, security=security)
    except Exception as err:
        raise CnncError(f"{shown}: cannot reach the Dask scheduler ({_reason(err)})") from None


def _scheduler_flag(address: str) -> str:
    shown = files.describe_path(address)
    return f"--scheduler {shown if shown and shown == shown.strip() else repr(shown)}"


async def _identify(address: str, security: Any, deadline: float) -> Any:
    """What the server at `address` says it is (a Dask scheduler says {'type': 'Scheduler', ...})."""
    from distributed.comm import connect
    comm = await connect(address, timeout=deadline, **security.get_connection_args("client"))
    try:
        await comm.write({"op": "identity"})
        return await comm.read()
    finally:
        await comm.close()


def _reason(err: BaseException) -> str:
    return files.describe_path(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)


def _execute_dask(specs: Sequence[dict[str, Any]], client: Any, done: Callable[[dict], None]) -> None:
    from distributed import as_completed
    futures = {client.submit(run_trial, s, pure=False, key=f"cnnc-trial-{s['id']}-{time.time_ns()}"): s
               for s in specs}
    for f in as_completed(list(futures)):
        done(_outcome(f, futures[f]))


# ------------------------------------------------------------------ results
# What a line of results.jsonl may hold (RECORD_FIELDS below): each field's check returns what is wrong
# with a value, or None.
def _expected(what: str, value: Any) -> str:
    text = json.dumps(value)   # NaN and Infinity as JSON spells them; control characters escaped
    return f"expected {what}, got {text if len(text) <= 40 else text[:37] + '...'}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else _expected("text", value)


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else _expected("true or false", value)


def _count(value: Any) -> str | None:
    whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if whole else _expected("a whole number, 0 or more", value)


def _seconds(value: Any) -> str | None:
    return None if _finite(value) and value >= 0 else _expected("a finite number of seconds, 0 or more", value)


def _status(value: Any) -> str | None:
    return None if value in ("ok", "failed") else _expected('"ok" or "failed"', value)


def _settings(value: Any) -> str | None:
    if not isinstance(value, dict):
        return _expected("an object of axis names and values", value)
    bad = next((k for k, v in value.items() if not isinstance(v, str)), None)
    return None if bad is None else f"{files.describe_path(bad)}: {_expected('the value as text', value[bad])}"


def _figures(value: Any) -> str | None:
    if not isinstance(value, dict):
        return _expected("an object of figures", value)
    for name, figure in value.items():
        if name not in METRICS:
            return f"'{files.describe_path(name)}' is not a figure a trial reports ({', '.join(METRICS)})"
        if not _finite(figure):
            return f"{name}: {_expected('a finite number', figure)}"
    return None


def _plain_json(value: Any, where: str) -> str | None:
    """What in a value of the resolved record is not plain JSON (finite numbers, text, true/false, null,
    lists, objects of them), or None."""
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _plain_json(v, f"{where}.{k}"))), None)
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _plain_json(v, f"{where}[{i}]"))), None)
    if value is None or isinstance(value, (str, bool)) or _finite(value):
        return None
    return f"{files.describe_path(where)}: {_expected('a finite number, text, true/false or null', value)}"


RECORD_KEYS = frozenset(f.name for f in fields(TrainConfig))   # what train_spec.record writes


def _train_record(value: Any) -> str | None:
    if not isinstance(value, dict):
        return _expected("the resolved train record (an object)", value)
    bad = next((k for k in value if k not in RECORD_KEYS), None)
    if bad is not None:
        return f"'{files.describe_path(bad)}' is not a setting of a train record"
    return next((p for k, v in value.items() if (p := _plain_json(v, k))), None)


# field -> (required, its check). A field the search writes must be declared here: the reader refuses others.
RECORD_FIELDS: dict[str, tuple[bool, Callable[[Any], str | None]]] = {
    "trial": (False, _text), "settings": (True, _settings), "out": (False, _text), "status": (True, _status),
    "epochs": (False, _count), "figures": (False, _figures), "error": (False, _text),
    "seconds": (False, _seconds), "final": (False, _flag), "halted": (False, _text),
    "train": (False, _train_record), "trained": (False, _settings),
}


def record_problem(record: Any) -> str | None:
    """What makes `record` other than a trial record cnnc search writes, or None."""
    if not isinstance(record, dict):
        return "not a trial record (a JSON object per line)"
    for name, value in record.items():
        if name not in RECORD_FIELDS:
            return f"unknown field '{files.describe_path(name)}'"
        problem = RECORD_FIELDS[name][1](value)
        if problem is not None:
            return f"{name}: {problem}"
    missing = next((name for name, (required, _) in RECORD_FIELDS.items() if required and name not in record), None)
    return None if missing is None else f"the field '{missing}' is missing"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of results.jsonl; a line that is not a trial record as the search writes it (truncated,
    a figure that is text, NaN or infinite, a field of the wrong type, a trial recorded twice) is an
    error naming the file, the line and the field: nothing runs, the file keeps its bytes."""
    if not path.exists():
        return []
    text = files.read_bytes(path, "search results", files.limit("metrics")).decode("utf-8", "replace")
    records, lines = [], {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problem = "not a trial record (truncated, or not JSON)"
        else:
            problem = record_problem(record)
        if problem is None and settings_key(record["settings"]) in lines:
            problem = f"the trial is recorded twice (first on line {lines[settings_key(record['settings'])]})"
        if problem is not None:
            raise CnncError(f"{files.describe_path(path)}:{i}: {problem}",
                            hint="results.jsonl is written by cnnc search: mend or delete the line, or start "
                                 "over with --overwrite")
        lines[settings_key(record["settings"])] = i
        records.append(record)
    return records


def write_results(path: Path, records: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records)
    files.write_atomic(path, text, "search results")


def choose_metric(records: Sequence[dict[str, Any]], metric: str | None) -> str:
    """The metric to rank by: the one asked for, else the first of AUTO_ORDER every finished trial has."""
    if metric is not None:
        if metric not in METRICS:
            raise CnncError(f"--metric {metric}: unknown metric", hint=did_you_mean(
                metric, METRICS, f"metrics: {', '.join(METRICS)}"))
        return metric
    ok = [r for r in records if r.get("status") == "ok"]
    for name in AUTO_ORDER:
        if ok and all(name in r.get("figures", {}) for r in ok):
            return name
    return AUTO_ORDER[0]


def rank(records: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Finished trials with the metric, best first; then those without it; failed trials last."""
    sign = -1.0 if METRICS[metric] == "max" else 1.0

    def order(r: dict[str, Any]) -> tuple:
        value = r.get("figures", {}).get(metric)
        if r.get("status") != "ok":
            return (2, 0.0)
        return (1, 0.0) if value is None else (0, sign * value)
    return sorted(records, key=order)


def halving_rungs(epochs: int, eta: int) -> list[int]:
    """The epochs of each rung of successive halving: ..., epochs/ETA^2, epochs/ETA, epochs (at least 1 each)."""
    rungs = [epochs]
    while rungs[0] // eta >= 1 and rungs[0] // eta < rungs[0]:
        rungs.insert(0, rungs[0] // eta)
    return rungs


def survivors(records: Sequence[dict[str, Any]], metric: str, eta: int) -> list[dict[str, Any]]:
    """The best ceil(n/ETA) finished trials of a rung (at least one)."""
    ranked = [r for r in rank(records, metric) if r.get("status") == "ok" and metric in r.get("figures", {})]
    return ranked[:max(1, math.ceil(len(records) / eta))] if ranked else []


# ------------------------------------------------------------------ the search
@dataclass
class SearchResult:
    records: list[dict[str, Any]]   # ranked, best first
    metric: str
    ran: int                        # trials run now (each rung of each trial counts once)
    skipped: int                    # finished trials a resumed search kept


def run_search(base: Base, axes: Sequence[Axis], plan: Sequence[Settings], out: Path, *, workers: int = 1,
               scheduler: str | None = None, resume: bool = False, overwrite: bool = False,
               metric: str | None = None, halving: int | None = None,
               log: Callable[[str], None] = print, progress: Progress | None = None) -> SearchResult:
    """Check every trial, run the missing ones (OUT/trial-ID each), keep OUT/results.jsonl, rank them;
    `progress` (runtime/progress.py) advances by one trial (one rung of one, with halving) as each ends."""
    from ..train.rundir import RunDirectory
    if metric is not None:
        choose_metric([], metric)                      # a bad --metric fails before anything runs
    configs = [compile_trial(base, s, axes)[1] for s in plan]  # every trial checked before any runs
    if halving is not None and len({c.epochs for c in configs}) > 1:
        raise CnncError(f"--halving {halving}: the trials train for different epochs; successive halving "
                        "needs one epoch budget", hint="leave epochs out of the --grid axes")
    out = Path(out)
    path = out / RESULTS
    connected = connect_scheduler(scheduler) if scheduler is not None else contextlib.nullcontext()
    with connected as client, RunDirectory(out):
        if path.exists() and not (resume or overwrite):
            raise CnncError(f"search directory '{files.describe_path(out)}' already holds a search ({RESULTS})",
                            hint="continue it with --resume, replace it with --overwrite, or choose another --out")
        records = read_results(path) if resume else []
        if overwrite and not resume and path.exists():
            path.unlink()
        state = _State(records, path, log, progress)
        finished = {settings_key(r["settings"]) for r in records if r.get("status") == "ok" and r.get("final")}
        pending = [s for s in plan if settings_key(s) not in finished]
        skipped = len(plan) - len(pending)
        if skipped:
            log(f"resuming: {skipped} of {len(plan)} trials are finished; running the other {len(pending)}")
        if progress is not None:
            progress.start_run(_trial_runs(len(pending), configs[0].epochs if configs else 1, halving))
        if halving is None:
            specs = [trial_spec(base, s, axes, out / f"trial-{trial_id(s)}") for s in pending]
            execute(specs, workers, client, lambda r: state.add(r, final=True))
        else:
            _halve(base, axes, pending, out, configs[0].epochs if configs else 1, halving, workers, client,
                   metric, state)
        keys = {settings_key(s) for s in plan}
        mine = [r for r in state.records if settings_key(r["settings"]) in keys]
        chosen = choose_metric(mine, metric)
        return SearchResult(rank(mine, chosen), chosen, state.ran, skipped)


class _State:
    """The records so far; results.jsonl is rewritten (atomically) after each finished trial."""

    def __init__(self, records: list[dict[str, Any]], path: Path, log: Callable[[str], None],
                 progress: Progress | None = None):
        self.records, self.path, self.log, self.ran, self.progress = list(records), path, log, 0, progress

    def add(self, record: dict[str, Any], final: bool) -> dict[str, Any]:
        record["final"] = final
        if isinstance(record.get("figures"), dict):
            # JSON holds no NaN: a figure that is not finite is left out, and never costs the trial its record
            record["figures"] = {k: v for k, v in record["figures"].items() if _finite(v)}
        key = settings_key(record["settings"])
        self.records = [r for r in self.records if settings_key(r["settings"]) != key] + [record]
        self.ran += 1
        write_results(self.path, self.records)
        shown = ", ".join(f"{k}={v}" for k, v in shown_settings(record).items())
        if record["status"] == "ok":
            figures = "  ".join(f"{k} {figure_text(k, v)}" for k, v in record.get("figures", {}).items()
                                if not k.startswith("test_"))   # the test split is for the chosen trial
            self.log(f"trial {shown}: {_epochs(record.get('epochs'))}  {figures}  ({record.get('seconds', 0):.1f}s)")
        else:
            self.log(f"trial {shown}: failed: {record.get('error')}")
        if self.progress is not None:
            self.progress.update(1)
        return record


def _halve(base: Base, axes: Sequence[Axis], plan: Sequence[Settings], out: Path, epochs: int, eta: int,
           workers: int, client: Any, metric: str | None, state: _State) -> None:
    """Successive halving over the rungs of `halving_rungs(epochs, eta)` (see the module docstring)."""
    alive = list(plan)
    rungs = halving_rungs(epochs, eta)
    for i, rung in enumerate(rungs):
        last = i == len(rungs) - 1
        done_here = {settings_key(r["settings"]): r for r in state.records
                     if r.get("status") == "ok" and r.get("epochs", 0) >= rung}
        todo = [s for s in alive if settings_key(s) not in done_here]
        specs = [trial_spec(base, s, axes, out / f"trial-{trial_id(s)}", epochs=rung,
                            resume=(out / f"trial-{trial_id(s)}" / "last.npz").exists() and i > 0) for s in todo]
        execute(specs, workers, client, lambda r: state.add(r, final=last or r["status"] != "ok"))
        if last:
            break
        here = [r for r in state.records if settings_key(r["settings"]) in {settings_key(s) for s in alive}]
        chosen = choose_metric(here, metric)
        keep = {settings_key(r["settings"]) for r in survivors(here, chosen, eta)}
        for r in here:
            if settings_key(r["settings"]) not in keep and r.get("status") == "ok":
                r["final"], r["halted"] = True, f"stopped by successive halving after {r.get('epochs')} epochs"
        write_results(state.path, state.records)
        state.log(f"successive halving: {len(keep)} of {len(here)} trials continue to {rungs[i + 1]} epochs "
                  f"(ranked by {chosen})")
        alive = [s for s in alive if settings_key(s) in keep]


def _trial_runs(trials: int, epochs: int, halving: int | None) -> int:
    """How many trial runs a search starts: each trial once, or with successive halving each rung's
    survivors (the best ceil(n/ETA) of each rung, as `survivors` keeps) once per rung."""
    if halving is None:
        return trials
    runs, alive = 0, trials
    for _ in halving_rungs(epochs, halving):
        runs += alive
        alive = max(1, math.ceil(alive / halving)) if alive else 0
    return runs


def _epochs(n: Any) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")
