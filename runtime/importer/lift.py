"""Stage 3 (runtime), import: ONNX nodes lifted to cnnc layers, constants folded, shapes followed.

`lift(model)` walks the nodes in order with a value per ONNX tensor
(values.py): a node whose inputs are all constants is computed now (constant
folding), one on sizes follows the shape arithmetic, and one on data becomes
cnnc layers by its op type's rule (rules.py), which may look back at the
layers that made its inputs to recognise what an exporter wrote for one layer.
What has no cnnc form becomes a *pending* layer naming what cnnc lacks; after
the walk only the layers an output depends on are kept (`Lifted.live`), and a
pending one among them is the error, naming its ONNX node.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...compiler.expressions import is_builtin
from ...compiler.symbolic import Dim
from ...dsl.source import CnncError
from .reader import OnnxModel, OnnxNode
from .rules import RULES
from .values import BATCH, Const, NotFoldable, Sizes, Tensor, Value, fold_const, fold_sizes

KEYWORDS = {"network", "block", "def", "train", "import", "input", "output", "if", "else", "and", "or", "not",
            "true", "false", "in"}


@dataclass
class Layer:
    """A cnnc layer (or a pending one) of the imported network."""

    id: int
    op: str                                 # an op of the table (or `depthwise_conv`), or "?OnnxOp" pending
    inputs: list[int]                       # producing layers' ids
    attrs: dict                             # the op's arguments as written (normalised: pairs, full padding)
    params: dict[str, np.ndarray]           # by cnnc's parameter names
    shape: tuple                            # batch first, in cnnc's axis order
    node: OnnxNode | None                   # the ONNX node it implements (None for a graph input)
    lacks: str | None = None                # a pending layer: what cnnc lacks to express it
    name: str = ""                          # a graph input's name

    @property
    def pending(self) -> bool:
        return self.lacks is not None


@dataclass
class Lifted:
    model: OnnxModel
    layers: list[Layer]
    inputs: list[int]                       # the graph inputs' layers
    outputs: list[int]                      # the layers whose tensors are the graph outputs

    def live(self) -> list[Layer]:
        """The layers an output depends on (inputs, and a pool an unpool reads), in order."""
        keep, stack = set(), list(self.outputs) + list(self.inputs)
        while stack:
            i = stack.pop()
            if i not in keep:
                keep.add(i)
                stack.extend(self.layers[i].inputs)
                if self.layers[i].op == "unpool":
                    stack.append(self.layers[i].attrs["of"])
        return [lay for lay in self.layers if lay.id in keep]


class Lifter:
    def __init__(self, model: OnnxModel):
        self.model = model
        self.layers: list[Layer] = []
        self.values: dict[str, Value] = {}
        self.uses: Counter = Counter(i for n in model.nodes for i in n.inputs if i)
        self.uses.update(model.outputs)
        self.reads: Counter = Counter()        # layer id -> readers of its tensor, over every name it has
        self.node: OnnxNode | None = None
        self.memo: dict[str, Any] = {}         # what rules remember between nodes (rules.py)

    # ---------------------------------------------------------- building
    def add(self, op: str, inputs: list[Tensor], shape: tuple, attrs: dict | None = None,
            params: dict | None = None, perm: tuple | None = None, lacks: str | None = None) -> Tensor:
        layer = Layer(len(self.layers), op, [t.layer for t in inputs], dict(attrs or {}), dict(params or {}),
                      tuple(shape), self.node, lacks)
        self.layers.append(layer)
        return Tensor(layer.id, layer.shape, perm)

    def pending(self, lacks: str, inputs: list[Tensor], shape: tuple, perm: tuple | None = None,
                **attrs: Any) -> Tensor:
        """A layer with no cnnc form yet: a later node may complete the idiom, else it is the error."""
        return self.add("?" + self.node.op_type, inputs, shape, attrs, perm=perm, lacks=lacks)

    def refuse(self, why: str, hint: str | None = None):
        return self.model.refuse(self.node, f"cnnc has {why}" if why.startswith("no ") else why, hint)

    def of(self, t: Tensor) -> Layer:
        return self.layers[t.layer]

    def only_use(self, t: Tensor) -> bool:
        """Is the current node the only reader of t's layer's output (under any of its ONNX names)? Only
        then may a rule fold that layer into a new one: nothing else would see the change."""
        return self.reads[t.layer] == 1

    # ---------------------------------------------------------- walking
    def run(self) -> Lifted:
        inputs = [self._input(name, dims) for name, dims in self.model.inputs]
        for name, value in self.model.initializers.items():
            self.values[name] = Const(value, name)
        for node in self.model.nodes:
            self.node = node
            outputs = self._node(node)
            read = {self.values[i].layer for i in node.inputs if i and isinstance(self.values.get(i), Tensor)}
            for name, value in zip(node.outputs, outputs):
                if name:
                    self._bind(name, value, passed=isinstance(value, Tensor) and value.layer in read)
        self.node = None
        outs = [self._output(name) for name in self.model.outputs]
        lifted = Lifted(self.model, self.layers, inputs, outs)
        for layer in lifted.live():
            if layer.pending:
                raise self.model.refuse(layer.node, f"cnnc has {layer.lacks}")
        return lifted

    def _bind(self, name: str, value: Value, passed: bool) -> None:
        self.values[name] = value
        if isinstance(value, Tensor):
            # A pass-through (Identity, a Transpose to channels-last) reads the tensor once and gives it
            # another name: its readers count instead of it.
            self.reads[value.layer] += self.uses[name] - (1 if passed else 0)

    def _output(self, name: str) -> int:
        value = self.values.get(name)
        if not isinstance(value, Tensor):
            raise self.model.refuse(None, f"the output '{name}' is {'a constant' if value is not None else 'never computed'}",
                                    "cnnc networks compute their outputs from their inputs")
        if value.perm is not None:
            raise self.model.refuse(None, f"the output '{name}' is channels-last",
                                    "cnnc's tensors are channels-first: end the model with its channels first")
        return value.layer

    def _input(self, name: str, dims: tuple) -> int:
        if len(dims) not in (2, 3, 4):
            raise self.model.refuse(None, f"the input '{name}' has {len(dims)} axes",
                                    "cnnc takes [N, C, H, W] images, [N, C, L] signals and [N, F] vectors")
        shape = [BATCH]
        for i, d in enumerate(dims[1:], 1):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 1:
                raise self.model.refuse(None, f"the input '{name}' has no fixed number of channels",
                                        "export with the channels fixed (dynamic axes for the batch and sizes only)")
            else:
                shape.append(Dim.symbol(size_name(d, i, len(dims))))
        layer = Layer(len(self.layers), "input", [], {}, {}, tuple(shape), None, name=name)
        self.layers.append(layer)
        self._bind(name, Tensor(layer.id, layer.shape), passed=False)
        return layer.id

    def _node(self, node: OnnxNode) -> list[Value]:
        if node.op_type == "Constant":
            return [Const(_constant(node))]
        args = [self.values[i] if i else None for i in node.inputs if not i or i in self.values] \
            if all(not i or i in self.values for i in node.inputs) else None
        if args is None:
            missing = next(i for i in node.inputs if i and i not in self.values)
            raise self.refuse(f"its input '{missing}' is computed by no earlier node")
        present = [a for a in args if a is not None]
        if present and all(isinstance(a, Const) for a in present) and node.op_type != "Shape":
            try:
                return [fold_const(node.op_type, args, node.attrs)]
            except NotFoldable:
                pass
        if present and all(isinstance(a, (Const, Sizes)) for a in present) and \
                any(isinstance(a, Sizes) for a in present):
            try:
                return [fold_sizes(node.op_type, args, node.attrs)]
            except NotFoldable:
                pass
        rule = RULES.get(node.op_type)
        if rule is None:
            tensors = [a for a in args if isinstance(a, Tensor)]
            if not tensors:
                raise self.refuse(f"no rule to compute {node.op_type} of constants here")
            return [self.pending(f"no layer for the ONNX operator {node.op_type}", tensors, tensors[0].shape,
                                 tensors[0].perm) for _ in node.outputs]
        try:
            out = rule(self, node, args)
        except (CnncError, IndexError, KeyError, TypeError, ValueError, ZeroDivisionError):
            # A rule meeting a pending layer's output (whose shape is only what the ONNX operator left) may
            # refuse it or fail on it: the pending layer, earlier and live, is the error to report.
            pending = [a for a in args if isinstance(a, Tensor) and self.of(a).pending]
            if not pending:
                raise
            return [self.pending(self.of(pending[0]).lacks, pending, pending[0].shape) for _ in node.outputs]
        return out if isinstance(out, list) else [out]


def size_name(d: Any, axis: int, rank: int) -> str:
    """A symbolic size's name in the .cnn: the file's where cnnc can write it, else H, W or L."""
    if isinstance(d, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", d) and not is_builtin(d) and d not in KEYWORDS:
        return d
    return "L" if rank == 3 else ("H", "W")[axis - 2]


def _constant(node: OnnxNode) -> np.ndarray:
    a = node.attrs
    for key, kind in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                      ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], kind) if kind is not None else np.asarray(a[key])
    raise NotFoldable


def lift(model: OnnxModel) -> Lifted:
    """The model's layers (see the module docstring)."""
    return Lifter(model).run()
