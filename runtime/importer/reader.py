"""Stage 3 (runtime), import: reading an ONNX model into plain records.

`read_model` loads the file through the one bounded reader (dsl/files.py), checks
what cnnc can take (the default ONNX domain, opsets 13 to 21, weights inside the
file), and gives `OnnxModel`: the nodes in their topological order as
`OnnxNode` records (attributes as Python values, tensors as NumPy arrays), the
initializers, the graph inputs that are not initializers with their dimensions
(an int, a dimension name, or None) and the output names. Every later error
names a node with `OnnxNode.where`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...dsl import files
from ...dsl.source import CnncError

OPSETS = range(13, 22)          # the default-domain opsets the importer knows
INSTALL = "pip install 'cnnc[onnx]'"


@dataclass(frozen=True)
class OnnxNode:
    index: int                  # position in the graph's node list
    name: str
    op_type: str
    inputs: tuple[str, ...]     # "" for an omitted optional input
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict, hash=False, compare=False)
    scopes: tuple[str, ...] = ()    # module paths around it, outermost first (PyTorch's dynamo exporter says)

    def where(self) -> str:
        """How an error names the node: its index, name and op type."""
        shown = self.name if len(self.name) <= 120 else self.name[:80] + "…" + self.name[-30:]
        return f"node {self.index} '{files.describe_path(shown)}' ({self.op_type})"


@dataclass
class OnnxModel:
    path: str
    opset: int
    producer: str               # producer_name and version, e.g. "pytorch 2.13.0"
    name: str                   # the graph's name
    nodes: list[OnnxNode]
    initializers: dict[str, np.ndarray]
    inputs: list[tuple[str, tuple]]       # (name, dims with the batch first)
    outputs: list[str]

    def refuse(self, node: OnnxNode | None, why: str, hint: str | None = None) -> CnncError:
        """The located error for something of the model cnnc cannot take."""
        where = f"{files.describe_path(self.path)}: " + (f"{node.where()}: " if node is not None else "")
        return CnncError(where + why, hint=hint)


def require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise CnncError(f"importing ONNX needs the onnx package: {INSTALL}") from None
    return onnx


def read_model(path: str | os.PathLike) -> OnnxModel:
    """The model at `path` as plain records; a one-line error for a file that is not one cnnc can import."""
    onnx = require_onnx()
    shown = files.describe_path(path)
    if not os.path.lexists(path):
        raise CnncError(f"{shown}: no such file")
    data = files.read_bytes(path, "ONNX model", files.limit("model"))
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:   # protobuf's DecodeError and kin: not an ONNX file
        raise CnncError(f"{shown}: not an ONNX model ({type(err).__name__})",
                        hint="export one with torch.onnx.export (docs/import.md)") from None
    opset = _default_opset(model, shown)
    graph = model.graph
    if graph.ByteSize() == 0 or not graph.node:
        raise CnncError(f"{shown}: the model's graph has no nodes")
    initializers = {t.name: _array(onnx, t, shown) for t in graph.initializer}
    nodes = [_node(onnx, i, n, shown) for i, n in enumerate(graph.node)]
    inputs = [(v.name, _dims(v)) for v in graph.input if v.name not in initializers]
    if not inputs:
        raise CnncError(f"{shown}: the model has no input (every graph input is a weight)")
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return OnnxModel(str(path), opset, producer, graph.name, nodes, initializers, inputs,
                     [v.name for v in graph.output])


def _default_opset(model: Any, shown: str) -> int:
    opsets = {o.domain: o.version for o in model.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None:
        raise CnncError(f"{shown}: the model imports no default-domain opset")
    if version not in OPSETS:
        raise CnncError(f"{shown}: opset {version} is outside the opsets cnnc imports ({OPSETS.start} to "
                        f"{OPSETS.stop - 1})", hint="export with opset_version=17, say")
    return version


def _array(onnx: Any, tensor: Any, shown: str) -> np.ndarray:
    from onnx import numpy_helper
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise CnncError(f"{shown}: the weight '{files.describe_path(tensor.name)}' is stored in an external "
                        "file, which cnnc does not read", hint="export with the weights inside the model "
                        "(torch.onnx.export(..., external_data=False), models under 2 GB)")
    return numpy_helper.to_array(tensor)


def _node(onnx: Any, index: int, proto: Any, shown: str) -> OnnxNode:
    node = OnnxNode(index, proto.name, proto.op_type, tuple(proto.input), tuple(proto.output),
                    scopes=_name_scopes(proto))
    if proto.domain not in ("", "ai.onnx"):
        raise CnncError(f"{shown}: {node.where()}: its domain '{files.describe_path(proto.domain)}' is not "
                        "ONNX's own", hint="cnnc imports the standard ONNX operators only")
    for attr in proto.attribute:
        if attr.type == onnx.AttributeProto.GRAPH or attr.type == onnx.AttributeProto.GRAPHS:
            raise CnncError(f"{shown}: {node.where()}: a sub-graph (control flow) has no cnnc form",
                            hint="export the model without data-dependent control flow")
        value = onnx.helper.get_attribute_value(attr)
        if attr.type == onnx.AttributeProto.TENSOR:
            value = _array(onnx, value, shown)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        node.attrs[attr.name] = value
    return node


def _name_scopes(proto: Any) -> tuple[str, ...]:
    """The module paths PyTorch's dynamo exporter records (`pkg.torch.onnx.name_scopes`: ['', 'layer1',
    'layer1.0', 'layer1.0.conv1', 'conv2d']) without the root and the operation's own name."""
    import ast
    for prop in proto.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                names = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ()
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return tuple(n for n in names[1:-1] if n)
    return ()


def _dims(value_info: Any) -> tuple:
    """A graph input's dimensions: an int, a dimension's name, or None where the file says nothing."""
    shape = value_info.type.tensor_type.shape
    out = []
    for d in shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)
