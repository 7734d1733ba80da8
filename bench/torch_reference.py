"""A PyTorch twin of a compiled cnnc network, for benchmarks and as a test oracle.

`TorchTwin(compiled, params)` walks the same graph in the same order with
`torch.nn.functional`, using cnnc's own parameter values, so outputs, losses
and gradients can be compared one to one and step times measured on the very
same model. Only used by bench/ and tests/ (PyTorch is never a runtime
dependency).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _pad(x, padding, value=0.0):
    (t, b), (l, r) = padding
    return F.pad(x, (l, r, t, b), value=value) if (t or b or l or r) else x


class TorchTwin(torch.nn.Module):
    def __init__(self, compiled, params: dict[str, np.ndarray]):
        super().__init__()
        self.net = compiled.net
        self.order = [n for n in compiled.net.order() if n.op != "input"]
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
        for node in self.order:
            xs = [values[i] for i in node.inputs]
            values[node.name] = self._op(node, xs)
        return values[self.net.outputs[0]]

    def _op(self, node, xs):
        a, op = node.attrs, node.op
        owner = node.shares or node.name
        w, b = self.p(owner, "weight"), self.p(owner, "bias")
        x = xs[0]
        if op == "conv":
            return F.conv2d(_pad(x, a["padding"]), w, b, a["stride"], 0, a["dilation"], a["groups"])
        if op == "deconv":
            (pt, pb), (pl, pr) = a["padding"]
            assert pt == pb and pl == pr, "asymmetric deconv padding is not mirrored here"
            return F.conv_transpose2d(x, w, b, a["stride"], (pt, pl), a["output_padding"], a["groups"],
                                      a["dilation"])
        if op == "linear":
            return F.linear(x, w, b)
        if op == "batchnorm":
            return F.batch_norm(x, self.p(owner, "running_mean"), self.p(owner, "running_var"), w, b,
                                self.training, a["momentum"], a["eps"])
        if op == "maxpool":
            return F.max_pool2d(_pad(x, a["padding"], float("-inf")), a["kernel"], a["stride"], 0,
                                a["dilation"], a["ceil_mode"])
        if op == "avgpool":
            assert not any(sum(p) for p in a["padding"]), "padded avgpool is not mirrored here"
            return F.avg_pool2d(x, a["kernel"], a["stride"], 0, a["ceil_mode"])
        if op == "global_avgpool":
            return x.mean(dim=(2, 3), keepdim=True)
        if op == "global_maxpool":
            return x.amax(dim=(2, 3), keepdim=True)
        if op == "flatten":
            return x.flatten(1)
        if op == "add":
            out = xs[0]
            for other in xs[1:]:
                out = out + other
            return out
        if op == "mul":
            out = xs[0]
            for other in xs[1:]:
                out = out * other
            return out
        if op == "concat":
            return torch.cat(xs, dim=1)
        if op == "dropout":
            return F.dropout(x, a["p"], self.training)
        if op == "upsample":
            return F.interpolate(x, scale_factor=a["scale"], mode=a["mode"],
                                 align_corners=False if a["mode"] == "bilinear" else None)
        simple = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu6": F.relu6,
                  "gelu": F.gelu, "swish": F.silu, "mish": F.mish, "hardswish": F.hardswish,
                  "identity": lambda t: t, "softmax": lambda t: torch.softmax(t, dim=1)}
        if op in simple:
            return simple[op](x)
        if op == "leaky_relu":
            return F.leaky_relu(x, a["slope"])
        raise NotImplementedError(f"TorchTwin has no rule for '{op}'")
