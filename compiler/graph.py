"""Stage 2 (compiler): the graph records every later stage reads.

Elaboration turns the AST into a `Network`: a NetworkX DiGraph whose nodes are
keyed by layer name and carry an immutable `Node` record under the attribute
`"node"`. Edges run from producer to consumer; the authoritative input order
of a node is `Node.inputs` (an op may read the same tensor twice, `x + x`).
Analyses never mutate nodes: they return tables keyed by node name, and
rewrites (fusion) build new nodes and a new graph.

Contract for the runtime and viz (see docs/internals.md):
  * `Node.op` is a key of `compiler.ops.OPS`; `Node.attrs` holds the op's
    normalised attributes (tuples, ints, floats, strings, numpy arrays).
  * `Network.shapes[name]` is the per-sample output shape (channels first),
    tuple of ints, or of `Dim` expressions when an input is symbolic.
  * `Network.params[name]` maps parameter name -> `ParamSpec`; the store key
    is `f"{owner}.{param}"` where owner is `Node.shares or Node.name`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import networkx as nx

from ..dsl.source import Loc

Shape = tuple  # of int | Dim


@dataclass(frozen=True)
class Node:
    """One layer application (or graph input)."""

    name: str                       # unique, stable: label or block path ("basic_3.conv_bn_relu.conv")
    op: str                         # semantic op, a key of compiler.ops.OPS
    inputs: tuple[str, ...]         # producer node names, in argument order
    attrs: Mapping[str, Any]        # normalised attributes (read-only mapping)
    loc: Loc | None = None          # where the user wrote it
    scope: tuple[str, ...] = ()     # block path: instance names of the enclosing block calls
    layer: str = ""                 # the surface name the user wrote ("depthwise_conv", "separable_conv")
    shares: str | None = None       # parameters are those of this node (weight sharing)
    repeat: tuple[str, int, int] | None = None  # (group id, index, count) for `block * N`
    call_chain: tuple[tuple[str, Loc | None], ...] = ()  # block calls that led here, outermost first
    scope_blocks: tuple[str, ...] = ()  # the block (or surface layer) of each scope level

    def __post_init__(self) -> None:
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    def replace(self, **changes: Any) -> "Node":
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        if "attrs" in changes:
            fields["attrs"] = dict(changes["attrs"])
        else:
            fields["attrs"] = dict(self.attrs)
        return Node(**fields)


@dataclass(frozen=True)
class ParamSpec:
    """A tensor the layer owns. Buffers (BN running stats) are not trainable."""

    shape: tuple[int, ...]
    trainable: bool = True
    buffer: bool = False            # True for running statistics: state, not a parameter
    init: str = "zeros"             # "he_normal", "xavier_uniform", "zeros", "ones", "fixed"
    fan_in: int = 1
    fan_out: int = 1
    value: Any = None               # numpy array for fixed weights (init == "fixed")

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass
class Network:
    """A checked network: graph, shapes and parameter layout."""

    name: str
    graph: nx.DiGraph
    inputs: dict[str, Shape]                 # input node name -> declared shape
    outputs: tuple[str, ...]                 # output node names
    shapes: dict[str, Shape] = field(default_factory=dict)
    params: dict[str, dict[str, ParamSpec]] = field(default_factory=dict)
    train: Any = None                        # compiler.train_spec.TrainConfig or None
    source: str = ""                         # main file path
    warnings: list = field(default_factory=list)  # Diagnostic records
    constraints: list = field(default_factory=list)  # symbolic constraints, human-readable
    symbols: dict[str, Any] = field(default_factory=dict)  # symbol -> constraint info

    def node(self, name: str) -> Node:
        return self.graph.nodes[name]["node"]

    def order(self) -> list[Node]:
        """Nodes in a deterministic topological order (declaration order breaks ties).

        Computed once: a Network's graph is not changed after construction (rewrites
        build a new Network)."""
        cached = self.__dict__.get("_order")
        if cached is None or len(cached) != len(self.graph):
            g = self.graph
            rank = {n: i for i, n in enumerate(g.nodes)}
            cached = [g.nodes[n]["node"] for n in nx.lexicographical_topological_sort(g, key=rank.__getitem__)]
            self.__dict__["_order"] = cached
        return list(cached)

    def layers(self) -> list[Node]:
        return [n for n in self.order() if n.op != "input"]

    def owner(self, name: str) -> str:
        node = self.node(name)
        return node.shares or node.name


def build_graph(nodes: list[Node]) -> nx.DiGraph:
    """A DiGraph over `nodes` (in the given order) with producer->consumer edges."""
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.name, node=n)
    for n in nodes:
        for i, src in enumerate(n.inputs):
            g.add_edge(src, n.name)
    return g


def dependency_order(items: list, produced, needed, key=None) -> list | None:
    """`items` in an order where each comes after the items that produce what it needs (`produced(item)`
    and `needed(item)` name values; ties: the least `key(item)`, else the earlier item), or None when
    they depend on each other round a circle. The block scopes of the torch module and of `cnnc import`
    order their layers and calls with it."""
    g = nx.DiGraph()
    owner = {}
    for k, item in enumerate(items):
        g.add_node(k)
        for value in produced(item):
            owner[value] = k
    for k, item in enumerate(items):
        for value in needed(item):
            if value in owner and owner[value] != k:
                g.add_edge(owner[value], k)
    if not nx.is_directed_acyclic_graph(g):
        return None
    rank = {k: (key(item), k) if key is not None else k for k, item in enumerate(items)}
    return [items[k] for k in nx.lexicographical_topological_sort(g, key=rank.__getitem__)]
