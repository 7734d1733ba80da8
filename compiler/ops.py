"""Stage 2 (compiler): the op-spec table — static semantics of every layer.

One entry per op: its attributes (types, defaults, validation), the shape rule
(works on ints and on symbolic `Dim`s alike), parameter shapes, MACs and
FLOPs, what training keeps for the backward pass, and the receptive-field
contribution, its declared `properties` (below) and, registered into it by
later stages, its back ends (the runtime's kernel, viz's label, ...).
Elaboration, the analyses, fusion, the runtime and viz all ask this table
instead of keeping their own op lists; adding an op means one entry here plus
what each back end registers beside its own code (docs/internals.md, "Adding an
op"); the tests in tests/compiler/test_registry.py walk the table and name any
op that lacks something.

Conventions (see docs/analysis.md): MACs count multiply-adds of conv, deconv,
local and linear layers, bias excluded. FLOPs are 2 per MAC, plus one per
bias add, plus one per output element of activations, normalisations, adds
and multiplies, plus one per window element read by pooling; pure data
movement (flatten, concat, crop, pad, identity, dropout at inference) costs 0
by an explicit rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping

import numpy as np

from .graph import ParamSpec
from .symbolic import ceildiv, is_symbolic

REQUIRED = object()


class OpError(Exception):
    """A static-semantics error in one layer; elaboration adds the location."""

    def __init__(self, message: str, hint: str | None = None, attr: str | None = None):
        super().__init__(message)
        self.message, self.hint, self.attr = message, hint, attr


@dataclass(frozen=True)
class Word:
    """A bare identifier used as a value (`same`, `nearest`, `cross_entropy`)."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str                 # see _CONVERTERS
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class RF:
    """Receptive-field contribution on one axis: kernel k, stride s, padding p (input units)."""

    k: Fraction
    s: Fraction
    p: Fraction


# What an op *is*, for the consumers that treat ops by kind rather than by name.
# Each name explains itself; `OpSpec.__post_init__` refuses any other.
PROPERTIES: dict[str, str] = {
    "rectifier": "an activation that zeroes (or nearly) half its inputs: the layers feeding it "
                 "draw He-normal weights instead of Xavier-uniform (runtime/plan.py)",
    "init_transparent": "passes its input on without learned weights mixing it (norms, pools, dropout, "
                        "pad, crop, upsample, add, concat, ...): the He/Xavier look-ahead of runtime/plan.py "
                        "looks through it for the next activation",
    "saturating": "a bounded activation whose gradient vanishes for large |x|: the "
                  "`saturating-activations` lint counts runs of them (compiler/analysis.py)",
    "gate": "a saturating activation with outputs in [0, 1]: feeding a `mul` it scales another tensor "
            "(squeeze-and-excitation, attention), so the `saturating-activations` lint does not count it",
    "sliding_window": "slides a kernel-sized window with a stride over H and W: the `dropped-pixels` and "
                      "`asymmetric-padding` lints check its windows (compiler/analysis.py)",
    "random_drop": "zeroes values at random in training: the `dropout-before-batchnorm` lint looks for it",
    "batch_statistics": "normalises with the statistics of the batch in training, coupling its samples: the "
                        "lint above and the runtime's batch sharding ask for it",
    "fusable_activation": "an activation the fused conv/linear/batchnorm steps apply in their epilogue "
                          "(compiler/fusion.py, runtime/fused.py `activate`)",
}


@dataclass(frozen=True)
class OpSpec:
    name: str
    family: str
    attrs: tuple[Attr, ...]
    shape: Callable[[dict, list], tuple]
    inputs: int | None = 1                       # tensor inputs; None = one or more
    params: Callable[[dict, list], dict] = lambda a, ins: {}
    macs: Callable[[dict, list, tuple], Any] = lambda a, ins, out: 0
    flops: Callable[[dict, list, tuple], Any] = lambda a, ins, out: 0
    rf: Callable[[dict, list], tuple[RF, RF] | None] | str = "elementwise"
    saves: tuple[str, ...] = ("input",)          # what training keeps: "input", "output", "mask"
    resolve: Callable[[dict, list], dict] = lambda a, ins: a
    doc: str = ""
    properties: frozenset[str] = frozenset()     # names from PROPERTIES
    # What later stages register for this op, by back end ("kernel", "numpy", "torch",
    # "onnx", ...): see `register` and `implementation`. Not part of the op's identity.
    impls: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.properties) - set(PROPERTIES)
        if unknown:
            raise ValueError(f"op '{self.name}' declares unknown properties {sorted(unknown)}")
        object.__setattr__(self, "properties", frozenset(self.properties))

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs if a.name == name), None)

    def has(self, prop: str) -> bool:
        """Does the op declare `prop` (a name of PROPERTIES)?"""
        if prop not in PROPERTIES:
            raise KeyError(f"unknown op property '{prop}'")
        return prop in self.properties

    @property
    def variadic(self) -> bool:
        return self.inputs is None


# ------------------------------------------------------ back-end registration
# JAX-style: each later stage registers its rule for an op into the op's own
# entry (the compiler never imports the runtime). Consumers ask
# `implementation(op, backend)`; a coverage test per back end walks OPS.
def register(backend: str, *ops: str, table: Mapping[str, "OpSpec"] | None = None) -> Callable[[Any], Any]:
    """Decorator: `@register("kernel", "relu")` stores the decorated object as relu's kernel.
    `table` is another op table (compiler/fusion.py's FUSED_OPS); OPS by default."""
    def store(impl: Any) -> Any:
        for op in ops:
            spec = (OPS if table is None else table).get(op)
            if spec is None:
                raise KeyError(f"cannot register {backend} for unknown op '{op}'")
            if backend in spec.impls and spec.impls[backend] is not impl:
                raise KeyError(f"op '{op}' already has a {backend} implementation")
            spec.impls[backend] = impl
        return impl
    return store


def implementation(op: str, backend: str, table: Mapping[str, "OpSpec"] | None = None) -> Any | None:
    """What `backend` registered for `op` (in `table`, OPS by default), or None (the caller
    reports the layer)."""
    spec = (OPS if table is None else table).get(op)
    return None if spec is None else spec.impls.get(backend)


def with_property(prop: str, table: Mapping[str, "OpSpec"] | None = None) -> frozenset[str]:
    """The names of the ops of `table` (OPS by default) that declare `prop`."""
    return frozenset(name for name, spec in (OPS if table is None else table).items() if spec.has(prop))


# ---------------------------------------------------------------- utilities
def numel(shape) -> Any:
    n = 1
    for d in shape:
        n = n * d
    return n


