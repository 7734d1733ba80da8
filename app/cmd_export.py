"""Command line: `cnnc export FILE --to FORMAT -o OUT` — a network for another framework.

`EXPORTERS` is the one list of `--to` formats: each maps to the runtime
function that writes the files (`export(compiled, output, checkpoint)`,
returning what it wrote) and the pip extra it needs. This module only wires
the flags to it and prints.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, NamedTuple

from .dsl.files import describe_path
from .dsl.source import CnncError
from .compiler import report


class Exporter(NamedTuple):
    module: str          # cnnc.runtime module with `export(compiled, output, checkpoint) -> dict`
    suffix: str          # what -o must end with
    extra: str           # the pip extra that installs what it needs

    def function(self) -> Callable[..., dict[str, Any]]:
        return importlib.import_module(self.module).export


EXPORTERS: dict[str, Exporter] = {
    "torch": Exporter("cnnc.runtime.export_torch", ".py", "torch"),
}


def check_flags(args: argparse.Namespace) -> None:
    exporter = EXPORTERS[args.to]
    if not args.output.endswith(exporter.suffix):
        raise CnncError(f"-o {describe_path(args.output)}: --to {args.to} writes a {exporter.suffix} file",
                        hint=f"e.g. -o model{exporter.suffix}")


def export(args: argparse.Namespace, compiled) -> int:
    result = EXPORTERS[args.to].function()(compiled, args.output, args.checkpoint)
    print(f"wrote {describe_path(result['module'])} ({result['lines']} lines, class {result['class']})")
    print(f"wrote {describe_path(result['weights'])} ({result['arrays']} arrays, "
          f"{report.fmt_bytes(result['bytes'])}, {describe_path(result['source'])})")
    if result.get("initial"):
        print("note: no --checkpoint, so these are the seeded initial weights cnnc would start training from")
    return 0
