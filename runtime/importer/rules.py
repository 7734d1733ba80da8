"""Stage 3 (runtime), import: each ONNX operator's rule — data in, cnnc layers out.

A rule takes the lifter (lift.py), the node and its input values (values.py)
and returns the output values, adding layers with `lf.add`. Layers keep their
arguments as the `.cnn` writes them, normalised: pairs `(h, w)`, padding
`((top, bottom), (left, right))`, a [C, L] signal's sizes with a unit height
as the compiler keeps them. Rules recognise what exporters write for one cnnc
layer by looking at the layers that made their inputs, folding them in only
when the current node is the only reader of what they made (`lf.only_use`):

- a `Pad` before a `Conv` is the conv's padding; an `Add` of a constant after
  a conv, deconv or linear is its bias; `MatMul` then `Add` is a linear layer;
- `x · sigmoid(x)` is silu, `x · hardsigmoid(x)` hardswish, `x · tanh(softplus(x))`
  mish, `x · (erf(x / √2) + 1) · 0.5` GELU; a multiply or add by a number is an
  `affine`, and an affine of an affine is one;
- a `Transpose` to channels-last and back is no layer: between the two,
  `LayerNormalization` over the last axis is `layernorm(over = channels)`, a
  `MatMul` by a matrix is `linear(…, over = channels)`, and element-wise
  operations are themselves;
- `Reshape` to `[N, G, -1]`, `InstanceNormalization` with unit scale, `Reshape`
  back, per-channel `Mul` and `Add` is a group norm (one group: a layer norm);
  `Reshape` to `[N, G, C/G, …]`, swapping the two group axes and `Reshape` back is
  `channel_shuffle(G)`; `Reshape` to `[N, -1]` (from sizes computed by `Shape`,
  `Gather`, `Concat`) or `Flatten` is `flatten`;
- `Resize` to another tensor's size is `upsample(like = t)`; a centre `Slice` of
  H and W to another tensor's size is `crop(like = t)`; `MaxPool`'s indices
  scattered back to its input's shape are `unpool(p)`.
A rule refuses, naming the node, what cnnc cannot express exactly.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...compiler.ops import window_out
from ...compiler.symbolic import is_symbolic
from .values import BATCH, Const, Sizes, Tensor, Value, as_sizes

CHANNELS_LAST = {4: (0, 2, 3, 1), 3: (0, 2, 1)}   # an image's or a signal's channels-last view
Rule = Callable[[Any, Any, list], "Value | list[Value]"]
RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def store(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn
    return store


# ------------------------------------------------------------------ helpers
def data(lf, v: Value | None, what: str = "its input") -> Tensor:
    """A data tensor, or the error saying the node needs one."""
    if isinstance(v, Tensor):
        return v
    raise lf.refuse(f"{what} is {'missing' if v is None else 'a constant'}, where cnnc needs the network's data")


def const(lf, v: Value | None, what: str) -> np.ndarray:
    """A value known now (a weight), or the error."""
    if isinstance(v, Const):
        return v.value
    sizes = as_sizes(v) if v is not None else None
    if sizes is not None and sizes.known():
        return sizes.array()
    raise lf.refuse(f"{what} is computed from the data, where cnnc needs a constant")


def channels_first(lf, t: Tensor, what: str) -> None:
    if t.perm is not None:
        raise lf.refuse(f"{what} on a channels-last tensor has no cnnc form",
                        "cnnc follows channels-last tensors between a Transpose pair through layer norm, "
                        "linear maps and element-wise operations only")


def signal(t: Tensor) -> bool:
    return t.rank == 3


def plane(t: Tensor) -> tuple:
    """(H, W) of an image, (1, L) of a signal: the 2-D rules' view."""
    return (1, t.shape[2]) if signal(t) else tuple(t.shape[2:])


def on_grid(t: Tensor, c, h, w) -> tuple:
    return (BATCH, c, w) if signal(t) else (BATCH, c, h, w)


def pairs(lf, node, t: Tensor, key: str, default: int) -> tuple:
    """A window attribute as an (h, w) pair; a signal's has a unit height (0 for output_padding), as the
    compiler keeps a [C, L] layer's sizes."""
    v = node.attrs.get(key)
    dims = 1 if signal(t) else 2
    if v is None:
        v = [default] * dims
    if len(v) != dims:
        raise lf.refuse(f"its {key} has {len(v)} values for a {dims}-D window")
    unit = 0 if key == "output_padding" else 1
    return (unit, int(v[0])) if dims == 1 else (int(v[0]), int(v[1]))


