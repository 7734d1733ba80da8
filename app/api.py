"""The Python API (on top of the four stages, beside the command line): `compile`, `train`, `predict`.

What `cnnc compile`, `cnnc run` and `cnnc predict` do, as calls that return
values instead of printing them; `import cnnc` offers them as `cnnc.compile`,
`cnnc.train`, `cnnc.predict` (docs/python.md). `compile` gives a `Network`:
its totals, its layer table (records and text), its diagrams, and in a
notebook the interactive explorer. `train` runs the trainer with the options
of `cnnc run` and calls back after every epoch with the record it wrote to
metrics.jsonl; returning False or raising `StopTraining` ends the run. The
commands in app/cmd_run.py are a thin layer over these functions: flags in,
the same calls, their results printed.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .compiler import report
from .compiler.driver import Compiled, compile_file, parse_shape
from .compiler.train_spec import Given, TrainConfig, given_text, override, train_config
from .compiler.train_vocab import DATA, Invalid
from .dsl.files import describe_path, write_atomic
from .dsl.source import CnncError
from .runtime.progress import Progress, wanted
from .runtime.train.trainer import StopTraining

TEXT_NAME = "<string>"   # what messages call a program given as text
# The train keys `cnnc run` (and `train`) set by their own flag or keyword, applied after `--train`.
KEY_OPTIONS = ("epochs", "batch", "seed", "lr", "kfold", "bootstrap")
Callback = Callable[[dict], "bool | None"]


class LintWarning(UserWarning):
    """A compiler warning (`cnnc check` prints the same), issued by `compile` through `warnings`."""


# ---------------------------------------------------------------- compile
class Network:
    """A compiled network: figures, a layer table, diagrams, and its display in a notebook.

    `compiled` is the compiler's result (the graph `compiled.net`, the analyses
    `compiled.analysis`) that every stage of cnnc reads."""

    def __init__(self, compiled: Compiled):
        self.compiled = compiled

    @property
    def name(self) -> str:
        return self.compiled.net.name

    @property
    def warnings(self) -> list[str]:
        """The compiler's warnings, as `cnnc check` prints them (file:line:col: warning: ...)."""
        return [w.render() for w in self.compiled.warnings]

    def json(self) -> dict[str, Any]:
        """What `cnnc compile --format json` prints (docs/internals.md's contract)."""
        return report.to_json(self.compiled)

    @property
    def totals(self) -> dict[str, Any]:
        """Parameters, MACs, FLOPs and memory of the whole network (per sample)."""
        return self.json()["totals"]

    @property
    def layers(self) -> list[dict[str, Any]]:
        """One record per layer: name, op, inputs, shape, params, macs, flops, rf, loc."""
        return self.json()["layers"]

    def table(self, expand: bool = False, depth: int | None = None) -> str:
        """The table `cnnc compile` prints, with its totals (`expand`, `depth` as its flags)."""
        return report.table(self.compiled, expand=expand, depth=depth)

    def diagram(self, depth: int | None = None, expand: bool = False, details: bool = False,
                rankdir: str = "TB", fuse: bool = False):
        """The Graphviz diagram (`cnnc viz`'s graph style) as a `graphviz.Digraph`: a notebook shows it,
        `.render()` writes it (both need Graphviz's `dot`)."""
        from .viz.diagram import diagram
        return diagram(self.compiled, depth=depth, expand=expand, details=details, rankdir=rankdir, fuse=fuse)

    def picture(self, style: str = "graph", fmt: str = "svg", **options: Any) -> bytes:
        """Any style of `cnnc viz` (graph, figure, rf, rf-grid, curves, confusion) as the bytes of an svg,
        png, pdf or dot file; `options` are viz/output.py `PictureOptions` (depth, details, metrics, ...)."""
        from .viz.output import PictureOptions, picture
        return picture(self.compiled, style, fmt, PictureOptions(**options))

    def save(self, path: str | os.PathLike, style: str = "graph", **options: Any) -> Path:
        """Write a picture (the extension picks the format, as `cnnc viz -o`; `.html` the explorer page)."""
        from .viz.output import output_format
        target = Path(path)
        if target.suffix.lower() == ".html":
            data = self.explorer_page(**options)
        else:
            data = self.picture(style, output_format(str(target)), **options)
        write_atomic(target, data, "picture", inputs=[self.compiled.net.source])
        return target

    def explorer_page(self, **options: Any) -> str:
        """The explorer (`cnnc viz --style html`) as one self-contained HTML page; `options` are
        viz/explorer.py `page_html`'s (inside, metrics, depth)."""
        from .viz.explorer import page_html
        return page_html(self.compiled, **options)

    def _repr_html_(self) -> str:
        """In a notebook: the explorer, in a sandboxed iframe (fold, click, search, zoom)."""
        from .viz.explorer import iframe_html
        return iframe_html(self.explorer_page())

    def _repr_svg_(self) -> str:
        """In a notebook that shows no HTML: the diagram (the architecture figure without Graphviz)."""
        from .viz.diagram import diagram_svg
        return diagram_svg(self.compiled)

    def __repr__(self) -> str:
        t = self.compiled.analysis.totals()
        shapes = ", ".join(f"{k} {list(v)}" for k, v in self.compiled.net.inputs.items())
        outs = ", ".join(f"{k} {list(self.compiled.net.shapes[k])}" for k in self.compiled.net.outputs)
        warned = f", {len(self.compiled.warnings)} warning(s)" if self.compiled.warnings else ""
        return (f"<cnnc network {self.name}: {len(self.compiled.net.layers())} layers, "
                f"{report.human(t['params'])} parameters, {report.human(t['macs'])} MACs; {shapes} -> {outs}"
                f"{warned}>")

    def train(self, **options: Any) -> "Run":
        """`cnnc.train(self, **options)`."""
        return train(self, **options)

    def predict(self, checkpoint: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), limit: int = 10):
        """`cnnc.predict(self, checkpoint, inputs, limit=limit)`."""
        return predict(self, checkpoint, inputs, limit=limit)


