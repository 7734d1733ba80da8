"""Stage 3 (runtime): `cnnc compile --emit numpy` — a network as a standalone NumPy module.

`emit` fuses the network for inference (batchnorm folded into the
convolutions, compiler/fusion.py), writes a readable Python module that
imports only NumPy — one small function per op the network actually uses,
then `forward`, a straight-line function in topological order with one named
variable per layer — and saves the (folded) weights beside it as `.npz`:
from a checkpoint written by `cnnc run` if one is given, else the seeded
initial weights the trainer would start from. The generated functions restate
the runtime kernels' semantics (PyTorch's padding, pooling, bilinear and
adaptive-pooling rules) in the plainest NumPy; the tests compare the module's
predictions with the runtime's on the same weights. Ops the generator does not
cover (local, lppool, gelu) are refused with the layer's location.
"""
from __future__ import annotations

import keyword
import re
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..compiler.fusion import fuse
from ..compiler.graph import Network, Node
from ..dsl.source import CnncError
from .checkpoint import load_checkpoint
from .fused import fold_parameters
from .plan import initial_parameters

# ------------------------------------------------------------ op functions
# Each generated function, and the helpers it needs. Kept close to the runtime
# kernels' docstrings: same padding, window and rounding rules.
FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "_out_size": ((), '''
def _out_size(n, k, s, d=1, pad=(0, 0), ceil_mode=False):
    """Window positions along one axis: floor((n + pads - d(k-1) - 1)/s) + 1 (PyTorch's ceil rule)."""
    span = n + pad[0] + pad[1] - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= n + pad[0] else out
'''),
    "_windows": (("_out_size",), '''
def _windows(x, kernel, stride, padding, dilation=(1, 1), ceil_mode=False, value=0.0):
    """Every kernel window of x [N, C, H, W], padded with `value`: a view [N, C, oh, ow, kh, kw]."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    (pt, pb), (pl, pr) = padding
    n, c, h, w = x.shape
    oh = _out_size(h, kh, sh, dh, (pt, pb), ceil_mode)
    ow = _out_size(w, kw, sw, dw, (pl, pr), ceil_mode)
    eh, ew = (oh - 1) * sh + dh * (kh - 1) + 1, (ow - 1) * sw + dw * (kw - 1) + 1
    # Pad to exactly the rows/columns the windows touch (a ceil-mode overhang gets `value` too).
    x = x[:, :, :max(eh - pt, 0), :max(ew - pl, 0)]
    x = np.pad(x, ((0, 0), (0, 0), (pt, eh - pt - x.shape[2]), (pl, ew - pl - x.shape[3])),
               constant_values=value)
    v = np.lib.stride_tricks.sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]
'''),
    "conv2d": (("_windows",), '''
def conv2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """Cross-correlation of x [N, C, H, W] with w [O, C/groups, kh, kw]: an im2col matrix product."""
    o, cg, kh, kw = w.shape
    win = _windows(x, (kh, kw), stride, padding, dilation)               # [N, C, oh, ow, kh, kw]
    n, _, oh, ow = win.shape[:4]
    cols = win.reshape(n, groups, cg, oh, ow, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6)
    cols = cols.reshape(n, groups, oh * ow, cg * kh * kw)
    y = cols @ w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)   # [N, g, oh*ow, O/g]
    y = y.transpose(0, 1, 3, 2).reshape(n, o, oh, ow)
    return y if b is None else y + b.reshape(1, -1, 1, 1)
'''),
    "conv_transpose2d": ((), '''
def conv_transpose2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), output_padding=(0, 0),
                     dilation=(1, 1), groups=1):
    """Transposed convolution (PyTorch ConvTranspose2d), w [C, O/groups, kh, kw]: each input pixel
    scatters its kernel-weighted values; `padding` is removed from the full output."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (dh, dw), ((pt, pb), (pl, pr)), (oph, opw) = stride, dilation, padding, output_padding
    full_h, full_w = (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1
    out_h, out_w = full_h - pt - pb + oph, full_w - pl - pr + opw
    xg = x.reshape(n, groups, c // groups, h, wd)
    wg = w.reshape(groups, c // groups, og, kh, kw)
    full = np.zeros((n, groups, og, max(full_h, pt + out_h), max(full_w, pl + out_w)), x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])
            full[:, :, :, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (wd - 1) * sw + 1:sw] += tap
    y = full[:, :, :, pt:pt + out_h, pl:pl + out_w].reshape(n, groups * og, out_h, out_w)
    return y if b is None else y + b.reshape(1, -1, 1, 1)
'''),
    "linear": ((), '''
def linear(x, w, b=None):
    """x·wᵀ + b with w [O, F]; a [N, C, H, W] input is read flattened."""
    y = x.reshape(len(x), -1) @ w.T
    return y if b is None else y + b
'''),
    "_channel": ((), '''
def _channel(v, ndim):
    """A per-channel vector shaped to broadcast against [N, C, ...]."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))
'''),
    "batchnorm": (("_channel",), '''
def batchnorm(x, mean, var, gamma, beta, eps=1e-5):
    """Inference batch normalisation with the running statistics."""
    xhat = (x - _channel(mean, x.ndim)) * _channel(1.0 / np.sqrt(var + eps), x.ndim)
    return xhat * _channel(gamma, x.ndim) + _channel(beta, x.ndim)
'''),
    "group_norm": (("_channel",), '''
def group_norm(x, groups, gamma, beta, eps=1e-5):
    """Normalise each sample's channel groups over their channels and positions, then scale and shift."""
    g = x.reshape(len(x), groups, -1)
    g = g - g.mean(axis=2, keepdims=True)
    g = g / np.sqrt((g * g).mean(axis=2, keepdims=True) + eps)
    return g.reshape(x.shape) * _channel(gamma, x.ndim) + _channel(beta, x.ndim)
'''),
    "lrn": ((), '''
def lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """Local response normalisation across channels (PyTorch LocalResponseNorm)."""
    c, sq = x.shape[1], x * x
    den = np.zeros_like(x)
    for d in range(-(size // 2), (size - 1) // 2 + 1):   # channel c sums c - size//2 .. c + (size-1)//2
        lo, hi = max(0, -d), min(c, c - d)
        if lo < hi:
            den[:, lo:hi] += sq[:, lo + d:hi + d]
    return x * np.power(den * (alpha / size) + k, -beta)
'''),
    "relu": ((), '''
def relu(x):
    return np.maximum(x, 0)
'''),
    "relu6": ((), '''
def relu6(x):
    return np.minimum(np.maximum(x, 0), 6)
'''),
    "leaky_relu": ((), '''
def leaky_relu(x, slope=0.01):
    return np.where(x > 0, x, x * slope)
'''),
    "elu": ((), '''
def elu(x, alpha=1.0):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * alpha)
'''),
    "sigmoid": ((), '''
def sigmoid(x):
    """1/(1+e^-x) without overflow."""
    e = np.exp(-np.abs(x))
    r = 1.0 / (1.0 + e)
    return np.where(x >= 0, r, e * r)
'''),
    "tanh": ((), '''
def tanh(x):
    return np.tanh(x)
'''),
    "swish": (("sigmoid",), '''
def swish(x):
    return x * sigmoid(x)
'''),
    "hardswish": ((), '''
def hardswish(x):
    return x * np.clip(x + 3, 0, 6) * (1.0 / 6.0)
'''),
    "mish": ((), '''
def mish(x):
    return x * np.tanh(np.logaddexp(x, 0))
'''),
    "softmax": ((), '''
def softmax(x):
    """Softmax over the channel axis."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
'''),
    "max_pool2d": (("_windows",), '''
def max_pool2d(x, kernel, stride, padding=((0, 0), (0, 0)), dilation=(1, 1), ceil_mode=False):
    """Maximum over each window; padding is -inf."""
    return _windows(x, kernel, stride, padding, dilation, ceil_mode, -np.inf).max(axis=(4, 5))
'''),
    "max_pool2d_with_indices": (("_windows",), '''
def max_pool2d_with_indices(x, kernel, stride, padding=((0, 0), (0, 0)), dilation=(1, 1), ceil_mode=False):
    """max_pool2d, and the kernel offset i*kw + j of each window's first maximum (for unpooling)."""
    win = _windows(x, kernel, stride, padding, dilation, ceil_mode, -np.inf)
    flat = win.reshape(*win.shape[:4], -1)
    idx = flat.argmax(axis=4)
    return np.take_along_axis(flat, idx[..., None], axis=4)[..., 0], idx
'''),
    "max_unpool2d": ((), '''
def max_unpool2d(x, idx, shape, kernel, stride, padding=((0, 0), (0, 0)), dilation=(1, 1)):
    """Each value back where its window's maximum was, in zeros of the pool's input shape [C, H, W]
    (summed where overlapping windows chose the same element)."""
    (kh, kw), (sh, sw), (dh, dw), ((pt, _), (pl, _)) = kernel, stride, dilation, padding
    n, c, oh, ow = x.shape
    h, w = shape[1:]
    buf = np.zeros((n, c, max((oh - 1) * sh + dh * (kh - 1) + 1, pt + h),
                    max((ow - 1) * sw + dw * (kw - 1) + 1, pl + w)), x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            buf[:, :, rows, cols] += np.where(idx == i * kw + j, x, 0)
    return buf[:, :, pt:pt + h, pl:pl + w]
'''),
    "avg_pool2d": (("_windows",), '''
def avg_pool2d(x, kernel, stride, padding=((0, 0), (0, 0)), ceil_mode=False, count_include_pad=True):
    """Mean over each window (PyTorch's divisor: padding counts unless told, a ceil-mode overhang never)."""
    win = _windows(x, kernel, stride, padding, (1, 1), ceil_mode)
    counts = []
    for axis in (0, 1):
        n, out = x.shape[2 + axis], win.shape[2 + axis]
        start = np.arange(out) * stride[axis] - padding[axis][0]
        end = np.minimum(start + kernel[axis], n + padding[axis][1])
        counts.append(end - start if count_include_pad else np.minimum(end, n) - np.maximum(start, 0))
    return win.sum(axis=(4, 5)) / np.maximum(np.outer(*counts), 1).astype(x.dtype)
'''),
    "global_avg_pool": ((), '''
def global_avg_pool(x):
    return x.mean(axis=(2, 3), keepdims=True)
'''),
    "global_max_pool": ((), '''
def global_max_pool(x):
    return x.max(axis=(2, 3), keepdims=True)
'''),
    "_bin_matrix": ((), '''
def _bin_matrix(size, out, dtype):
    """[out, size]: row i averages PyTorch's adaptive bin floor(i*size/out) .. ceil((i+1)*size/out)."""
    m = np.zeros((out, size), dtype)
    for i in range(out):
        lo, hi = (i * size) // out, -(-(i + 1) * size // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m
'''),
    "adaptive_avg_pool": (("_bin_matrix",), '''
def adaptive_avg_pool(x, output):
    h, w = x.shape[2:]
    return _bin_matrix(h, output[0], x.dtype) @ x @ _bin_matrix(w, output[1], x.dtype).T
'''),
    "_bilinear_matrix": ((), '''
def _bilinear_matrix(size, scale, dtype):
    """[size*scale, size]: bilinear weights, align_corners=False, source index clamped at 0."""
    m = np.zeros((size * scale, size))
    for d in range(size * scale):
        src = max((d + 0.5) / scale - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + 1 if i0 < size - 1 else i0
        m[d, i0] += 1.0 - (src - i0)
        m[d, i1] += src - i0
    return m.astype(dtype)
'''),
    "upsample": (("_bilinear_matrix",), '''
def upsample(x, scale=(2, 2), mode="nearest"):
    if mode == "bilinear":
        h, w = x.shape[2:]
        return _bilinear_matrix(h, scale[0], x.dtype) @ x @ _bilinear_matrix(w, scale[1], x.dtype).T
    return x.repeat(scale[0], axis=2).repeat(scale[1], axis=3)
'''),
    "flatten": ((), '''
def flatten(x):
    return x.reshape(len(x), -1)
'''),
    "pad2d": ((), '''
def pad2d(x, padding, value=0.0):
    return np.pad(x, ((0, 0), (0, 0)) + tuple(padding), constant_values=value)
'''),
    "crop": ((), '''
def crop(x, like):
    """Centre crop of x to like's height and width (odd differences drop the bottom/right line)."""
    (hh, ww), (h, w) = x.shape[2:], like.shape[2:]
    top, left = (hh - h) // 2, (ww - w) // 2
    return x[:, :, top:top + h, left:left + w]
'''),
}

