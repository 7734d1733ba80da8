"""Stage 3 (runtime): `cnnc export --to onnx` — a compiled network as an ONNX model.

The model is built with the `onnx` package's own helpers (`helper.make_node`,
`make_graph`, `make_model`, `numpy_helper`) straight from the compiled graph,
never through PyTorch. Opset 21 (`OPSET`): the newest opset that both oldest
versions the `cnnc[onnx]` extra allows know (onnx 1.16 defines it, ONNX
Runtime 1.18 runs it), and it has every op used here (Gelu needs 20, Mish 18,
ScatterElements with `reduction="add"` 18). The batch axis is the dynamic
dimension "N" ("batch" if the network has a size named N); a symbolic size of
the `.cnn` (`[1, H, W]`) stays a dynamic dimension of the same name, so one
file runs at every size the network accepts. Where an op's ONNX form needs a
concrete number that is symbolic, it is computed in the graph (crop, unpool)
or the layer is refused with a located error suggesting `--input`.

Names come from the `.cnn`: an ONNX node and its output tensor carry the
layer's name (a fused node's tensor the name of the last layer it replaced,
so tensors keep the names the user wrote), helper nodes `layer/Op`, and
parameters are initializers named by cnnc's store keys `"{owner}.{param}"`.
Each op's emitter is registered into its entry (`register("onnx", op)`,
compiler/ops.py; fused ops with `table=FUSED_OPS`); an emitter writes plain
data (`_Builder.add`), so this module imports without `onnx` and only
`export_onnx` needs the extra. What ONNX cannot express exactly is refused
with a located error naming the layer (e.g. `lrn` with an even size, whose
window ONNX's LRN centres differently). The file is written atomically and
never over its source or checkpoint; models over 2 GB (protobuf's limit;
ONNX's external-data form is not written) are refused.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ...compiler.fusion import FUSED_OPS, fuse, tail_of
from ...compiler.graph import Network, Node
from ...compiler.ops import crop_start, implementation, register, same_padding
from ...compiler.symbolic import is_symbolic, show
from ...dsl.files import describe_path, write_atomic
from ...dsl.source import CnncError
from .codegen import NO_PREPARATION, Preparation, parameter_store, preparation, preparation_note
from ..fused import fold_parameters
from .standalone import _bin_matrix

BACKEND = "onnx"
OPSET = 21
IR_VERSION = 10          # what onnx 1.16 writes for opset 21; ONNX Runtime 1.18 reads it
MAX_BYTES = 2 * 10**9    # protobuf refuses messages over 2 GB; leave room for the graph itself
INSTALL = "pip install 'cnnc[onnx]'"


# ---------------------------------------------------------------- building
@dataclass
class _OnnxNode:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str
    attrs: dict[str, Any]
    doc: str = ""


@dataclass
class _Builder:
    """Collects nodes and initializers as plain data while the emitters run."""

    net: Network
    store: Mapping[str, np.ndarray]
    tensors: dict[str, str]                        # graph node name -> its output tensor
    nodes: list[_OnnxNode] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    layer: Node | None = None                      # the node being emitted
    out: str = ""                                  # its output tensor
    _count: dict[str, int] = field(default_factory=dict)

    def add(self, op_type: str, inputs: list[str], outputs: list[str] | str | None = None, **attrs: Any) -> str:
        """Append a node; the one producing the layer's output carries the layer's name. Returns its
        first output (a fresh `layer/Op` name unless given)."""
        layer = self.layer.name
        if outputs is None:
            outputs = [self._fresh(op_type)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        name = layer if self.out in outputs else self._fresh(op_type)
        where = f" at {self.layer.loc}" if self.layer.loc else ""
        self.nodes.append(_OnnxNode(op_type, list(inputs), outputs, name, attrs,
                                    f"{self.layer.layer or self.layer.op}{where}"))
        return outputs[0]

    def _fresh(self, base: str) -> str:
        key = f"{self.layer.name}/{base}"
        k = self._count.get(key, 0)
        self._count[key] = k + 1
        return key if k == 0 else f"{key}_{k}"

    def const(self, what: str, value: Any, dtype: Any = np.int64) -> str:
        """An initializer `layer/what` holding a constant the op's form needs (indices, shapes, ...)."""
        name = self._fresh(what)
        self.initializers[name] = np.asarray(value, dtype)
        return name

    def param(self, node: Node, pname: str) -> str:
        """The initializer of a parameter, named by its store key (a sharing layer names the owner's)."""
        key = f"{node.shares or node.name}.{pname}"
        if key not in self.initializers:
            self.initializers[key] = np.ascontiguousarray(self.store[key], np.float32)
        return key


Rule = Callable[[_Builder, Node, list[str], str], None]


def refuse(node: Node, why: str, hint: str | None = None) -> CnncError:
    """The located error for a layer ONNX cannot express (exactly)."""
    return CnncError(f"cannot export layer '{node.name}' ({node.layer or node.op}) to ONNX: {why}", node.loc,
                     hint=hint)


