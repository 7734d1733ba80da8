"""A PyTorch twin of a compiled cnnc network, for benchmarks and as a test oracle.

`TorchTwin(compiled, params)` walks the same graph in the same order with
`torch.nn.functional`, using cnnc's own parameter values, so outputs, losses
and gradients can be compared one to one and step times measured on the very
same model. `TWINS` holds one rule per op of the op table (compiler/ops.py),
written independently of cnnc's kernels; tests/compiler/test_registry.py fails,
naming the op, when an op has no rule here, and checks each rule against the
op's kernel. Only used by bench/ and tests/ (PyTorch is never a runtime
dependency).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F


def _pad(x, padding, value=0.0):
    (t, b), (l, r) = padding
    return F.pad(x, (l, r, t, b), value=value) if (t or b or l or r) else x


@dataclass
class Call:
    """One layer's call: its inputs, normalised attributes, parameters and the pass it runs in."""

    xs: list
    attrs: Mapping[str, Any]
    params: Mapping[str, Any]               # the layer's tensors by contract name (weight, bias, ...)
    training: bool = False
    name: str = ""
    saved: dict = field(default_factory=dict)   # maxpool name -> (indices, padded input shape)
    unpooled: bool = False                      # an unpool reads this (maxpool) layer's indices

    @property
    def x(self):
        return self.xs[0]

    def p(self, name: str):
        return self.params.get(name)


Rule = Callable[[Call], Any]


def _symmetric(padding) -> tuple[int, int] | None:
    """(rows, cols) when each axis is padded alike on both sides: what a PyTorch model would pass."""
    (t, b), (l, r) = padding
    return (t, l) if t == b and l == r else None


def _conv(c: Call):
    # Symmetric padding goes to conv2d itself, as a PyTorch model writes it (an explicit F.pad costs
    # PyTorch a copy forward and backward: ~10% of a CIFAR ResNet-20 step, a handicap, not a twin).
    a = c.attrs
    same = _symmetric(a["padding"])
    x, pad = (c.x, same) if same is not None else (_pad(c.x, a["padding"]), 0)
    return F.conv2d(x, c.p("weight"), c.p("bias"), a["stride"], pad, a["dilation"], a["groups"])


def _deconv(c: Call):
    a = c.attrs
    (pt, pb), (pl, pr) = a["padding"]
    assert pt == pb and pl == pr, "asymmetric deconv padding is not mirrored here"
    return F.conv_transpose2d(c.x, c.p("weight"), c.p("bias"), a["stride"], (pt, pl), a["output_padding"],
                              a["groups"], a["dilation"])


def _local(c: Call):
    """Unshared weights: output (i, j) uses the weights of tile (i mod th, j mod tw)."""
    a, w = c.attrs, c.p("weight")                       # [O, th, tw, C, kh, kw]
    x = _pad(c.x, a["padding"])
    (kh, kw), (th, tw) = a["kernel"], a["tile"]
    n, ch = x.shape[:2]
    cols = F.unfold(x, (kh, kw), stride=a["stride"])    # [N, C·kh·kw, oh·ow]
    oh = (x.shape[2] - kh) // a["stride"][0] + 1
    ow = (x.shape[3] - kw) // a["stride"][1] + 1
    cols = cols.reshape(n, ch, kh, kw, oh, ow)
    rows, columns = torch.arange(oh) % th, torch.arange(ow) % tw
    wfull = w[:, rows][:, :, columns]                   # [O, oh, ow, C, kh, kw]
    y = torch.einsum("ncklij,oijckl->noij", cols, wfull)
    if c.p("bias") is not None:
        y = y + c.p("bias")[:, rows][:, :, columns]
    return y


def _maxpool(c: Call):
    # As a PyTorch model writes it where it can: symmetric padding to max_pool2d itself (not with
    # ceil_mode, whose last-window rule counts explicit padding as input), indices only for an unpool.
    a = c.attrs
    same = _symmetric(a["padding"])
    pad_inside = same is not None and not a["ceil_mode"] and all(
        2 * p <= d * (k - 1) + 1 for p, k, d in zip(same, a["kernel"], a["dilation"]))
    x, pad = (c.x, same) if pad_inside else (_pad(c.x, a["padding"], float("-inf")), 0)
    if not c.unpooled:
        return F.max_pool2d(x, a["kernel"], a["stride"], pad, a["dilation"], a["ceil_mode"])
    y, idx = F.max_pool2d(x, a["kernel"], a["stride"], pad, a["dilation"], a["ceil_mode"], return_indices=True)
    c.saved[c.name] = (idx, x.shape, ((0, 0), (0, 0)) if pad_inside else a["padding"])
    return y


