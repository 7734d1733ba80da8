"""Stage 2 (compiler): operator fusion passes over a checked `Network`, and the graph lint.

Eight passes, each a plain function from a network to a new network, run
longest pattern first and each followed by `check` (edges match
`Node.inputs`, every input exists, no cycles, every shape re-derives through
the op-spec table): conv→batchnorm→add→activation (the residual tail),
conv→batchnorm→activation, conv→batchnorm, conv→activation,
linear→activation and batchnorm→activation, then, in `eval` mode, an
`affine` (constant scale and shift) after a conv, linear or batchnorm — or a
group of the passes before without an activation or residual add — with an
activation after it or not: the runtime folds it into the weights
(`attrs["affine"]`). A matched chain becomes one new
node (`fused_conv`, `fused_linear`, `fused_bn`) that takes the first
layer's name, `loc`, scope and repeat, and records the nodes it replaced
(`attrs["fused_from"]`: name, op and loc of each). Guards, as torch.fx's
fuser: every intermediate tensor has exactly one consumer, which reads it
once, and is no graph output and no unpool's `of`; a batchnorm joins a conv
only when neither shares weights; the group's last layer is no graph output
(outputs keep their names). In `eval` mode batchnorm folds into the
convolution (w' = w·γ/√(σ²+ε), b' = (b−μ)·γ/√(σ²+ε)+β, done by the runtime
on the parameter values); in `train` mode it stays a batchnorm inside the
fused step, which the runtime recomputes in backward. `FUSED_OPS` holds the
op specs of the fused ops (shape, parameters, MACs, FLOPs, what training
keeps); `ALL_OPS` merges them with `compiler.ops.OPS` without changing it,
and `analyse_fused` runs the analyses on a fused graph with that table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import networkx as nx

from ..dsl.source import Loc
from . import analysis
from .analysis import BYTES, Analysis
from .graph import Network, Node, ParamSpec, build_graph
from .ops import OPS, OpError, OpSpec, fmt_shape, numel, with_property
from .symbolic import is_symbolic

# The activations a fused step applies in its epilogue: those whose entry says so.
ACT = with_property("fusable_activation")
MODES = ("eval", "train")
LABELS = {"batchnorm": "bn"}


class GraphLintError(AssertionError):
    """A pass produced an inconsistent graph: a compiler bug, never a user error."""


# ------------------------------------------------------------ fused op specs
def _act_flops(a: dict, out: tuple) -> Any:
    return numel(out) if a.get("activation") else 0


def _unfolded_bn(a: dict) -> bool:
    return bool(a.get("bn")) and not a.get("folded")


def _fused_conv_shape(a: dict, ins: list) -> tuple:
    out = OPS["conv"].shape(a, ins[:1])
    if a.get("residual"):
        if len(ins) != 2 or tuple(ins[1]) != tuple(out):
            raise OpError(f"the residual input {fmt_shape(ins[-1])} must have the conv's shape {fmt_shape(out)}")
    elif len(ins) != 1:
        raise OpError(f"fused_conv without a residual takes one input, got {len(ins)}")
    return out


def _fused_conv_params(a: dict, ins: list) -> dict[str, ParamSpec]:
    out = dict(OPS["conv"].params(a, ins[:1]))
    if _unfolded_bn(a):  # train mode: batchnorm's own tensors, under "bn_" names
        bn = OPS["batchnorm"].params({}, [(a["out_channels"],)])
        out.update({f"bn_{k}": v for k, v in bn.items()})
    return out


def _fused_conv_macs(a: dict, ins: list, out: tuple) -> Any:
    return OPS["conv"].macs(a, ins[:1], out)


def _fused_conv_flops(a: dict, ins: list, out: tuple) -> Any:
    e = numel(out)
    flops = 2 * _fused_conv_macs(a, ins, out) + (e if a["bias"] else 0)
    flops = flops + (e if _unfolded_bn(a) else 0) + (e if a.get("residual") else 0)
    return flops + _act_flops(a, out)


def _fused_linear_flops(a: dict, ins: list, out: tuple) -> Any:
    return OPS["linear"].flops(a, ins, out) + _act_flops(a, out)


FUSED_OPS: dict[str, OpSpec] = {
    "fused_conv": OpSpec(
        "fused_conv", "convolution", (), shape=_fused_conv_shape, inputs=None, params=_fused_conv_params,
        macs=_fused_conv_macs, flops=_fused_conv_flops, rf=OPS["conv"].rf, saves=("input",),
        doc="conv (+ batchnorm, folded in eval) (+ residual add) (+ activation) in one step"),
    "fused_linear": OpSpec(
        "fused_linear", "structure", (), shape=OPS["linear"].shape, params=OPS["linear"].params,
        macs=OPS["linear"].macs, flops=_fused_linear_flops, rf=None, saves=("input",),
        doc="linear + activation in one step"),
    "fused_bn": OpSpec(
        "fused_bn", "normalisation", (), shape=OPS["batchnorm"].shape, params=OPS["batchnorm"].params,
        flops=lambda a, ins, out: numel(out) + _act_flops(a, out), saves=("input",),
        doc="batchnorm + activation in one step", properties=("batch_statistics",)),
}

# The compiler's table plus the fused ops; OPS itself stays what users can write.
ALL_OPS: dict[str, OpSpec] = {**OPS, **FUSED_OPS}


# -------------------------------------------------------------------- records
@dataclass(frozen=True)
class FusedGroup:
    """One fused chain: the new node's name and op, and the layers it replaced."""

    name: str                       # the fused node (= its first member's name)
    op: str                         # fused_conv, fused_linear or fused_bn
    members: tuple[str, ...]        # replaced nodes in data-flow order
    ops: tuple[str, ...]            # their ops
    locs: tuple[Loc | None, ...]    # where the user wrote each
    skip: str | None = None         # the residual add's other operand
    folded: bool = False            # batchnorm folded into the weights (eval mode)

    @property
    def pattern(self) -> str:
        return "+".join(LABELS.get(o, o) for o in self.ops)

    @property
    def tail(self) -> str:
        return self.members[-1]