def _is_text(source: str | os.PathLike) -> bool:
    """A program's text rather than a path: a str with a newline or a brace (no .cnn path has them)."""
    return isinstance(source, str) and ("\n" in source or "{" in source)


def _shapes(inputs: Mapping[str, Any] | None) -> dict[str, tuple[int, ...]]:
    """{"x": (3, 64, 64)} or {"x": "3x64x64"}: checked as `--input x=3x64x64` is."""
    out = {}
    for name, value in (inputs or {}).items():
        text = value if isinstance(value, str) else "x".join(str(d) for d in value)
        out[name] = parse_shape(f"{name}={text}", "inputs")[1]
    return out


def compile(source: str | os.PathLike, *, network: str | None = None, inputs: Mapping[str, Any] | None = None,
            allow: Iterable[str] = (), **params: Any) -> Network:
    """Compile a `.cnn` file, or a program given as text, into a `Network`.

    `params` set network parameters (`classes=10`, as `--set`), `inputs` bind input sizes
    (`{"x": (3, 64, 64)}`, as `--input`), `network` picks one network of the file, `allow`
    silences warnings by name. Each remaining warning is issued as a `LintWarning`; a mistake
    raises `CnncError` with its location (`err.diagnostic.render()` shows the caret)."""
    path, text = (TEXT_NAME, source) if _is_text(source) else (source, None)
    compiled = compile_file(path, network, _shapes(inputs), params, set(allow), text=text)
    for w in compiled.warnings:
        warnings.warn(w.render(), LintWarning, stacklevel=2)
    return Network(compiled)


def _compiled(network: Network | Compiled | str | os.PathLike, layer: list[Given] = ()) -> Compiled:
    """The network compiled; a path or a text is compiled with `layer` over its train section (so a key
    given here may mend what the file alone lacks, as a flag does)."""
    if isinstance(network, Network):
        return network.compiled
    if isinstance(network, Compiled):
        return network
    path, text = (TEXT_NAME, network) if _is_text(network) else (network, None)
    compiled = compile_file(path, text=text, train_layers=[layer] if layer else ())
    for w in compiled.warnings:
        warnings.warn(w.render(), LintWarning, stacklevel=3)
    return compiled


