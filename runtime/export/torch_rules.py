"""Stage 3 (runtime), export: each op's PyTorch rule — the table `cnnc export --to torch` writes from.

A rule turns one node of a checked graph into a `Layer`: the module's
constructor (`Ctor`, its `Arg`s named by role, so instances of one block that
differ only in values can share a class) and its call in `forward`. Each rule is
registered into its op's entry (`register("torch", op)`, compiler/ops.py);
a 1-D signal's layers have rules of their own (`"torch_signal"`: `nn.Conv1d`,
pools on a unit-height view). Layers PyTorch lacks (a locally connected layer,
cnnc's batchnorm names, an unpool) are source text in `HELPERS`, copied into
the module when used. Every value that reaches the generated text goes through
export/codegen.py's `py_literal`. torch_module.py writes the module from these
rules; the torch engine (train/torch_engine.py) builds its model with it.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ...compiler.graph import Network, Node
from ...compiler.ops import crop_start, implementation, register
from ...dsl.source import CnncError
from .codegen import py_literal

BACKEND = "torch"
EXTRA = "pip install 'cnnc[torch]'"


def require_torch() -> Any:
    """The torch module, or a one-line error naming the extra to install."""
    try:
        import torch
    except ImportError:
        raise CnncError(f"exporting to PyTorch needs PyTorch, which is not installed: run {EXTRA}") from None
    return torch


# ------------------------------------------------------------- layer rules
class Arg(NamedTuple):
    """One constructor argument: `keyword=value` (positional when keyword is None)."""
    keyword: str | None
    role: str           # what it is, which names the class argument when instances differ
    value: Any
    default: Any = ...  # omitted when every instance passes this value


class Ctor(NamedTuple):
    """`callee(args...)` plus an optional suffix (`.requires_grad_(False)`)."""
    callee: str
    args: tuple[Arg, ...]
    suffix: str = ""


class Layer(NamedTuple):
    """A layer's module (None for layers without parameters) and its call; `{m}` is the module."""
    module: Ctor | None
    call: str


HELPERS: dict[str, str] = {}   # helper name -> its generated source (used ones are copied)


def _pair(v: Any) -> Any:
    """(a, a) -> a: PyTorch takes an int for a square size."""
    v = tuple(int(i) for i in v)
    return v[0] if len(set(v)) == 1 else v


def _torch_pad(padding) -> tuple[int, int, int, int]:
    (t, b), (l, r) = padding
    return (int(l), int(r), int(t), int(b))


def _padded(x: str, padding, value: float | None = None) -> str:
    """`F.pad(x, ...)` when any side is padded; `value` pads with a constant other than 0."""
    if not any(_torch_pad(padding)):
        return x
    extra = "" if value is None else f", value={py_literal(float(value))}"
    return f"F.pad({x}, {py_literal(_torch_pad(padding))}{extra})"


def _symmetric(padding) -> bool:
    (t, b), (l, r) = padding
    return t == b and l == r


class Context:
    """What a rule may ask: the graph's shapes, the helpers it uses, which pools an unpool reads."""

    def __init__(self, net: Network):
        self.net = net
        self.helpers: list[str] = []
        self.unpooled = {n.attrs["of"] for n in net.layers() if n.op == "unpool"}

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.net.shapes[name])

    def channels(self, node: Node) -> int:
        return self.shape(node.inputs[0])[0]

    def helper(self, name: str) -> str:
        if name not in self.helpers:
            self.helpers.append(name)
        return name

    def refuse(self, node: Node, why: str) -> CnncError:
        return CnncError(f"cannot export layer '{node.name}' ({node.layer or node.op}) to PyTorch: {why}", node.loc)


Rule = Callable[[Context, Node, list[str]], Layer]


def rule_of(op: str) -> Rule | None:
    return implementation(op, BACKEND)


def _frozen(a) -> str:
    return "" if a.get("trainable", True) and a.get("weights") is None else ".requires_grad_(False)"