ACTIVATIONS = {"relu", "relu6", "leaky_relu", "elu", "sigmoid", "tanh", "swish", "hardswish", "mish", "softmax"}


# ---------------------------------------------------------------- emitters
class _Emitter:
    """Turns one node into an expression over named variables, remembering the functions it calls."""

    def __init__(self, net: Network, names: dict[str, str]):
        self.net, self.names, self.used = net, names, set()
        self.unpooled = {n.attrs["of"] for n in net.layers() if n.op == "unpool"}

    def target(self, node: Node) -> str:
        """The variable(s) a node's line assigns: a pool an unpool reads also yields its argmax."""
        name = self.names[node.name]
        return f"{name}, {name}_idx" if node.name in self.unpooled else name

    def call(self, fn: str, *args: str, **kwargs: Any) -> str:
        self.used.add(fn)
        parts = list(args) + [f"{k}={v!r}" for k, v in kwargs.items()]
        return f"{fn}({', '.join(parts)})"

    def param(self, node: Node, name: str) -> str:
        return f'p["{node.shares or node.name}.{name}"]'

    def activation(self, expr: str, op: str | None, attrs) -> str:
        if op is None:
            return expr
        if op == "leaky_relu":
            return self.call(op, expr, slope=attrs.get("slope", 0.01))
        if op == "elu":
            return self.call(op, expr, alpha=attrs.get("alpha", 1.0))
        return self.call(op, expr)

    def expression(self, node: Node) -> str:
        a, x = node.attrs, [self.names[i] for i in node.inputs]
        rule = RULES.get(node.op)
        if rule is None:
            raise CnncError(f"--emit numpy does not support '{node.op}' yet (layer '{node.name}')", node.loc,
                            hint="the runtime runs it: use `cnnc run`/`cnnc predict`")
        return rule(self, node, a, x)