# ---------------------------------------------------------------- train
def _assignments(train: Mapping[str, Any] | Iterable[str]) -> list[str]:
    """`KEY=VALUE` texts from {"optimizer": "adam", "val": 0.1} or ["optimizer=adam", "val=0.1"]; a value
    that is not a string is written as a train section writes it (true/false, numbers)."""
    if isinstance(train, str):
        return [train]
    if isinstance(train, Mapping):
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in train.items()]
    return list(train)


def train_layer(train: Mapping[str, Any] | Iterable[str] = (), **keys: Any) -> list[Given]:
    """The keys a run gives over the file's train section, as one layer (compiler/train_spec.py): the
    `train` assignments (read as `--train KEY=VALUE` is), and the keys of `KEY_OPTIONS` given (not None).
    Each replaces the file's value of what it sets, whatever the order; two that set one thing
    differently are refused, naming both."""
    layer = [given_text(assignment, "--train") for assignment in _assignments(train)]
    for key in KEY_OPTIONS:
        value = keys.pop(key, None)
        if value is not None:
            layer.append(Given(key, value, None, f"--{key}" if value is True else f"--{key} {value}"))
    if keys:
        raise TypeError(f"unexpected train keys {sorted(keys)}: give them as train={{...}}")
    return layer


def configure(compiled: Compiled, train: Mapping[str, Any] | Iterable[str] = (), **keys: Any) -> TrainConfig:
    """The network's resolved train record with `train_layer(train, **keys)` over it."""
    layer = train_layer(train, **keys)
    cfg = train_config(compiled.net)
    return override(cfg, layer) if layer else cfg


def check_limit(limit: int | None) -> int | None:
    """`limit` (--limit N), checked as the data sets' `limit` option is (N >= 1; 0 is not "no limit")."""
    if limit is None:
        return None
    try:
        return next(o for o in DATA.common if o.name == "limit").check(limit)
    except Invalid as bad:
        raise CnncError(f"--limit {limit}: must be {bad}") from None


@dataclass
class Options:
    """How a run reads its data and computes (the flags of `cnnc run` that are not train keys), checked
    as the flags are."""

    data: str | None = None
    limit: int | None = None
    threads: int | None = None
    engine: str = "numpy"
    device: str | None = None
    progress: bool | Progress = False
    log: Callable[[str], None] = print
    callback: Callback | None = None
    kernels: str | None = None
    tensorboard: str | os.PathLike | None = None    # a folder of TensorBoard event files (k-fold: one per fold)
    watch_every: int | None = None                  # a step record every K steps too (docs/diagnostics.md)
    quiet: bool = False                             # only warnings, stops and the final figures are printed

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise CnncError(f"--threads {self.threads}: must be at least 1")
        self.limit = check_limit(self.limit)

    def trainer(self, compiled: Compiled, cfg: TrainConfig, out: Path, resplit=None, log=None):
        """The trainer of one run (or one fold, with `resplit`)."""
        from .runtime.train.trainer import Trainer
        events = None
        if self.tensorboard is not None:   # a fold's events go into a run folder of its own, named as its own
            events = Path(self.tensorboard) / Path(out).name if resplit is not None else Path(self.tensorboard)
        return Trainer(compiled, cfg, out, data_override=self.data, limit=self.limit, progress=self.progress,
                       log=log or self.log, threads=self.threads, engine=self.engine, device=self.device,
                       resplit=resplit, kernels=self.kernels, on_epoch=self.callback, watch_every=self.watch_every,
                       tensorboard=events, quiet=self.quiet)