def padding(lf, node, t: Tensor, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """((top, bottom), (left, right)) from `pads` or `auto_pad` (SAME_UPPER is TensorFlow's 'same')."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for n, k, s, d in zip(plane(t), kernel, stride, dilation):
            if is_symbolic(n):
                raise lf.refuse(f"auto_pad {auto} on a symbolic size", "export with explicit pads")
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return tuple(out)
    pads = node.attrs.get("pads")
    if auto == "VALID" or pads is None:
        return ((0, 0), (0, 0))
    pads = [int(p) for p in pads]
    if any(p < 0 for p in pads):
        raise lf.refuse("negative padding (a crop) has no cnnc form here")
    if signal(t):
        return ((0, 0), (pads[0], pads[1]))
    return ((pads[0], pads[2]), (pads[1], pads[3]))


def windowed(t: Tensor, channels, kernel, stride, pad, dilation=(1, 1), ceil_mode=False) -> tuple:
    h, w = plane(t)
    oh = window_out(h, kernel[0], stride[0], pad[0], dilation[0], ceil_mode)
    ow = window_out(w, kernel[1], stride[1], pad[1], dilation[1], ceil_mode)
    return on_grid(t, channels, oh, ow)


def scalar(v: Value | None) -> float | None:
    """A number given as a constant of one element (any rank), else None."""
    if isinstance(v, Const) and v.value.size == 1 and v.value.dtype.kind in "fiu":
        return float(v.value.reshape(-1)[0])
    return None


def per_channel(t: Tensor, v: Value | None) -> np.ndarray | None:
    """A constant that holds one value per channel of t, broadcast over the rest (in t's ONNX layout):
    the C values, else None."""
    if not isinstance(v, Const):
        return None
    shape, c, onnx = v.value.shape, t.shape[1], t.onnx_shape
    axis = list(t.perm).index(1) if t.perm is not None else 1
    full = (1,) * (len(onnx) - len(shape)) + tuple(shape)
    if len(full) != len(onnx) or full[axis] != c or any(s != 1 for i, s in enumerate(full) if i != axis):
        return None
    return v.value.reshape(-1).astype(np.float32)


def producer(lf, t: Tensor, op: str):
    """The layer that made t if it is `op` and the current node alone reads it, else None."""
    layer = lf.of(t)
    return layer if layer.op == op and lf.only_use(t) else None


# ------------------------------------------------------- pass-through
@rule("Identity", "Dropout")
def _identity(lf, node, args: list) -> list[Value]:
    out = [args[0]]
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
        out.append(lf.pending("no dropout mask output", [data(lf, args[0])], data(lf, args[0]).shape))
    return out


@rule("Cast")
def _cast(lf, node, args: list) -> Value:
    from onnx import TensorProto
    x = data(lf, args[0])
    if node.attrs.get("to") not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        return lf.pending("no integer or boolean tensors (a cast of the data)", [x], x.shape)
    return x


@rule("Shape")
def _shape(lf, node, args: list) -> Value:
    x = args[0]
    if isinstance(x, Const):
        return Const(np.array(x.value.shape, np.int64))
    t = data(lf, x)
    axes = list(range(t.rank))[slice(node.attrs.get("start", 0), node.attrs.get("end", t.rank))]
    cnnc_axes = [t.perm[a] if t.perm else a for a in axes]
    return Sizes(tuple(t.shape[a] for a in cnnc_axes), False, tuple((t.layer, a) for a in cnnc_axes))


# ------------------------------------------------------- convolutions
@rule("Conv")
def _conv(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, "Conv")
    if x.rank not in (3, 4):
        raise lf.refuse(f"a convolution of a {x.rank - 2}-D tensor", "cnnc convolves images and signals")
    w = const(lf, args[1], "its weight")
    b = const(lf, args[2], "its bias") if len(args) > 2 and args[2] is not None else None
    kernel = pairs(lf, node, x, "kernel_shape", 1) if "kernel_shape" in node.attrs else \
        ((1, w.shape[2]) if signal(x) else tuple(int(k) for k in w.shape[2:]))
    stride, dilation = pairs(lf, node, x, "strides", 1), pairs(lf, node, x, "dilations", 1)
    pad = padding(lf, node, x, kernel, stride, dilation)
    pad_layer = producer(lf, x, "pad") or producer(lf, x, "?Pad")
    if pad_layer is not None and pad_layer.attrs["value"] == 0.0:   # Pad before Conv: the conv's padding
        (t0, b0), (l0, r0) = pad_layer.attrs["padding"]
        pad = ((pad[0][0] + t0, pad[0][1] + b0), (pad[1][0] + l0, pad[1][1] + r0))
        x = Tensor(pad_layer.inputs[0], lf.layers[pad_layer.inputs[0]].shape)
    groups, out, cin = int(node.attrs.get("group", 1)), int(w.shape[0]), x.shape[1]
    (left, right), span = pad[1], dilation[1] * (kernel[1] - 1)
    if signal(x) and left != right and (left, right) != (span, 0):
        return lf.pending(f"no one-sided padding ({left}, {right}) of a signal but the causal one ({span}, 0)",
                          [x], x.shape)
    params = {"weight": w.astype(np.float32)}
    if b is not None:
        params["bias"] = b.astype(np.float32)
    shape = windowed(x, out, kernel, stride, pad, dilation)
    common = {"k": kernel, "stride": stride, "pad": pad, "dilation": dilation, "bias": b is not None}
    if groups > 1 and groups == cin and out % cin == 0:
        return lf.add("depthwise_conv", [x], shape, {**common, "multiplier": out // cin}, params)
    return lf.add("conv", [x], shape, {"out": out, **common, "groups": groups}, params)


@rule("ConvTranspose")
def _deconv(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, "ConvTranspose")
    if x.rank != 4:
        raise lf.refuse("a transposed convolution of a signal", "cnnc's deconv takes images")
    if "output_shape" in node.attrs:
        raise lf.refuse("an output_shape attribute", "export with pads and output_padding instead")
    w = const(lf, args[1], "its weight")
    b = const(lf, args[2], "its bias") if len(args) > 2 and args[2] is not None else None
    groups = int(node.attrs.get("group", 1))
    kernel = tuple(int(k) for k in w.shape[2:])
    stride, dilation = pairs(lf, node, x, "strides", 1), pairs(lf, node, x, "dilations", 1)
    pad = padding(lf, node, x, kernel, stride, dilation)
    output_padding = pairs(lf, node, x, "output_padding", 0)
    out = int(w.shape[1]) * groups
    size = [(n - 1) * s - p[0] - p[1] + d * (k - 1) + 1 + op
            for n, s, p, d, k, op in zip(plane(x), stride, pad, dilation, kernel, output_padding)]
    params = {"weight": w.astype(np.float32), **({"bias": b.astype(np.float32)} if b is not None else {})}
    return lf.add("deconv", [x], (BATCH, out, *size),
                  {"out": out, "k": kernel, "stride": stride, "pad": pad, "output_padding": output_padding,
                   "dilation": dilation, "groups": groups, "bias": b is not None}, params)


# ------------------------------------------------------- matrix products
@rule("Gemm")
def _gemm(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    a = node.attrs
    if a.get("transA", 0) or x.rank != 2:
        raise lf.refuse("a Gemm whose first operand is transposed or not [N, F]")
    w = const(lf, args[1], "its weight") * float(a.get("alpha", 1.0))
    w = w if a.get("transB", 0) else w.T
    params = {"weight": np.ascontiguousarray(w, np.float32)}
    if len(args) > 2 and args[2] is not None:
        bias = const(lf, args[2], "its bias").reshape(-1) * float(a.get("beta", 1.0))
        if bias.size == 1 and w.shape[0] > 1:
            bias = np.full(w.shape[0], bias[0])
        params["bias"] = bias.astype(np.float32)
    return lf.add("linear", [x], (BATCH, w.shape[0]), {"out": w.shape[0], "bias": "bias" in params}, params)


@rule("MatMul")
def _matmul(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    w = const(lf, args[1], "its second operand")
    if w.ndim != 2:
        raise lf.refuse("a product with a tensor of rank other than 2", "cnnc's linear maps take a matrix")
    channels = x.perm is not None and x.perm == CHANNELS_LAST.get(x.rank)
    if x.rank != 2 and not channels:
        raise lf.refuse("a matrix product over the last axis of a channels-first tensor",
                        "cnnc maps the channels of every position (linear(..., over = channels)), which an "
                        "exporter writes after a Transpose to channels-last")
    out = w.shape[1]
    shape = (x.shape[0], out, *x.shape[2:])
    attrs = {"out": out, "bias": False, **({"over": "channels"} if channels else {})}
    return lf.add("linear", [x], shape, attrs, {"weight": np.ascontiguousarray(w.T, np.float32)}, perm=x.perm)


def _with_bias(lf, t: Tensor, bias: np.ndarray) -> Tensor | None:
    """conv/deconv/linear + a per-channel constant: the same layer with that bias added (None if not one)."""
    for op in ("conv", "depthwise_conv", "deconv", "linear"):
        layer = producer(lf, t, op)
        if layer is not None:
            params = dict(layer.params)
            params["bias"] = (params.get("bias", 0.0) + bias).astype(np.float32)
            return lf.add(layer.op, [Tensor(i, lf.layers[i].shape) for i in layer.inputs], layer.shape,
                          {**layer.attrs, "bias": True}, params, perm=t.perm)
    return None


# ------------------------------------------------------- normalisation
@rule("BatchNormalization")
def _batchnorm(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, "BatchNormalization")
    if node.attrs.get("training_mode", 0):
        raise lf.refuse("batch normalisation in training mode", "export the model in eval mode (model.eval()) "
                        "with training=torch.onnx.TrainingMode.PRESERVE")
    names = ("weight", "bias", "running_mean", "running_var")
    params = {n: const(lf, v, f"its {n}").astype(np.float32) for n, v in zip(names, args[1:5])}
    momentum = round(1.0 - _float32(node.attrs.get("momentum", 0.9)), 10)
    attrs = {"eps": _float32(node.attrs.get("epsilon", 1e-5)), "momentum": momentum}
    return lf.add("batchnorm", [x], x.shape, attrs, params)


def _float32(v: float) -> float:
    """A float32 attribute as the decimal it was written as (1e-05, not 9.999999747378752e-06)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-")) if v else 0.0


@rule("InstanceNormalization")
def _instancenorm(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    scale, shift = const(lf, args[1], "its scale"), const(lf, args[2], "its bias")
    eps = _float32(node.attrs.get("epsilon", 1e-5))
    view = lf.of(x)
    if view.attrs.get("stage") == "grouped" and np.all(scale == 1) and np.all(shift == 0):
        return lf.pending("no group norm without its per-channel scale and shift", [x], view.shape,
                          source=view.attrs["source"], groups=view.attrs["groups"], eps=eps, stage="normed")
    channels_first(lf, x, "InstanceNormalization")
    return lf.add("instancenorm", [x], x.shape, {"eps": eps},
                  {"weight": scale.astype(np.float32), "bias": shift.astype(np.float32)})


@rule("LayerNormalization")
def _layernorm(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    axis = int(node.attrs.get("axis", -1)) % x.rank
    eps = _float32(node.attrs.get("epsilon", 1e-5))
    scale = const(lf, args[1], "its scale")
    shift = const(lf, args[2], "its bias") if len(args) > 2 and args[2] is not None else np.zeros_like(scale)
    last = axis == x.rank - 1 and scale.size == x.shape[1] and (x.rank == 2 or x.perm == CHANNELS_LAST.get(x.rank))
    if not last:
        raise lf.refuse(f"a layer norm over axes {axis} to {x.rank - 1} of this tensor",
                        "cnnc normalises over the channels of each position (the last axis of a channels-last "
                        "tensor) or over a flat vector")
    attrs = {"eps": eps, **({"over": "channels"} if x.rank > 2 else {})}
    params = {"weight": scale.reshape(-1).astype(np.float32), "bias": np.broadcast_to(shift, scale.shape)
              .reshape(-1).astype(np.float32)}
    return lf.add("layernorm", [x], x.shape, attrs, params, perm=x.perm)


def _group_norm(lf, scaled, bias: np.ndarray) -> Tensor:
    """Reshape to groups, instance norm, reshape back, scale, shift: groupnorm (layernorm for one group,
    instancenorm for one channel a group)."""
    a = scaled.attrs
    source = lf.layers[a["source"]]
    x = Tensor(source.id, source.shape)
    params = {"weight": a["weight"], "bias": bias}
    groups, c = a["groups"], source.shape[1]
    if groups == 1:
        return lf.add("layernorm", [x], x.shape, {"eps": a["eps"]}, params)
    if groups == c and len(source.shape) > 2:
        return lf.add("instancenorm", [x], x.shape, {"eps": a["eps"]}, params)
    return lf.add("groupnorm", [x], x.shape, {"groups": groups, "eps": a["eps"]}, params)


@rule("LRN")
def _lrn(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, "LRN")
    a = node.attrs
    return lf.add("lrn", [x], x.shape, {"size": int(a["size"]), "alpha": _float32(a.get("alpha", 1e-4)),
                                       "beta": _float32(a.get("beta", 0.75)), "k": _float32(a.get("bias", 1.0))})


# ------------------------------------------------------- activations
def _activation(op: str, **fixed: Any) -> Rule:
    def rule_(lf, node, args: list) -> Value:
        x = data(lf, args[0])
        return lf.add(op, [x], x.shape, dict(fixed), perm=x.perm)
    return rule_


for _onnx, _cnnc in (("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("HardSwish", "hardswish"),
                     ("Mish", "mish")):
    RULES[_onnx] = _activation(_cnnc)


@rule("LeakyRelu")
def _leaky(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    return lf.add("leaky_relu", [x], x.shape, {"slope": _float32(node.attrs.get("alpha", 0.01))}, perm=x.perm)


@rule("Elu")
def _elu(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    return lf.add("elu", [x], x.shape, {"alpha": _float32(node.attrs.get("alpha", 1.0))}, perm=x.perm)


@rule("HardSigmoid")
def _hardsigmoid(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-7:
        return lf.pending(f"no hard sigmoid with slope {alpha:g} and offset {beta:g} (only PyTorch's, "
                          "relu6(x + 3) / 6)", [x], x.shape)
    return lf.add("hardsigmoid", [x], x.shape, perm=x.perm)


@rule("Gelu")
def _gelu(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    if node.attrs.get("approximate", "none") != "none":
        return lf.pending("no tanh approximation of GELU (cnnc's is the exact erf form)", [x], x.shape)
    return lf.add("gelu", [x], x.shape, perm=x.perm)


@rule("Softmax")
def _softmax(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    axis = int(node.attrs.get("axis", -1)) % x.rank
    onnx_channel = list(x.perm).index(1) if x.perm else 1
    if axis != onnx_channel:
        return lf.pending(f"no softmax over axis {axis} (cnnc's is over the channels)", [x], x.shape)
    return lf.add("softmax", [x], x.shape, perm=x.perm)


@rule("Clip")
def _clip(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    lo = scalar(args[1]) if len(args) > 1 and args[1] is not None else node.attrs.get("min")
    hi = scalar(args[2]) if len(args) > 2 and args[2] is not None else node.attrs.get("max")
    if lo == 0 and hi == 6:
        return lf.add("relu6", [x], x.shape, perm=x.perm)
    if lo == 0 and (hi is None or np.isinf(hi)):
        return lf.add("relu", [x], x.shape, perm=x.perm)
    return lf.pending(f"no clip to [{lo}, {hi}] (relu is [0, ∞), relu6 [0, 6])", [x], x.shape)


@rule("Erf", "Softplus")
def _pending_unary(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    what = {"Erf": "no erf on its own (GELU's erf form, x·(erf(x/√2) + 1)/2, is gelu)",
            "Softplus": "no softplus on its own (x·tanh(softplus(x)) is mish)"}[node.op_type]
    return lf.pending(what, [x], x.shape, x.perm, source=x.layer)


# ------------------------------------------------------- arithmetic
def _affine(lf, x: Tensor, scale: float, shift: float) -> Tensor:
    """scale·x + shift as one affine layer, merged with an affine before it that nothing else reads."""
    before = producer(lf, x, "affine")
    if before is not None:
        s0, t0 = before.attrs["scale"], before.attrs["shift"]
        scale, shift = s0 * scale, t0 * scale + shift
        x = Tensor(before.inputs[0], lf.layers[before.inputs[0]].shape, x.perm)
    return lf.add("affine", [x], x.shape, {"scale": scale, "shift": shift}, perm=x.perm)


def _same_layout(lf, a: Tensor, b: Tensor, what: str) -> None:
    if a.perm != b.perm or a.rank != b.rank:
        raise lf.refuse(f"{what} of tensors of different ranks or layouts",
                        "cnnc combines tensors of the same rank (size-1 axes broadcast)")


def _is(lf, t: Tensor, op: str, source: int | None = None):
    """The layer making t, when it is `op` (applied to the layer `source`, if given)."""
    layer = lf.of(t)
    if layer.op != op or (source is not None and layer.inputs[:1] != [source]):
        return None
    return layer


@rule("Add")
def _add(lf, node, args: list) -> Value:
    tensors = [a for a in args if isinstance(a, Tensor)]
    if len(tensors) == 2:
        _same_layout(lf, tensors[0], tensors[1], "a sum")
        return lf.add("add", tensors, _broadcast(tensors), perm=tensors[0].perm)
    x, other = tensors[0], args[1] if args[0] is tensors[0] else args[0]
    c = scalar(other)
    if c is not None:
        return _affine(lf, x, 1.0, c)
    bias = per_channel(x, other)
    scaled = lf.of(x)
    if bias is not None and scaled.attrs.get("stage") == "scaled" and lf.only_use(x):
        return _group_norm(lf, scaled, bias)
    if bias is not None:
        out = _with_bias(lf, x, bias)
        if out is not None:
            return out
    return lf.pending("no layer adding a constant tensor (only a number, or a bias right after a conv, "
                      "deconv or linear layer)", [x], x.shape)


@rule("Sub")
def _sub(lf, node, args: list) -> Value:
    a, b = args[0], args[1]
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        _same_layout(lf, a, b, "a difference")
        negated = lf.add("affine", [b], b.shape, {"scale": -1.0, "shift": 0.0}, perm=b.perm)
        return lf.add("add", [a, negated], _broadcast([a, negated]), perm=a.perm)
    if isinstance(a, Tensor) and scalar(b) is not None:
        return _affine(lf, a, 1.0, -scalar(b))
    if isinstance(b, Tensor) and scalar(a) is not None:
        return _affine(lf, b, -1.0, scalar(a))
    x = a if isinstance(a, Tensor) else data(lf, b)
    return lf.pending("no layer subtracting a constant tensor", [x], x.shape)


@rule("Neg")
def _neg(lf, node, args: list) -> Value:
    return _affine(lf, data(lf, args[0]), -1.0, 0.0)


@rule("Div")
def _div(lf, node, args: list) -> Value:
    a, b = args[0], args[1]
    if isinstance(a, Tensor) and scalar(b) is not None and scalar(b) != 0:
        return _affine(lf, a, 1.0 / scalar(b), 0.0)
    x = a if isinstance(a, Tensor) else data(lf, b)
    return lf.pending("no division by a tensor (a tensor divides by a number only)", [x], x.shape)


@rule("Mul")
def _mul(lf, node, args: list) -> Value:
    tensors = [a for a in args if isinstance(a, Tensor)]
    if len(tensors) == 2:
        a, b = tensors
        _same_layout(lf, a, b, "a product")
        found = _gated(lf, a, b) or _gated(lf, b, a)
        if found is not None:
            return found
        return lf.add("mul", tensors, _broadcast(tensors), perm=a.perm)
    x, other = tensors[0], args[1] if args[0] is tensors[0] else args[0]
    c = scalar(other)
    if c is not None:
        gelu = _gelu_half(lf, x, c)
        return gelu if gelu is not None else _affine(lf, x, c, 0.0)
    factors = per_channel(x, other)
    core = lf.of(x)
    if factors is not None and core.attrs.get("stage") == "core" and lf.only_use(x):
        return lf.pending("no group norm without its per-channel shift", [x], x.shape,
                          **{**core.attrs, "stage": "scaled", "weight": factors})
    if factors is not None:
        shape = (x.shape[1],) + (1,) * (x.rank - 2)
        return lf.add("layer_scale", [x], x.shape, {}, {"weight": factors.reshape(shape)}, perm=x.perm)
    return lf.pending("no layer multiplying by a constant tensor (only a number, or a factor per channel)",
                      [x], x.shape)


def _gated(lf, x: Tensor, gate: Tensor) -> Tensor | None:
    """x·f(x) for the gates exporters write out: silu, hardswish, mish; and GELU's x·(erf(x/√2) + 1)."""
    for op, cnnc in (("sigmoid", "swish"), ("hardsigmoid", "hardswish")):
        if _is(lf, gate, op, x.layer) is not None and lf.only_use(gate):
            return lf.add(cnnc, [x], x.shape, perm=x.perm)
    tanh = _is(lf, gate, "tanh")
    if tanh is not None and lf.only_use(gate):
        soft = lf.layers[tanh.inputs[0]]
        if soft.op == "?Softplus" and soft.inputs == [x.layer]:
            return lf.add("mish", [x], x.shape, perm=x.perm)
    if _erf_plus_one(lf, gate, x) and lf.only_use(gate):
        return lf.pending("no x·(erf(x/√2) + 1) without the factor 0.5 (GELU)", [x], x.shape, x.perm,
                          gelu_of=x.layer)
    half = _is(lf, x, "affine")      # (0.5·x)·(erf(x/√2) + 1): the factor taken first
    if half is not None and (half.attrs["scale"], half.attrs["shift"]) == (0.5, 0.0) and lf.only_use(x) \
            and lf.only_use(gate):
        source = lf.layers[half.inputs[0]]
        if _erf_plus_one(lf, gate, Tensor(source.id, source.shape, x.perm)):
            return lf.add("gelu", [Tensor(source.id, source.shape, x.perm)], source.shape, perm=x.perm)
    return None


def _erf_plus_one(lf, t: Tensor, x: Tensor) -> bool:
    """Is t = erf(x/√2) + 1 (as affine(1, 1) of erf of affine(1/√2, 0) of x)?"""
    plus = _is(lf, t, "affine")
    if plus is None or plus.attrs["scale"] != 1.0 or plus.attrs["shift"] != 1.0:
        return False
    erf = lf.layers[plus.inputs[0]]
    if erf.op != "?Erf":
        return False
    scaled = lf.layers[erf.inputs[0]]
    return (scaled.op == "affine" and abs(scaled.attrs["scale"] - 2 ** -0.5) < 1e-6 and scaled.attrs["shift"] == 0
            and scaled.inputs == [x.layer])


def _gelu_half(lf, t: Tensor, c: float) -> Tensor | None:
    """GELU's last step: 0.5 times x·(erf(x/√2) + 1)."""
    layer = lf.of(t)
    if abs(c - 0.5) < 1e-7 and layer.op == "?Mul" and "gelu_of" in layer.attrs and lf.only_use(t):
        x = lf.layers[layer.attrs["gelu_of"]]
        return lf.add("gelu", [Tensor(x.id, x.shape, t.perm)], x.shape, perm=t.perm)
    return None


@rule("Max", "Min")
def _extremum(lf, node, args: list) -> Value:
    tensors = [a for a in args if isinstance(a, Tensor)]
    op = "maximum" if node.op_type == "Max" else "minimum"
    if len(tensors) != len(args):
        c = [scalar(a) for a in args if not isinstance(a, Tensor)]
        if node.op_type == "Max" and c == [0.0] and len(tensors) == 1:
            return lf.add("relu", tensors, tensors[0].shape, perm=tensors[0].perm)
        return lf.pending(f"no {op} of a tensor and a constant (max(x, 0) is relu)", tensors, tensors[0].shape)
    out = tensors[0]
    for other in tensors[1:]:
        _same_layout(lf, out, other, f"a {op}")
        out = lf.add(op, [out, other], _broadcast([out, other]), perm=out.perm)
    return out


def _broadcast(tensors: list[Tensor]) -> tuple:
    shape = list(tensors[0].shape)
    for t in tensors[1:]:
        for i, d in enumerate(t.shape):
            if shape[i] == 1:
                shape[i] = d
    return tuple(shape)


# ------------------------------------------------------- pooling
@rule("MaxPool", "AveragePool", "LpPool")
def _pool(lf, node, args: list) -> Value | list[Value]:
    x = data(lf, args[0])
    channels_first(lf, x, node.op_type)
    kernel = pairs(lf, node, x, "kernel_shape", 1)
    stride, dilation = pairs(lf, node, x, "strides", 1), pairs(lf, node, x, "dilations", 1)
    pad = padding(lf, node, x, kernel, stride, dilation)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    shape = windowed(x, x.shape[1], kernel, stride, pad, dilation, ceil)
    if node.op_type == "LpPool":
        p = int(node.attrs.get("p", 2))
        if any(v for side in pad for v in side) or p % 2:
            return lf.pending("no padded lp pooling, nor one of an odd p (ONNX's takes |x|, cnnc's x)", [x], shape)
        return lf.add("lppool", [x], shape, {"k": kernel, "stride": stride, "p": float(p), "ceil_mode": ceil})
    if node.op_type == "AveragePool":
        if kernel == (1, 1) and stride == (1, 1) and not any(p for side in pad for p in side):
            return x                      # a 1x1 average is the identity (an adaptive pool to the same size)
        return lf.add("avgpool", [x], shape, {"k": kernel, "stride": stride, "pad": pad, "ceil_mode": ceil,
                                              "count_include_pad": bool(node.attrs.get("count_include_pad", 0))})
    pooled = lf.add("maxpool", [x], shape, {"k": kernel, "stride": stride, "pad": pad, "dilation": dilation,
                                            "ceil_mode": ceil})
    if len(node.outputs) > 1 and node.outputs[1]:
        if int(node.attrs.get("storage_order", 0)):
            raise lf.refuse("max pooling indices in column-major order")
        return [pooled, lf.pending("no max-pooling indices on their own (cnnc's unpool reads them)", [pooled],
                                   shape, pool=pooled.layer, stage="indices")]
    return pooled


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, node.op_type)
    op = "global_avgpool" if node.op_type == "GlobalAveragePool" else "global_maxpool"
    return lf.add(op, [x], on_grid(x, x.shape[1], 1, 1))


@rule("ReduceMean", "ReduceMax")
def _reduce(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    axes = node.attrs.get("axes")
    if len(args) > 1 and args[1] is not None:
        axes = list(const(lf, args[1], "its axes"))
    axes = sorted(int(a) % x.rank for a in (axes or []))
    onnx_spatial = sorted(list(x.perm).index(a) if x.perm else a for a in range(2, x.rank))
    if axes != onnx_spatial:
        return lf.pending(f"no reduction over axes {axes} (cnnc's global pools reduce H and W)", [x], x.shape)
    op = "global_avgpool" if node.op_type == "ReduceMean" else "global_maxpool"
    pooled = lf.add(op, [x], on_grid(x, x.shape[1], 1, 1))
    if node.attrs.get("keepdims", 1):
        return Tensor(pooled.layer, pooled.shape, x.perm)
    return lf.add("flatten", [pooled], (BATCH, x.shape[1]))


# ------------------------------------------------------- structure
@rule("Flatten")
def _flatten(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    if int(node.attrs.get("axis", 1)) != 1:
        return lf.pending("no flatten that keeps axes other than the batch", [x], x.shape)
    return _flat(lf, x)


def _flat(lf, x: Tensor) -> Tensor:
    if x.rank == 2:
        return x
    if x.perm is not None and any(d != 1 for d in x.shape[2:]):
        raise lf.refuse("a flatten of a channels-last tensor", "its order differs from cnnc's channels-first one")
    n = 1
    for d in x.shape[1:]:
        n = n * d
    return lf.add("flatten", [x], (BATCH, n))


@rule("Squeeze")
def _squeeze(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    axes = node.attrs.get("axes")
    if len(args) > 1 and args[1] is not None:
        axes = list(const(lf, args[1], "its axes"))
    if axes is not None and sorted(int(a) % x.rank for a in axes) == list(range(2, x.rank)) \
            and all(d == 1 for d in x.shape[2:]):
        return _flat(lf, x)
    return lf.pending("no squeeze other than of a pooled [N, C, 1, 1]", [x], x.shape)


@rule("Reshape")
def _reshape(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    target = as_sizes(args[1])
    if target is None:
        raise lf.refuse("a reshape to a size computed from the data")
    dims = list(target.values)
    onnx = x.onnx_shape
    dims = [onnx[i] if d == 0 and not node.attrs.get("allowzero", 0) else d for i, d in enumerate(dims)]
    if tuple(dims) == tuple(onnx):
        return x
    layer = lf.of(x)
    stage = layer.attrs.get("stage")
    if stage == "normed" and _same_dims(dims, lf.layers[layer.attrs["source"]].shape):
        return lf.pending("no group norm without its per-channel scale and shift", [x], dims,
                          **{**layer.attrs, "stage": "core"})
    if stage == "swapped" and _same_dims(dims, lf.layers[layer.attrs["source"]].shape):
        src = lf.layers[layer.attrs["source"]]
        return lf.add("channel_shuffle", [Tensor(src.id, src.shape)], src.shape, {"groups": layer.attrs["groups"]})
    if stage == "indices" and dims == [-1]:
        return lf.pending("no max-pooling indices on their own", [x], (-1,),
                          **{**layer.attrs, "stage": "flat_indices"})
    if dims == [-1]:
        return lf.pending("no reshape of a whole batch into a vector", [x], (-1,), source=x.layer, stage="flat")
    if stage == "scattered" and _same_dims(dims, lf.layers[layer.attrs["input"]].shape):
        return _unpool(lf, layer)
    if x.perm is not None:
        raise lf.refuse("a reshape of a channels-last tensor")
    if len(dims) == 2 and _is_batch(dims[0]) and (dims[1] == -1 or _same_size(dims[1], x.shape[1:])):
        return _flat(lf, x)
    if len(dims) == 3 and _is_batch(dims[0]) and x.rank >= 3 and isinstance(dims[1], int) and dims[1] > 0 \
            and x.shape[1] % dims[1] == 0 and (dims[2] == -1 or _same_size(dims[2] * dims[1], x.shape[1:])):
        rest = -1 if any(is_symbolic(d) for d in x.shape[1:]) else _size(x.shape[1:]) // dims[1]
        return lf.pending("no reshape into channel groups (a group norm's first step)", [x],
                          (BATCH, dims[1], rest), source=x.layer, groups=int(dims[1]), stage="grouped")
    if _channel_groups(dims, x):
        return lf.pending("no reshape into channel groups (a channel shuffle's first step)", [x], tuple(dims),
                          source=x.layer, groups=int(dims[1]), rank=x.rank, stage="split")
    return lf.pending(f"no reshape from {_show(onnx)} to {_show(dims)}", [x], x.shape)


def _channel_groups(dims: list, x: Tensor) -> bool:
    """[N, g, C/g, ...the rest of x's axes] (PyTorch's view), or [N, g, C/g, -1] (the rest flattened)."""
    if x.rank < 3 or len(dims) < 4 or not _is_batch(dims[0]) or not isinstance(dims[1], int) or dims[1] < 2:
        return False
    c = x.shape[1]
    if not isinstance(c, int) or c % dims[1] or dims[2] not in (c // dims[1], -1):
        return False
    rest = dims[3:]
    return rest == [-1] or (len(rest) == x.rank - 2 and all(_equal(a, b) for a, b in zip(rest, x.shape[2:])))


def _is_batch(d) -> bool:
    """A reshape's first size that keeps the batch: N read by Shape, or 1 (a model exported for one
    sample), or -1 with the rest given."""
    return (is_symbolic(d) and d == BATCH) or (isinstance(d, int) and d in (1, -1))


def _size(dims):
    n = 1
    for v in dims:
        n = n * v
    return n


def _same_size(d, dims) -> bool:
    return d == _size(dims)


def _same_dims(a, b) -> bool:
    """A reshape's sizes `a` give the shape `b` (a -1 matches any size; the first is the batch's)."""
    return len(a) == len(b) and bool(a) and _is_batch(a[0]) and \
        all(_equal(x, y) or x == -1 for x, y in zip(a[1:], b[1:]))


def _show(dims) -> str:
    return "[" + ", ".join("N" if (not isinstance(d, int) and d == BATCH) else str(d) for d in dims) + "]"


@rule("Transpose")
def _transpose(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    perm = tuple(int(p) for p in node.attrs.get("perm", range(x.rank)[::-1]))
    layer = lf.of(x)
    if len(perm) != x.rank and layer.attrs.get("stage") != "split":
        return lf.pending(f"no transpose {list(perm)} of this tensor", [x], x.shape)
    if layer.attrs.get("stage") == "split" and perm == (0, 2, 1) + tuple(range(3, len(perm))):
        return lf.pending("no transposed channel groups (a channel shuffle's middle step)", [x], layer.shape,
                          **{**layer.attrs, "stage": "swapped"})
    current = x.perm or tuple(range(x.rank))
    composed = tuple(current[p] for p in perm)
    if composed == tuple(range(x.rank)):
        return Tensor(x.layer, x.shape, None)
    if composed == CHANNELS_LAST.get(x.rank):
        return Tensor(x.layer, x.shape, composed)
    return lf.pending(f"no transpose {list(perm)} (only to channels-last and back, or a channel shuffle)",
                      [x], x.shape)


@rule("Concat")
def _concat(lf, node, args: list) -> Value:
    tensors = [data(lf, a, "every input") for a in args]
    for t in tensors[1:]:
        _same_layout(lf, tensors[0], t, "a concatenation")
    axis = int(node.attrs["axis"]) % tensors[0].rank
    cnnc_axis = tensors[0].perm[axis] if tensors[0].perm else axis
    if cnnc_axis != 1:
        return lf.pending(f"no concatenation along axis {axis} (cnnc joins channels)", tensors, tensors[0].shape)
    if len(tensors) == 1:
        return tensors[0]
    # DenseNet joins all earlier features again at each layer: reuse an earlier concatenation of a prefix
    # (the same values), so each layer joins what the last one joined and its own new features.
    operands = tuple(t.layer for t in tensors)
    joined = lf.memo.setdefault("joins", {})      # operands as the model wrote them -> their concat
    for k in range(len(tensors) - 1, 1, -1):
        earlier = joined.get(operands[:k])
        if earlier is not None:
            tensors = [Tensor(earlier, lf.layers[earlier].shape, tensors[0].perm)] + tensors[k:]
            break
    c = sum(t.shape[1] for t in tensors)
    out = lf.add("concat", tensors, (BATCH, c, *tensors[0].shape[2:]), perm=tensors[0].perm)
    joined[operands] = out.layer
    return out


@rule("Split")
def _split(lf, node, args: list) -> list[Value]:
    x = data(lf, args[0])
    axis = int(node.attrs.get("axis", 0)) % x.rank
    if (x.perm[axis] if x.perm else axis) != 1:
        return [lf.pending("no split along an axis other than the channels", [x], x.shape) for _ in node.outputs]
    sizes = node.attrs.get("split")
    if len(args) > 1 and args[1] is not None:
        sizes = list(const(lf, args[1], "its sizes"))
    c = x.shape[1]
    if sizes is None:
        n = len(node.outputs)
        sizes = [c // n] * n
    out, start = [], 0
    for size in sizes:
        out.append(lf.add("slice", [x], (BATCH, int(size), *x.shape[2:]), {"start": start, "stop": start + int(size)},
                          perm=x.perm))
        start += int(size)
    return out


@rule("Slice")
def _slice(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    starts, ends = as_sizes(args[1]), as_sizes(args[2])
    axes = list(const(lf, args[3], "its axes")) if len(args) > 3 and args[3] is not None else \
        list(range(len(starts.values)))
    steps = list(const(lf, args[4], "its steps")) if len(args) > 4 and args[4] is not None else [1] * len(axes)
    if any(int(s) != 1 for s in steps):
        return lf.pending("no strided slice", [x], x.shape)
    axes = [(x.perm[int(a) % x.rank] if x.perm else int(a) % x.rank) for a in axes]
    if axes == [1] and starts.known() and ends.known():
        c = x.shape[1]
        start, stop = int(starts.values[0]), int(ends.values[0])
        start, stop = (start + c if start < 0 else start), min(stop + c if stop < 0 else stop, c)
        if (start, stop) == (0, c):
            return x
        return lf.add("slice", [x], (BATCH, stop - start, *x.shape[2:]), {"start": start, "stop": stop},
                      perm=x.perm)
    if sorted(axes) == [2, 3] and x.rank == 4:
        return _crop(lf, x, dict(zip(axes, starts.values)), dict(zip(axes, ends.values)))
    return lf.pending(f"no slice along axes {axes} (cnnc slices channels, and crops H and W to another "
                      "tensor's size)", [x], x.shape)


def _crop(lf, x: Tensor, starts: dict, ends: dict) -> Value:
    """A slice of H and W: a centre crop to the size of a tensor made before (cnnc's crop(like = t))."""
    size = (ends[2] - starts[2], ends[3] - starts[3])
    top, left = (x.shape[2] - size[0]) // 2, (x.shape[3] - size[1]) // 2
    if not (_equal(starts[2], top) and _equal(starts[3], left)):
        return lf.pending("no crop other than a centre crop to another tensor's size", [x], x.shape)
    for layer in reversed(lf.layers):       # the latest tensor of that size (U-Net: the upsampled one)
        if layer.lacks is None and layer.id != x.layer and len(layer.shape) == 4 and \
                _equal(layer.shape[2], size[0]) and _equal(layer.shape[3], size[1]):
            like = Tensor(layer.id, layer.shape)
            return lf.add("crop", [x, like], (BATCH, x.shape[1], *like.shape[2:]))
    return lf.pending(f"no crop to a size no earlier tensor has ({size[0]}x{size[1]})", [x], x.shape)


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


@rule("Pad")
def _pad(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, "Pad")
    if node.attrs.get("mode", "constant") != "constant":
        return lf.pending(f"no {node.attrs['mode']} padding (cnnc pads with a constant)", [x], x.shape)
    pads = node.attrs.get("pads")
    if len(args) > 1 and args[1] is not None:
        pads = list(const(lf, args[1], "its pads"))
    value = scalar(args[2]) if len(args) > 2 and args[2] is not None else float(node.attrs.get("value", 0.0))
    pads = [int(p) for p in pads]
    r = x.rank
    if any(p < 0 for p in pads) or pads[0] or pads[1] or pads[r] or pads[r + 1] or r not in (3, 4):
        return lf.pending("no padding of the batch or channel axes, and no negative padding", [x], x.shape)
    if r == 3:   # a signal's padding: no layer of its own, a conv after it takes it
        padding = ((0, 0), (pads[2], pads[5]))
        return lf.pending("no padding of a signal on its own (a conv after it takes it as its own)", [x],
                          (BATCH, x.shape[1], x.shape[2] + pads[2] + pads[5]), padding=padding, value=value or 0.0)
    padding = ((pads[2], pads[r + 2]), (pads[3], pads[r + 3]))
    shape = (BATCH, x.shape[1], x.shape[2] + sum(padding[0]), x.shape[3] + sum(padding[1]))
    return lf.add("pad", [x], shape, {"padding": padding, "value": value or 0.0})


@rule("Resize")
def _resize(lf, node, args: list) -> Value:
    x = data(lf, args[0])
    channels_first(lf, x, "Resize")
    a = node.attrs
    mode, transform = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        if (transform, a.get("nearest_mode", "round_prefer_floor")) != ("asymmetric", "floor"):
            return lf.pending(f"no nearest resize with {transform} coordinates and {a.get('nearest_mode')} "
                              "rounding (cnnc's is PyTorch's: asymmetric, floor)", [x], x.shape)
        attrs: dict = {"mode": "nearest"}
    elif mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        attrs = {"mode": "bilinear", "align_corners": transform == "align_corners"}
    else:
        return lf.pending(f"no {mode} resize with {transform} coordinates", [x], x.shape)
    inputs = args[1:]
    scales = inputs[1] if len(inputs) > 1 else None
    sizes = as_sizes(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
    axes = [int(v) for v in a.get("axes", range(x.rank))]
    if sizes is not None:
        full = dict(zip(axes, sizes.values))
        origins = dict(zip(axes, [sizes.origin(i) for i in range(len(sizes.values))]))
        spatial = list(range(2, x.rank))
        sources = {origins.get(i, (None,))[0] if origins.get(i) else None for i in spatial}
        size = tuple(full[i] for i in spatial)
        if len(sources) == 1 and None not in sources:
            like = lf.layers[sources.pop()]
            if all(origins[i][1] == i for i in spatial):
                return lf.add("upsample", [x, Tensor(like.id, like.shape)], (BATCH, x.shape[1], *size), attrs)
        if any(is_symbolic(s) for s in size):
            return lf.pending("no resize to a size computed other than from another tensor's", [x], x.shape)
        return lf.add("upsample", [x], (BATCH, x.shape[1], *size), {**attrs, "size": _grid_pair(x, size)})
    factors = const(lf, scales, "its scales").astype(np.float64).reshape(-1)
    factors = dict(zip(axes, factors))
    spatial = [factors.get(i, 1.0) for i in range(2, x.rank)]
    if any(factors.get(i, 1.0) != 1.0 for i in (0, 1)) or any(f != int(f) or f < 1 for f in spatial):
        return lf.pending(f"no resize by the factors {list(factors.values())} (cnnc's are integers over H and W)",
                          [x], x.shape)
    scale = tuple(int(f) for f in spatial)
    size = tuple(n * s for n, s in zip(x.shape[2:], scale))
    return lf.add("upsample", [x], (BATCH, x.shape[1], *size), {**attrs, "scale": _grid_pair(x, scale)})


def _grid_pair(x: Tensor, values: tuple) -> tuple:
    return (1, values[0]) if signal(x) else tuple(values)


# ------------------------------------------------------- cnnc's unpool, as its ONNX exporter writes it
@rule("ConstantOfShape")
def _zeros(lf, node, args: list) -> Value:
    sizes = as_sizes(args[0])
    value = node.attrs.get("value")
    if sizes is not None and len(sizes.values) == 1 and (value is None or not np.any(value)):
        t = next((lf.layers[o[0]] for o in sizes.origins if o), None)
        if t is not None:
            return lf.pending("no tensor of zeros on its own", [Tensor(t.id, t.shape)], (-1,), zeros_of=t.id,
                              stage="zeros")
    raise lf.refuse("a constant of a size computed from the data")


@rule("ScatterElements")
def _scatter(lf, node, args: list) -> Value:
    zeros, idx, values = (data(lf, a) for a in args[:3])
    z, i, v = lf.of(zeros), lf.of(idx), lf.of(values)
    if (node.attrs.get("reduction") == "add" and z.attrs.get("stage") == "zeros" and i.attrs.get("stage") ==
            "flat_indices" and v.attrs.get("stage") == "flat"):
        pool = lf.layers[i.attrs["pool"]]
        return lf.pending("no scatter on its own (an unpool's)", [values], (-1,), stage="scattered",
                          pool=pool.id, input=pool.inputs[0], values=v.attrs["source"])
    return lf.pending("no scatter (other than an unpool's)", [zeros], zeros.shape)


def _unpool(lf, scattered) -> Tensor:
    x = lf.layers[scattered.attrs["values"]]
    target = lf.layers[scattered.attrs["input"]]
    return lf.add("unpool", [Tensor(x.id, x.shape)], target.shape, {"of": scattered.attrs["pool"]})


@rule("MaxUnpool")
def _maxunpool(lf, node, args: list) -> Value:
    x, idx = data(lf, args[0]), data(lf, args[1])
    i = lf.of(idx)
    if i.attrs.get("stage") != "indices":
        raise lf.refuse("an unpool whose indices come from no max pool")
    pool = lf.layers[i.attrs["pool"]]
    if pool.attrs["k"] != pool.attrs["stride"] or any(p for side in pool.attrs["pad"] for p in side):
        return lf.pending("no MaxUnpool after overlapping or padded windows (cnnc's unpool adds where "
                          "windows overlap, MaxUnpool overwrites)", [x], x.shape)
    target = lf.layers[pool.inputs[0]]
    return lf.add("unpool", [x], target.shape, {"of": pool.id})