def _conv_kwargs(a) -> dict[str, Any]:
    out = {}
    if tuple(a["stride"]) != (1, 1):
        out["stride"] = tuple(a["stride"])
    if tuple(map(tuple, a["padding"])) != ((0, 0), (0, 0)):
        out["padding"] = tuple(map(tuple, a["padding"]))
    if tuple(a["dilation"]) != (1, 1):
        out["dilation"] = tuple(a["dilation"])
    if a["groups"] != 1:
        out["groups"] = a["groups"]
    return out


def _conv(e: _Emitter, node: Node, a, x: list[str]) -> str:
    bias = e.param(node, "bias") if a["bias"] else "None"
    expr = e.call("conv2d", x[0], e.param(node, "weight"), bias, **_conv_kwargs(a))
    if a.get("residual"):
        expr = f"{expr} + {x[1]}"
    return e.activation(expr, a.get("activation"), a)


def _deconv(e: _Emitter, node: Node, a, x: list[str]) -> str:
    bias = e.param(node, "bias") if a["bias"] else "None"
    kw = {**_conv_kwargs(a), "output_padding": tuple(a["output_padding"])}
    return e.call("conv_transpose2d", x[0], e.param(node, "weight"), bias, **kw)


def _linear(e: _Emitter, node: Node, a, x: list[str]) -> str:
    bias = e.param(node, "bias") if a["bias"] else "None"
    return e.activation(e.call("linear", x[0], e.param(node, "weight"), bias), a.get("activation"), a)