def _spatial(ins, what="this layer") -> tuple:
    shape = ins[0]
    if len(shape) != 3:
        hint = ("a [C, L] signal goes through conv, pooling, normalisation, activations, dropout, upsample, "
                "add and concat; this layer needs an image" if len(shape) == 2 else
                "a flat tensor comes from flatten or linear; spatial layers must come before them")
        raise OpError(f"{what} needs a [C, H, W] input, got {fmt_shape(shape)}", hint)
    return shape


# ------------------------------------------------------------ 1-D signals
# A [C, L] signal runs through the 2-D rules as a [C, 1, L] image: its layers' normalised
# attributes have a unit height (kernel (1, k), stride (1, s), padding ((0, 0), (left, right)),
# dilation (1, d)), so every rule, kernel and analysis of images serves signals unchanged;
# only the shapes users see drop the unit axis, and a 1-D conv's weight is [O, C/groups, k]
# (PyTorch's Conv1d). `is_signal` is the one test of "this layer works on a signal".
SIGNAL_AXES = ("kernel", "stride", "dilation", "scale", "size", "output_padding")


def is_signal(shape) -> bool:
    return len(shape) == 2


def _grid(ins, what="this layer") -> tuple:
    """The input as [C, H, W]: a [C, L] signal is [C, 1, L]."""
    shape = ins[0]
    return (shape[0], 1, shape[1]) if is_signal(shape) else _spatial(ins, what)


def _on_grid(ins, out: tuple) -> tuple:
    """A [C, H, W] result of the 2-D rules as the user's shape: [C, L] for a signal."""
    return (out[0], out[2]) if is_signal(ins[0]) else out


def _signal_attrs(a: dict, ins: list, what: str) -> dict:
    """A 1-D layer's integer sizes as unit-height pairs; (h, w) pairs make no sense on a signal."""
    if not is_signal(ins[0]):
        return a
    a = dict(a)
    for key in SIGNAL_AXES:
        v = a.get(key)
        if isinstance(v, tuple):
            if v[0] != v[1]:
                raise OpError(f"{what} on a [C, L] signal takes an integer {normalised_surface(key)}, "
                              f"got {fmt_shape(v)}", "a pair (h, w) is for images", attr=key)
            a[key] = (0 if key == "output_padding" else 1, v[1])
    pad = a.get("padding")
    if isinstance(pad, tuple):
        if pad[0] != pad[1] or pad[0][0] != pad[0][1]:
            raise OpError(f"{what} on a [C, L] signal takes pad as an integer, same, valid, full or causal, "
                          f"got {pad}", "pad = causal puts the whole window on the left (output t sees "
                          "inputs up to t); a pair (h, w) is for images", attr="padding")
        a["padding"] = ((0, 0), pad[1])
    return a


def normalised_surface(key: str) -> str:
    return {"kernel": "k", "padding": "pad"}.get(key, key)


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def window_out(n, k: int, s: int, pad: tuple, d: int = 1, ceil_mode: bool = False):
    """floor((n + p_l + p_r - d(k-1) - 1)/s) + 1 (ceil with ceil_mode, PyTorch rule).

    The one home of this rule: shape rules call it on ints and symbolic sizes,
    the runtime kernels and `--emit numpy` modules (which carry a copy of this
    function's source) on ints, so it uses only arithmetic and NumPy.
    """
    span = n + pad[0] + pad[1] - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = (span + s - 1) // s + 1
    # PyTorch: the last window must start inside the input or left padding (decidable for known sizes only).
    if isinstance(n, (int, np.integer)) and isinstance(out, (int, np.integer)) and (out - 1) * s >= n + pad[0]:
        out -= 1
    return out


def _check_fits(n, k: int, pad: tuple, d: int, axis: str) -> None:
    eff = d * (k - 1) + 1
    total = n + pad[0] + pad[1]
    if not is_symbolic(total) and total < eff:
        raise OpError(f"kernel of size {eff} does not fit the padded input ({axis} = {n}, padded {total})",
                      "use a smaller kernel, add padding, or pool less before this layer", attr="k")


def same_padding(n, k: int, s: int, d: int) -> tuple:
    """TensorFlow 'same': total = max((ceil(n/s)-1)s + d(k-1)+1 - n, 0), left = total // 2."""
    eff = d * (k - 1) + 1
    if is_symbolic(n):
        if s == 1 or eff >= s:
            total = (ceildiv(n, s) - 1) * s + eff - n
        elif eff == 1:
            total = 0
        else:
            raise OpError(f"'same' padding with kernel {eff} < stride {s} depends on the exact size {n}",
                          "give the padding explicitly, or bind the input size with --input", attr="pad")
    else:
        total = max((ceildiv(n, s) - 1) * s + eff - n, 0)
    left = total // 2
    return (left, total - left)


def _resolve_padding(a: dict, ins: list, key: str = "padding") -> dict:
    pad = a[key]
    if isinstance(pad, str):
        _, h, w = _grid(ins)
        kh, kw = a["kernel"]
        sh, sw = a.get("stride", (1, 1))
        dh, dw = a.get("dilation", (1, 1))
        if pad == "causal":   # WaveNet's: the whole window on the left, so output t sees inputs <= t
            if not is_signal(ins[0]):
                raise OpError("pad = causal is for [C, L] signals", "an image takes an int, a pair, "
                              "((top, bottom), (left, right)), same, valid or full", attr="pad")
            pad = ((0, 0), (dw * (kw - 1), 0))
        elif pad == "valid":
            pad = ((0, 0), (0, 0))
        elif pad == "full":
            pad = ((dh * (kh - 1),) * 2, (dw * (kw - 1),) * 2)
        else:
            pad = (same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw))
    return {**a, key: pad}


def _window_shape(a: dict, ins: list, channels, what: str) -> tuple:
    _, h, w = _grid(ins, what)
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    dh, dw = a.get("dilation", (1, 1))
    (pt, pb), (pl, pr) = a.get("padding", ((0, 0), (0, 0)))
    _check_fits(h, kh, (pt, pb), dh, "height")
    _check_fits(w, kw, (pl, pr), dw, "width")
    ceil_mode = a.get("ceil_mode", False)
    out = (channels, window_out(h, kh, sh, (pt, pb), dh, ceil_mode), window_out(w, kw, sw, (pl, pr), dw, ceil_mode))
    return _on_grid(ins, out)