@dataclass
class Run:
    """A finished (or stopped) run: its directory, each epoch's metrics.jsonl record, the test record."""

    network: Network
    out: Path
    epochs: int                       # epochs trained in all (a resumed run counts the earlier ones)
    history: list[dict] = field(default_factory=list)
    test: dict | None = None
    stopped: str | None = None        # why it ended early: early stop, the callback, a non-finite loss
    non_finite: bool = False

    @property
    def last(self) -> Path:
        """The checkpoint of the last epoch (what `--resume` continues)."""
        return self.out / "last.npz"

    @property
    def best(self) -> Path:
        """The checkpoint of the best epoch (validation accuracy or loss; training's without validation)."""
        return self.out / "best.npz"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"

    def predict(self, inputs: Iterable[str | os.PathLike] = (), limit: int = 10, checkpoint: str = "last"):
        """Predictions of this run's `last` (or `best`) checkpoint; see `cnnc.predict`."""
        return predict(self.network, self.best if checkpoint == "best" else self.last, inputs, limit=limit)

    def __repr__(self) -> str:
        test = self.test or {}
        figure = (f", test accuracy {test['accuracy']:.2%}" if test.get("accuracy") is not None else
                  f", test loss {test['loss']:.4f}" if test.get("loss") is not None else "")
        stopped = f", stopped: {self.stopped}" if self.stopped else ""
        return f"<cnnc run {self.network.name}: {self.epochs} epoch(s){figure}{stopped}; {describe_path(self.out)}>"


def run_directory(compiled: Compiled, out: str | os.PathLike | None) -> Path:
    """Where a run writes: `out`, or runs/NETWORK."""
    return Path(out) if out else Path("runs") / compiled.net.name


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _computes(engine: str, trainer) -> str:
    """What computes the run: the engine, its kernel set (and why, where it is not the fast one), threads."""
    threads = getattr(trainer.engine, "threads", None)
    on = f" on {_plural(threads, 'thread')}" if threads else ""
    if engine != "numpy":
        return f"{engine} engine{on}"
    return f"{trainer.plan.kernel_set.describe()}{on}"


def _header(compiled: Compiled, cfg: TrainConfig, trainer, engine: str) -> str:
    """The line a run starts with: its data, epochs, optimizer, what computes and where checkpoints go."""
    ds = trainer.ds
    return (f"{compiled.net.name}: {len(ds.train):,} training samples"
            + (" (a bootstrap resample)" if cfg.bootstrap else "")
            + (f", {len(ds.val):,} validation" if ds.val is not None else "")
            + (f", {len(ds.test):,} test" if ds.test is not None else "")
            + f" from {ds.name}; {_plural(cfg.epochs, 'epoch')} of batch {cfg.batch}; {cfg.optimizer.name} "
            f"lr {trainer.base_lr:g}; {_computes(engine, trainer)}; checkpoints in {describe_path(trainer.out)}")


def train(network: Network | Compiled | str | os.PathLike, *, epochs: int | None = None, batch: int | None = None,
          lr: float | None = None, seed: int | None = None, train: Mapping[str, Any] | Iterable[str] = (),
          data: str | None = None, limit: int | None = None, out: str | os.PathLike | None = None,
          resume: bool = False, overwrite: bool = False, threads: int | None = None, engine: str = "numpy",
          device: str | None = None, kernels: str | None = None, kfold: int | None = None,
          bootstrap: bool | None = None, callback: Callback | None = None, progress: bool | None = None,
          log: Callable[[str], None] = print, tensorboard: str | os.PathLike | None = None,
          watch_every: int | None = None, quiet: bool = False):
    """Train a network as `cnnc run` does, with its options as keywords; returns a `Run` (with `kfold`,
    runtime/select/kfold.py's `KFoldResult`).

    `network` is a `Network`, or a path or program text (compiled without parameters).
    `train` sets any train key (`{"optimizer": "adam", "val": 0.1}`, or `["optimizer=adam"]`); it and
    the keywords named after train keys are one layer over the file's section, as `cnnc run`'s flags.
    `callback(record)` is called after every epoch (after its checkpoints are written) with the
    record written to metrics.jsonl (epoch, train_loss, train_accuracy, val_loss, val_accuracy,
    lr, seconds, and the per-layer `layers` of docs/diagnostics.md); returning False or raising
    `StopTraining` ends the run there (the test split is still scored). `log` receives each line
    `cnnc run` prints (`quiet`: only warnings, stops and the final figures); `progress` draws the
    progress bar (default: when stderr is a terminal, or in a notebook). `tensorboard` and
    `watch_every` are `cnnc run --tensorboard DIR` and `--watch-every K`."""
    layer = train_layer(train, epochs=epochs, batch=batch, seed=seed, lr=lr, kfold=kfold, bootstrap=bootstrap)
    compiled = _compiled(network, layer)
    cfg = override(train_config(compiled.net), layer) if layer else train_config(compiled.net)
    bar = wanted(quiet=quiet) if progress is None else progress     # quiet: no bar unless asked for
    options = Options(data, limit, threads, engine, device, bar, log, callback, kernels, tensorboard, watch_every,
                      quiet)
    return run(compiled, cfg, options, out, resume, overwrite)


