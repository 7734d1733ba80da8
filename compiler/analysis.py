"""Stage 2 (compiler): analyses over a checked `Network`, each a plain function.

`parameters`, `costs`, `receptive_fields`, `memory` and `lints` read the graph
in topological order and return tables keyed by layer name; `analyse` runs
them all. Each takes the op table it reads (`ops`, compiler/ops.py `OPS` by
default), so fusion runs the same functions over its merged table; the lints
ask each op's declared properties (`sliding_window`, `saturating`, ...), not
op lists. Conventions (MACs, FLOPs, receptive fields) are those written down
in docs/analysis.md. Results may be symbolic (`Dim`) when an input is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping

import networkx as nx

from ..dsl.source import Diagnostic
from .lints import batchnorm_momentum_lints, warning
from .graph import Network, Node, ParamSpec
from .ops import OPS, RF, OpSpec, numel
from .symbolic import is_symbolic

BYTES = 4  # float32
SATURATING_DEPTH = 4
Ops = Mapping[str, OpSpec]


@dataclass(frozen=True)
class FieldState:
    """Receptive field of one unit on one axis, in input pixels (Araujo et al., Distill 2019)."""

    size: Fraction
    stride: Fraction
    padding: Fraction
    exact: bool = True  # False after transposed conv/upsampling: the field is then an approximation

    @property
    def centre(self) -> Fraction:
        return (self.size - 1) / 2 - self.padding


@dataclass
class Analysis:
    params: dict[str, dict[str, ParamSpec]]
    layer_params: dict[str, int]
    macs: dict[str, Any]
    flops: dict[str, Any]
    rf: dict[str, tuple[FieldState, FieldState] | None]
    memory: dict[str, Any]
    warnings: list[Diagnostic] = field(default_factory=list)
    local_rf: dict[str, tuple[FieldState, FieldState] | None] = field(default_factory=dict)

    def totals(self) -> dict[str, Any]:
        trainable = sum(s.size for p in self.params.values() for s in p.values() if s.trainable and not s.buffer)
        fixed = sum(s.size for p in self.params.values() for s in p.values() if not s.trainable and not s.buffer)
        buffers = sum(s.size for p in self.params.values() for s in p.values() if s.buffer)
        return {"params": trainable + fixed, "trainable_params": trainable, "non_trainable_params": fixed,
                "buffers": buffers, "macs": _sum(self.macs.values()), "flops": _sum(self.flops.values()),
                **self.memory}


def _sum(values) -> Any:
    total = 0
    for v in values:
        total = total + v
    return total


def input_shapes(net: Network, node: Node) -> list[tuple]:
    return [net.shapes[i] for i in node.inputs]


# ---------------------------------------------------------------- parameters
def parameters(net: Network, ops: Ops = OPS) -> dict[str, dict[str, ParamSpec]]:
    """Parameter layout per owning layer; a layer sharing weights owns none."""
    out = {}
    for node in net.layers():
        if node.shares is not None:
            continue
        specs = ops[node.op].params(dict(node.attrs), input_shapes(net, node))
        if specs:
            out[node.name] = specs
    return out


# --------------------------------------------------------------------- costs
def costs(net: Network, ops: Ops = OPS) -> tuple[dict[str, Any], dict[str, Any]]:
    macs, flops = {}, {}
    for node in net.layers():
        spec, ins, out = ops[node.op], input_shapes(net, node), net.shapes[node.name]
        macs[node.name] = spec.macs(dict(node.attrs), ins, out)
        flops[node.name] = spec.flops(dict(node.attrs), ins, out)
    return macs, flops


# ----------------------------------------------------------- receptive field
def receptive_fields(net: Network, warnings: list | None = None, ops: Ops = OPS,
                     through_gates: bool = True) -> dict[str, tuple | None]:
    """Size, effective stride and padding per axis for every layer; None when it is the whole input.

    The field of a unit is every input pixel that can change it (Araujo et al.): where paths merge it
    is the largest of theirs, a gate's too — a squeeze-and-excitation output's field is the whole input,
    since its gate pools all of it. `through_gates = False` gives the *local* field instead: a merge
    leaves out inputs broadcast over H and W ([C, 1, 1] gates that scale channels, not places), so it
    says where the unit looks through its convolutions. Alignment is checked on the local paths."""
    fields: dict[str, tuple | None] = {}
    for node in net.order():
        if node.op == "input":
            one = FieldState(Fraction(1), Fraction(1), Fraction(0))
            fields[node.name] = (one, one) if len(net.shapes[node.name]) in (2, 3) else None  # image or signal
            continue
        spec = ops[node.op]
        sources = node.inputs[:1] if node.op in ("crop", "upsample") else node.inputs  # `like` gives a size only
        if not through_gates and node.op in ("add", "mul") and len(sources) > 1:
            sources = _spatial_sources(net, node, sources)
        states = [fields[s] for s in sources]
        if spec.rf is None or any(s is None for s in states):
            fields[node.name] = None
            continue
        if len(states) > 1:
            _check_alignment(node, states, sources, warnings)
        base = tuple(max((s[axis] for s in states), key=lambda f: f.size) for axis in (0, 1))
        contribution = _contribution(spec, node, net)
        if contribution is None:
            fields[node.name] = None
            continue
        fields[node.name] = tuple(_compose(b, c) for b, c in zip(base, contribution))
    return fields


def _spatial_sources(net: Network, node: Node, sources: tuple) -> tuple:
    """Inputs broadcast over H and W (a squeeze-excitation gate) scale channels, not places:
    the local field leaves them out."""
    out_shape = net.shapes[node.name]
    spatial = tuple(s for s in sources if not _one_place(net.shapes[s]) or _one_place(out_shape))
    return spatial or sources


def _one_place(shape: tuple) -> bool:
    """An image [C, 1, 1] or a signal [C, 1]: a value per channel, broadcast over every place."""
    return len(shape) in (2, 3) and all(d == 1 for d in shape[1:])


def _contribution(spec: OpSpec, node: Node, net: Network) -> tuple[RF, RF] | None:
    if spec.rf == "elementwise":
        unit = RF(Fraction(1), Fraction(1), Fraction(0))
        return unit, unit
    return spec.rf(dict(node.attrs), input_shapes(net, node))


def _compose(state: FieldState, rf: RF) -> FieldState:
    return FieldState(state.size + (rf.k - 1) * state.stride, state.stride * rf.s,
                      state.padding + rf.p * state.stride, state.exact and rf.s.denominator == 1)


def _check_alignment(node: Node, states: list, sources: tuple, warnings: list | None) -> None:
    if warnings is None:
        return
    for axis, name in ((0, "vertical"), (1, "horizontal")):
        first = states[0][axis]
        for other, src in zip(states[1:], sources[1:]):
            o = other[axis]
            if not (first.exact and o.exact):
                continue
            if o.stride != first.stride or o.centre != first.centre:
                warnings.append(warning(
                    "misaligned", f"{node.op} '{node.name}' merges misaligned paths ({name}: stride "
                    f"{fmt_frac(first.stride)} vs {fmt_frac(o.stride)}, centre {fmt_frac(first.centre)} vs "
                    f"{fmt_frac(o.centre)})", node.loc,
                    "the merged units look at different places of the input; check padding and strides"))
                return


def fmt_frac(x: Fraction | int) -> str:
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


# ---------------------------------------------------------------------- memory
def memory(net: Network, ops: Ops = OPS) -> dict[str, Any]:
    """Activation bytes per sample: kept for training's backward pass, and inference peak."""
    size = {n: numel(s) * BYTES for n, s in net.shapes.items()}
    saved: dict[tuple[str, str], Any] = {}
    for node in net.layers():
        for what in ops[node.op].saves:
            if what == "input":
                for i in node.inputs:
                    saved[(i, "value")] = size[i]
            elif what == "output":
                saved[(node.name, "value")] = size[node.name]
            else:  # a boolean mask of the output: one byte per element
                saved.setdefault((node.name, "mask"), size[node.name] // BYTES)
    return {"activation_bytes": _sum(size[n.name] for n in net.layers()),
            "train_saved_bytes": _sum(saved.values()),
            "inference_peak_bytes": inference_peak(net, size)}


def inference_peak(net: Network, size: dict) -> Any:
    """Peak of the live tensors when each is freed after its last consumer runs."""
    order = net.order()
    if any(is_symbolic(v) for v in size.values()):
        return None  # the peak depends on which tensors dominate: only meaningful for concrete sizes
    last_use = {}
    for step, node in enumerate(order):
        for i in node.inputs:
            last_use[i] = step
    live, peak = 0, 0
    outputs = set(net.outputs)
    for step, node in enumerate(order):
        live += size[node.name]
        peak = max(peak, live)
        for i in set(node.inputs):
            if last_use[i] == step and i not in outputs:
                live -= size[i]
        if node.name not in last_use and node.name not in outputs:
            live -= size[node.name]
    return peak


# ----------------------------------------------------------------------- lints
def lints(net: Network, fields: dict, ops: Ops = OPS) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    _lint_field_exceeds_input(net, fields, out)
    for node in net.layers():
        a, spec = node.attrs, ops[node.op]
        if spec.has("sliding_window") and "padding" in a:
            (t, b), (l, r) = a["padding"]
            if (t != b or l != r) and not any(is_symbolic(v) for v in (t, b, l, r)):
                out.append(warning("asymmetric-padding",
                                 f"'{node.name}': padding is asymmetric (top/bottom {t}/{b}, left/right {l}/{r})",
                                 node.loc, "'same' with an even kernel pads one side more; frameworks disagree "
                                 "on which side, so weights do not port; prefer odd kernels"))
        if spec.has("sliding_window"):
            _lint_dropped_pixels(net, node, out)
        if spec.has("random_drop"):
            consumers = list(net.graph.successors(node.name))
            if any(ops[net.node(c).op].has("batch_statistics") for c in consumers):
                out.append(warning("dropout-before-batchnorm", f"'{node.name}': dropout feeds batchnorm directly",
                                 node.loc, "dropout shifts the variance batchnorm learns in training "
                                 "(Li et al., 2019); put dropout after the last batchnorm"))
    _lint_saturating(net, out, ops)
    _lint_unreachable(net, out)
    out += batchnorm_momentum_lints(net)
    return out



# How many times the input's side a receptive field may reach before `field-exceeds-input` warns.
# A field beyond the input is normal in deep classifiers: torchvision's ResNet-50 reaches 427 at 224
# (1.9x; Araujo et al. 2019 tabulate it), GoogLeNet 1.7x, MobileNet v3 2.7x, EfficientNet-B0 3.8x,
# and a trained network's effective field is far smaller than its theoretical one (Luo et al. 2016).
# Past four times the input, layers add cost with ever less context for any unit.
FIELD_EXCESS = 4


def _lint_field_exceeds_input(net: Network, fields: dict, out: list) -> None:
    for node in net.layers():
        f = fields.get(node.name)
        if f is None or not node.inputs:
            continue
        src = [fields.get(i) for i in node.inputs]
        shape = _as_image(next(iter(net.inputs.values())))
        if len(shape) != 3 or any(is_symbolic(d) for d in shape[1:]):
            return
        exceeds = lambda ff: ff is not None and (ff[0].size > FIELD_EXCESS * shape[1] or
                                                 ff[1].size > FIELD_EXCESS * shape[2])
        if exceeds(f) and not any(exceeds(s) for s in src):
            # once per network: parallel branches crossing the size together say the same thing
            out.append(warning("field-exceeds-input",
                             f"'{node.name}': receptive field {fmt_frac(f[0].size)}x{fmt_frac(f[1].size)} is more "
                             f"than {FIELD_EXCESS} times the input {shape[1]}x{shape[2]} from here on", node.loc,
                             "units at the border see mostly padding; deeper layers add cost, not context"))
            return


def _as_image(shape: tuple) -> tuple:
    """A [C, L] signal as the [C, 1, L] image its layers' unit-height attributes describe."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _lint_dropped_pixels(net: Network, node: Node, out: list) -> None:
    """Warn when the last window stops before the last real row/column (floor division)."""
    (_, h, w), a = _as_image(net.shapes[node.inputs[0]]), node.attrs
    signal = len(net.shapes[node.inputs[0]]) == 2
    pads = a.get("padding", ((0, 0), (0, 0)))
    dil = a.get("dilation", (1, 1))
    dropped = []
    for axis, n, what in ((0, h, "row"), (1, w, "value" if signal else "column")):
        k, s = dil[axis] * (a["kernel"][axis] - 1) + 1, a["stride"][axis]
        if is_symbolic(n) or any(is_symbolic(p) for p in pads[axis]) or s > k:
            continue  # a stride larger than the window skips pixels by design
        out_n = _as_image(net.shapes[node.name])[axis + 1]
        last_covered = (out_n - 1) * s + k - 1          # in padded coordinates
        missed = (n + pads[axis][0] - 1) - last_covered  # real pixels after it
        if missed > 0:
            dropped.append(f"{missed} {what}{'s' if missed > 1 else ''}")
    if dropped:
        out.append(warning("dropped-pixels",
                         f"'{node.name}': the last {' and '.join(dropped)} of its "
                         f"{f'length-{w}' if signal else f'{h}x{w}'} input fall outside every window", node.loc,
                         "adjust the padding or the input size"
                         + (", or use ceil_mode = true" if node.op != "conv" else "")))


def _lint_saturating(net: Network, out: list, ops: Ops) -> None:
    depth: dict[str, int] = {}
    first: dict[str, Node | None] = {}
    for node in net.order():
        preds = [p for p in node.inputs]
        best = max(preds, key=lambda p: depth.get(p, 0), default=None)
        d = depth.get(best, 0) if best else 0
        f = first.get(best) if best else None
        if ops[node.op].has("saturating") and not _is_gate(net, node, ops):
            d += 1
            f = f or node
        depth[node.name], first[node.name] = d, f
    deepest = max(depth, key=depth.get, default=None)
    if deepest is not None and depth[deepest] >= SATURATING_DEPTH:
        start = first[deepest]
        out.append(warning("saturating-activations",
                         f"{depth[deepest]} sigmoid/tanh activations in a row (from '{start.name}'): "
                         "gradients shrink through each", start.loc,
                         "use relu (or a variant) in deep stacks, or add batchnorm"))


def _is_gate(net: Network, node: Node, ops: Ops) -> bool:
    """A sigmoid (any `gate` op) that scales another tensor (squeeze-and-excitation, attention) is a
    gate, not a stack."""
    return ops[node.op].has("gate") and any(net.node(c).op == "mul" for c in net.graph.successors(node.name))


def _lint_unreachable(net: Network, out: list) -> None:
    needed: set[str] = set()
    for o in net.outputs:
        needed |= nx.ancestors(net.graph, o) | {o}
    for n in net.order():
        if n.name in needed or n.op == "input":
            continue
        if all(p in needed for p in n.inputs):
            out.append(warning("unreachable", f"'{n.name}' does not contribute to any output", n.loc,
                             "its result is discarded; bind it and use it, or add it to `output`"))


# ------------------------------------------------------------------------ all
def analyse(net: Network, ops: Ops = OPS) -> Analysis:
    params = parameters(net, ops)
    macs, flops = costs(net, ops)
    warnings = list(net.warnings)
    local = receptive_fields(net, warnings, ops, through_gates=False)   # merges are checked on local paths
    fields = receptive_fields(net, None, ops)
    warnings += lints(net, fields, ops)
    layer_params = {}
    for node in net.layers():
        specs = params.get(node.name, {})
        layer_params[node.name] = sum(s.size for s in specs.values() if not s.buffer)
    return Analysis(params, layer_params, macs, flops, fields, memory(net, ops), warnings, local)
