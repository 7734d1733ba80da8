"""Command line: `cnnc export FILE --to onnx -o MODEL.onnx [--checkpoint CK.npz] [--fuse] [--raw]`.

The glue between the flags and runtime/export/onnx.py: it checks the flags
this target reads, asks the exporter to write the model and prints what was
written, with a warning line when no checkpoint gave trained weights.
`run_onnx_export` is what app/cmd_export.py's `EXPORTERS["onnx"]` runs.
"""
from __future__ import annotations

import argparse
import sys

from .compiler.driver import Compiled
from .compiler.report import fmt_bytes
from .dsl.files import describe_path


def run_onnx_export(args: argparse.Namespace, compiled: Compiled) -> int:
    """Write the ONNX model the flags ask for (`-o`, `--checkpoint`, `--fuse`, `--raw`) and report it."""
    from .runtime.export.onnx import export_onnx
    info = export_onnx(compiled, args.output, checkpoint=args.checkpoint, fuse=bool(args.fuse), raw=args.raw)
    shown = describe_path(info["model"])
    if info["random"]:
        print(f"warning: no --checkpoint: {shown} holds untrained weights ({info['source']})", file=sys.stderr)
    io = ", ".join(f"{k}: {v}" for k, v in {**info["inputs"], **info["outputs"]}.items())
    print(f"wrote {shown} (ONNX opset {info['opset']}, {info['nodes']} nodes, {info['initializers']} "
          f"initializers, {fmt_bytes(info['bytes'])}{', fused' if info['fused'] else ''}; {io}; "
          f"{describe_path(info['source'])})")
    if info["preprocess"]:
        print(f"the model {info['preprocess']}")
    return 0
