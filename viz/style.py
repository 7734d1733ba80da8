"""Stage 4 (viz): the shared vocabulary of every picture — colours, sizes and labels.

One palette per op family (the `family` of `compiler.ops.OPS`), so a conv is
the same blue in the Graphviz diagram, the architecture figure and the legend;
and one way of writing an op with its key attributes (`conv 3×3 /2, 64`,
`maxpool 3×3 /2`, `linear 1000`, `dropout p=0.5`) and a shape (`64×56×56`,
or `6@28×28` in the LeNet-style figure). Each op's label rule registers into
its entry (`register("label", op)`, and `"short_label"` for a folded word other
than the op's name); `op_label` asks the entry. Everything here is a pure
function of compiler records: nothing is mutated.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Mapping

from ..compiler.analysis import FieldState, fmt_frac
from ..compiler.graph import Network, Node
from ..compiler.ops import OPS, SIGNAL_AXES, implementation, register
from ..compiler.symbolic import is_symbolic

FONT = "Helvetica"  # Graphviz maps it through fontconfig (Liberation Sans / DejaVu Sans on Linux)
SVG_FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

# family -> (fill, border). Pastel fills keep black text readable in print and on a projector.
FAMILY_COLOURS: dict[str, tuple[str, str]] = {
    "convolution": ("#d6e6f7", "#2f6aa8"),
    "pooling": ("#fde3c8", "#c8731e"),
    "activation": ("#fbf1bd", "#a88b12"),
    "normalisation": ("#d5efd0", "#3b8a3e"),
    "regularisation": ("#eadcf3", "#7f4fa0"),
    "structure": ("#ececec", "#6b6b6b"),
}
FAMILY_ORDER = tuple(FAMILY_COLOURS)
BLOCK_COLOURS = ("#ffffff", "#444444")     # a collapsed block
SKIP_COLOUR = "#d6336c"                    # edges that bypass layers
FUSED_COLOUR = "#b35900"
FOLD_COLOUR = "#6f3f9e"                    # the box of a repeated block (×N)
CLUSTER_FILLS = ("#f4f6f9", "#e9edf2", "#dfe5ec", "#d5dde6")   # an open block's box, by nesting depth
TEXT_GREY = "#555555"


def family(node: Node) -> str:
    spec = OPS.get(node.op)
    return spec.family if spec is not None else "structure"


def colours(node: Node) -> tuple[str, str]:
    return FAMILY_COLOURS.get(family(node), FAMILY_COLOURS["structure"])


# -------------------------------------------------------------------- numbers
def dim(d: Any) -> str:
    """One dimension; symbolic ones print as the compiler writes them (`H//2`)."""
    return str(d)


def shape_text(shape: tuple) -> str:
    """(64, 56, 56) -> '64×56×56'; (1000,) -> '1000'."""
    return "×".join(dim(d) for d in shape)


def maps_text(shape: tuple) -> str:
    """LeNet's notation: (6, 28, 28) -> '6@28×28'; flat tensors print their length."""
    if len(shape) == 3:
        return f"{dim(shape[0])}@{dim(shape[1])}×{dim(shape[2])}"
    return shape_text(shape)


def human(n: Any) -> str:
    """36864 -> '36.9 K'; symbolic counts print as expressions."""
    if is_symbolic(n):
        return str(n)
    n = int(n)
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def block_summary(layers: int, params: Any, macs: Any) -> str:
    """The second line of a folded block's box: '12 layers · 2.1 M params · 231 M MACs'."""
    return f"{layers} layer{'s' if layers != 1 else ''} · {human(params)} params · {human(macs)} MACs"


def totals_text(totals: dict) -> str:
    """'11.7 M params · 1.81 G MACs'; MACs that depend on symbols are not spelled out in a title."""
    macs = totals["macs"]
    if is_symbolic(macs):
        macs_text = f"MACs depend on {', '.join(sorted(macs.symbols()))}"
    else:
        macs_text = f"{human(macs)} MACs"
    return f"{human(totals['params'])} params · {macs_text}"


def frac(x: Fraction | int | float) -> str:
    return fmt_frac(Fraction(x)) if not isinstance(x, float) else f"{x:g}"