def concrete(node: Node, value: Any, what: str) -> Any:
    """`value` (nested tuples of sizes) when every size is known; else the located refusal."""
    flat = list(_flatten(value))
    if any(is_symbolic(v) for v in flat):
        shown = ", ".join(show(v) for v in flat)
        raise refuse(node, f"its ONNX form needs a concrete {what}, but it depends on the input size ({shown})",
                     "bind the input size with --input NAME=CxHxW (the model is then fixed to it)")
    return value


def _flatten(value: Any):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _ints(value: Any) -> list[int]:
    return [int(v) for v in _flatten(value)]


# ---------------------------------------------------------------- emitters
class Activation:
    """An element-wise op's emitter; `build(b, x, out, attrs)` also serves a fused node's epilogue."""

    def __init__(self, build: Callable[[_Builder, str, str, dict], None]):
        self.build = build

    def __call__(self, b: _Builder, node: Node, x: list[str], out: str) -> None:
        self.build(b, x[0], out, node.attrs)


def _unary(op_type: str, **fixed: Any) -> Activation:
    return Activation(lambda b, x, out, a: b.add(op_type, [x], out, **fixed))


register(BACKEND, "relu")(_unary("Relu"))
register(BACKEND, "sigmoid")(_unary("Sigmoid"))
register(BACKEND, "tanh")(_unary("Tanh"))
register(BACKEND, "hardswish")(_unary("HardSwish"))             # x·max(0, min(1, x/6 + 1/2))
register(BACKEND, "hardsigmoid")(_unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5))
register(BACKEND, "mish")(_unary("Mish"))
register(BACKEND, "gelu")(_unary("Gelu", approximate="none"))
register(BACKEND, "softmax")(_unary("Softmax", axis=1))          # over channels (per position)
register(BACKEND, "leaky_relu")(Activation(
    lambda b, x, out, a: b.add("LeakyRelu", [x], out, alpha=float(a.get("slope", 0.01)))))
register(BACKEND, "elu")(Activation(lambda b, x, out, a: b.add("Elu", [x], out, alpha=float(a.get("alpha", 1.0)))))
register(BACKEND, "relu6")(Activation(lambda b, x, out, a: b.add(
    "Clip", [x, b.const("min", 0.0, np.float32), b.const("max", 6.0, np.float32)], out)))
register(BACKEND, "swish")(Activation(lambda b, x, out, a: b.add("Mul", [x, b.add("Sigmoid", [x])], out)))


def _activation(b: _Builder, x: str, out: str, attrs: dict) -> None:
    """A fused node's trailing activation, by that op's own emitter (or the identity)."""
    op = attrs.get("activation")
    if op is None:
        b.add("Identity", [x], out)
    else:
        implementation(op, BACKEND).build(b, x, out, attrs)


def _window(node: Node, shape: tuple, auto_same: bool) -> dict[str, Any]:
    """kernel_shape, strides, dilations and pads (or auto_pad SAME_UPPER for a symbolic 'same');
    on a [C, L] signal (unit-height attributes, compiler/ops.py) the length axis only: a 1-D op."""
    if len(shape) == 2:
        return _length_axis(_window_2d(node, (shape[0], 1, shape[1]), auto_same))
    return _window_2d(node, shape, auto_same)


def _length_axis(window: dict[str, Any]) -> dict[str, Any]:
    out = {k: v[1:] if k in ("kernel_shape", "strides", "dilations") else v for k, v in window.items()}
    if "pads" in window:
        out["pads"] = [window["pads"][1], window["pads"][3]]
    return out


def _window_2d(node: Node, shape: tuple, auto_same: bool) -> dict[str, Any]:
    a = node.attrs
    kernel, stride = tuple(a["kernel"]), tuple(a.get("stride", (1, 1)))
    dilation = tuple(a.get("dilation", (1, 1)))
    out = {"kernel_shape": list(kernel), "strides": list(stride)}
    if "dilation" in a:
        out["dilations"] = list(dilation)
    pads = a.get("padding", ((0, 0), (0, 0)))
    if any(is_symbolic(p) for p in _flatten(pads)):
        same = tuple(same_padding(n, k, s, d) for n, k, s, d in zip(shape[1:], kernel, stride, dilation))
        # TensorFlow's 'same' is ONNX's SAME_UPPER (the odd pixel at the end); ONNX Runtime refuses
        # SAME_UPPER with a dilation, so that case stays a refusal.
        if auto_same and tuple(map(tuple, pads)) == same and dilation == (1, 1):
            out["auto_pad"] = "SAME_UPPER"
            return out
        concrete(node, pads, "padding")
    (t, bm), (l, r) = _ints(pads[0]), _ints(pads[1])
    out["pads"] = [t, l, bm, r]
    return out


