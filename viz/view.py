"""Stage 4 (viz): what a drawing shows of a network — a read-only view of its graph.

`build_view` turns a compiler `Network` into drawable items (one per layer, or
one per block instance collapsed below `depth`), nested clusters (block
instances, repeats folded as "×N", fused groups) and edges labelled with the
shape of the tensor they carry; edges that bypass layers are flagged as skips.
`main_path` is the longest input-to-output path, the spine of the figure and
the receptive-field chart. `fusion_groups` asks the compiler's
fusion pass. Nothing here mutates the network: the view is a new structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..compiler.analysis import Analysis
from ..compiler.graph import Network, Node


@dataclass
class Item:
    """One drawn box: a layer, or a block instance collapsed to one node."""

    id: str
    kind: str                          # "layer" or "block"
    nodes: list[Node]                  # the layers it stands for, in order
    clusters: tuple[str, ...]          # enclosing cluster keys, outermost first
    block: str = ""                    # for a collapsed block: the block's name

    @property
    def out(self) -> Node:
        """The node whose output leaves the item (the last one in topological order)."""
        return self.nodes[-1]


@dataclass
class Cluster:
    key: str
    kind: str                          # "block", "fold" or "fused"
    parent: str | None
    instance: str = ""                 # block instance name ("basic_3", "stem")
    block: str = ""                    # block name ("basic", "conv_bn_relu")
    count: int = 1                     # for folds: the number of repeats
    last: str = ""                     # for folds: the last instance's name


@dataclass
class Edge:
    src: str
    dst: str
    shape: tuple
    skip: bool = False
    main: bool = False


@dataclass
class Fold:
    """A `block * N` group drawn once: instance 0 stands for all N."""

    group: str
    count: int
    instances: dict[int, str] = field(default_factory=dict)   # index -> instance path
    nodes: dict[int, list[Node]] = field(default_factory=dict)


@dataclass
class View:
    items: dict[str, Item]
    clusters: dict[str, Cluster]
    edges: list[Edge]
    folds: dict[str, Fold]
    item_of: dict[str, str]            # node name -> item id (hidden repeats map to their stand-in)


# --------------------------------------------------------------- main path
def main_path(net: Network) -> list[Node]:
    """The longest path (in layers) from an input to an output; ties prefer the first argument."""
    best: dict[str, tuple[int, str | None]] = {}
    for node in net.order():
        if not node.inputs:
            best[node.name] = (0, None)
            continue
        prev = max(dict.fromkeys(node.inputs), key=lambda p: best[p][0])  # max keeps the first of ties
        best[node.name] = (best[prev][0] + 1, prev)
    end = max(net.outputs, key=lambda o: best[o][0])
    path = [end]
    while best[path[-1]][1] is not None:
        path.append(best[path[-1]][1])
    return [net.node(n) for n in reversed(path)]


# ------------------------------------------------------------------ fusion


def fusion_groups(net: Network) -> list[tuple[str, ...]]:
    """The compiler's fused groups (conv-batchnorm-relu, residual tails, ...) as member names."""
    from ..compiler.fusion import fusable_groups
    return [g.members for g in fusable_groups(net)]


# -------------------------------------------------------------------- view
def block_name(node: Node, level: int) -> str:
    """The name of the block whose instance is `node.scope[level - 1]`."""
    return node.scope_blocks[level - 1]


def _instance(node: Node) -> tuple[str, int] | None:
    """(instance path, its length) of the repeat `node` belongs to, or None."""
    if node.repeat is None or node.repeat[2] < 2:
        return None
    k = len(node.repeat[0].split("."))
    return ".".join(node.name.split(".")[:k]), k


def build_view(net: Network, depth: int | None = None, expand: bool = False, fuse: bool = False) -> View:
    """Items, clusters and edges for a diagram (see the module docstring)."""
    folds = {} if expand else _folds(net, depth)
    items: dict[str, Item] = {}
    clusters: dict[str, Cluster] = {}
    item_of: dict[str, str] = {}
    hidden: dict[str, Fold] = {}
    for node in net.order():
        fold = _fold_of(node, folds)
        if fold is not None and node.repeat[1] > 0:
            hidden[node.name] = fold
            continue
        item_id, chain = _place(node, depth, fold, clusters)
        item = items.get(item_id)
        if item is None:
            kind = "block" if item_id != node.name else "layer"
            level = depth + 1 if kind == "block" else 0
            item = items[item_id] = Item(item_id, kind, [], chain,
                                         block_name(node, level) if kind == "block" else "")
        item.nodes.append(node)
        item_of[node.name] = item_id
    outputs = {g: _fold_output(f) for g, f in folds.items()}
    for name, fold in hidden.items():
        item_of[name] = item_of[outputs[fold.group].name]
    edges = _edges(net, items, item_of, hidden, folds, outputs)
    view = View(items, clusters, edges, folds, item_of)
    _mark_skips(view)
    _mark_main(view, net)
    if fuse:
        _add_fused(view, net)
    return view


def _folds(net: Network, depth: int | None) -> dict[str, Fold]:
    folds: dict[str, Fold] = {}
    for node in net.order():
        inst = _instance(node)
        if inst is None or (depth is not None and inst[1] > depth + 1):
            continue  # inside a collapsed block: the block's node stands for all repeats
        group, index, count = node.repeat
        fold = folds.setdefault(group, Fold(group, count))
        fold.instances[index] = inst[0]
        fold.nodes.setdefault(index, []).append(node)
    return folds