def _unpool(c: Call):
    """Each value goes where its maxpool found the maximum (summed where windows overlap)."""
    idx, shape, ((t, b), (l, r)) = c.saved[c.attrs["of"]]
    n, ch, h, w = shape
    out = torch.zeros(n, ch, h * w, dtype=c.x.dtype)
    out = out.scatter_add(2, idx.flatten(2), c.x.flatten(2)).reshape(n, ch, h, w)
    return out[:, :, t:h - b, l:w - r]


def _avgpool(c: Call):
    a = c.attrs
    (pt, pb), (pl, pr) = a["padding"]
    assert pt == pb and pl == pr, "asymmetric avgpool padding is not mirrored here"
    return F.avg_pool2d(c.x, a["kernel"], a["stride"], (pt, pl), a["ceil_mode"], a.get("count_include_pad", True))


def _lppool(c: Call):
    a, p = c.attrs, float(c.attrs["p"])
    total = F.avg_pool2d(c.x.pow(p), a["kernel"], a["stride"], 0, a["ceil_mode"], divisor_override=1)
    return total.pow(1.0 / p)


def _dropout(c: Call):
    p, mode = c.attrs["p"], c.attrs.get("mode", "upscale_in_train")
    if mode == "downgrade_in_infer":
        return F.dropout(c.x, p, True) * (1 - p) if c.training else c.x * (1 - p)
    return F.dropout(c.x, p, c.training)


def _sum(c: Call):
    out = c.xs[0]
    for other in c.xs[1:]:
        out = out + other
    return out


def _product(c: Call):
    out = c.xs[0]
    for other in c.xs[1:]:
        out = out * other
    return out