def _shape_of(b: _Builder, node: Node) -> tuple:
    return b.net.shapes[node.inputs[0]]


@register(BACKEND, "conv")
def _conv(b: _Builder, node: Node, x: list[str], out: str) -> None:
    inputs = [x[0], b.param(node, "weight")] + ([b.param(node, "bias")] if node.attrs["bias"] else [])
    b.add("Conv", inputs, out, group=int(node.attrs["groups"]), **_window(node, _shape_of(b, node), True))


@register(BACKEND, "fused_conv", table=FUSED_OPS)
def _fused_conv(b: _Builder, node: Node, x: list[str], out: str) -> None:
    a = node.attrs
    if a.get("bn") and not a.get("folded"):   # fuse(net, "eval") always folds; a train graph is not exported
        raise AssertionError(f"fused_conv '{node.name}' carries an unfolded batchnorm")
    inputs = [x[0], b.param(node, "weight")] + ([b.param(node, "bias")] if a["bias"] else [])
    y = b.add("Conv", inputs, group=int(a["groups"]), **_window(node, _shape_of(b, node), True))
    if a.get("residual"):
        y = b.add("Add", [y, x[1]])
    _activation(b, y, out, a)


@register(BACKEND, "deconv")
def _deconv(b: _Builder, node: Node, x: list[str], out: str) -> None:
    a = node.attrs
    inputs = [x[0], b.param(node, "weight")] + ([b.param(node, "bias")] if a["bias"] else [])
    (t, bm), (l, r) = _ints(a["padding"])[:2], _ints(a["padding"])[2:]
    b.add("ConvTranspose", inputs, out, kernel_shape=_ints(a["kernel"]), strides=_ints(a["stride"]),
          dilations=_ints(a["dilation"]), group=int(a["groups"]), pads=[t, l, bm, r],
          output_padding=_ints(a["output_padding"]))