def _fold_of(node: Node, folds: dict[str, Fold]) -> Fold | None:
    return folds.get(node.repeat[0]) if node.repeat is not None else None


def _fold_output(fold: Fold) -> Node:
    """The node of instance 0 whose output the next instance reads (the chain's tensor)."""
    feeding = [n for n in fold.nodes[0] if any(n.name in c.inputs for c in fold.nodes.get(1, []))]
    return feeding[-1] if feeding else fold.nodes[0][-1]


def _place(node: Node, depth: int | None, fold: Fold | None,
           clusters: dict[str, Cluster]) -> tuple[str, tuple[str, ...]]:
    """The item id of `node` and its chain of enclosing clusters (registered on the way)."""
    scope = node.scope
    collapsed = depth is not None and len(scope) > depth
    levels = depth if collapsed else len(scope)
    fold_level = len(fold.group.split(".")) if fold is not None else None
    chain: list[str] = []
    for level in range(1, levels + 1):
        key = ".".join(scope[:level])
        kind = "fold" if level == fold_level else "block"
        _register(clusters, key, kind, chain, node, level, fold)
        chain.append(key)
    if fold_level == levels + 1:  # the repeated instance is the item itself (a layer, or a collapsed block)
        key = "fold:" + fold.group
        _register(clusters, key, "fold", chain, node, fold_level, fold)
        chain.append(key)
    item_id = "@" + ".".join(scope[:depth + 1]) if collapsed else node.name
    return item_id, tuple(chain)


def _register(clusters: dict[str, Cluster], key: str, kind: str, chain: list[str], node: Node,
              level: int, fold: Fold | None) -> None:
    if key in clusters:
        return
    parent = chain[-1] if chain else None
    if level <= len(node.scope):
        instance, block = node.scope[level - 1], block_name(node, level)
    else:  # a repeated plain layer
        instance, block = node.name.rsplit(".", 1)[-1], node.layer or node.op
    cluster = Cluster(key, kind, parent, instance, block)
    if kind == "fold":
        cluster.count = fold.count
        last = fold.instances.get(fold.count - 1, "")
        cluster.last = last.rsplit(".", 1)[-1]
    clusters[key] = cluster


def _edges(net: Network, items: dict[str, Item], item_of: dict[str, str], hidden: dict[str, Fold],
           folds: dict[str, Fold], outputs: dict[str, Node]) -> list[Edge]:
    edges: dict[tuple[str, str], Edge] = {}
    for node in net.order():
        for src in dict.fromkeys(node.inputs):
            if node.name in hidden:
                fold = hidden[node.name]
                if src in hidden or _fold_of(net.node(src), folds) is fold:
                    continue  # the chain between repeats is what the fold stands for
                dst = _stand_in(net, node, fold, item_of)
            else:
                dst = item_of[node.name]
            a = item_of[src]
            if a != dst and (a, dst) not in edges:
                edges[(a, dst)] = Edge(a, dst, net.shapes[src])
    return list(edges.values())


def _stand_in(net: Network, node: Node, fold: Fold, item_of: dict[str, str]) -> str:
    """Where an edge into a hidden repeat lands: the same layer of instance 0, else its first layer."""
    index = node.repeat[1]
    prefix = fold.instances[index]
    twin = fold.instances[0] + node.name[len(prefix):]
    if twin in {n.name for n in fold.nodes[0]}:
        return item_of[twin]
    return item_of[fold.nodes[0][0].name]


def _mark_skips(view: View) -> None:
    """An edge is a skip when another, longer path joins the same two items."""
    g = nx.DiGraph()
    g.add_nodes_from(view.items)
    g.add_edges_from((e.src, e.dst) for e in view.edges)
    ancestors: dict[str, set[str]] = {}
    for e in view.edges:
        others = [p for p in g.predecessors(e.dst) if p != e.src]
        for p in others:
            if p not in ancestors:
                ancestors[p] = nx.ancestors(g, p)
            if e.src in ancestors[p]:
                e.skip = True
                break


def _mark_main(view: View, net: Network) -> None:
    spine = [view.item_of[n.name] for n in main_path(net)]
    pairs = set(zip(spine, spine[1:]))
    for e in view.edges:
        e.main = (e.src, e.dst) in pairs


def _add_fused(view: View, net: Network) -> None:
    """Wrap each fusable chain in a 'fused' cluster when its layers are drawn side by side."""
    for group in fusion_groups(net):
        ids = [view.item_of[n] for n in group]
        members = [view.items.get(i) for i in ids]
        if len(set(ids)) != len(ids) or any(m is None or m.kind != "layer" for m in members):
            continue  # hidden in a fold or a collapsed block
        if len({m.clusters for m in members}) != 1:
            continue  # the chain crosses a block boundary: a cluster cannot straddle it
        key = "fused:" + group[0]
        parent = members[0].clusters[-1] if members[0].clusters else None
        view.clusters[key] = Cluster(key, "fused", parent)
        for m in members:
            m.clusters = m.clusters + (key,)


def item_shape(net: Network, item: Item) -> tuple:
    return net.shapes[item.out.name]


def item_totals(analysis: Analysis, nodes: list[Node]) -> tuple[int, Any]:
    params = sum(analysis.layer_params.get(n.name, 0) for n in nodes)
    macs: Any = 0
    for n in nodes:
        macs = macs + analysis.macs.get(n.name, 0)
    return params, macs