@dataclass(frozen=True)
class Skipped:
    """A chain that matched a pattern's ops but not its guards."""

    start: str
    pattern: str
    reason: str
    loc: Loc | None = None


@dataclass
class Fusion:
    net: Network                    # the fused graph
    mode: str
    groups: list[FusedGroup]
    skipped: list[Skipped]


def group_of(node: Node) -> FusedGroup:
    """The group a fused node records (attrs["fused_from"])."""
    names, ops, locs = zip(*node.attrs["fused_from"])
    skip = node.inputs[1] if node.attrs.get("residual") else None
    return FusedGroup(node.name, node.op, names, ops, locs, skip, bool(node.attrs.get("folded")))


# ----------------------------------------------------------------------- lint
def check(net: Network, ops: dict[str, OpSpec] = ALL_OPS) -> None:
    """Graph lint after every pass: structure, acyclicity and shapes re-derived from the op table."""
    g = net.graph
    for name in g.nodes:
        _lint("node" in g.nodes[name], f"'{name}' does not exist (no node record), yet "
                                       f"{sorted(g.successors(name))} read it")
        node = net.node(name)
        _lint(node.name == name, f"node keyed '{name}' is named '{node.name}'")
        _lint(node.op in ops, f"'{name}' has unknown op '{node.op}'")
        for src in node.inputs:
            _lint(src in g, f"'{name}' reads '{src}', which does not exist")
        _lint(set(g.predecessors(name)) == set(node.inputs),
              f"edges into '{name}' {sorted(g.predecessors(name))} differ from its inputs {list(node.inputs)}")
    _lint(nx.is_directed_acyclic_graph(g), "the graph has a cycle")
    for o in net.outputs:
        _lint(o in g, f"output '{o}' does not exist")
    for i in net.inputs:
        _lint(i in g and net.node(i).op == "input", f"input '{i}' is not an input node")
    for node in net.layers():
        ins = [net.shapes[i] for i in node.inputs]
        try:
            shape = tuple(ops[node.op].shape(dict(node.attrs), ins))
        except OpError as err:
            if any(is_symbolic(d) for s in ins for d in s):
                continue  # sizes elaboration proved equal under a constraint ("H multiple of 16")
            raise GraphLintError(f"'{node.name}' ({node.op}): shape rule fails: {err.message}") from None
        _lint(shape == tuple(net.shapes[node.name]),
              f"'{node.name}' ({node.op}) has shape {fmt_shape(net.shapes[node.name])}, "
              f"its inputs give {fmt_shape(shape)}")


def _lint(ok: bool, message: str) -> None:
    if not ok:
        raise GraphLintError(message)


