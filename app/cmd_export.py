"""Command line: `cnnc export FILE --to FORMAT -o OUT` — a network for another framework.

`EXPORTERS` is the one list of `--to` formats: each names the command
function that writes the files and reports them, the suffix `-o` must have,
and whether it can export the fused graph (`--fuse`); a flag a format does
not read is refused, never ignored.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, NamedTuple

from .dsl.files import describe_path
from .dsl.source import CnncError
from .compiler import report


class Exporter(NamedTuple):
    run: Callable[[argparse.Namespace, Any], int]   # writes the files and prints what it wrote
    suffix: str                                      # what -o must end with
    fuses: bool                                      # whether --fuse means something for it


def _torch(args: argparse.Namespace, compiled) -> int:
    from .runtime.export.torch_module import export
    result = export(compiled, args.output, args.checkpoint, raw=args.raw)
    print(f"wrote {describe_path(result['module'])} ({result['lines']} lines, class {result['class']})")
    print(f"wrote {describe_path(result['weights'])} ({result['arrays']} arrays, "
          f"{report.fmt_bytes(result['bytes'])}, {describe_path(result['source'])})")
    if result["preprocess"]:
        print(f"the module {result['preprocess']}")
    if result.get("initial"):
        print("note: no --checkpoint, so these are the seeded initial weights cnnc would start training from")
    return 0


def _onnx(args: argparse.Namespace, compiled) -> int:
    from .cmd_export_onnx import run_onnx_export
    return run_onnx_export(args, compiled)


EXPORTERS: dict[str, Exporter] = {
    "torch": Exporter(_torch, ".py", fuses=False),
    "onnx": Exporter(_onnx, ".onnx", fuses=True),
}


def check_flags(args: argparse.Namespace) -> None:
    exporter = EXPORTERS[args.to]
    if not args.output.endswith(exporter.suffix):
        raise CnncError(f"-o {describe_path(args.output)}: --to {args.to} writes a {exporter.suffix} file",
                        hint=f"e.g. -o model{exporter.suffix}")
    if args.raw and not args.checkpoint:
        raise CnncError("--raw: leaves out the preprocessing a checkpoint recorded, and no --checkpoint is given",
                        hint="add --checkpoint CK.npz (without one, the model has no preprocessing to leave out)")
    if args.fuse and not exporter.fuses:
        raise CnncError(f"--fuse: --to {args.to} exports the network as written, not its fused graph",
                        hint="--fuse is for --to onnx")


def export(args: argparse.Namespace, compiled) -> int:
    return EXPORTERS[args.to].run(args, compiled)