@register(BACKEND, "conv")
def _conv(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    sym = _symmetric(a["padding"])
    args = (Arg(None, "in_channels", e.channels(node)), Arg(None, "channels", int(a["out_channels"])),
            Arg(None, "kernel", _pair(a["kernel"])), Arg("stride", "stride", _pair(a["stride"]), 1),
            Arg("padding", "padding", _pair((a["padding"][0][0], a["padding"][1][0])) if sym else 0, 0),
            Arg("dilation", "dilation", _pair(a["dilation"]), 1), Arg("groups", "groups", int(a["groups"]), 1),
            Arg("bias", "bias", bool(a["bias"]), True))
    call = "{m}(" + (x[0] if sym else _padded(x[0], a["padding"])) + ")"
    return Layer(Ctor("nn.Conv2d", args, _frozen(a)), call)


# ----------------------------------------------------------- 1-D signals
# A layer on a [C, L] signal has unit-height attributes (compiler/ops.py, "1-D signals"); its PyTorch
# form is registered as "torch_signal": nn.Conv1d for conv (whose [O, C/g, k] weight is cnnc's), and
# the 2-D pooling/upsampling of a parameter-free layer on x.unsqueeze(2), squeezed back.
SIGNAL = "torch_signal"


def is_signal(e: Context, node: Node) -> bool:
    return any(len(e.net.shapes[i]) == 2 for i in node.inputs)


def rule_for(e: Context, node: Node) -> Rule | None:
    """The rule of a node: its signal form when it works on a [C, L] signal and has one."""
    signal = implementation(node.op, SIGNAL) if is_signal(e, node) else None
    return signal or rule_of(node.op)


@register(SIGNAL, "conv")
def _conv1d(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    (left, right) = a["padding"][1]
    args = (Arg(None, "in_channels", e.channels(node)), Arg(None, "channels", int(a["out_channels"])),
            Arg(None, "kernel", int(a["kernel"][1])), Arg("stride", "stride", int(a["stride"][1]), 1),
            Arg("padding", "padding", int(left) if left == right else 0, 0),
            Arg("dilation", "dilation", int(a["dilation"][1]), 1), Arg("groups", "groups", int(a["groups"]), 1),
            Arg("bias", "bias", bool(a["bias"]), True))
    call = "{m}(" + (x[0] if left == right else _padded(x[0], a["padding"])) + ")"
    return Layer(Ctor("nn.Conv1d", args, _frozen(a)), call)


def _unit_height(op: str) -> Rule:
    """A parameter-free 2-D rule on the signal viewed as a [C, 1, L] image."""
    def rule(e: Context, node: Node, x: list[str]) -> Layer:
        layer = rule_of(op)(e, node, [f"{v}.unsqueeze(2)" for v in x])
        return Layer(None, f"({layer.call}).squeeze(2)")
    return rule


for _op in ("maxpool", "avgpool", "lppool", "upsample", "global_avgpool", "global_maxpool", "spatial_dropout"):
    register(SIGNAL, _op)(_unit_height(_op))


@register(BACKEND, "deconv")
def _deconv(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    sym = _symmetric(a["padding"])
    args = (Arg(None, "in_channels", e.channels(node)), Arg(None, "channels", int(a["out_channels"])),
            Arg(None, "kernel", _pair(a["kernel"])), Arg("stride", "stride", _pair(a["stride"]), 1),
            Arg("padding", "padding", _pair((a["padding"][0][0], a["padding"][1][0])) if sym else 0, 0),
            Arg("output_padding", "output_padding", _pair(a["output_padding"]), 0),
            Arg("groups", "groups", int(a["groups"]), 1), Arg("bias", "bias", bool(a["bias"]), True),
            Arg("dilation", "dilation", _pair(a["dilation"]), 1))
    call = "{m}(" + x[0] + ")"
    if not sym:   # PyTorch removes the same amount from both sides: crop the full output instead
        (t, _), (l, _) = a["padding"]
        _, h, w = e.shape(node.name)
        call += f"[:, :, {int(t)}:{int(t) + h}, {int(l)}:{int(l) + w}]"
    return Layer(Ctor("nn.ConvTranspose2d", args, _frozen(a)), call)


HELPERS["Local"] = '''
class Local(nn.Module):
    """A locally connected layer (unshared weights): output (i, j) uses tile (i % th, j % tw)'s weights."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1), tile=(1, 1), bias=True):
        super().__init__()
        self.kernel_size, self.stride, self.tile = kernel_size, stride, tile
        (kh, kw), (th, tw) = kernel_size, tile
        self.weight = nn.Parameter(torch.zeros(out_channels, th, tw, in_channels, kh, kw))
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels, th, tw)) if bias else None)

    def forward(self, x):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (th, tw) = self.kernel_size, self.stride, self.tile
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), stride=(sh, sw)).reshape(n, c, kh, kw, oh, ow)
        rows = torch.arange(oh, device=x.device) % th
        columns = torch.arange(ow, device=x.device) % tw
        weight = self.weight[:, rows][:, :, columns]          # [O, oh, ow, C, kh, kw]
        y = torch.einsum("ncklij,oijckl->noij", cols, weight)
        if self.bias is not None:
            y = y + self.bias[:, rows][:, :, columns]
        return y
'''


@register(BACKEND, "local")
def _local(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    args = (Arg(None, "in_channels", e.channels(node)), Arg(None, "channels", int(a["out_channels"])),
            Arg(None, "kernel", tuple(int(k) for k in a["kernel"])),
            Arg("stride", "stride", tuple(int(s) for s in a["stride"]), (1, 1)),
            Arg("tile", "tile", tuple(int(t) for t in a["tile"]), (1, 1)), Arg("bias", "bias", bool(a["bias"]), True))
    return Layer(Ctor(e.helper("Local"), args), "{m}(" + _padded(x[0], a["padding"]) + ")")


def _channels_last(e: Context, node: Node, x: str) -> str:
    """`{m}` applied to the channels of every position: the module on channels-last, moved back
    (a flat input is its own channel vector)."""
    if len(e.net.shapes[node.inputs[0]]) == 1:
        return "{m}(" + x + ")"
    return "{m}(" + x + ".movedim(1, -1)).movedim(-1, 1)"


@register(BACKEND, "linear")
def _linear(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    args = (Arg(None, "in_features", e.channels(node)), Arg(None, "features", int(a["out_features"])),
            Arg("bias", "bias", bool(a["bias"]), True))
    call = _channels_last(e, node, x[0]) if a.get("over") == "channels" else "{m}(" + x[0] + ")"
    return Layer(Ctor("nn.Linear", args, _frozen(a)), call)


HELPERS["LayerScale"] = '''
class LayerScale(nn.Module):
    """A learned factor per channel (ConvNeXt's layer scale), its weight shaped to broadcast: [C, 1, 1]."""

    def __init__(self, shape, value=1e-06):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, value))

    def forward(self, x):
        return x * self.weight
'''


@register(BACKEND, "layer_scale")
def _layer_scale(e: Context, node: Node, x: list[str]) -> Layer:
    shape = (e.channels(node),) + (1,) * (len(e.shape(node.inputs[0])) - 1)
    args = (Arg(None, "shape", shape), Arg("value", "value", float(node.attrs["value"]), 1e-6))
    return Layer(Ctor(e.helper("LayerScale"), args), "{m}(" + x[0] + ")")


HELPERS["stochastic_depth"] = '''
def stochastic_depth(x, p, mode, training):
    """torchvision.ops.stochastic_depth: in training, zero each sample (mode "row") or the whole batch
    ("batch") with probability p and scale what is kept by 1 / (1 - p); the identity otherwise."""
    if not training or p == 0.0:
        return x
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(1.0 - p)
    return x * noise.div_(1.0 - p)
'''


@register(BACKEND, "stochastic_depth")
def _stochastic_depth(e: Context, node: Node, x: list[str]) -> Layer:
    return Layer(None, _call(e.helper("stochastic_depth"), x[0], py_literal(float(node.attrs["p"])),
                             py_literal(str(node.attrs["mode"])), "self.training"))


HELPERS["BatchNorm"] = '''
class BatchNorm(nn.Module):
    """Batch normalisation under cnnc's names: weight, bias and the running_mean/running_var buffers."""

    def __init__(self, channels, eps=1e-05, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)
'''


@register(BACKEND, "batchnorm")
def _batchnorm(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    args = (Arg(None, "channels", e.channels(node)), Arg("eps", "eps", float(a["eps"]), 1e-5),
            Arg("momentum", "momentum", float(a["momentum"]), 0.1))
    return Layer(Ctor(e.helper("BatchNorm"), args), "{m}(" + x[0] + ")")


def _group_norm(groups: Callable[[Context, Node], int]) -> Rule:
    def rule(e: Context, node: Node, x: list[str]) -> Layer:
        args = (Arg(None, "groups", int(groups(e, node))), Arg(None, "channels", e.channels(node)),
                Arg("eps", "eps", float(node.attrs["eps"]), 1e-5))
        return Layer(Ctor("nn.GroupNorm", args), "{m}(" + x[0] + ")")
    return rule


@register(BACKEND, "layernorm")
def _layernorm(e: Context, node: Node, x: list[str]) -> Layer:
    if node.attrs.get("over") != "channels":
        return _group_norm(lambda e, n: 1)(e, node, x)
    args = (Arg(None, "channels", e.channels(node)), Arg("eps", "eps", float(node.attrs["eps"]), 1e-5))
    return Layer(Ctor("nn.LayerNorm", args), _channels_last(e, node, x[0]))



register(BACKEND, "instancenorm")(_group_norm(lambda e, n: e.channels(n)))
register(BACKEND, "groupnorm")(_group_norm(lambda e, n: n.attrs["groups"]))


def _call(fn: str, *args: str, **kwargs: Any) -> str:
    """`fn(args..., key=literal...)`: args are generated expressions, keyword values are data."""
    return f"{fn}({', '.join(list(args) + [f'{k}={py_literal(v)}' for k, v in kwargs.items()])})"


def _functional(fn: str, **attrs: str) -> Rule:
    """An op without parameters: `fn(x, key=attribute...)`."""
    return lambda e, node, x: Layer(None, _call(fn, x[0], **{k: node.attrs[a] for k, a in attrs.items()}))


for _op, _fn, _attrs in (("relu", "F.relu", {}), ("relu6", "F.relu6", {}), ("hardswish", "F.hardswish", {}),
                         ("sigmoid", "torch.sigmoid", {}), ("hardsigmoid", "F.hardsigmoid", {}),
                         ("tanh", "torch.tanh", {}), ("swish", "F.silu", {}), ("mish", "F.mish", {}),
                         ("gelu", "F.gelu", {}), ("leaky_relu", "F.leaky_relu", {"negative_slope": "slope"}),
                         ("elu", "F.elu", {"alpha": "alpha"}),
                         ("lrn", "F.local_response_norm", {"size": "size", "alpha": "alpha", "beta": "beta",
                                                           "k": "k"})):
    register(BACKEND, _op)(_functional(_fn, **_attrs))

register(BACKEND, "softmax")(lambda e, n, x: Layer(None, f"F.softmax({x[0]}, dim=1)"))
register(BACKEND, "flatten")(lambda e, n, x: Layer(None, f"torch.flatten({x[0]}, 1)"))
register(BACKEND, "identity")(lambda e, n, x: Layer(None, x[0]))
register(BACKEND, "add")(lambda e, n, x: Layer(None, " + ".join(x)))
register(BACKEND, "mul")(lambda e, n, x: Layer(None, " * ".join(x)))
register(BACKEND, "concat")(lambda e, n, x: Layer(None, f"torch.cat([{', '.join(x)}], 1)"))
register(BACKEND, "global_avgpool")(lambda e, n, x: Layer(None, f"{x[0]}.mean((2, 3), keepdim=True)"))
register(BACKEND, "global_maxpool")(lambda e, n, x: Layer(None, f"{x[0]}.amax((2, 3), keepdim=True)"))
register(BACKEND, "adaptive_avgpool")(
    lambda e, n, x: Layer(None, _call("F.adaptive_avg_pool2d", x[0], output_size=tuple(n.attrs["output"]))))
register(BACKEND, "adaptive_maxpool")(
    lambda e, n, x: Layer(None, _call("F.adaptive_max_pool2d", x[0], output_size=tuple(n.attrs["output"]))))
register(BACKEND, "pad")(lambda e, n, x: Layer(None, _padded(x[0], n.attrs["padding"], n.attrs["value"])
                                               if any(_torch_pad(n.attrs["padding"])) else x[0]))


register(BACKEND, "slice")(lambda e, n, x: Layer(None, f"{x[0]}[:, {int(n.attrs['start'])}:{int(n.attrs['stop'])}]"))
register(BACKEND, "channel_shuffle")(
    lambda e, n, x: Layer(None, _call("F.channel_shuffle", x[0], groups=int(n.attrs["groups"]))))


@register(BACKEND, "upsample")
def _upsample(e: Context, node: Node, x: list[str]) -> Layer:
    a, mode = node.attrs, str(node.attrs["mode"])
    extra = {"align_corners": bool(a.get("align_corners"))} if mode == "bilinear" else {}
    if a.get("scale") is not None:
        return Layer(None, _call("F.interpolate", x[0], scale_factor=tuple(float(s) for s in a["scale"]),
                                 mode=mode, **extra))
    if a.get("size") is not None:
        return Layer(None, _call("F.interpolate", x[0], size=tuple(int(s) for s in a["size"]), mode=mode, **extra))
    return Layer(None, _call("F.interpolate", x[0], f"size={x[1]}.shape[2:]", mode=mode, **extra))


def _pairwise(fn: str, x: list[str]) -> str:
    acc = x[0]
    for other in x[1:]:
        acc = f"{fn}({acc}, {other})"
    return acc


register(BACKEND, "maximum")(lambda e, n, x: Layer(None, _pairwise("torch.maximum", x)))
register(BACKEND, "minimum")(lambda e, n, x: Layer(None, _pairwise("torch.minimum", x)))


@register(BACKEND, "affine")
def _affine(e: Context, node: Node, x: list[str]) -> Layer:
    scale, shift = py_literal(float(node.attrs["scale"])), py_literal(float(node.attrs["shift"]))
    return Layer(None, f"{x[0]} * {scale} + {shift}")


@register(BACKEND, "crop")
def _crop(e: Context, node: Node, x: list[str]) -> Layer:
    (_, h, w), (_, oh, ow) = e.shape(node.inputs[0]), e.shape(node.name)
    top, left = crop_start(node.attrs.get("offset"), (h, w), (oh, ow))
    return Layer(None, f"{x[0]}[:, :, {top}:{top + oh}, {left}:{left + ow}]")


@register(BACKEND, "dropout")
def _dropout(e: Context, node: Node, x: list[str]) -> Layer:
    p = float(node.attrs["p"])
    call = _call("F.dropout", x[0], py_literal(p), "self.training")
    if node.attrs.get("mode") == "downgrade_in_infer":   # no scaling in training, scaled by 1 - p after
        keep = py_literal(1.0 - p)
        return Layer(None, f"({call} * {keep} if self.training else {x[0]} * {keep})")
    return Layer(None, call)


register(BACKEND, "spatial_dropout")(
    lambda e, n, x: Layer(None, _call("F.dropout2d", x[0], py_literal(float(n.attrs["p"])), "self.training")))


def _window_out(n: int, k: int, s: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooled size of an already padded axis (padding 0)."""
    span = n - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    return out - 1 if ceil_mode and (out - 1) * s >= n else out


def _native_padding(a) -> bool:
    """PyTorch pads a pool itself when both sides match and each is at most half the kernel."""
    (t, b), (l, r) = a["padding"]
    return _symmetric(a["padding"]) and 2 * t <= a["kernel"][0] and 2 * l <= a["kernel"][1]


def _check_explicit(e: Context, node: Node, dilation=(1, 1)) -> None:
    """Padding first, then pooling: refuse when ceil_mode would make PyTorch's size differ."""
    image = lambda shape: (shape[0], 1, shape[1]) if len(shape) == 2 else shape   # a signal's unit height
    a, (_, h, w) = node.attrs, image(e.shape(node.inputs[0]))
    (t, b), (l, r) = a["padding"]
    got = tuple(_window_out(n, k, s, d, a.get("ceil_mode", False))
                for n, k, s, d in zip((h + t + b, w + l + r), a["kernel"], a["stride"], dilation))
    if got != image(e.shape(node.name))[1:]:
        raise e.refuse(node, f"with this padding and ceil_mode PyTorch's pooled size is {list(got)}, "
                             f"cnnc's {list(image(e.shape(node.name))[1:])}")


@register(BACKEND, "maxpool")
def _maxpool(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    kw = {"stride": _pair(a["stride"])}
    if _native_padding(a):
        inp = x[0]
        if any(_torch_pad(a["padding"])):
            kw["padding"] = _pair((a["padding"][0][0], a["padding"][1][0]))
    else:
        _check_explicit(e, node, a["dilation"])
        inp = _padded(x[0], a["padding"], float("-inf"))
    if _pair(a["dilation"]) != 1:
        kw["dilation"] = _pair(a["dilation"])
    if a["ceil_mode"]:
        kw["ceil_mode"] = True
    if node.name in e.unpooled:   # an unpool reads where the maxima were
        kw["return_indices"] = True
    return Layer(None, _call("F.max_pool2d", inp, py_literal(_pair(a["kernel"])), **kw))


HELPERS["max_unpool"] = '''
def max_unpool(x, indices, size, padding):
    """Each value goes where its max pool found the maximum (summed where windows overlap); `size` is
    the pooled (padded) input's [C, H, W], `padding` the pool's explicit ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = padding
    c, h, w = size
    out = x.new_zeros(x.shape[0], c, h * w)
    out = out.scatter_add(2, indices.flatten(2), x.flatten(2)).reshape(x.shape[0], c, h, w)
    return out[:, :, top:h - bottom, left:w - right]
'''


@register(BACKEND, "unpool")
def _unpool(e: Context, node: Node, x: list[str]) -> Layer:
    pool = e.net.node(node.attrs["of"])
    c, h, w = e.shape(pool.inputs[0])
    padding = ((0, 0), (0, 0))
    if not _native_padding(pool.attrs):   # the indices count the explicitly padded plane
        padding = tuple(tuple(int(v) for v in side) for side in pool.attrs["padding"])
        (t, b), (l, r) = padding
        h, w = h + t + b, w + l + r
    return Layer(None, _call(e.helper("max_unpool"), x[0], x[1], py_literal((c, h, w)), py_literal(padding)))


HELPERS["avg_pool_without_padding"] = '''
def avg_pool_without_padding(x, kernel, stride, padding, ceil_mode):
    """Average pooling that pads with zeros but divides by the number of input values in each window."""
    total = F.avg_pool2d(F.pad(x, padding), kernel, stride, ceil_mode=ceil_mode, divisor_override=1)
    ones = F.pad(torch.ones_like(x[:1, :1]), padding)
    count = F.avg_pool2d(ones, kernel, stride, ceil_mode=ceil_mode, divisor_override=1)
    return total / count
'''


@register(BACKEND, "avgpool")
def _avgpool(e: Context, node: Node, x: list[str]) -> Layer:
    a = node.attrs
    k, s, ceil = _pair(a["kernel"]), _pair(a["stride"]), bool(a["ceil_mode"])
    include = bool(a.get("count_include_pad", True))
    if _native_padding(a):
        kw: dict[str, Any] = {"padding": _pair((a["padding"][0][0], a["padding"][1][0]))} \
            if any(_torch_pad(a["padding"])) else {}
        if ceil:
            kw["ceil_mode"] = True
        if not include:
            kw["count_include_pad"] = False
        return Layer(None, _call("F.avg_pool2d", x[0], py_literal(k), py_literal(s), **kw))
    _check_explicit(e, node)
    if include:
        return Layer(None, _call("F.avg_pool2d", _padded(x[0], a["padding"]), py_literal(k), py_literal(s),
                                 **({"ceil_mode": True} if ceil else {})))
    return Layer(None, _call(e.helper("avg_pool_without_padding"), x[0], py_literal(k), py_literal(s),
                             py_literal(_torch_pad(a["padding"])), py_literal(ceil)))


@register(BACKEND, "lppool")
def _lppool(e: Context, node: Node, x: list[str]) -> Layer:
    a, p = node.attrs, float(node.attrs["p"])
    pooled = _call("F.avg_pool2d", f"{x[0]}.pow({py_literal(p)})", py_literal(_pair(a["kernel"])),
                   py_literal(_pair(a["stride"])), ceil_mode=bool(a["ceil_mode"]), divisor_override=1)
    return Layer(None, f"{pooled}.pow({py_literal(1.0 / p)})")
