"""Command line: `cnnc search FILE --grid NAME=V1,V2 [--random N] [--workers W | --scheduler ADDR]`.

Turns the flags into a search plan (runtime/select/search.py checks every trial
before any runs), runs it, and prints the ranked table, where results.jsonl
is, and the best trial as the `cnnc run` command that reproduces it.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .dsl.files import describe_path
from .dsl.source import CnncError
from .runtime.progress import Progress, wanted


def check_flags(args: argparse.Namespace) -> None:
    """Flag mistakes that need no compiling, reported first."""
    if not args.grid:
        raise CnncError("--grid: a search needs at least one axis", hint="e.g. --grid lr=0.1,0.01")
    for flag, value, low in (("--random", args.random, 1), ("--workers", args.workers, 1),
                             ("--halving", args.halving, 2), ("--limit", args.limit, 1),
                             ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise CnncError(f"{flag} {value}: must be at least {low}")
    if args.scheduler is not None and args.workers != 1:
        raise CnncError(f"--workers {args.workers}: with --scheduler the Dask cluster's workers run the trials",
                        hint="leave out --workers, or --scheduler to run locally")
    if args.scheduler is not None:
        from .runtime.select.search import check_scheduler
        check_scheduler(args.scheduler)
    if args.resume and args.overwrite:
        raise CnncError("--resume and --overwrite: choose one")


def search(args: argparse.Namespace) -> int:
    from .runtime.select import search as s
    check_flags(args)
    if args.tensorboard:   # refused here, once, not in every trial
        from .runtime.train.events import check_events
        check_events(Path(args.tensorboard))
    base = s.Base(args.file, args.network, list(args.input), list(args.params), list(args.allow), list(args.train),
                  args.data, args.limit, args.threads or 1, args.tensorboard)
    params = s.network_parameters(base)
    axes = [s.parse_axis(text, params) for text in args.grid]
    names = [a.name for a in axes]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise CnncError(f"--grid {twice}=...: the axis '{twice}' is given twice",
                        hint="give all its values in one --grid")
    plan = s.plan_random(axes, args.random, args.draw_seed) if args.random else s.plan_grid(axes)
    out = Path(args.out) if args.out else Path("runs") / f"search-{Path(args.file).stem}"
    where = f"the Dask cluster at {args.scheduler}" if args.scheduler else f"{args.workers} worker process" + \
        ("es" if args.workers != 1 else "")
    print(f"search: {len(plan)} trials on {where}; trials in {describe_path(out)}")
    with Progress("trials", shown=wanted(sys.stderr), unit="trial") as bar:   # trial lines go above it
        result = s.run_search(base, axes, plan, out, workers=args.workers, scheduler=args.scheduler,
                              resume=args.resume, overwrite=args.overwrite, metric=args.metric,
                              halving=args.halving, log=bar.write, progress=bar)
    _print_table(result, names)
    print(f"results: {describe_path(out / s.RESULTS)}")
    best = next((r for r in result.records if r.get("status") == "ok" and result.metric in r.get("figures", {})),
                None)
    if best is None:
        print("no trial finished")
        return 1
    figures = best["figures"]
    tested = "".join(f", {m} {s.figure_text(m, figures[m])}" for m in ("test_accuracy", "test_loss")
                     if m in figures and m != result.metric)
    print(f"best ({result.metric} {s.figure_text(result.metric, figures[result.metric])}{tested}): "
          f"{reproduce(args, s.shown_settings(best), axes)}")
    return 0


def _print_table(result, names: list[str]) -> None:
    """The trials ranked, each with its settings as it trained with them (search.py `shown_settings`); the
    test split's figures only when they rank them (else the best line has them)."""
    from .runtime.select.search import METRICS, figure_text, shown_settings
    shown = [m for m in METRICS if any(m in r.get("figures", {}) for r in result.records)
             and (not m.startswith("test_") or result.metric.startswith("test_"))]
    shown = [result.metric] + [m for m in shown if m != result.metric]
    settings = [shown_settings(r) for r in result.records]
    widths = [max(len(n), *(len(str(t.get(n, ""))) for t in settings)) for n in names]
    head = "rank  " + "  ".join(f"{n:<{w}}" for n, w in zip(names, widths)) + "  " + \
        "  ".join(f"{m:>14}" for m in shown) + "  epochs"
    print(head)
    for i, (r, t) in enumerate(zip(result.records, settings), 1):
        cells = "  ".join(f"{str(t.get(n, '')):<{w}}" for n, w in zip(names, widths))
        if r.get("status") != "ok":
            print(f"{'-':>4}  {cells}  failed: {r.get('error')}")
            continue
        figures = "  ".join(f"{figure_text(m, r.get('figures', {}).get(m)):>14}" for m in shown)
        note = f"  ({r['halted']})" if r.get("halted") else ""
        print(f"{i:>4}  {cells}  {figures}  {r.get('epochs', '-'):>6}{note}")


def reproduce(args: argparse.Namespace, settings: dict[str, str], axes) -> str:
    """The `cnnc run` command that trains this trial's configuration."""
    words = ["cnnc", "run", args.file]
    if args.network:
        words += ["--network", args.network]
    for flag, values in (("--input", args.input), ("--allow", args.allow)):
        for v in values:
            words += [flag, v]
    net = {a.name for a in axes if not a.train}
    sets = [p for p in args.params if p.partition("=")[0].strip() not in net]
    sets += [f"{k}={v}" for k, v in settings.items() if k in net]
    for p in sets:
        words += ["--set", p]
    trains = [t for t in args.train if t.partition("=")[0].strip() not in settings]
    trains += [f"{k}={v}" for k, v in settings.items() if k not in net]
    for t in trains:
        words += ["--train", t]
    if args.data:
        words += ["--data", args.data]
    if args.limit:
        words += ["--limit", str(args.limit)]
    return shlex.join(words)