def _window_rf(a: dict, ins: list) -> tuple[RF, RF]:
    pads = a.get("padding", ((0, 0), (0, 0)))
    out = []
    for axis in (0, 1):
        k, s = a["kernel"][axis], a["stride"][axis]
        d = a.get("dilation", (1, 1))[axis]
        p = pads[axis][0]
        if is_symbolic(p):  # symbolic 'same': the value when the size divides the stride
            p = max(d * (k - 1) + 1 - s, 0) // 2
        out.append(RF(Fraction(d * (k - 1) + 1), Fraction(s), Fraction(p)))
    return tuple(out)


def _need_channels(c, what: str):
    if is_symbolic(c):
        raise OpError(f"{what} needs a known number of input channels, got {c}",
                      "bind the input with --input NAME=CxHxW")
    return c


# ------------------------------------------------------------ convolutions
_PAD_DOC = "int, (h, w), ((top, bottom), (left, right)), same, valid, full, or causal (signals)"
_INIT_DOC = "the weights' initialisation: kaiming_normal, ..., or (normal, std); default the train section's"

CONV_ATTRS = (
    Attr("out", "pos_int", doc="output channels"),
    Attr("k", "pair", doc="kernel size, int or (kh, kw)"),
    Attr("stride", "pair", 1),
    Attr("pad", "padding", 0, doc=_PAD_DOC),
    Attr("dilation", "pair", 1),
    Attr("groups", "pos_int", 1),
    Attr("bias", "bool", True),
    Attr("trainable", "bool", True),
    Attr("weights", "weights", None, doc="fixed initial weights [O, C/groups, kh, kw]"),
    Attr("init", "init", None, doc=_INIT_DOC),
)