def field_text(rf: tuple[FieldState, FieldState] | None) -> str:
    """'19×19 /4' (size and effective stride), 'whole input' after global ops."""
    if rf is None:
        return "whole input"
    (h, w) = rf
    size = frac(h.size) if h.size == w.size else f"{frac(h.size)}×{frac(w.size)}"
    stride = frac(h.stride) if h.stride == w.stride else f"{frac(h.stride)}×{frac(w.stride)}"
    approx = "" if h.exact and w.exact else " ≈"
    return f"{size} /{stride}{approx}"


# ---------------------------------------------------------------------- ops
def _pair(p: tuple) -> str:
    return dim(p[0]) if len(set(p)) == 1 else "×".join(dim(v) for v in p)


def _window(a: Mapping[str, Any], up: bool = False) -> str:
    """'3×3 /2' for kernel and stride (stride 1 omitted; '↑2' for a transposed conv), plus dilation."""
    text = "×".join(str(k) for k in a["kernel"])   # one size on a signal
    if "stride" in a and set(a["stride"]) != {1}:
        text += f" {'↑' if up else '/'}{_pair(a['stride'])}"
    if set(a.get("dilation", (1, 1))) != {1}:
        text += f" d{_pair(a['dilation'])}"
    return text


def _conv_label(node: Node, in_channels: Any) -> str:
    a = node.attrs
    groups, out = a.get("groups", 1), a["out_channels"]
    name = node.op
    if node.layer == "depthwise_conv" or (groups > 1 and groups == out and groups == in_channels):
        return f"{'deconv' if node.op == 'deconv' else 'dw conv'} {_window(a, node.op == 'deconv')}, {out}"
    text = f"{name} {_window(a, node.op == 'deconv')}, {out}"
    if groups > 1:
        text += f" g{groups}"
    return text


# Label rules, registered into the entries: (node, input channels or None) -> text.
Label = Callable[[Node, Any], str]

register("label", "conv", "deconv")(_conv_label)
register("label", "maxpool", "avgpool")(lambda node, _: f"{node.op} {_window(node.attrs)}")
register("label", "lppool")(lambda node, _: f"L{node.attrs['p']:g} pool {_window(node.attrs)}")
register("label", "global_avgpool", "global_maxpool")(lambda node, _: f"global {node.op.split('_')[1]}")
register("label", "adaptive_avgpool")(lambda node, _: f"adaptive avgpool → {_pair(node.attrs['output'])}")
register("label", "adaptive_maxpool")(lambda node, _: f"adaptive maxpool → {_pair(node.attrs['output'])}")
register("label", "unpool")(lambda node, _: f"unpool ({node.attrs['of']})")
register("label", "linear")(lambda node, _: f"linear {node.attrs['out_features']}"
                            + (" per position" if node.attrs.get("over") == "channels" else ""))
register("label", "dropout", "spatial_dropout")(lambda node, _: f"{node.op.replace('_', ' ')} p={node.attrs['p']:g}")
register("label", "stochastic_depth")(
    lambda node, _: f"drop path p={node.attrs['p']:g}" + (" batch" if node.attrs.get("mode") == "batch" else ""))
register("label", "layer_scale")(lambda node, _: "layer scale")
register("label", "layernorm")(
    lambda node, _: "layernorm over C" if node.attrs.get("over") == "channels" else "layernorm")
register("label", "swish")(lambda node, _: node.layer or node.op)   # written `silu` or `swish`
register("label", "leaky_relu")(lambda node, _: f"leaky_relu {node.attrs['slope']:g}")
register("label", "groupnorm")(lambda node, _: f"groupnorm g={node.attrs['groups']}")
register("label", "lrn")(lambda node, _: f"lrn n={node.attrs['size']}")
register("label", "input")(lambda node, _: f"input {node.name}")
register("label", "slice")(lambda node, _: f"channels {node.attrs['start']}:{node.attrs['stop']}")
register("label", "channel_shuffle")(lambda node, _: f"shuffle g={node.attrs['groups']}")


@register("label", "local")
def _local_label(node: Node, _: Any) -> str:
    a = node.attrs
    tile = "" if "tile" not in a else f" tile {_pair(a['tile'])}"
    return f"local {_window(a)}, {a['out_channels']}{tile}"


