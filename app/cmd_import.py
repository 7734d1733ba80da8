"""Command line: `cnnc import MODEL.onnx -o NET.cnn` — an ONNX model as a readable `.cnn` file and its weights.

The work is runtime/importer's; this prints what was written and the figures of
the compiled file (the parameters and MACs cnnc counts), and what to run next.
"""
from __future__ import annotations

import argparse

from .compiler import report
from .dsl.files import describe_path


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def import_command(args: argparse.Namespace) -> int:
    from .runtime.importer.importer import import_onnx
    result = import_onnx(args.model, args.output, weights=not args.no_weights)
    print(f"wrote {describe_path(result['file'])} (network {result['network']}: {result['lines']} lines, "
          f"{result['layers']} layers, {result['blocks']} blocks) from {describe_path(args.model)} "
          f"({result['producer'] or 'unknown producer'}, opset {result['opset']})")
    if result["checkpoint"]:
        print(f"wrote {describe_path(result['checkpoint'])} (the weights, a cnnc checkpoint)")
    macs = result["macs"]
    if isinstance(macs, int):
        print(f"{_count(result['params'])} parameters ({report.human(result['params'])}), "
              f"{_count(macs)} MACs ({report.human(macs)})")
    else:   # the model's sizes are dynamic: its MACs are a formula in them
        sizes = ", ".join(sorted(macs.symbols()))
        print(f"{_count(result['params'])} parameters ({report.human(result['params'])}); the MACs depend on "
              f"{sizes} (bind them: cnnc compile {describe_path(result['file'])} --input NAME=CxHxW)")
    weights = f" --checkpoint {describe_path(result['checkpoint'])}" if result["checkpoint"] else ""
    print(f"next: cnnc compile {describe_path(result['file'])}, cnnc viz {describe_path(result['file'])} -o net.svg, "
          f"cnnc export {describe_path(result['file'])} --to onnx -o check.onnx{weights}")
    return 0
