"""Stage 4 (viz): the shared vocabulary of every picture — colours, sizes and labels.

One palette per op family (the `family` of `compiler.ops.OPS`), so a conv is
the same blue in the Graphviz diagram, the architecture figure and the legend;
and one way of writing an op with its key attributes (`conv 3×3 /2, 64`,
`maxpool 3×3 /2`, `linear 1000`, `dropout p=0.5`) and a shape (`64×56×56`,
or `6@28×28` in the LeNet-style figure). Everything here is a pure function of
compiler records: nothing is mutated.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping

from ..compiler.analysis import FieldState, fmt_frac
from ..compiler.graph import Node
from ..compiler.ops import OPS
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
    a, b = p
    return dim(a) if a == b else f"{dim(a)}×{dim(b)}"


def _window(a: Mapping[str, Any], up: bool = False) -> str:
    """'3×3 /2' for kernel and stride (stride 1 omitted; '↑2' for a transposed conv), plus dilation."""
    kh, kw = a["kernel"]
    text = f"{kh}×{kw}"
    if "stride" in a and tuple(a["stride"]) != (1, 1):
        text += f" {'↑' if up else '/'}{_pair(a['stride'])}"
    if tuple(a.get("dilation", (1, 1))) != (1, 1):
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


def _pool_label(node: Node) -> str:
    a = node.attrs
    if node.op == "lppool":
        return f"L{a['p']:g} pool {_window(a)}"
    return f"{node.op} {_window(a)}"


def op_label(node: Node, in_channels: Any = None) -> str:
    """The op and its key attributes, as a reader of a paper expects them."""
    op, a = node.op, node.attrs
    if op == "input":
        return f"input {node.name}"
    if op in ("conv", "deconv"):
        return _conv_label(node, in_channels)
    if op == "local":
        tile = "" if "tile" not in a else f" tile {_pair(a['tile'])}"
        return f"local {_window(a)}, {a['out_channels']}{tile}"
    if op in ("maxpool", "avgpool", "lppool"):
        return _pool_label(node)
    if op in ("global_avgpool", "global_maxpool"):
        return f"global {op.split('_')[1]}"
    if op == "adaptive_avgpool":
        return f"adaptive avgpool → {_pair(a['output'])}"
    if op == "upsample":
        return f"upsample ×{_pair(a['scale'])} {a.get('mode', '')}".rstrip()
    if op == "unpool":
        return f"unpool ({a['of']})"
    if op == "linear":
        return f"linear {a['out_features']}"
    if op in ("dropout", "spatial_dropout"):
        return f"{op.replace('_', ' ')} p={a['p']:g}"
    if op == "leaky_relu":
        return f"leaky_relu {a['slope']:g}"
    if op == "elu" and a.get("alpha", 1.0) != 1.0:
        return f"elu α={a['alpha']:g}"
    if op == "groupnorm":
        return f"groupnorm g={a['groups']}"
    if op == "lrn":
        return f"lrn n={a['size']}"
    if op == "add":
        return "add"
    if op == "mul":
        return "mul"
    return op


SHORT = {"batchnorm": "bn", "layernorm": "ln", "instancenorm": "in", "groupnorm": "gn",
         "identity": "id", "spatial_dropout": "sdrop"}


def short_label(node: Node) -> str:
    """A word for an op folded into its neighbour's box in the figure (`bn`, `relu`, `+`)."""
    if node.op == "add":
        return "+"
    if node.op == "mul":
        return "×"
    if node.op in ("dropout", "spatial_dropout"):
        return f"{SHORT.get(node.op, node.op)} {node.attrs['p']:g}"
    return SHORT.get(node.op, node.op)


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