def _conv_normalise(a: dict, ins: list) -> dict:
    a = _resolve_padding(_signal_attrs(a, ins, "conv"), ins)
    c = _need_channels(_grid(ins, "conv")[0], "conv")
    g = a["groups"]
    if c % g:
        raise OpError(f"groups must divide the input channels, but {g} does not divide {c}", attr="groups")
    if a["out_channels"] % g:
        raise OpError(f"groups must divide the output channels, but {g} does not divide {a['out_channels']}",
                      attr="groups")
    w = a.get("weights")
    if w is not None:
        w = _fit_weights(w, (a["out_channels"], c // g, *_kernel_dims(a, ins)))
        a = {**a, "weights": w}
    return a


def _fit_weights(w: np.ndarray, shape: tuple) -> np.ndarray:
    if w.shape == shape:
        return w
    if w.size == numel(shape):  # e.g. a 2-D kernel for a 1-in, 1-out conv
        if w.ndim < len(shape) and tuple(s for s in shape if s != 1) == tuple(s for s in w.shape if s != 1):
            return w.reshape(shape)
    raise OpError(f"weights have shape {fmt_shape(w.shape)}, but this layer needs {fmt_shape(shape)}",
                  attr="weights")


def _kernel_dims(a: dict, ins: list) -> tuple:
    """A conv weight's kernel axes: (kh, kw), or (k,) on a signal (PyTorch's Conv1d weight)."""
    return a["kernel"][1:] if is_signal(ins[0]) else tuple(a["kernel"])


def _conv_params(a: dict, ins: list) -> dict:
    c = ins[0][0]
    kh, kw = a["kernel"]
    o, g = a["out_channels"], a["groups"]
    fan_in = c // g * kh * kw
    fixed = a.get("weights") is not None
    out = {"weight": ParamSpec((o, c // g, *_kernel_dims(a, ins)), a["trainable"],
                               init="fixed" if fixed else "he_normal", fan_in=fan_in, fan_out=o // g * kh * kw, value=a.get("weights"))}
    if a["bias"]:
        out["bias"] = ParamSpec((o,), a["trainable"], init="zeros", fan_in=fan_in)
    return out


def _conv_macs(a, ins, out):
    kh, kw = a["kernel"]
    return numel(out) * (ins[0][0] // a["groups"]) * kh * kw


def _bias_flops(a, out):
    return numel(out) if a.get("bias") else 0


CONV = OpSpec(
    "conv", "convolution", CONV_ATTRS,
    shape=lambda a, ins: _window_shape(a, ins, a["out_channels"], "conv"),
    params=_conv_params, macs=_conv_macs,
    flops=lambda a, ins, out: 2 * _conv_macs(a, ins, out) + _bias_flops(a, out),
    rf=_window_rf, resolve=_conv_normalise, properties={"sliding_window"},
    doc="2-D convolution (cross-correlation, as in every framework)")


def _deconv_normalise(a: dict, ins: list) -> dict:
    if isinstance(a["padding"], str):
        raise OpError("deconv takes integer padding (removed from the output, as PyTorch ConvTranspose2d)",
                      attr="pad")
    c = _need_channels(_spatial(ins, "deconv")[0], "deconv")
    g = a["groups"]
    if c % g or a["out_channels"] % g:
        raise OpError(f"groups must divide the input and output channels ({c} and {a['out_channels']}), "
                      f"but {g} does not", attr="groups")
    for axis in (0, 1):
        op, s, d = a["output_padding"][axis], a["stride"][axis], a["dilation"][axis]
        if op >= max(s, d):
            raise OpError(f"output_padding must be smaller than the stride or dilation, got {op}",
                          attr="output_padding")
    return a


def _deconv_shape(a, ins):
    _, h, w = _spatial(ins, "deconv")
    out = []
    for axis, n in enumerate((h, w)):
        k, s, d = a["kernel"][axis], a["stride"][axis], a["dilation"][axis]
        p = a["padding"][axis]
        size = (n - 1) * s - p[0] - p[1] + d * (k - 1) + 1 + a["output_padding"][axis]
        if not is_symbolic(size) and size < 1:
            raise OpError(f"deconv output would be empty ({size}): padding {p} is too large", attr="pad")
        out.append(size)
    return (a["out_channels"], *out)


def _deconv_params(a, ins):
    c = ins[0][0]
    kh, kw = a["kernel"]
    o, g = a["out_channels"], a["groups"]
    out = {"weight": ParamSpec((c, o // g, kh, kw), a["trainable"], init="he_normal",
                               fan_in=c // g * kh * kw, fan_out=o // g * kh * kw)}
    if a["bias"]:
        out["bias"] = ParamSpec((o,), a["trainable"])
    return out


def _deconv_macs(a, ins, out):
    kh, kw = a["kernel"]
    return numel(ins[0]) * (a["out_channels"] // a["groups"]) * kh * kw


def _deconv_rf(a, ins):
    # Output j of a transposed conv reads inputs i with j = i*s - p + t*d, t in [0, k):
    # i runs from (j + p - d(k-1))/s to (j + p)/s. In input units the stride is 1/s,
    # the window spans d(k-1)/s + 1 and starts d(k-1-p/d)/s before j/s.
    out = []
    for axis in (0, 1):
        k, s, d = a["kernel"][axis], a["stride"][axis], a["dilation"][axis]
        span = d * (k - 1)
        out.append(RF(Fraction(span, s) + 1, Fraction(1, s), Fraction(span - a["padding"][axis][0], s)))
    return tuple(out)


DECONV = OpSpec(
    "deconv", "convolution",
    (Attr("out", "pos_int"), Attr("k", "pair"), Attr("stride", "pair", 1), Attr("pad", "padding", 0),
     Attr("output_padding", "pair0", 0), Attr("dilation", "pair", 1), Attr("groups", "pos_int", 1),
     Attr("bias", "bool", True), Attr("trainable", "bool", True), Attr("init", "init", None, doc=_INIT_DOC)),
    shape=_deconv_shape, params=_deconv_params, macs=_deconv_macs,
    flops=lambda a, ins, out: 2 * _deconv_macs(a, ins, out) + _bias_flops(a, out),
    rf=_deconv_rf, resolve=_deconv_normalise, doc="transposed convolution")


def _local_normalise(a, ins):
    a = _resolve_padding(a, ins)
    _need_channels(_spatial(ins, "local")[0], "local")
    if a["tile"] is None:
        _, oh, ow = _window_shape(a, ins, 0, "local")
        if is_symbolic(oh) or is_symbolic(ow):
            raise OpError("a locally connected layer needs a known output size",
                          "bind the input with --input NAME=CxHxW, or give tile = t")
        a = {**a, "tile": (oh, ow)}
    return a


def _local_params(a, ins):
    c = ins[0][0]
    kh, kw = a["kernel"]
    th, tw = a["tile"]
    o = a["out_channels"]
    out = {"weight": ParamSpec((o, th, tw, c, kh, kw), True, init="he_normal", fan_in=c * kh * kw,
                               fan_out=o * kh * kw)}
    if a["bias"]:
        out["bias"] = ParamSpec((o, th, tw), True)
    return out


def _local_macs(a, ins, out):
    kh, kw = a["kernel"]
    return numel(out) * ins[0][0] * kh * kw


LOCAL = OpSpec(
    "local", "convolution",
    (Attr("out", "pos_int"), Attr("k", "pair"), Attr("stride", "pair", 1), Attr("pad", "padding", 0),
     Attr("tile", "opt_pair", None, doc="tiled convolution: weights repeat every (th, tw) positions"),
     Attr("bias", "bool", True), Attr("init", "init", None, doc=_INIT_DOC)),
    shape=lambda a, ins: _window_shape(a, ins, a["out_channels"], "local"),
    params=_local_params, macs=_local_macs,
    flops=lambda a, ins, out: 2 * _local_macs(a, ins, out) + _bias_flops(a, out),
    rf=_window_rf, resolve=_local_normalise, properties={"sliding_window"}, doc="locally connected (unshared or tiled) convolution")


# ----------------------------------------------------------------- pooling
def _pool_attrs(extra=()):
    return (Attr("k", "pair"), Attr("stride", "opt_pair", None, doc="defaults to the kernel size"),
            Attr("pad", "padding", 0), *extra)


_WINDOW_POOL = frozenset({"sliding_window", "init_transparent"})


def _pool_normalise(a, ins):
    a = _signal_attrs(a, ins, "pooling")
    if a["stride"] is None:
        a = {**a, "stride": a["kernel"]}
    if "padding" in a:
        a = _resolve_padding(a, ins)
        for axis in (0, 1):
            k = a["kernel"][axis]
            d = a.get("dilation", (1, 1))[axis]
            if any(not is_symbolic(p) and p > (d * (k - 1) + 1) // 2 for p in a["padding"][axis]):
                raise OpError(f"pooling padding must be at most half the kernel, got {a['padding'][axis]} "
                              f"for kernel {k}", "as in PyTorch: padding > kernel/2 would create windows "
                              "that see only padding", attr="pad")
    return a


def _pool_flops(a, ins, out):
    kh, kw = a["kernel"]
    return numel(out) * kh * kw


def _pool_shape(what):
    return lambda a, ins: _window_shape(a, ins, _grid(ins, what)[0], what)


MAXPOOL = OpSpec(
    "maxpool", "pooling",
    _pool_attrs((Attr("dilation", "pair", 1), Attr("ceil_mode", "bool", False))),
    shape=_pool_shape("maxpool"), flops=_pool_flops, rf=_window_rf, resolve=_pool_normalise,
    saves=("mask",), properties=_WINDOW_POOL, doc="max pooling (pads with -inf)")

AVGPOOL = OpSpec(
    "avgpool", "pooling",
    _pool_attrs((Attr("ceil_mode", "bool", False), Attr("count_include_pad", "bool", True))),
    shape=_pool_shape("avgpool"), flops=_pool_flops, rf=_window_rf, resolve=_pool_normalise,
    saves=(), properties=_WINDOW_POOL, doc="average pooling")

LPPOOL = OpSpec(
    "lppool", "pooling",
    (Attr("k", "pair"), Attr("stride", "opt_pair", None), Attr("p", "pos_float", 2.0),
     Attr("ceil_mode", "bool", False)),
    shape=_pool_shape("lppool"), flops=lambda a, ins, out: 3 * _pool_flops(a, ins, out),
    rf=_window_rf, resolve=_pool_normalise, saves=("input", "output"), properties=_WINDOW_POOL,
    doc="power-average (Lp) pooling; p = 2 is L2 pooling")


def _global_shape(a, ins):
    return _on_grid(ins, (_grid(ins, "global pooling")[0], 1, 1))


GLOBAL_AVGPOOL = OpSpec("global_avgpool", "pooling", (), shape=_global_shape,
                        flops=lambda a, ins, out: numel(ins[0]), rf=None, saves=(),
                        properties={"init_transparent"}, doc="average over H and W; output [C, 1, 1]")
GLOBAL_MAXPOOL = OpSpec("global_maxpool", "pooling", (), shape=_global_shape,
                        flops=lambda a, ins, out: numel(ins[0]), rf=None, saves=("mask",),
                        properties={"init_transparent"}, doc="maximum over H and W; output [C, 1, 1]")


def _adaptive_normalise(a, ins):
    """`adaptive_*pool(h, w)`, `(h)` for a square, or `((h, w))` as a pair, PyTorch's output_size."""
    h, w = a["h"], a["w"]
    if h[0] != h[1] and w is not None:
        raise OpError(f"the output size is given twice: h = ({h[0]}, {h[1]}) and w = {w}",
                      "give a pair (h, w), or h and w as two integers", attr="w")
    return {**a, "output": (h[0], w if w is not None else h[1])}


def _adaptive_flops(a, ins, out):
    c, h, w = ins[0]
    oh, ow = a["output"]
    if is_symbolic(h) or is_symbolic(w):
        return numel(ins[0])
    bins = lambda n, o: sum(-(-((i + 1) * n) // o) - (i * n) // o for i in range(o))
    return c * bins(h, oh) * bins(w, ow)


ADAPTIVE_AVGPOOL = OpSpec(
    "adaptive_avgpool", "pooling", (Attr("h", "pair", doc="output height, or the pair (h, w)"),
                                    Attr("w", "opt_int", None, doc="output width (default h)")),
    shape=lambda a, ins: (_spatial(ins, "adaptive_avgpool")[0], *a["output"]),
    flops=_adaptive_flops, rf=None, saves=(), resolve=_adaptive_normalise, properties={"init_transparent"},
    doc="average pooling to a fixed output size (PyTorch bins)")
ADAPTIVE_MAXPOOL = OpSpec(
    "adaptive_maxpool", "pooling", (Attr("h", "pair", doc="output height, or the pair (h, w)"),
                                    Attr("w", "opt_int", None, doc="output width (default h)")),
    shape=lambda a, ins: (_spatial(ins, "adaptive_maxpool")[0], *a["output"]),
    flops=_adaptive_flops, rf=None, saves=("mask",), resolve=_adaptive_normalise, properties={"init_transparent"},
    doc="max pooling to a fixed output size (PyTorch bins)")


def _unpool_shape(a, ins):
    """Unpooling undoes its maxpool: input shaped like the pool's output, output like its input."""
    if tuple(ins[0]) != tuple(a["of_shape"]):
        raise OpError(f"unpool's input {fmt_shape(ins[0])} must have the shape of {a.get('of_name', a['of'])}'s output "
                      f"{fmt_shape(a['of_shape'])}", attr="of")
    return tuple(a["of_input_shape"])


def _unpool_rf(a, ins):
    sh, sw = a["of_stride"]
    return RF(Fraction(1), Fraction(1, sh), Fraction(0)), RF(Fraction(1), Fraction(1, sw), Fraction(0))


UNPOOL = OpSpec(
    "unpool", "pooling", (Attr("of", "layer", doc="the maxpool layer whose indices place the values"),),
    shape=_unpool_shape, flops=lambda a, ins, out: 0, rf=_unpool_rf, saves=(), properties={"init_transparent"},
    doc="max unpooling with the indices of an earlier maxpool (SegNet)")


def _upsample_rf(a, ins):
    """Each output pixel reads a source pixel (nearest) or two (bilinear) per axis; the stride
    is the ratio of the sizes, exact when both are known, else the field is left undecided."""
    width = Fraction(2) if a["mode"] == "bilinear" else Fraction(1)
    if a.get("scale") is not None:
        rf = tuple(RF(width, Fraction(1, s), Fraction(0)) for s in a["scale"])
    else:
        out = a["size"] if a.get("size") is not None else _plane(ins[1])
        if any(is_symbolic(d) for d in (*_plane(ins[0]), *out)):
            return None
        rf = tuple(RF(width, Fraction(int(n), int(o)), Fraction(0)) for n, o in zip(_plane(ins[0]), out))
    return (RF(Fraction(1), Fraction(1), Fraction(0)), rf[1]) if is_signal(ins[0]) else rf


def _plane(shape) -> tuple:
    """(h, w) of a [C, H, W] shape; (1, L) of a [C, L] signal."""
    return (1, shape[1]) if is_signal(shape) else tuple(shape[1:])


def _upsample_normalise(a: dict, ins: list) -> dict:
    """Exactly one of scale, size and like (a second input) says the output size; scale 2 by default.
    On a [C, L] signal, scale and size are integers (unit-height pairs) and like is a signal too."""
    given = [name for name, present in (("scale", a.get("scale") is not None), ("size", a.get("size") is not None),
                                        ("like", len(ins) > 1)) if present]
    if len(given) > 1:
        raise OpError(f"give one of scale, size and like, not {' and '.join(given)}",
                      "keep the one that says the output size", attr=given[1])
    if a.get("align_corners") and a["mode"] != "bilinear":
        raise OpError("align_corners applies to mode = bilinear only", "drop it, or write mode = bilinear",
                      attr="align_corners")
    if len(ins) > 1 and is_signal(ins[0]) and not is_signal(ins[1]):
        raise OpError(f"like must be a [C, L] signal, as the input is, got {fmt_shape(ins[1])}", attr="like")
    if len(ins) > 1 and not is_signal(ins[0]) and len(ins[1]) != 3:
        raise OpError(f"like must be a [C, H, W] tensor, got {fmt_shape(ins[1])}", attr="like")
    return _signal_attrs({**a, "scale": (2, 2)} if not given else a, ins, "upsample")


def _upsample_shape(a, ins):
    c, h, w = _grid(ins, "upsample")
    if a.get("scale") is not None:
        return _on_grid(ins, (c, h * a["scale"][0], w * a["scale"][1]))
    if a.get("size") is not None:
        return _on_grid(ins, (c, *a["size"]))
    return _on_grid(ins, (c, *_plane(ins[1])))


UPSAMPLE = OpSpec(
    "upsample", "pooling",
    (Attr("scale", "opt_pair", None, doc="integer factor, int or (h, w); 2 when no size or like is given"),
     Attr("mode", "choice", "nearest", ("nearest", "bilinear")),
     Attr("size", "opt_pair", None, doc="output (h, w), known integers"),
     Attr("like", "opt_tensor", None, doc="a tensor whose height and width the output takes"),
     Attr("align_corners", "bool", False, doc="bilinear only, as PyTorch's interpolate")),
    shape=_upsample_shape,
    flops=lambda a, ins, out: numel(out) * (4 if a["mode"] == "bilinear" else 0),
    rf=_upsample_rf, saves=(), resolve=_upsample_normalise, properties={"init_transparent"},
    doc="resizing by an integer factor, to a size or to another tensor's height and width "
        "(nearest or bilinear, as PyTorch's interpolate); on a [C, L] signal, along its length")


# -------------------------------------------------------------- activations
def _same(a, ins):
    return tuple(ins[0])


def _elementwise(name, attrs=(), saves=("output",), cost=1, doc="", properties=()):
    return OpSpec(name, "activation", attrs, shape=_same, flops=lambda a, ins, out: cost * numel(out),
                  saves=saves, doc=doc, properties=frozenset(properties))


_FUSABLE_RECTIFIER = ("rectifier", "fusable_activation")


ACTIVATIONS = [
    _elementwise("relu", saves=("mask",), doc="max(x, 0)", properties=_FUSABLE_RECTIFIER),
    _elementwise("relu6", saves=("mask",), doc="min(max(x, 0), 6)", properties=_FUSABLE_RECTIFIER),
    _elementwise("leaky_relu", (Attr("slope", "float", 0.01),), saves=("mask",), doc="x if x > 0 else slope*x",
                 properties=_FUSABLE_RECTIFIER),
    _elementwise("hardswish", saves=("input",), doc="x * relu6(x + 3) / 6", properties=("rectifier",)),
    _elementwise("sigmoid", doc="1 / (1 + exp(-x))", properties=("saturating", "gate")),
    _elementwise("hardsigmoid", saves=("input",), doc="relu6(x + 3) / 6 (PyTorch's definition)",
                 properties=("saturating", "gate")),
    _elementwise("tanh", doc="hyperbolic tangent", properties=("saturating",)),
    _elementwise("swish", saves=("input",), doc="x * sigmoid(x) (PyTorch's SiLU; `silu` names it too)",
                 properties=("rectifier",)),
    _elementwise("mish", saves=("input",), doc="x * tanh(softplus(x))", properties=("rectifier",)),
    _elementwise("elu", (Attr("alpha", "float", 1.0),), saves=("output",), doc="x if x > 0 else alpha*(exp(x)-1)",
                 properties=("rectifier",)),
    _elementwise("gelu", saves=("input",), doc="x * Phi(x) (erf form)", properties=("rectifier",)),
    _elementwise("softmax", doc="softmax over the channel axis"),
]


# ------------------------------------------------------------ normalisation
def _norm(name, attrs, params, doc, saves=("input",), resolve=lambda a, ins: a, properties=()):
    return OpSpec(name, "normalisation", attrs, shape=_same, params=params,
                  flops=lambda a, ins, out: numel(out), saves=saves, resolve=resolve, doc=doc,
                  properties=frozenset({"init_transparent", *properties}))


def _affine(a, ins):
    c = _need_channels(ins[0][0], "normalisation")
    return {"weight": ParamSpec((c,), True, init="ones"), "bias": ParamSpec((c,), True)}


def _bn_params(a, ins):
    c = ins[0][0]
    return {**_affine(a, ins),
            "running_mean": ParamSpec((c,), False, buffer=True),
            "running_var": ParamSpec((c,), False, buffer=True, init="ones")}


def _groupnorm_check(a, ins):
    c = _need_channels(ins[0][0], "groupnorm")
    if c % a["groups"]:
        raise OpError(f"groups must divide the channels, but {a['groups']} does not divide {c}", attr="groups")
    return a


def _instancenorm_check(a, ins):
    _grid(ins, "instancenorm")
    return a


NORMS = [
    _norm("batchnorm", (Attr("eps", "pos_float", 1e-5), Attr("momentum", "prob", 0.1)), _bn_params,
          "batch normalisation with running statistics for inference", properties=("batch_statistics",)),
    _norm("layernorm", (Attr("eps", "pos_float", 1e-5),
                        Attr("over", "choice", "all", ("all", "channels"),
                             doc="all: each sample over [C, H, W] (GroupNorm(1, C)); channels: each position "
                                 "over C (PyTorch's LayerNorm on channels-last, ConvNeXt's LayerNorm2d)")),
          _affine, "normalises each sample over all its axes, or each position over its channels; "
                   "per-channel scale and shift"),
    _norm("instancenorm", (Attr("eps", "pos_float", 1e-5),), _affine,
          "normalises each channel of each sample over H and W", resolve=_instancenorm_check),
    _norm("groupnorm", (Attr("groups", "pos_int"), Attr("eps", "pos_float", 1e-5)), _affine,
          "normalises groups of channels of each sample", resolve=_groupnorm_check),
    OpSpec("lrn", "normalisation",
           (Attr("size", "pos_int", 5), Attr("alpha", "float", 1e-4), Attr("beta", "float", 0.75),
            Attr("k", "float", 2.0)),
           shape=_same, flops=lambda a, ins, out: numel(out) * (a["size"] + 3), saves=("input", "output"),
           properties={"init_transparent"}, doc="local response normalisation across channels (AlexNet)"),
]


# ------------------------------------------------------------ regularisation
_DROPOUT = frozenset({"random_drop", "init_transparent"})

REGULARISATION = [
    OpSpec("dropout", "regularisation",
           (Attr("p", "prob", 0.5), Attr("mode", "choice", "upscale_in_train",
                                         ("upscale_in_train", "downgrade_in_infer"))),
           shape=_same, flops=lambda a, ins, out: 0, saves=("mask",), properties=_DROPOUT,
           doc="zeroes elements with probability p in training"),
    OpSpec("spatial_dropout", "regularisation", (Attr("p", "prob", 0.5),),
           shape=lambda a, ins: _on_grid(ins, _grid(ins, "spatial_dropout")), flops=lambda a, ins, out: 0,
           saves=("mask",), properties=_DROPOUT, doc="zeroes whole channels with probability p in training"),
    OpSpec("stochastic_depth", "regularisation",
           (Attr("p", "prob", doc="probability of dropping a sample's whole tensor (its residual branch)"),
            Attr("mode", "choice", "row", ("row", "batch"),
                 doc="row: each sample of the batch drawn on its own; batch: one draw for the whole batch")),
           shape=_same, flops=lambda a, ins, out: 0, saves=("mask",), properties=_DROPOUT,
           doc="drop-path (torchvision's StochasticDepth): in training zeroes a sample's tensor with "
               "probability p and scales the kept ones by 1/(1-p); the identity in inference"),
]


# ---------------------------------------------------------------- structure
def _linear_shape(a, ins):
    if a.get("over") == "channels":
        return (a["out_features"], *ins[0][1:])
    if len(ins[0]) != 1:
        raise OpError(f"linear needs a flat input, got {fmt_shape(ins[0])}",
                      "insert `flatten` before it (or global_avgpool -> flatten); to map the channels at "
                      "every position, write linear(..., over = channels)")
    return (a["out_features"],)


def _linear_macs(a, ins, out):
    """in · out per position (one position for a flat input)."""
    return numel(ins[0]) * a["out_features"]


def _linear_rf(a, ins):
    """Over the channels of each position a linear map is element-wise; a flat input has no places."""
    if a.get("over") == "channels" and len(ins[0]) > 1:
        unit = RF(Fraction(1), Fraction(1), Fraction(0))
        return unit, unit
    return None


def _linear_params(a, ins):
    f = _need_channels(ins[0][0], "linear")
    o = a["out_features"]
    w = a.get("weights")
    out = {"weight": ParamSpec((o, f), a["trainable"], init="fixed" if w is not None else "xavier_uniform",
                               fan_in=f, fan_out=o, value=w)}
    if a["bias"]:
        out["bias"] = ParamSpec((o,), a["trainable"], fan_in=f)
    return out


def _linear_normalise(a, ins):
    _linear_shape(a, ins)
    if a.get("weights") is not None:
        a = {**a, "weights": _fit_weights(a["weights"], (a["out_features"], ins[0][0]))}
    return a


def _concat_shape(a, ins):
    first = ins[0]
    for other in ins[1:]:
        if len(other) != len(first) or tuple(other[1:]) != tuple(first[1:]):
            raise OpError(f"concat joins channels, so every other axis must agree: "
                          f"{fmt_shape(first)} and {fmt_shape(other)}")
    return (sum(s[0] for s in ins), *first[1:])


def broadcast(ins, what: str) -> tuple:
    first = ins[0]
    out = list(first)
    for other in ins[1:]:
        if len(other) != len(first):
            raise OpError(f"cannot {what} tensors of shapes {fmt_shape(first)} and {fmt_shape(other)}: "
                          "their ranks differ")
        for i, d in enumerate(other):
            if out[i] == d or d == 1:
                continue
            if out[i] == 1:
                out[i] = d
            else:
                raise OpError(f"cannot {what} tensors of shapes {fmt_shape(first)} and {fmt_shape(other)}")
    return tuple(out)


def crop_start(offset: tuple | None, size: tuple, like: tuple) -> tuple:
    """(top, left) of a crop of an H x W `size` to the `like` size: the given offset (Caffe's crop
    layer), else the centre, an odd difference dropping the extra bottom/right line. Every back end asks this."""
    if offset is not None:
        return tuple(offset)
    return (size[0] - like[0]) // 2, (size[1] - like[1]) // 2


def _crop_shape(a, ins):
    (c, h, w), like = _spatial(ins, "crop"), ins[1]
    if len(like) != 3:
        raise OpError(f"crop(like = …) needs a [C, H, W] tensor, got {fmt_shape(like)}", attr="like")
    _, lh, lw = like
    if (not is_symbolic(h - lh) and h - lh < 0) or (not is_symbolic(w - lw) and w - lw < 0):
        raise OpError(f"cannot crop {fmt_shape(ins[0])} to the larger size {lh}x{lw}", attr="like")
    if a.get("offset") is not None:
        top, left = a["offset"]
        for start, n, big, axis in ((top, lh, h, "rows"), (left, lw, w, "columns")):
            if not is_symbolic(big - n - start) and start + n > big:
                raise OpError(f"crop at offset ({top}, {left}) to {lh}x{lw} runs past the {axis} of "
                              f"{fmt_shape(ins[0])}", f"the offset may be at most {big - n} there", attr="offset")
    return (c, lh, lw)


def _crop_rf(a, ins):
    (_, h, w), (_, lh, lw) = ins[0], ins[1]
    top, left = crop_start(a.get("offset"), (h, w), (lh, lw))
    if is_symbolic(top) or is_symbolic(left):
        return None
    return RF(Fraction(1), Fraction(1), Fraction(-top)), RF(Fraction(1), Fraction(1), Fraction(-left))


def _pad_rf(a, ins):
    (pt, _), (pl, _) = a["padding"]
    return RF(Fraction(1), Fraction(1), Fraction(pt)), RF(Fraction(1), Fraction(1), Fraction(pl))


def _pad_normalise(a, ins):
    _spatial(ins, "pad")
    if isinstance(a["padding"], str):
        raise OpError("pad takes explicit sizes: an int, (h, w) or ((top, bottom), (left, right))", attr="padding")
    return a


def _layer_scale_params(a, ins):
    """One learned factor per channel, shaped to broadcast over the rest ([C, 1, 1] for an image, as
    torchvision's ConvNeXt keeps it), starting at `value`."""
    c = _need_channels(ins[0][0], "layer_scale")
    shape = (c,) + (1,) * (len(ins[0]) - 1)
    return {"weight": ParamSpec(shape, True, init="fixed", value=np.full(shape, a["value"], np.float32))}


def _flops_per_element(n):
    return lambda a, ins, out: (n if n >= 0 else len(ins) - 1) * numel(out)


_TRANSPARENT = frozenset({"init_transparent"})

STRUCTURE = [
    OpSpec("flatten", "structure", (), shape=lambda a, ins: (numel(ins[0]),), flops=lambda a, ins, out: 0,
           rf=None, saves=(), properties=_TRANSPARENT, doc="[C, H, W] -> [C*H*W]"),
    OpSpec("linear", "structure",
           (Attr("out", "pos_int"), Attr("bias", "bool", True), Attr("trainable", "bool", True),
            Attr("weights", "weights", None), Attr("init", "init", None, doc=_INIT_DOC),
            Attr("over", "choice", "flat", ("flat", "channels"),
                 doc="flat: the input is [F]; channels: the channel vector of every position (PyTorch's "
                     "nn.Linear on channels-last, a 1x1 conv whose weight is [out, in])")),
           shape=_linear_shape, params=_linear_params, macs=_linear_macs,
           flops=lambda a, ins, out: 2 * _linear_macs(a, ins, out) + (numel(out) if a["bias"] else 0),
           rf=_linear_rf, resolve=_linear_normalise,
           doc="fully connected layer; with over = channels, the same map at every position"),
    OpSpec("concat", "structure", (), inputs=None, shape=_concat_shape, flops=lambda a, ins, out: 0,
           saves=(), properties=_TRANSPARENT, doc="joins tensors along the channel axis"),
    OpSpec("add", "structure", (), inputs=None, shape=lambda a, ins: broadcast(ins, "add"),
           flops=_flops_per_element(-1), saves=(), properties=_TRANSPARENT, doc="element-wise sum (a + b)"),
    OpSpec("mul", "structure", (), inputs=None, shape=lambda a, ins: broadcast(ins, "multiply"),
           flops=_flops_per_element(-1), saves=("input",), doc="element-wise product with broadcasting (a * b)"),
    OpSpec("identity", "structure", (), shape=_same, flops=lambda a, ins, out: 0, saves=(), properties=_TRANSPARENT,
           doc="passes x on"),
    OpSpec("layer_scale", "structure", (Attr("value", "float", 1e-6, doc="the factors' initial value"),),
           shape=_same, params=_layer_scale_params, flops=lambda a, ins, out: numel(out), saves=("input",),
           properties=_TRANSPARENT,
           doc="a learned factor per channel (ConvNeXt's layer scale, weight [C, 1, 1]): no MACs"),
    OpSpec("pad", "structure", (Attr("padding", "padding"), Attr("value", "float", 0.0)),
           shape=lambda a, ins: (ins[0][0], ins[0][1] + sum(a["padding"][0]), ins[0][2] + sum(a["padding"][1])),
           flops=lambda a, ins, out: 0, rf=_pad_rf, saves=(), resolve=_pad_normalise, properties=_TRANSPARENT,
           doc="constant padding of H and W"),
    OpSpec("crop", "structure", (Attr("like", "tensor"), Attr("offset", "opt_pair0", None,
                                                               doc="(top, left) of the crop; default the centre")),
           shape=_crop_shape, flops=lambda a, ins, out: 0, rf=_crop_rf, saves=(),
           properties=_TRANSPARENT, doc="crop to another tensor's height and width, at the centre or an offset"),
    OpSpec("input", "structure", (), inputs=0, shape=lambda a, ins: a["shape"], rf=None, saves=(),
           doc="a graph input"),
]

# ------------------------------------------- channel split and shuffle (ShuffleNet)
def _slice_normalise(a: dict, ins: list) -> dict:
    c = _need_channels(ins[0][0], "a channel slice")
    start, stop = a["start"], c if a["stop"] is None else a["stop"]
    if not 0 <= start < stop <= c:
        raise OpError(f"channel slice {start}:{stop} is out of range for {c} channels",
                      f"the bounds must satisfy 0 <= start < stop <= {c}", attr="stop" if start >= 0 else "start")
    return {**a, "stop": stop}


def _shuffle_normalise(a: dict, ins: list) -> dict:
    c = _need_channels(ins[0][0], "channel_shuffle")
    if c % a["groups"]:
        raise OpError(f"groups must divide the channels, but {a['groups']} does not divide {c}",
                      f"channel_shuffle splits the {c} channels into groups of equal size", attr="groups")
    return a


CHANNEL_OPS = [
    OpSpec("slice", "structure", (Attr("start", "int", 0), Attr("stop", "opt_int", None)),
           shape=lambda a, ins: (a["stop"] - a["start"], *ins[0][1:]), flops=lambda a, ins, out: 0,
           saves=(), resolve=_slice_normalise, properties=_TRANSPARENT,
           doc="channels start to stop-1 of a tensor (written `x[start:stop]`)"),
    OpSpec("channel_shuffle", "structure", (Attr("groups", "pos_int"),), shape=_same,
           flops=lambda a, ins, out: 0, saves=(), resolve=_shuffle_normalise, properties=_TRANSPARENT,
           doc="interleaves the channels of `groups` groups (ShuffleNet): channel g*n + i goes to i*groups + g"),
]


# ------------------------------------------------ arithmetic with numbers, maxout
def _affine_flops(a, ins, out):
    """One per element for each of the multiply and the add that is not the identity."""
    return ((a["scale"] != 1.0) + (a["shift"] != 0.0)) * numel(out)


ARITHMETIC = [
    OpSpec("affine", "structure", (Attr("scale", "float", 1.0), Attr("shift", "float", 0.0)),
           shape=_same, flops=_affine_flops, saves=(), properties=_TRANSPARENT,
           doc="scale * x + shift with constant numbers: `x + 3`, `x * 0.5`, `1 - g`, `x / 2` and `-x` lower to it"),
    OpSpec("maximum", "structure", (), inputs=None, shape=lambda a, ins: broadcast(ins, "take the maximum of"),
           flops=_flops_per_element(-1), saves=("input",),
           doc="element-wise maximum with broadcasting, `max(a, b)` of tensors (maxout)"),
    OpSpec("minimum", "structure", (), inputs=None, shape=lambda a, ins: broadcast(ins, "take the minimum of"),
           flops=_flops_per_element(-1), saves=("input",),
           doc="element-wise minimum with broadcasting, `min(a, b)` of tensors"),
]

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [CONV, DECONV, LOCAL, MAXPOOL, AVGPOOL, LPPOOL, GLOBAL_AVGPOOL, GLOBAL_MAXPOOL,
                 ADAPTIVE_AVGPOOL, ADAPTIVE_MAXPOOL, UNPOOL, UPSAMPLE, *ACTIVATIONS, *NORMS, *REGULARISATION, *STRUCTURE,
                 *CHANNEL_OPS]
}
OPS.update({spec.name: spec for spec in ARITHMETIC})

def normalised_name(op: str, attr: str) -> str:
    """The normalised attribute a surface argument fills: k -> kernel, pad -> padding, out -> ..."""
    if attr == "out":
        return "out_features" if op == "linear" else "out_channels"
    if op == "lrn":  # lrn's k is its additive constant, not a kernel size
        return attr
    return {"k": "kernel", "pad": "padding"}.get(attr, attr)


# Other names of an op: the layer is that op, and Node.layer (so its default name) keeps the name
# written. PyTorch calls swish SiLU.
ALIASES: dict[str, str] = {"silu": "swish"}

# Layers written by users that lower to other ops (Node.layer keeps the surface name).
SURFACE: dict[str, tuple[Attr, ...]] = {
    **{alias: OPS[op].attrs for alias, op in ALIASES.items()},
    "depthwise_conv": (Attr("k", "pair"), Attr("stride", "pair", 1), Attr("pad", "padding", 0),
                       Attr("dilation", "pair", 1), Attr("multiplier", "pos_int", 1), Attr("bias", "bool", True),
                       Attr("trainable", "bool", True),
                       Attr("weights", "weights", None, doc="fixed initial weights [C*multiplier, 1, kh, kw]"),
                       Attr("init", "init", None, doc=_INIT_DOC)),
    "separable_conv": (Attr("out", "pos_int"), Attr("k", "pair"), Attr("stride", "pair", 1),
                       Attr("pad", "padding", 0), Attr("dilation", "pair", 1), Attr("bias", "bool", True)),
    # `a, b = x -> split(2)`: equal channel slices, one `slice` layer each
    "split": (Attr("parts", "pos_int", doc="how many equal groups of channels"),),
}

FAMILIES = ("convolution", "pooling", "activation", "normalisation", "regularisation", "structure")
