"""Stage 3 (runtime), import: `cnnc import model.onnx -o net.cnn` from end to end.

Read (reader.py), lift (lift.py, rules.py), find the blocks (blocks.py), write
the text (writer.py); then compile the text as any `.cnn` is compiled and give
each compiled layer, in the order the compiler made them, the weights of the
imported layer written at that place — the order `write` returns — checking
that each is the same op with the same parameter shapes (a mismatch is a bug of
the importer, never a silent change). The weights go into a cnnc checkpoint
beside the file (`net.npz` for `-o net.cnn`); both files are written
atomically and never over the model.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...compiler.driver import compile_file
from ...dsl.files import describe_path, same_file, write_atomic
from ...dsl.source import CnncError
from ..checkpoint import save_training_state
from .blocks import structure
from .lift import lift
from .reader import read_model
from .writer import network_name, write

WRITTEN_AS = {"depthwise_conv": "conv"}      # layers written under another op's name


def import_onnx(model_path: str, output: str, weights: bool = True) -> dict[str, Any]:
    """Write OUTPUT (.cnn) and, unless `weights` is false, its checkpoint (.npz beside it); returns what
    was written and the compiled network's figures."""
    out = Path(output)
    if out.suffix != ".cnn":
        raise CnncError(f"-o {describe_path(output)}: the imported network is a .cnn file")
    checkpoint = out.with_suffix(".npz")
    for target in (out, checkpoint) if weights else (out,):
        if same_file(target, model_path):
            raise CnncError(f"cnnc import would write '{describe_path(target)}' over the model it reads",
                            hint="choose another -o name")
    model = read_model(model_path)
    program = structure(lift(model))
    name = network_name(program, model_path)
    text, order = write(program, Path(model_path).name, name)
    compiled = _compiled(text, out.name)
    params = _parameters(compiled, order)
    if weights:
        save_training_state(checkpoint, params, {}, {"network": name, "epoch": 0,
                                                     "imported_from": describe_path(model_path)})
    write_atomic(out, text, "network", inputs=[model_path])
    totals = compiled.analysis.totals()
    return {"network": name, "file": str(out), "checkpoint": str(checkpoint) if weights else None,
            "lines": text.count("\n"), "blocks": len(program.definitions), "layers": len(order),
            "params": totals["params"], "macs": totals["macs"], "opset": model.opset, "producer": model.producer}


def _compiled(text: str, name: str):
    """The written text, compiled as a user's file would be (from a temporary copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        try:
            return compile_file(path, allow={"all"})
        except CnncError as err:   # the importer wrote something the compiler refuses: its bug
            raise AssertionError(f"cnnc import wrote a network that does not compile:\n{err.render()}\n\n{text}") \
                from None


def _parameters(compiled, order: list) -> dict[str, np.ndarray]:
    """The imported weights under the compiled layers' names, layer by layer in the compiler's order."""
    net = compiled.net
    nodes = [net.node(n) for n in net.graph.nodes if net.node(n).op != "input"]
    if len(nodes) != len(order):
        raise AssertionError(f"the written network has {len(nodes)} layers, the import {len(order)}")
    params: dict[str, np.ndarray] = {}
    for node, layer in zip(nodes, order):
        if node.op != WRITTEN_AS.get(layer.op, layer.op):
            raise AssertionError(f"layer '{node.name}' is a {node.op}, the import's a {layer.op}")
        for pname, spec in compiled.analysis.params.get(node.name, {}).items():
            value = layer.params.get(pname)
            shape = tuple(int(d) for d in spec.shape)
            if value is None or tuple(value.shape) != shape:
                raise AssertionError(f"'{node.name}.{pname}' is {shape} in the written network, "
                                     f"{None if value is None else tuple(value.shape)} in the import")
            params[f"{node.name}.{pname}"] = np.ascontiguousarray(value, np.float32)
    return params