def _crop(c: Call):
    (h, w), (lh, lw) = c.x.shape[2:], c.xs[1].shape[2:]
    top, left = c.attrs["offset"] if c.attrs.get("offset") is not None else ((h - lh) // 2, (w - lw) // 2)
    return c.x[:, :, top:top + lh, left:left + lw]


def _slice(c: Call):
    return c.x[:, c.attrs["start"]:c.attrs["stop"]]


def _channel_shuffle(c: Call):
    return F.channel_shuffle(c.x, c.attrs["groups"])


def _batchnorm(c: Call):
    a = c.attrs
    return F.batch_norm(c.x, c.p("running_mean"), c.p("running_var"), c.p("weight"), c.p("bias"),
                        c.training, a["momentum"], a["eps"])


def _upsample(c: Call):
    a, mode = c.attrs, c.attrs["mode"]
    corners = bool(a.get("align_corners")) if mode == "bilinear" else None
    if a.get("scale") is not None:
        return F.interpolate(c.x, scale_factor=a["scale"], mode=mode, align_corners=corners)
    size = tuple(a["size"]) if a.get("size") is not None else c.xs[1].shape[2:]
    return F.interpolate(c.x, size=size, mode=mode, align_corners=corners)


def _maximum(c: Call):
    out = c.xs[0]
    for other in c.xs[1:]:
        out = torch.maximum(out, other)
    return out


def _minimum(c: Call):
    out = c.xs[0]
    for other in c.xs[1:]:
        out = torch.minimum(out, other)
    return out


def _stochastic_depth(c: Call):
    """torchvision.ops.stochastic_depth, restated: a Bernoulli(1 - p) draw per sample (mode row) or
    one per batch, the kept ones scaled by 1 / (1 - p); the identity outside training."""
    p = c.attrs["p"]
    if not c.training or p == 0.0:
        return c.x
    size = [c.x.shape[0]] + [1] * (c.x.ndim - 1) if c.attrs.get("mode", "row") == "row" else [1] * c.x.ndim
    noise = torch.empty(size, dtype=c.x.dtype).bernoulli_(1.0 - p)
    return c.x * noise.div_(1.0 - p)


def _layernorm(c: Call):
    if c.attrs.get("over") == "channels":     # ConvNeXt's LayerNorm2d: F.layer_norm on channels-last
        moved = c.x.movedim(1, -1)
        return F.layer_norm(moved, moved.shape[-1:], c.p("weight"), c.p("bias"), c.attrs.get("eps", 1e-5)).movedim(-1, 1)
    return F.group_norm(c.x, 1, c.p("weight"), c.p("bias"), c.attrs.get("eps", 1e-5))


def _linear(c: Call):
    if c.attrs.get("over") == "channels":     # nn.Linear on channels-last
        return F.linear(c.x.movedim(1, -1), c.p("weight"), c.p("bias")).movedim(-1, 1)
    return F.linear(c.x, c.p("weight"), c.p("bias"))


def _lrn(c: Call):
    a = c.attrs
    return F.local_response_norm(c.x, a.get("size", 5), a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("k", 2.0))


# One rule per op of compiler/ops.py OPS (except `input`, which the twin binds).
TWINS: dict[str, Rule] = {
    "conv": _conv,
    "deconv": _deconv,
    "local": _local,
    "linear": _linear,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "lppool": _lppool,
    "global_avgpool": lambda c: c.x.mean(dim=(2, 3), keepdim=True),
    "global_maxpool": lambda c: c.x.amax(dim=(2, 3), keepdim=True),
    "adaptive_avgpool": lambda c: F.adaptive_avg_pool2d(c.x, c.attrs["output"]),
    "adaptive_maxpool": lambda c: F.adaptive_max_pool2d(c.x, c.attrs["output"]),
    "unpool": _unpool,
    "upsample": _upsample,
    "relu": lambda c: F.relu(c.x),
    "relu6": lambda c: F.relu6(c.x),
    "leaky_relu": lambda c: F.leaky_relu(c.x, c.attrs["slope"]),
    "hardswish": lambda c: F.hardswish(c.x),
    "sigmoid": lambda c: torch.sigmoid(c.x),
    "hardsigmoid": lambda c: F.hardsigmoid(c.x),
    "tanh": lambda c: torch.tanh(c.x),
    "swish": lambda c: F.silu(c.x),
    "mish": lambda c: F.mish(c.x),
    "elu": lambda c: F.elu(c.x, c.attrs.get("alpha", 1.0)),
    "gelu": lambda c: F.gelu(c.x),
    "softmax": lambda c: torch.softmax(c.x, dim=1),
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "instancenorm": lambda c: F.instance_norm(c.x, weight=c.p("weight"), bias=c.p("bias"),
                                              eps=c.attrs.get("eps", 1e-5)),
    "groupnorm": lambda c: F.group_norm(c.x, c.attrs["groups"], c.p("weight"), c.p("bias"),
                                        c.attrs.get("eps", 1e-5)),
    "lrn": _lrn,
    "dropout": _dropout,
    "spatial_dropout": lambda c: F.dropout2d(c.x, c.attrs["p"], c.training),
    "flatten": lambda c: c.x.flatten(1),
    "concat": lambda c: torch.cat(c.xs, dim=1),
    "add": _sum,
    "mul": _product,
    "identity": lambda c: c.x,
    "pad": lambda c: _pad(c.x, c.attrs["padding"], c.attrs.get("value", 0.0)),
    "crop": _crop,
    "slice": _slice,
    "channel_shuffle": _channel_shuffle,
    "affine": lambda c: c.x * c.attrs["scale"] + c.attrs["shift"],
    "maximum": _maximum,
    "minimum": _minimum,
    "layer_scale": lambda c: c.x * c.p("weight"),
    "stochastic_depth": _stochastic_depth,
}


class TorchTwin(torch.nn.Module):
    def __init__(self, compiled, params: dict[str, np.ndarray]):
        super().__init__()
        self.net = compiled.net
        self.order = [n for n in compiled.net.order() if n.op != "input"]
        self.unpooled = {n.attrs["of"] for n in self.order if n.op == "unpool"}
        self.store = torch.nn.ParameterDict()
        self.buffers_ = {}
        for key, value in params.items():
            spec_buffer = key.endswith("running_mean") or key.endswith("running_var")
            tensor = torch.tensor(np.array(value))
            if spec_buffer:
                self.register_buffer(key.replace(".", "__"), tensor)
                self.buffers_[key] = key.replace(".", "__")
            else:
                self.store[key.replace(".", "__")] = torch.nn.Parameter(tensor)

    def p(self, owner: str, name: str):
        key = f"{owner}.{name}"
        if key in self.buffers_:
            return getattr(self, self.buffers_[key])
        safe = key.replace(".", "__")
        return self.store[safe] if safe in self.store else None

    def forward(self, x):
        values = {next(iter(self.net.inputs)): x}
        saved: dict = {}
        for node in self.order:
            xs = [values[i] for i in node.inputs]
            values[node.name] = self._op(node, xs, saved)
        return values[self.net.outputs[0]]

    def _op(self, node, xs, saved):
        rule = TWINS.get(node.op)
        if rule is None:
            raise NotImplementedError(f"TorchTwin has no rule for '{node.op}'")
        owner = node.shares or node.name
        names = ("weight", "bias", "running_mean", "running_var")
        params = {n: t for n in names if (t := self.p(owner, n)) is not None}
        return rule(Call(xs, node.attrs, params, self.training, node.name, saved, node.name in self.unpooled))