@register("label", "upsample")
def _upsample_label(node: Node, _: Any) -> str:
    a = node.attrs
    if a.get("scale") is not None:
        size = f"×{_pair(a['scale'])}"
    elif a.get("size") is not None:
        size = f"→ {_pair(a['size'])}"
    else:
        size = f"→ size of {node.inputs[1]}" if len(node.inputs) > 1 else ""
    corners = " aligned" if a.get("align_corners") else ""
    return f"upsample {size} {a.get('mode', '')}{corners}".rstrip()


@register("label", "affine")
def _affine_label(node: Node, _: Any) -> str:
    """`×0.5 +3`: the multiply and the add that are not the identity."""
    scale, shift = float(node.attrs["scale"]), float(node.attrs["shift"])
    parts = ([f"×{scale:g}"] if scale != 1.0 else []) + ([f"{shift:+g}"] if shift != 0.0 else [])
    return " ".join(parts) or "×1"


@register("label", "elu")
def _elu_label(node: Node, _: Any) -> str:
    alpha = node.attrs.get("alpha", 1.0)
    return "elu" if alpha == 1.0 else f"elu α={alpha:g}"


@register("label", "batchnorm", "instancenorm", "pad")
def _name_label(node: Node, _: Any) -> str:
    """Ops with attributes a reader does not need in the box: the op's name."""
    return node.op


@register("label", "crop")
def _crop_label(node: Node, _: Any) -> str:
    """A centre crop is `crop`; one at a given offset says where (Caffe's crop layer)."""
    offset = node.attrs.get("offset")
    return "crop" if offset is None else f"crop @{offset[0]},{offset[1]}"


def op_label(node: Node, in_channels: Any = None, signal: bool = False) -> str:
    """The op and its key attributes, as a reader of a paper expects them: the entry's label rule.
    An op without attributes (relu, add, ...) needs none: it is written as its name, and so is
    an op outside the table (a fused one, labelled by its members elsewhere). `signal`: the layer
    works on a [C, L] signal, whose unit height (compiler/ops.py, "1-D signals") is not shown."""
    label: Label | None = implementation(node.op, "label")
    if label is not None and signal:
        node = node.replace(attrs={k: tuple(v)[1:] if k in SIGNAL_AXES and isinstance(v, tuple) else v
                                   for k, v in node.attrs.items()})
    return node.op if label is None else label(node, in_channels)


# The word for an op folded into its neighbour's box, where it is not the op's name.
register("short_label", "batchnorm")(lambda node: "bn")
register("short_label", "layernorm")(lambda node: "ln")
register("short_label", "instancenorm")(lambda node: "in")
register("short_label", "groupnorm")(lambda node: "gn")
register("short_label", "identity")(lambda node: "id")
register("short_label", "add")(lambda node: "+")
register("short_label", "mul")(lambda node: "×")
register("short_label", "maximum")(lambda node: "max")
register("short_label", "minimum")(lambda node: "min")
register("short_label", "layer_scale")(lambda node: "scale")
register("short_label", "stochastic_depth")(lambda node: f"drop path {node.attrs['p']:g}")
register("short_label", "swish")(lambda node: node.layer or node.op)
register("short_label", "dropout")(lambda node: f"dropout {node.attrs['p']:g}")
register("short_label", "spatial_dropout")(lambda node: f"sdrop {node.attrs['p']:g}")


def layer_head(net: Network, node: Node) -> tuple[str, str]:
    """The first line of a layer's box: (the name the user gave it, or "", the op with its key attributes)."""
    in_shape = net.shapes[node.inputs[0]] if node.inputs else None
    signal = in_shape is not None and len(in_shape) == 2
    user = local_name(node) if is_user_label(node) and node.op != "input" else ""
    return user, op_label(node, in_shape[0] if in_shape else None, signal)


def short_label(node: Node) -> str:
    """A word for an op folded into its neighbour's box in the figure (`bn`, `relu`, `+`)."""
    short = implementation(node.op, "short_label")
    return node.op if short is None else short(node)


def local_name(node: Node) -> str:
    """The last part of the node's name ('fc' in 'fc', 'conv_1' in 'basic_3.conv_1')."""
    return node.name.rsplit(".", 1)[-1]


def is_user_label(node: Node) -> bool:
    """True when the user named the layer (`fc: linear(…)`), not the compiler."""
    base = local_name(node)
    stem, _, tail = base.rpartition("_")
    if tail.isdigit():
        base = stem
    return base not in (node.op, node.layer, "depthwise", "pointwise")