def _batchnorm(e: _Emitter, node: Node, a, x: list[str]) -> str:
    stats = [e.param(node, n) for n in ("running_mean", "running_var", "weight", "bias")]
    return e.activation(e.call("batchnorm", x[0], *stats, eps=a["eps"]), a.get("activation"), a)


def _group_norm(groups: Callable[[Network, Node], int]):
    def rule(e: _Emitter, node: Node, a, x: list[str]) -> str:
        return e.call("group_norm", x[0], str(groups(e.net, node)), e.param(node, "weight"),
                      e.param(node, "bias"), eps=a["eps"])
    return rule


def _dropout(e: _Emitter, node: Node, a, x: list[str]) -> str:
    if node.op == "dropout" and a.get("mode") == "downgrade_in_infer":
        return f"{x[0]} * {1.0 - a['p']!r}"
    return x[0]  # inverted dropout is the identity in inference


def _window_kwargs(a, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: (tuple(map(tuple, a[k])) if k == "padding" else tuple(a[k]) if isinstance(a[k], tuple) else a[k])
            for k in keys if k in a}


def _pool(fn: str, keys: tuple[str, ...]):
    def rule(e: _Emitter, node: Node, a, x: list[str]) -> str:
        if fn == "max_pool2d" and node.name in e.unpooled:   # an unpool needs its argmax too
            return e.call("max_pool2d_with_indices", x[0], **_window_kwargs(a, keys))
        return e.call(fn, x[0], **_window_kwargs(a, keys))
    return rule


def _unpool(e: _Emitter, node: Node, a, x: list[str]) -> str:
    pool = e.net.node(a["of"])
    shape = tuple(int(d) for d in e.net.shapes[pool.inputs[0]])
    kw = _window_kwargs(pool.attrs, ("kernel", "stride", "padding", "dilation"))
    return e.call("max_unpool2d", x[0], e.names[pool.name] + "_idx", repr(shape), **kw)