def run(compiled: Compiled, cfg: TrainConfig, options: Options, out: str | os.PathLike | None = None,
        resume: bool = False, overwrite: bool = False):
    """One run of `cfg` (the resolved record: what runs), or its k folds; what `train` and `cnnc run` call."""
    out = run_directory(compiled, out)
    if compiled.net.train is None and os.environ.get("RANK", "0") == "0":
        print(f"note: {compiled.net.name} has no train section; using defaults (mnist10k, "
              f"{_plural(cfg.epochs, 'epoch')}, batch {cfg.batch}, sgd lr 0.01)", file=sys.stderr)
    if cfg.kfold:
        return _kfold(compiled, cfg, out, options, resume, overwrite)
    trainer = options.trainer(compiled, cfg, out)
    result = trainer.run(resume=resume, overwrite=overwrite,
                         started=lambda: None if options.quiet else options.log(_header(compiled, cfg, trainer,
                                                                                         options.engine)))
    return Run(Network(compiled), trainer.out, result.epochs_run, result.history, result.test, result.stopped,
               result.non_finite)


def _kfold(compiled: Compiled, cfg: TrainConfig, out: Path, options: Options, resume: bool, overwrite: bool):
    """K models, one per fold (runtime/select/kfold.py), under one bar with one ETA over every fold."""
    from dataclasses import replace
    from .runtime.select.kfold import run_kfold

    bar = Progress("k-fold", shown=bool(options.progress), runs=cfg.kfold)
    each = replace(options, progress=bar, log=lambda line: (bar.clear(), options.log(line)))   # lines above the bar

    def started(n: int) -> None:
        if options.quiet:       # (only warnings, stops and the final figures)
            return
        each.log(f"{compiled.net.name}: {cfg.kfold}-fold cross-validation of {n:,} training samples (the test "
                 f"split is kept out); {_plural(cfg.epochs, 'epoch')} per fold; folds in {describe_path(out)}")

    def make_trainer(fold_cfg, fold_out, resplit, log):
        bar.context = f"fold {fold_out.name.rpartition('-')[2]}/{cfg.kfold}"
        return each.trainer(compiled, fold_cfg, fold_out, resplit=resplit, log=log)
    with bar:
        return run_kfold(compiled, cfg, out, make_trainer, resume=resume, overwrite=overwrite, started=started,
                         log=each.log)


# ---------------------------------------------------------------- predict
def predict(network: Network | Compiled | str | os.PathLike, checkpoint: str | os.PathLike,
            inputs: str | os.PathLike | Iterable[str | os.PathLike] = (), *, limit: int = 10,
            resize: tuple[int, int] | None = None):
    """What `cnnc predict` computes: class probabilities of a trained checkpoint for image (or .npy/.npz)
    files, after the preprocessing the checkpoint recorded, or for the first `limit` samples of the
    test split. Returns runtime/predict.py's `Predictions` (`names`, `probabilities` [N, classes],
    `classes`, `labels`; `ranked(k)`: per input its k best (index, class name, probability))."""
    from .runtime.predict import predict as run_predictions
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if limit < 1:
        raise CnncError(f"--limit {limit}: must be at least 1")
    return run_predictions(_compiled(network), os.fspath(checkpoint), [os.fspath(i) for i in inputs], limit, resize)


__all__ = ["LintWarning", "Network", "Options", "Run", "StopTraining", "check_limit", "compile", "configure",
           "predict", "run", "run_directory", "train", "train_layer"]
