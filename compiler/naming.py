"""Stage 2 (compiler): the values, scopes and layer names of elaboration.

While a network body is evaluated, a name is bound to a value (a number, a
`Tensor` made by a layer, a `LayerRef` to an op, a `BlockRef` to a block) in a
`Frame`, one per body being evaluated. Every layer gets a `Segment` in the
`Scope` of the block instance that made it; a node's name is the path of
segments (`basic_3.conv_bn_relu.conv`), numbered only where a scope holds more
than one layer of that base name, so names are final only when the network is
complete (`final_names`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..dsl import ast
from ..dsl.source import Loc
from .graph import Node


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class Tensor:
    node: int                    # pending node id
    shape: tuple
    labelled_layer: bool = False  # a labelled single layer: reusable with shared weights
    kind_name = "a tensor"


@dataclass(frozen=True)
class LayerRef:
    name: str
    kind_name = "a layer"


@dataclass(frozen=True)
class BlockRef:
    block: ast.Block
    kind_name = "a block"


# ------------------------------------------------------------------ naming
class Scope:
    """A block instance (or the network body): counts the names it hands out."""

    def __init__(self, parent_segment: "Segment | None"):
        self.parent_segment = parent_segment
        self.counts: dict[str, int] = {}
        self.labels: set[str] = set()

    def segment(self, base: str, label: str | None) -> "Segment":
        if label is not None:
            return Segment(self, base, 0, label)
        self.counts[base] = self.counts.get(base, 0) + 1
        return Segment(self, base, self.counts[base], None)


@dataclass(eq=False)
class Segment:
    scope: Scope
    base: str
    index: int
    label: str | None
    repeat: tuple | None = None  # (group, index, count); group is the first instance's Segment

    def text(self) -> str:
        if self.label:
            return self.label
        return self.base if self.scope.counts.get(self.base, 0) == 1 else f"{self.base}_{self.index}"

    def path(self) -> str:
        parts = []
        seg: Segment | None = self
        while seg is not None:
            parts.append(seg.text())
            seg = seg.scope.parent_segment
        return ".".join(reversed(parts))


def scope_segments(seg: Segment) -> list[Segment]:
    """The block-instance segments enclosing `seg`, outermost first."""
    parts = []
    s = seg.scope.parent_segment
    while s is not None:
        parts.append(s)
        s = s.scope.parent_segment
    return list(reversed(parts))


def outermost_in(seg: Segment, scope: Scope) -> Segment | None:
    """The segment enclosing `seg` (or `seg` itself) that lives in `scope`, if any."""
    s: Segment | None = seg
    while s is not None and s.scope is not scope:
        s = s.scope.parent_segment
    return s


@dataclass
class Pending:
    """A node being built: its final name is known only when the network is complete."""

    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict
    loc: Loc | None
    segment: Segment
    layer: str
    shape: tuple
    shares: int | None = None
    call_chain: tuple = ()

    def finished(self, names: dict[int, str]) -> Node:
        """The graph's immutable node for this one, given every node's final name."""
        attrs = dict(self.attrs)
        if self.op == "unpool":
            attrs["of"] = names[attrs["of"]]
            attrs.pop("of_name", None)  # only for messages during elaboration
        repeat = None
        seg: Segment | None = self.segment
        while seg is not None:  # the outermost repeat this node is part of
            if seg.repeat is not None:
                group, i, n = seg.repeat
                repeat = (group.path(), i, n)
            seg = seg.scope.parent_segment
        scopes = scope_segments(self.segment)
        return Node(names[self.id], self.op, tuple(names[i] for i in self.inputs), attrs, self.loc,
                    tuple(s.text() for s in scopes), self.layer,
                    names[self.shares] if self.shares is not None else None, repeat,
                    self.call_chain, tuple(s.base for s in scopes))

    def display(self) -> str:
        """How messages name this node."""
        return f"'{self.segment.path()}' ({self.layer})" if self.op != "input" else f"input '{self.segment.path()}'"


def final_names(nodes: list[Pending]) -> dict[int, str]:
    """Node id -> unique name: the segment path, a label equal to an automatic name keeping it."""
    names = {p.id: p.segment.path() for p in nodes}
    taken = set(names.values())
    seen: dict[str, int] = {}
    for p in nodes:  # a label equal to an automatic name: keep the label, renumber the other
        n = names[p.id]
        if n in seen:
            k = 2
            while f"{n}_{k}" in seen or f"{n}_{k}" in taken:
                k += 1
            names[p.id] = f"{n}_{k}"
            taken.add(names[p.id])
        seen[names[p.id]] = p.id
    return names


# ------------------------------------------------------------------ context
@dataclass
class Frame:
    """The evaluation state of one body (network or block instance)."""

    env: dict[str, Any]
    scope: Scope
    is_network: bool
    block_name: str = ""
    bound_at: dict[str, Loc] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