RULES: dict[str, Callable[[_Emitter, Node, Any, list[str]], str]] = {
    "conv": _conv, "fused_conv": _conv, "deconv": _deconv,
    "linear": _linear, "fused_linear": _linear,
    "batchnorm": _batchnorm, "fused_bn": _batchnorm,
    "layernorm": _group_norm(lambda net, n: 1),
    "instancenorm": _group_norm(lambda net, n: int(net.shapes[n.inputs[0]][0])),
    "groupnorm": _group_norm(lambda net, n: n.attrs["groups"]),
    # The compiler normalises lrn's `k` to "kernel" (the rename every windowed op needs).
    "lrn": lambda e, n, a, x: e.call("lrn", x[0], size=a["size"], alpha=a["alpha"], beta=a["beta"],
                                     k=a.get("k", a.get("kernel", 2.0))),
    **{op: (lambda e, n, a, x: e.activation(x[0], n.op, a)) for op in ACTIVATIONS},
    "maxpool": _pool("max_pool2d", ("kernel", "stride", "padding", "dilation", "ceil_mode")),
    "avgpool": _pool("avg_pool2d", ("kernel", "stride", "padding", "ceil_mode", "count_include_pad")),
    "unpool": _unpool,
    "global_avgpool": lambda e, n, a, x: e.call("global_avg_pool", x[0]),
    "global_maxpool": lambda e, n, a, x: e.call("global_max_pool", x[0]),
    "adaptive_avgpool": lambda e, n, a, x: e.call("adaptive_avg_pool", x[0], output=tuple(a["output"])),
    "upsample": lambda e, n, a, x: e.call("upsample", x[0], scale=tuple(a["scale"]), mode=a["mode"]),
    "flatten": lambda e, n, a, x: e.call("flatten", x[0]),
    "add": lambda e, n, a, x: " + ".join(x),
    "mul": lambda e, n, a, x: " * ".join(x),
    "concat": lambda e, n, a, x: f"np.concatenate([{', '.join(x)}], axis=1)",
    "dropout": _dropout, "spatial_dropout": _dropout,
    "identity": lambda e, n, a, x: x[0],
    "pad": lambda e, n, a, x: e.call("pad2d", x[0], padding=tuple(map(tuple, a["padding"])), value=a["value"]),
    "crop": lambda e, n, a, x: e.call("crop", x[0], x[1]),
}


# ------------------------------------------------------------------ module
def variable_names(net: Network) -> dict[str, str]:
    """A distinct Python identifier per node ("basic_1.conv" -> "basic_1_conv")."""
    taken = set(FUNCTIONS) | ACTIVATIONS | {"np", "p", "params", "load", "forward", "os", "INPUTS", "OUTPUTS",
                                            "WEIGHTS", "_PARAMS"}
    out = {}
    for node in net.order():
        base = re.sub(r"\W", "_", node.name)
        if not base or base[0].isdigit() or keyword.iskeyword(base) or base in taken:
            base = "t_" + base
        name, k = base, 2
        while name in taken or name + "_idx" in taken:   # `<pool>_idx` holds a pool's argmax
            name, k = f"{base}_{k}", k + 1
        taken.update((name, name + "_idx"))
        out[node.name] = name
    return out


def _needed(functions: set[str]) -> list[str]:
    """The functions used plus their helpers, helpers first, in table order."""
    need: set[str] = set()
    stack = list(functions)
    while stack:
        f = stack.pop()
        if f not in need:
            need.add(f)
            stack.extend(FUNCTIONS[f][0])
    return [f for f in FUNCTIONS if f in need]


def _header(net: Network, weights_name: str, origin: str) -> str:
    """The module docstring, imports, constants and `load`."""
    stem = Path(weights_name).stem
    first = ", ".join(str(d) for d in next(iter(net.inputs.values())))
    returns = "the output" if len(net.outputs) == 1 else "a dict of the outputs"
    shapes = ", ".join(f'"{k}": {tuple(int(d) for d in v)}' for k, v in net.inputs.items())
    return textwrap.dedent(f'''\
        """{net.name} as a standalone NumPy module, generated by `cnnc compile --emit numpy`.

        Source: {net.source}. Inference only: batchnorm is folded into the convolutions.
        Weights: {weights_name} beside this file ({origin}).

            import {stem}
            y = {stem}.forward(x)    # x: float32 [N, {first}]

        `forward` returns {returns}: {", ".join(net.outputs)}.
        """
        import os

        import numpy as np

        INPUTS = {{{shapes}}}
        OUTPUTS = {tuple(net.outputs)!r}
        WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), {weights_name!r})
        _PARAMS = None


        def load(path=WEIGHTS):
            """The weights as a dict of float32 arrays."""
            with np.load(path, allow_pickle=False) as z:
                return {{k: z[k] for k in z.files}}
        ''')