# --------------------------------------------------------------------- passes
Pattern = tuple[frozenset, ...]


def _op(*names: str) -> frozenset:
    return frozenset(names)


def fuse_conv_bn_add_relu(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    """The residual tail conv → batchnorm → add(skip) → activation."""
    return _fuse(net, (_op("conv"), _op("batchnorm"), _op("add"), ACT), mode, skipped)


def fuse_conv_bn_relu(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (_op("conv"), _op("batchnorm"), ACT), mode, skipped)


def fuse_conv_bn(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (_op("conv"), _op("batchnorm")), mode, skipped)


def fuse_conv_relu(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (_op("conv"), ACT), mode, skipped)


def fuse_linear_relu(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (_op("linear"), ACT), mode, skipped)


def fuse_bn_relu(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (_op("batchnorm"), ACT), mode, skipped)


# An `affine` (constant scale and shift) after a layer with weights folds into them in eval mode:
# w' = s·w and b' = s·b + t for a conv or linear (after batchnorm's own fold), γ' = s·γ and
# β' = s·β + t for a batchnorm. The host may be a group fused by the passes above, as long as no
# activation or residual add ends it; an activation after the affine joins the group.
AFFINE_HOSTS = _op("conv", "linear", "batchnorm", *FUSED_OPS)


def fold_affine_relu(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (AFFINE_HOSTS, _op("affine"), ACT), mode, skipped) if mode == "eval" else net


def fold_affine(net: Network, mode: str = "eval", skipped: list | None = None) -> Network:
    return _fuse(net, (AFFINE_HOSTS, _op("affine")), mode, skipped) if mode == "eval" else net


PASSES: tuple[Callable[..., Network], ...] = (
    fuse_conv_bn_add_relu, fuse_conv_bn_relu, fuse_conv_bn, fuse_conv_relu, fuse_linear_relu, fuse_bn_relu,
    fold_affine_relu, fold_affine)


def fuse(net: Network, mode: str = "eval") -> Fusion:
    """Run every pass (longest pattern first), linting after each."""
    if mode not in MODES:
        raise ValueError(f"fusion mode must be one of {MODES}, got {mode!r}")
    check(net)
    skipped: list[Skipped] = []
    for fusion_pass in PASSES:
        net = fusion_pass(net, mode, skipped)
    groups = [group_of(n) for n in net.order() if n.op in FUSED_OPS]
    fused = {m for g in groups for m in g.members}
    seen: set[str] = set()
    kept = []
    for s in skipped:  # the first (longest-pattern) reason per chain start that never fused
        if s.start not in fused and s.start not in seen:
            seen.add(s.start)
            kept.append(s)
    return Fusion(net, mode, groups, kept)


def fusable_groups(net: Network, mode: str = "eval") -> list[FusedGroup]:
    """The groups `fuse` would form, in topological order (for viz)."""
    return fuse(net, mode).groups


@dataclass(frozen=True)
class _Refs:
    """Who refers to a node other than through its inputs: unpool `of`, weight sharing."""

    unpool_of: dict[str, str]       # maxpool name -> an unpool reading its indices
    sharers: dict[str, str]         # owner name -> a layer using its weights

    @classmethod
    def of(cls, net: Network) -> "_Refs":
        layers = net.layers()
        return cls({n.attrs["of"]: n.name for n in layers if isinstance(n.attrs.get("of"), str)},
                   {n.shares: n.name for n in layers if n.shares is not None})


def _fuse(net: Network, pattern: Pattern, mode: str, skipped: list | None) -> Network:
    chains, claimed = [], set()
    refs = _Refs.of(net)
    for node in net.order():
        if node.op not in pattern[0]:
            continue
        chain, reason = _match(net, node, pattern, mode, refs)
        if chain is None:
            if reason and skipped is not None:
                skipped.append(Skipped(node.name, _pattern_text(pattern), reason, node.loc))
            continue
        if any(n.name in claimed for n in chain):
            continue  # a residual add both of whose operands could end a chain: the first one takes it
        claimed.update(n.name for n in chain)
        chains.append(chain)
    out = _rewrite(net, chains, mode) if chains else net
    check(out)
    return out


def _pattern_text(pattern: Pattern) -> str:
    return "+".join("act" if p is ACT else LABELS.get(next(iter(p)), next(iter(p))) for p in pattern)


# -------------------------------------------------------------------- guards
def _match(net: Network, start: Node, pattern: Pattern, mode: str,
           refs: _Refs) -> tuple[list[Node] | None, str | None]:
    """(chain, None) on a match; (None, reason) when a guard fails; (None, None) when the ops differ."""
    chain = [start]
    for wanted in pattern[1:]:
        nxt, reason = _next(net, chain[-1], wanted, refs)
        if nxt is None:
            return None, reason
        chain.append(nxt)
    reason = _guard_chain(net, chain, refs)
    return (None, reason) if reason else (chain, None)


def _next(net: Network, cur: Node, wanted: frozenset, refs: _Refs) -> tuple[Node | None, str | None]:
    consumers = [net.node(s) for s in net.graph.successors(cur.name)]
    hits = [c for c in consumers if c.op in wanted]
    if not hits:
        return None, None
    nxt = hits[0]
    if len(consumers) > 1:
        others = [c.name for c in consumers if c is not nxt]
        return None, f"'{cur.name}' is also read by '{others[0]}'"
    if cur.name in net.outputs:
        return None, f"'{cur.name}' is a graph output"
    if cur.name in refs.unpool_of:
        return None, f"unpool '{refs.unpool_of[cur.name]}' reads the indices of '{cur.name}'"
    if nxt.inputs.count(cur.name) != 1:
        return None, f"'{nxt.name}' reads '{cur.name}' twice"
    if nxt.op == "add":
        if len(nxt.inputs) != 2:
            return None, f"'{nxt.name}' adds {len(nxt.inputs)} tensors (the residual tail takes two)"
        other = next(i for i in nxt.inputs if i != cur.name)
        if tuple(net.shapes[other]) != tuple(net.shapes[cur.name]):
            return None, f"'{nxt.name}' broadcasts '{other}' {fmt_shape(net.shapes[other])}"
    elif nxt.inputs != (cur.name,):
        return None, f"'{nxt.name}' has other inputs"
    return nxt, None


def _guard_chain(net: Network, chain: list[Node], refs: _Refs) -> str | None:
    tail = chain[-1]
    if tail.name in net.outputs:
        return f"'{tail.name}' is a graph output (outputs keep their names)"
    head = chain[0]
    if head.op in ("linear", "fused_linear") and head.attrs.get("over") == "channels":
        return f"'{head.name}' maps the channels of every position (a fused linear takes a flat input)"
    if chain[1].op == "affine":
        if head.attrs.get("activation") or head.attrs.get("residual"):
            return f"'{head.name}' ends in an activation or a residual add, which the affine cannot pass"
        if head.shares is not None or head.name in refs.sharers:
            return f"'{head.name}' shares its weights, which folding the affine would change"
    ops = [n.op for n in chain]
    if chain[0].op == "conv" and "batchnorm" in ops:
        for node in chain[:2]:  # the conv's weights change (eval) or gain BN's tensors (train)
            if node.shares is not None:
                return f"'{node.name}' uses the weights of '{node.shares}'"
            if node.name in refs.sharers:
                return f"'{refs.sharers[node.name]}' shares the weights of '{node.name}'"
    return None


# ------------------------------------------------------------------- rewrite
def _rewrite(net: Network, chains: list[list[Node]], mode: str) -> Network:
    """A new network with each chain replaced by one node named after its first member."""
    rename = {c[-1].name: c[0].name for c in chains}
    by_tail = {c[-1].name: c for c in chains}
    members = {n.name for c in chains for n in c}
    nodes: list[Node] = []
    shapes: dict[str, Any] = {}
    for name in net.graph.nodes:  # declaration order: keeps the tie-breaks of Network.order
        node = net.node(name)
        if name in by_tail:
            fused = _fused_node(by_tail[name], mode, rename)
            nodes.append(fused)
            shapes[fused.name] = net.shapes[name]
        elif name not in members:
            ins = tuple(rename.get(i, i) for i in node.inputs)
            nodes.append(node if ins == node.inputs else node.replace(inputs=ins))
            shapes[name] = net.shapes[name]
    out = Network(net.name, build_graph(nodes), dict(net.inputs), net.outputs, shapes, {}, net.train,
                  net.source, list(net.warnings), list(net.constraints), dict(net.symbols))
    out.params = parameters(out)
    return out


def _fused_node(chain: list[Node], mode: str, rename: dict[str, str]) -> Node:
    first, tail = chain[0], chain[-1]
    if first.op in FUSED_OPS:   # a fused group taking an affine (and an activation) on
        return _extended(first, chain[1:])
    by_op = {n.op: n for n in chain}
    bn, add, affine = by_op.get("batchnorm"), by_op.get("add"), by_op.get("affine")
    attrs = dict(first.attrs)
    if affine is not None:
        attrs.update(affine=(affine.attrs["scale"], affine.attrs["shift"]))
        if first.op != "batchnorm":
            attrs.update(bias=True, weights=None)   # the shift becomes (part of) the bias
    if first.op == "conv":
        op = "fused_conv"
        folded = bn is not None and mode == "eval"
        attrs.update(bn=bn is not None, folded=folded, residual=add is not None)
        if bn is not None:
            attrs.update(eps=bn.attrs["eps"], momentum=bn.attrs["momentum"])
        if folded:  # the folded weights are the runtime's business; the spec only needs shapes
            attrs.update(bias=True, weights=None)
    else:
        op = "fused_linear" if first.op == "linear" else "fused_bn"
    attrs["activation"] = tail.op if tail.op in ACT else None
    if tail.op == "leaky_relu":
        attrs["slope"] = tail.attrs.get("slope", 0.01)
    attrs["fused_from"] = tuple((n.name, n.op, n.loc) for n in chain)
    inputs = first.inputs
    if add is not None:
        inputs += tuple(i for i in add.inputs if i != chain[1].name)
    inputs = tuple(rename.get(i, i) for i in inputs)
    layer = "+".join(LABELS.get(n.op, n.layer or n.op) for n in chain)
    return first.replace(op=op, inputs=inputs, attrs=attrs, layer=layer)


def _extended(group: Node, more: list[Node]) -> Node:
    """A fused node with an affine, and maybe an activation after it, folded in as well."""
    affine, tail = more[0], more[-1]
    attrs = dict(group.attrs)
    attrs["affine"] = (affine.attrs["scale"], affine.attrs["shift"])
    if group.op != "fused_bn":
        attrs.update(bias=True, weights=None)
    attrs["activation"] = tail.op if tail.op in ACT else None
    if tail.op == "leaky_relu":
        attrs["slope"] = tail.attrs.get("slope", 0.01)
    attrs["fused_from"] = tuple(group.attrs["fused_from"]) + tuple((n.name, n.op, n.loc) for n in more)
    layer = "+".join([group.layer] + [LABELS.get(n.op, n.layer or n.op) for n in more])
    return group.replace(attrs=attrs, layer=layer)


# ------------------------------------------------------------------- analyses
def parameters(net: Network, ops: dict[str, OpSpec] = ALL_OPS) -> dict[str, dict[str, ParamSpec]]:
    """`analysis.parameters` over the merged op table."""
    return analysis.parameters(net, ops)


def tail_of(node: Node) -> str:
    """The original tensor a (possibly fused) node produces."""
    return node.attrs["fused_from"][-1][0] if node.op in FUSED_OPS else node.name


def analyse_fused(net: Network, base: Analysis) -> Analysis:
    """The analyses of a fused graph; receptive fields are those of the tensors in `base`."""
    params = parameters(net)
    macs, flops = analysis.costs(net, ALL_OPS)
    rf = {n.name: base.rf.get(tail_of(n)) for n in net.order()}
    local = {n.name: base.local_rf.get(tail_of(n)) for n in net.order()}
    layer_params = {n.name: sum(s.size for s in params.get(n.name, {}).values() if not s.buffer)
                    for n in net.layers()}
    return Analysis(params, layer_params, macs, flops, rf, analysis.memory(net, ALL_OPS), [], local)


def savings(net: Network, base: Analysis, fused: Network, fused_analysis: Analysis,
            group: FusedGroup) -> dict[str, Any]:
    """What one group saves per sample: steps, intermediate activation bytes, MACs and FLOPs."""
    act = 0
    for m in group.members[:-1]:
        act = act + numel(net.shapes[m]) * BYTES
    macs = flops = 0
    for m in group.members:
        macs, flops = macs + base.macs[m], flops + base.flops[m]
    return {"steps": len(group.members) - 1, "activation_bytes": act,
            "macs": macs - fused_analysis.macs[group.name], "flops": flops - fused_analysis.flops[group.name],
            "macs_after": fused_analysis.macs[group.name], "flops_after": fused_analysis.flops[group.name]}