@register(BACKEND, "local")
def _local(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """No ONNX op has unshared weights: im2col by a depthwise conv with one-hot kernels, then one
    matrix product per output position, the weights of its tile gathered from the stored tensor."""
    a = node.attrs
    c = int(_shape_of(b, node)[0])
    _, oh, ow = concrete(node, b.net.shapes[node.name], "output size")
    oh, ow = int(oh), int(ow)
    (kh, kw), (th, tw), o = _ints(a["kernel"]), _ints(a["tile"]), int(a["out_channels"])
    k, p = c * kh * kw, oh * ow
    onehot = np.zeros((k, 1, kh, kw), np.float32)
    onehot[np.arange(k), 0, np.arange(k) // kw % kh, np.arange(k) % kw] = 1.0
    window = _window(node, _shape_of(b, node), False)
    cols = b.add("Conv", [x[0], b.const("onehot", onehot, np.float32)], group=c, **window)   # [N, K, oh, ow]
    cols = b.add("Reshape", [cols, b.const("cols_shape", [0, k, p])])
    cols = b.add("Transpose", [cols], perm=[2, 0, 1])                                      # [P, N, K]
    rows_i, cols_i = b.const("tile_rows", np.arange(oh) % th), b.const("tile_cols", np.arange(ow) % tw)
    w = b.add("Gather", [b.add("Gather", [b.param(node, "weight"), rows_i], axis=1), cols_i], axis=2)
    w = b.add("Transpose", [w], perm=[1, 2, 3, 4, 5, 0])                                   # [oh, ow, C, kh, kw, O]
    w = b.add("Reshape", [w, b.const("weight_shape", [p, k, o])])
    y = b.add("MatMul", [cols, w])                                                          # [P, N, O]
    y = b.add("Transpose", [y], perm=[1, 2, 0])
    if not a["bias"]:
        b.add("Reshape", [y, b.const("out_shape", [0, o, oh, ow])], out)
        return
    y = b.add("Reshape", [y, b.const("out_shape", [0, o, oh, ow])])
    bias = b.add("Gather", [b.add("Gather", [b.param(node, "bias"), rows_i], axis=1), cols_i], axis=2)
    b.add("Add", [y, bias], out)


def _gemm(b: _Builder, node: Node, x: list[str], out: str) -> None:
    if node.attrs.get("over") == "channels":
        _channels_last(b, node, x[0], lambda t: _matmul(b, node, t), out)
        return
    inputs = [x[0], b.param(node, "weight")] + ([b.param(node, "bias")] if node.attrs["bias"] else [])
    b.add("Gemm", inputs, out, transB=1)


def _matmul(b: _Builder, node: Node, x: str) -> str:
    """x·Wᵀ (+ b) over x's last axis, as PyTorch exports nn.Linear on a tensor of any rank."""
    y = b.add("MatMul", [x, b.add("Transpose", [b.param(node, "weight")], perm=[1, 0])])
    return b.add("Add", [y, b.param(node, "bias")]) if node.attrs["bias"] else y


register(BACKEND, "linear")(_gemm)


@register(BACKEND, "fused_linear", table=FUSED_OPS)
def _fused_linear(b: _Builder, node: Node, x: list[str], out: str) -> None:
    inputs = [x[0], b.param(node, "weight")] + ([b.param(node, "bias")] if node.attrs["bias"] else [])
    _activation(b, b.add("Gemm", inputs, transB=1), out, node.attrs)


def _batchnorm_node(b: _Builder, node: Node, x: str, out: str | None) -> str:
    stats = [b.param(node, p) for p in ("weight", "bias", "running_mean", "running_var")]
    return b.add("BatchNormalization", [x, *stats], out, epsilon=float(node.attrs["eps"]))


register(BACKEND, "batchnorm")(lambda b, node, x, out: _batchnorm_node(b, node, x[0], out))


@register(BACKEND, "fused_bn", table=FUSED_OPS)
def _fused_bn(b: _Builder, node: Node, x: list[str], out: str) -> None:
    _activation(b, _batchnorm_node(b, node, x[0], None), out, node.attrs)


def _group_norm(groups: Callable[[Network, Node], int]) -> Rule:
    """Normalise [N, G, rest] with InstanceNormalization (unit scale, zero shift), then the per-channel
    affine: exactly cnnc's group norm (biased variance, eps inside the root), at every rank."""
    def rule(b: _Builder, node: Node, x: list[str], out: str) -> None:
        g = int(groups(b.net, node))
        rank = len(b.net.shapes[node.name])
        grouped = b.add("Reshape", [x[0], b.const("grouped", [0, g, -1])])
        normed = b.add("InstanceNormalization", [grouped, b.const("ones", np.ones(g), np.float32),
                                                 b.const("zeros", np.zeros(g), np.float32)],
                       epsilon=float(node.attrs["eps"]))
        normed = b.add("Reshape", [normed, b.add("Shape", [x[0]])])
        per_channel = b.const("channel_shape", [-1] + [1] * (rank - 1))
        scale = b.add("Reshape", [b.param(node, "weight"), per_channel])
        shift = b.add("Reshape", [b.param(node, "bias"), per_channel])
        b.add("Add", [b.add("Mul", [normed, scale]), shift], out)
    return rule


def _channels_last(b: _Builder, node: Node, x: str, inner: Callable[[str], str], out: str) -> None:
    """`inner` on the channels-last view of x ([N, ..., C]; a flat x is one already), moved back into `out`."""
    rank = len(b.net.shapes[node.inputs[0]]) + 1
    if rank == 2:
        b.add("Identity", [inner(x)], out)
        return
    last = b.add("Transpose", [x], perm=[0, *range(2, rank), 1])
    b.add("Transpose", [inner(last)], out, perm=[0, rank - 1, *range(1, rank - 1)])


@register(BACKEND, "layernorm")
def _layernorm(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """over = channels: LayerNormalization over the last axis of the channels-last view (exactly
    PyTorch's LayerNorm on channels-last); else the group norm of one group."""
    if node.attrs.get("over") != "channels":
        _group_norm(lambda net, n: 1)(b, node, x, out)
        return
    norm = lambda t: b.add("LayerNormalization", [t, b.param(node, "weight"), b.param(node, "bias")],
                           axis=-1, epsilon=float(node.attrs["eps"]))
    _channels_last(b, node, x[0], norm, out)
register(BACKEND, "groupnorm")(_group_norm(lambda net, n: n.attrs["groups"]))


@register(BACKEND, "instancenorm")
def _instancenorm(b: _Builder, node: Node, x: list[str], out: str) -> None:
    b.add("InstanceNormalization", [x[0], b.param(node, "weight"), b.param(node, "bias")], out,
          epsilon=float(node.attrs["eps"]))


@register(BACKEND, "lrn")
def _lrn(b: _Builder, node: Node, x: list[str], out: str) -> None:
    a = node.attrs
    size = int(a["size"])
    if size % 2 == 0:
        raise refuse(node, f"ONNX's LRN sums the channels c-{size // 2 - 1}..c+{size // 2} for an even size "
                           f"{size}, cnnc (and PyTorch) c-{size // 2}..c+{size // 2 - 1}",
                     "use an odd size (AlexNet's is 5)")
    b.add("LRN", [x[0]], out, size=size, alpha=float(a["alpha"]), beta=float(a["beta"]), bias=float(a["k"]))


@register(BACKEND, "dropout", "spatial_dropout", "stochastic_depth")
def _dropout(b: _Builder, node: Node, x: list[str], out: str) -> None:
    if node.op == "dropout" and node.attrs.get("mode") == "downgrade_in_infer":
        b.add("Mul", [x[0], b.const("keep", 1.0 - float(node.attrs["p"]), np.float32)], out)
    else:
        b.add("Identity", [x[0]], out)   # inverted dropout is the identity in inference


def _unpooled(net: Network) -> set[str]:
    return {n.attrs["of"] for n in net.layers() if n.op == "unpool"}


@register(BACKEND, "maxpool")
def _maxpool(b: _Builder, node: Node, x: list[str], out: str) -> None:
    outputs = [out, f"{out}/indices"] if node.name in _unpooled(b.net) else [out]
    b.add("MaxPool", [x[0]], outputs, ceil_mode=int(bool(node.attrs.get("ceil_mode"))),
          **_window(node, _shape_of(b, node), True))


@register(BACKEND, "avgpool")
def _avgpool(b: _Builder, node: Node, x: list[str], out: str) -> None:
    a = node.attrs
    b.add("AveragePool", [x[0]], out, ceil_mode=int(bool(a.get("ceil_mode"))),
          count_include_pad=int(bool(a.get("count_include_pad", True))), **_window(node, _shape_of(b, node), False))


@register(BACKEND, "lppool")
def _lppool(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """(Σ x^p)^(1/p): ONNX's LpPool takes |x| and an integer p, so it is exact only for an even
    integer p without ceil_mode; otherwise the sum is a depthwise conv with ones."""
    a = node.attrs
    p = float(a["p"])
    window = _window(node, _shape_of(b, node), False)
    if p == int(p) and int(p) % 2 == 0 and not a.get("ceil_mode"):
        b.add("LpPool", [x[0]], out, p=int(p), **window)
        return
    c = int(concrete(node, _shape_of(b, node)[0], "channel count"))
    signal = len(_shape_of(b, node)) == 2
    if signal and a.get("ceil_mode"):
        raise refuse(node, "lp pooling of a [C, L] signal with ceil_mode has no ONNX form here")
    if a.get("ceil_mode"):   # the overhang of the last window adds zeros: pad by it
        _, h, w = concrete(node, _shape_of(b, node), "input size")
        _, oh, ow = b.net.shapes[node.name]
        (kh, kw), (sh, sw) = _ints(a["kernel"]), _ints(a["stride"])
        window["pads"] = [0, 0, max((int(oh) - 1) * sh + kh - int(h), 0), max((int(ow) - 1) * sw + kw - int(w), 0)]
    powered = b.add("Pow", [x[0], b.const("p", p, np.float32)])
    ones = np.ones((c, 1, *_ints(a["kernel"])[1 if signal else 0:]), np.float32)
    summed = b.add("Conv", [powered, b.const("ones", ones, np.float32)], group=c, **window)
    if p == 2:
        b.add("Sqrt", [summed], out)
    else:
        b.add("Pow", [summed, b.const("root", 1.0 / p, np.float32)], out)


@register(BACKEND, "unpool")
def _unpool(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """Scatter-add each value to its pool's argmax (MaxPool's flat indices), in zeros shaped like the
    pool's input: exactly cnnc's unpool, overlapping windows included (MaxUnpool would overwrite)."""
    pool = b.net.node(node.attrs["of"])
    indices = f"{b.tensors[pool.name]}/indices"
    shape = b.add("Shape", [b.tensors[pool.inputs[0]]])
    flat = b.const("flat", [-1])
    zeros = b.add("ConstantOfShape", [b.add("Shape", [b.add("Reshape", [b.tensors[pool.inputs[0]], flat])])],
                  value=np.zeros(1, np.float32))
    scattered = b.add("ScatterElements", [zeros, b.add("Reshape", [indices, flat]), b.add("Reshape", [x[0], flat])],
                      axis=0, reduction="add")
    b.add("Reshape", [scattered, shape], out)


register(BACKEND, "global_avgpool")(lambda b, n, x, out: b.add("GlobalAveragePool", [x[0]], out))
register(BACKEND, "global_maxpool")(lambda b, n, x, out: b.add("GlobalMaxPool", [x[0]], out))


def _even_bins(b: _Builder, node: Node, x: list[str], out: str, pool: str) -> bool:
    """Global{pool}Pool, or {pool}Pool with kernel = stride, when an adaptive pool's bins tile the input
    evenly (then True); else nothing is added."""
    _, h, w = _shape_of(b, node)
    oh, ow = _ints(node.attrs["output"])
    if (oh, ow) == (1, 1):
        b.add(f"Global{pool}Pool", [x[0]], out)
        return True
    if not is_symbolic(h) and not is_symbolic(w) and h % oh == 0 and w % ow == 0:
        kernel = [int(h) // oh, int(w) // ow]
        b.add(f"{pool}Pool", [x[0]], out, kernel_shape=kernel, strides=kernel)
        return True
    return False


@register(BACKEND, "adaptive_avgpool")
def _adaptive_avgpool(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """AveragePool when the bins tile the input evenly; else PyTorch's uneven bins as two matrix
    products with constant bin matrices (the sizes must then be known)."""
    if _even_bins(b, node, x, out, "Average"):
        return
    oh, ow = _ints(node.attrs["output"])
    _, h, w = concrete(node, _shape_of(b, node), "input size (its bins depend on it)")
    rows = b.const("rows", _bin_matrix(int(h), oh, np.float32), np.float32)
    cols = b.const("cols", _bin_matrix(int(w), ow, np.float32).T, np.float32)
    b.add("MatMul", [b.add("MatMul", [rows, x[0]]), cols], out)


@register(BACKEND, "adaptive_maxpool")
def _adaptive_maxpool(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """MaxPool when the bins tile the input evenly; else each of PyTorch's uneven bins sliced and reduced
    (ReduceMax), the bins joined by Concat (the sizes must then be known)."""
    if _even_bins(b, node, x, out, "Max"):
        return
    oh, ow = _ints(node.attrs["output"])
    _, h, w = concrete(node, _shape_of(b, node), "input size (its bins depend on it)")
    axes = b.const("axes", [2, 3])
    rows = []
    for i in range(oh):
        r0, r1 = (i * int(h)) // oh, -(-(i + 1) * int(h) // oh)
        cells = []
        for j in range(ow):
            c0, c1 = (j * int(w)) // ow, -(-(j + 1) * int(w) // ow)
            window = b.add("Slice", [x[0], b.const("starts", [r0, c0]), b.const("ends", [r1, c1]), axes])
            cells.append(b.add("ReduceMax", [window, axes], keepdims=1))
        rows.append(b.add("Concat", cells, axis=3))
    b.add("Concat", rows, out, axis=2)


@register(BACKEND, "upsample")
def _upsample(b: _Builder, node: Node, x: list[str], out: str) -> None:
    a = node.attrs
    signal = len(_shape_of(b, node)) == 2   # a [C, L] signal: its length only
    axes = [2] if signal else [2, 3]
    if a.get("scale") is not None and not a.get("align_corners"):
        sh, sw = _ints(a["scale"])
        scales = b.const("scales", [1.0, 1.0, sw] if signal else [1.0, 1.0, sh, sw], np.float32)
        if a["mode"] == "bilinear":   # PyTorch's align_corners=False
            b.add("Resize", [x[0], "", scales], out, mode="linear",
                  coordinate_transformation_mode="pytorch_half_pixel")
        else:                         # each pixel repeated: source = floor(destination / scale)
            b.add("Resize", [x[0], "", scales], out, mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")
        return
    # To a size: the constant one, or the `like` tensor's height and width (length), read in the graph.
    plane = (lambda pair: _ints(pair)[1:]) if signal else _ints
    if a.get("scale") is not None:
        sizes = b.add("Mul", [b.add("Shape", [x[0]], start=2, end=2 + len(axes)), b.const("scale", plane(a["scale"]))])
    elif a.get("size") is not None:
        sizes = b.const("sizes", plane(a["size"]))
    else:
        sizes = b.add("Shape", [x[1]], start=2, end=2 + len(axes))
    if a["mode"] == "bilinear":
        mode = "align_corners" if a.get("align_corners") else "half_pixel"
        b.add("Resize", [x[0], "", "", sizes], out, mode="linear", coordinate_transformation_mode=mode, axes=axes)
    else:
        b.add("Resize", [x[0], "", "", sizes], out, mode="nearest", coordinate_transformation_mode="asymmetric",
              nearest_mode="floor", axes=axes)


@register(BACKEND, "crop")
def _crop(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """Slice H and W from the offset, else from (H − h)//2, (W − w)//2: constants when known, else computed
    from the shapes."""
    (_, hh, ww), (_, h, w) = b.net.shapes[node.inputs[0]], b.net.shapes[node.inputs[1]]
    axes = b.const("axes", [2, 3])
    offset = node.attrs.get("offset")
    if offset is not None and any(is_symbolic(v) for v in (hh, ww, h, w)):   # start known, end from `like`
        starts = b.const("starts", [int(v) for v in offset])
        b.add("Slice", [x[0], starts, b.add("Add", [starts, b.add("Shape", [x[1]], start=2, end=4)]), axes], out)
        return
    if not any(is_symbolic(v) for v in (hh, ww, h, w)):
        top, left = crop_start(offset, (int(hh), int(ww)), (int(h), int(w)))
        b.add("Slice", [x[0], b.const("starts", [top, left]), b.const("ends", [top + int(h), left + int(w)]), axes],
              out)
        return
    big, small = b.add("Shape", [x[0]], start=2, end=4), b.add("Shape", [x[1]], start=2, end=4)
    starts = b.add("Div", [b.add("Sub", [big, small]), b.const("two", [2, 2])])
    b.add("Slice", [x[0], starts, b.add("Add", [starts, small]), axes], out)


@register(BACKEND, "pad")
def _pad(b: _Builder, node: Node, x: list[str], out: str) -> None:
    (t, bm), (l, r) = _ints(node.attrs["padding"])[:2], _ints(node.attrs["padding"])[2:]
    b.add("Pad", [x[0], b.const("pads", [0, 0, t, l, 0, 0, bm, r]),
                  b.const("value", float(node.attrs["value"]), np.float32)], out, mode="constant")


@register(BACKEND, "slice")
def _slice(b: _Builder, node: Node, x: list[str], out: str) -> None:
    b.add("Slice", [x[0], b.const("starts", [int(node.attrs["start"])]), b.const("ends", [int(node.attrs["stop"])]),
                    b.const("axes", [1])], out)


@register(BACKEND, "channel_shuffle")
def _channel_shuffle(b: _Builder, node: Node, x: list[str], out: str) -> None:
    """[N, C, ...] -> [N, g, C/g, rest] -> swap the group axes -> back to x's shape (any size, symbolic too)."""
    g = int(node.attrs["groups"])
    c = int(concrete(node, b.net.shapes[node.inputs[0]][0], "channel count"))
    grouped = b.add("Reshape", [x[0], b.const("groups", [0, g, c // g, -1])])
    swapped = b.add("Transpose", [grouped], perm=[0, 2, 1, 3])
    b.add("Reshape", [swapped, b.add("Shape", [x[0]])], out)


def _chain(op_type: str) -> Rule:
    """A variadic sum or product, left to right as the runtime computes it."""
    def rule(b: _Builder, node: Node, x: list[str], out: str) -> None:
        acc = x[0]
        for i, operand in enumerate(x[1:], 2):
            acc = b.add(op_type, [acc, operand], out if i == len(x) else None)
    return rule


register(BACKEND, "add")(_chain("Add"))
register(BACKEND, "mul")(_chain("Mul"))
register(BACKEND, "maximum")(_chain("Max"))
register(BACKEND, "minimum")(_chain("Min"))
register(BACKEND, "layer_scale")(lambda b, n, x, out: b.add("Mul", [x[0], b.param(n, "weight")], out))


@register(BACKEND, "affine")
def _affine(b: _Builder, node: Node, x: list[str], out: str) -> None:
    scale, shift = float(node.attrs["scale"]), float(node.attrs["shift"])
    if shift == 0.0:
        b.add("Mul", [x[0], b.const("scale", scale, np.float32)], out)
        return
    scaled = x[0] if scale == 1.0 else b.add("Mul", [x[0], b.const("scale", scale, np.float32)])
    b.add("Add", [scaled, b.const("shift", shift, np.float32)], out)
register(BACKEND, "concat")(lambda b, n, x, out: b.add("Concat", x, out, axis=1))
register(BACKEND, "flatten")(lambda b, n, x, out: b.add("Flatten", [x[0]], out, axis=1))
register(BACKEND, "identity")(lambda b, n, x, out: b.add("Identity", [x[0]], out))
register(BACKEND, "input")(lambda b, n, x, out: None)   # a graph input: its tensor is the input itself


def emitter(op: str) -> Rule | None:
    """The registered ONNX emitter of an op of the compiler's table or a fused op, or None."""
    return implementation(op, BACKEND, FUSED_OPS if op in FUSED_OPS else None)


# ------------------------------------------------------------------- model
def batch_name(net: Network) -> str:
    """The batch axis' dimension name: "N", unless the network has a size of that name."""
    return "batch" if "N" in net.symbols else "N"


def dims(net: Network, shape: tuple) -> list[Any]:
    """Batch first; an int stays, a plain symbol (H) keeps its name, an expression is left unnamed."""
    out: list[Any] = [batch_name(net)]
    for d in shape:
        if not is_symbolic(d):
            out.append(int(d))
        else:
            text = str(d)
            out.append(text if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) else None)
    return out


def _preprocess(b: _Builder, prep: Preparation) -> None:
    """The training's preprocessing as the graph's first nodes: `input * scale + shift` per channel
    (runtime/preprocess.py `affine`), read by every layer that reads the input."""
    node = b.net.node(prep.input)
    b.layer, b.out = node, ""
    per_channel = [1, -1] + [1] * (len(b.net.inputs[prep.input]) - 1)
    scale = b.const("scale", np.reshape(prep.scale, per_channel), np.float32)
    shift = b.const("shift", np.reshape(prep.shift, per_channel), np.float32)
    scaled = b.add("Mul", [prep.input, scale])
    b.tensors[prep.input] = b.add("Add", [scaled, shift], f"{prep.input}/preprocessed")


def build_nodes(net: Network, store: Mapping[str, np.ndarray], prep: Preparation = NO_PREPARATION) -> _Builder:
    """The preprocessing (if `prep` has one), then every layer through its registered emitter, in
    topological order."""
    tensors = {n.name: (tail_of(n) if n.op in FUSED_OPS else n.name) for n in net.order()}
    b = _Builder(net, store, tensors)
    if prep.in_model:
        _preprocess(b, prep)
    for node in net.order():
        rule = emitter(node.op)
        if rule is None:
            raise refuse(node, f"no ONNX form is registered for '{node.op}'")
        b.layer, b.out = node, tensors[node.name]
        rule(b, node, [tensors[i] for i in node.inputs], b.out)
    return b


def build_model(net: Network, store: Mapping[str, np.ndarray], doc: str = "",
                prep: Preparation = NO_PREPARATION) -> Any:
    """The ONNX ModelProto of a (possibly fused) network with the given parameter store; its metadata
    holds the class names and preprocessing records of `prep`."""
    from onnx import TensorProto, helper, numpy_helper

    b = build_nodes(net, store, prep)
    check_size(net, sum(v.nbytes for v in b.initializers.values()))
    nodes = []
    for n in b.nodes:
        attrs = {k: (numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v) for k, v in n.attrs.items()}
        nodes.append(helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, doc_string=n.doc, **attrs))
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims(net, shape))
              for name, shape in net.inputs.items()]
    by_tensor = {b.tensors[n.name]: n.name for n in net.order()}
    outputs = [helper.make_tensor_value_info(b.tensors.get(o, o), TensorProto.FLOAT,
                                             dims(net, net.shapes[by_tensor.get(o, o)]))
               for o in net.outputs]
    initializers = [numpy_helper.from_array(v, name) for name, v in b.initializers.items()]
    graph = helper.make_graph(nodes, net.name, inputs, outputs, initializers, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnnc",
                              ir_version=IR_VERSION, doc_string=doc)
    helper.set_model_props(model, {"classes": json.dumps(prep.classes), "preprocess": json.dumps(prep.records),
                                   "preprocess_in_graph": json.dumps(prep.in_model)})
    return model


def check_size(net: Network, size: int) -> None:
    """Refuse a model whose weights pass protobuf's limit: first from the parameters' declared shapes,
    before any weight is made, then from the initializers built."""
    if size > MAX_BYTES:
        raise CnncError(f"the ONNX model of '{net.name}' would hold {size / 1e9:.1f} GB of weights; cnnc writes "
                        f"models up to {MAX_BYTES / 1e9:.0f} GB (protobuf's limit; no external-data files)",
                        hint="export a smaller network (or smaller --input sizes)")


def checked_bytes(model: Any) -> bytes:
    """The serialised model, after onnx's full check (structure, types, shape inference) passed on
    exactly these bytes; a failure is a bug in an emitter, not a user error."""
    import onnx
    data = model.SerializeToString()
    onnx.checker.check_model(data, full_check=True)
    return data


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CnncError(f"exporting to ONNX needs the onnx package: {INSTALL}") from None


def export_onnx(compiled, output: str, checkpoint: str | None = None, fuse: bool = False,
                raw: bool = False) -> dict[str, Any]:
    """Write OUTPUT (an ONNX model) atomically; returns what was written, for printing. The graph
    applies the checkpoint's preprocessing to its input first unless `raw`."""
    _require_onnx()
    net = compiled.net
    check_size(net, 4 * sum(math.prod(int(d) for d in spec.shape)  # float32 parameters, before any is made
                            for specs in compiled.analysis.params.values() for spec in specs.values()
                            if not any(is_symbolic(d) for d in spec.shape)))
    store, origin = parameter_store(net, compiled.analysis.params, checkpoint)
    prep = preparation(net, checkpoint, raw)
    graph = net
    if fuse:
        graph = _fused_graph(net)
        store = fold_parameters(graph, store)
    doc = f"{net.name} from {describe_path(str(net.source))}, {origin}" + (", fused" if fuse else "")
    model = build_model(graph, store, doc, prep)
    data = checked_bytes(model)
    write_atomic(output, data, "ONNX model", inputs=[p for p in (net.source, checkpoint) if p])
    return {"model": str(output), "opset": OPSET, "nodes": len(model.graph.node),
            "initializers": len(model.graph.initializer), "bytes": len(data), "source": origin,
            "random": checkpoint is None, "fused": fuse, "preprocess": preparation_note(prep),
            "inputs": {i.name: _shown_dims(i) for i in model.graph.input},
            "outputs": {o.name: _shown_dims(o) for o in model.graph.output}}


def _fused_graph(net: Network) -> Network:
    """The folded inference graph (a helper because `export_onnx`'s flag is named `fuse`)."""
    return fuse(net, "eval").net


def _shown_dims(value_info: Any) -> str:
    d = value_info.type.tensor_type.shape.dim
    return "x".join(x.dim_param or (str(x.dim_value) if x.HasField("dim_value") else "?") for x in d)


__all__ = ["OPSET", "BACKEND", "build_model", "build_nodes", "checked_bytes", "emitter", "export_onnx", "refuse"]