def _forward(net: Network, names: dict[str, str], body: list[str]) -> str:
    """`forward`: the inputs as float32, then one line per layer, then the output(s)."""
    args = [names[i] for i in net.inputs]
    outs = [names[o] for o in net.outputs]
    ret = outs[0] if len(outs) == 1 else "{" + ", ".join(f'"{o}": {names[o]}' for o in net.outputs) + "}"
    lines = [f"def forward({', '.join(args)}, params=None):",
             '    """The network in topological order, one line per (fused) layer."""',
             "    global _PARAMS",
             "    if params is None:",
             "        params = _PARAMS = _PARAMS if _PARAMS is not None else load()",
             "    p = params"]
    lines += [f"    {a} = np.asarray({a}, dtype=np.float32)" for a in args]
    return "\n".join(lines + body + [f"    return {ret}"]) + "\n"


def module_source(net: Network, weights_name: str, origin: str) -> tuple[str, list[str]]:
    """The module's text and the op functions it defines."""
    names = variable_names(net)
    e = _Emitter(net, names)
    body = []
    for node in net.layers():
        where = f", {node.loc}" if node.loc else ""
        body.append(f"    # {node.name}: {node.layer or node.op}{where}")
        body.append(f"    {e.target(node)} = {e.expression(node)}")
    functions = _needed(e.used)
    funcs = "".join("\n\n" + FUNCTIONS[f][1].strip("\n") + "\n" for f in functions)
    source = _header(net, weights_name, origin) + funcs + "\n\n" + _forward(net, names, body)
    return source, [f for f in functions if not f.startswith("_")]


# -------------------------------------------------------------------- emit
def parameter_store(net: Network, specs: dict, checkpoint: str | None) -> tuple[dict[str, np.ndarray], str]:
    """The unfused store: a `cnnc run` checkpoint's parameters, or the seeded initial weights."""
    if checkpoint is None:
        seed = net.train.seed if net.train is not None else 0
        return initial_parameters(net, specs, seed), f"initial weights, seed {seed}"
    arrays, _ = load_checkpoint(checkpoint)
    store = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    for owner, ps in specs.items():
        for p, spec in ps.items():
            key, shape = f"{owner}.{p}", tuple(int(d) for d in spec.shape)
            if key not in store:
                raise CnncError(f"checkpoint '{checkpoint}' does not fit {net.name}: it has no '{key}'",
                                hint="was it written for another network or another version of this file?")
            if store[key].shape != shape:
                raise CnncError(f"checkpoint '{checkpoint}' does not fit {net.name}: '{key}' has shape "
                                f"{list(store[key].shape)}, the network needs {list(shape)}")
    return {k: np.asarray(store[k], np.float32) for o, ps in specs.items() for k in (f"{o}.{p}" for p in ps)}, \
        f"checkpoint {checkpoint}"


def emit(compiled, output: str, checkpoint: str | None = None) -> dict[str, Any]:
    """Write OUTPUT (.py) and its weights (.npz beside it); returns what was written."""
    net = compiled.net
    for name, shape in net.shapes.items():
        if not all(isinstance(d, int) for d in shape):
            raise CnncError(f"--emit numpy needs concrete sizes, but '{name}' has shape "
                            f"[{', '.join(map(str, shape))}]", hint="bind the input with --input NAME=CxHxW")
    module = Path(output)
    if module.suffix != ".py":
        raise CnncError(f"-o {output}: the module must be a .py file")
    weights = module.with_suffix(".npz")
    fused = fuse(net, "eval").net
    store, origin = parameter_store(net, compiled.analysis.params, checkpoint)
    folded = fold_parameters(fused, store)
    source, functions = module_source(fused, weights.name, origin)
    try:
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(source, encoding="utf-8")
        np.savez(weights, **{k: np.ascontiguousarray(v, np.float32) for k, v in folded.items()})
    except OSError as err:
        raise CnncError(f"cannot write {module} / {weights}: {err.strerror or err}") from None
    return {"module": str(module), "weights": str(weights), "lines": source.count("\n"),
            "functions": functions, "arrays": len(folded), "bytes": sum(v.nbytes for v in folded.values()),
            "source": origin}
