"""Stage 3 (runtime), import: the imported layers as a program — blocks, their parameters, repeats, names.

`structure(lifted)` gives a `Program`: the network's `Body` and the block
`Definition`s it calls. The scopes come from the ONNX node names — PyTorch's
module paths (`/layer1/layer1.0/conv1/Conv`) or cnnc's own layer names
(`basic_1.conv_bn_relu.conv`) — and each scope of more than one layer is a
candidate block instance, whose inputs are the tensors it reads from outside
(the first is `in`) and whose outputs are the tensors read outside it.
Bottom up, instances whose bodies are the same up to numbers (widths, kernel
sizes, strides, rates, repeat counts) become one definition, each number that
differs a parameter — written as `channels(in)`, another parameter, or a
multiple of one where every instance agrees; a definition with one instance is
inlined into its parent instead. In a body, consecutive calls of one block with
the same arguments, each feeding the next alone, are one call `* N`.

Two exporter habits are undone on the way: PyTorch's DenseNet joins all earlier
features at the *start* of each layer, so a concatenation moves into the block
whose new features it completes (the scope of its last operand), and a scope
whose parts depend on each other round a circle is dissolved into its parent.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ...compiler.expressions import is_builtin
from ...compiler.graph import dependency_order
from ...compiler.ops import OPS, SURFACE
from .lift import KEYWORDS, Layer, Lifted

# Local names that only repeat what the layer is: no label is written for them.
OP_WORDS = set(OPS) | set(SURFACE) | {"bn", "norm", "act", "activation", "pool", "drop", "cat", "silu",
                                      "swish", "gelu", "sig", "layer_norm", "ln", "upsample", "up", "dropout",
                                      "view", "reshape", "transpose", "permute", "matmul", "gemm"}
NUMERIC = (int, float)


# ------------------------------------------------------------------ records
@dataclass
class Call:
    """A block instance, written `definition(args)`; `instance` holds its own items."""
    instance: "Instance"

    @property
    def id(self) -> str:
        return f"call:{self.instance.path}"


@dataclass
class Repeat:
    """Calls of one definition with equal arguments, each feeding the next: `definition(args) * N`."""
    calls: list[Call]


Item = Layer | Call | Repeat


@dataclass
class Instance:
    path: str                               # its scope
    local: str                              # the scope's own name (a module attribute, cnnc instance name)
    items: list                             # Layer | Instance, then Layer | Call | Repeat once processed
    inputs: list[int] = field(default_factory=list)    # tensors (layer ids) read from outside, `in` first
    outputs: list[int] = field(default_factory=list)   # tensors read outside it (or network outputs)
    definition: "Definition | None" = None
    args: list = field(default_factory=list)            # values of the definition's parameters


@dataclass
class Param:
    name: str
    default: Any = None                     # None: required
    tensor: bool = False                    # a tensor argument (a block input after `in`)


@dataclass
class Definition:
    name: str
    instances: list[Instance]
    params: list[Param] = field(default_factory=list)
    slots: dict = field(default_factory=dict)          # (item index, slot) -> Expr | literal value
    labels: dict = field(default_factory=dict)         # item index -> label


@dataclass(frozen=True)
class Expr:
    """A value written as an expression of the block's parameters: `c`, `4 * c`, `channels(in)`."""
    text: str


@dataclass
class Body:
    """What the writer writes for the network: its items, inputs and outputs."""
    items: list
    inputs: list[int]
    outputs: list[int]


@dataclass
class Program:
    network: Body
    definitions: list[Definition]           # inner ones first
    lifted: Lifted
    layers: dict[int, Layer]
    labels: dict[int, str]                  # layer id -> the meaningful name of its scope


# ------------------------------------------------------------------ scopes from names
def scope_path(layer: Layer, producer: str) -> list[str]:
    """The module paths enclosing the layer's ONNX node, outermost first (the last may be the layer's own):
    recorded by the exporter (PyTorch's dynamo exporter), or read from the node's name — cnnc's layer
    names (`basic_1.conv_bn_relu.conv`), PyTorch's TorchScript exporter's (`/layer1/layer1.0/conv1/Conv`)
    and other `/`-separated paths (`model/block1/conv/Conv2D`)."""
    if layer.node is None:
        return []
    if layer.node.scopes:
        return list(layer.node.scopes)
    name = layer.node.name
    if producer.startswith("cnnc"):
        parts = name.split("/", 1)[0].split(".")
        return [".".join(parts[:i + 1]) for i in range(len(parts))]
    if "/" not in name:
        return []
    out, previous = [], ""
    for part in name.strip("/").split("/")[:-1]:
        full = out[-1] if out else ""
        child = part[len(previous) + 1:] if previous and part.startswith(previous + ".") else part
        out.append(f"{full}.{child}" if full else child)
        previous = part
    return out


def local_name(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def identifier(text: str) -> str | None:
    """A name as a .cnn identifier, or None when nothing meaningful is left."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", text).strip("_")
    if not name or name.isdigit():
        return None
    if name[0].isdigit():
        name = "n" + name
    if name in KEYWORDS or is_builtin(name):
        name = name + "_"
    return name


def meaningful(text: str) -> str | None:
    """A scope's local name worth writing as a label: not a number, not only what the op is, not a word
    of the language (a keyword or a built-in)."""
    name = identifier(text)
    if name is None or name.endswith("_") and not text.endswith("_"):
        return None
    stem = re.sub(r"[_\d]+$", "", name.rstrip("_")).lower()
    return None if not stem or stem in OP_WORDS else name


# ------------------------------------------------------------------ building
class Structurer:
    def __init__(self, lifted: Lifted):
        self.lifted = lifted
        self.live = [lay for lay in lifted.live() if lay.op != "input"]
        self.layers = {lay.id: lay for lay in lifted.layers}
        self.producer_name = lifted.model.producer
        self.definitions: list[Definition] = []
        self.labels: dict[int, str] = {}        # layer id -> its scope's meaningful local name
        self.readers: dict[int, list[int]] = {}
        for lay in self.live:
            for i in self.deps(lay):
                self.readers.setdefault(i, []).append(lay.id)

    @staticmethod
    def deps(lay: Layer) -> list[int]:
        return list(lay.inputs) + ([lay.attrs["of"]] if lay.op == "unpool" else [])

    def run(self) -> Program:
        root = self.tree()
        self.process_all(root)
        net = Body(root.items, list(self.lifted.inputs), list(self.lifted.outputs))
        return Program(net, self.definitions, self.lifted, self.layers, self.labels)

    # -- the scope tree
    def tree(self) -> Instance:
        paths = {lay.id: scope_path(lay, self.producer_name) for lay in self.live}
        self.move_joins(paths)
        root = Instance("", "", [])
        nodes: dict[str, Instance] = {"": root}
        for lay in self.live:
            parent = root
            for path in paths[lay.id]:
                if path not in nodes:
                    nodes[path] = Instance(path, local_name(path), [])
                    parent.items.append(nodes[path])
                parent = nodes[path]
            parent.items.append(lay)
        return self.collapse(root)

    def move_joins(self, paths: dict[int, list[str]]) -> None:
        """A concatenation whose last operand is made inside another scope than its own (a sibling's, or
        a child's), when that scope makes or reads its other operands too, completes that scope's block
        (PyTorch's DenseNet joins at the start of the next layer, cnnc at the end of this one): it moves
        there."""
        splits: dict[int, list[Layer]] = {}
        for lay in self.live:
            if lay.op == "slice" and lay.node is not None:
                splits.setdefault(lay.node.index, []).append(lay)
        for parts in splits.values():
            self.move_split(parts, paths)
        for lay in self.live:
            if lay.op != "concat" or len(lay.inputs) < 2 or lay.inputs[-1] not in paths:
                continue
            own, last = paths[lay.id], paths[lay.inputs[-1]]
            common = 0
            while common < min(len(own), len(last)) and own[common] == last[common]:
                common += 1
            if len(last) <= common + 1:   # the last operand is no deeper than its scope's own layers
                continue
            target = last[:common + 1]
            inside = {i for i, p in paths.items() if p[:len(target)] == target}
            if all(i in inside or any(r in inside for r in self.readers.get(i, [])) for i in lay.inputs[:-1]):
                paths[lay.id] = target

    def move_split(self, parts: list[Layer], paths: dict[int, list[str]]) -> None:
        """The slices one node makes (a split, a chunk) whose readers all lie inside one deeper scope belong
        to it: ShuffleNet's unit splits its input for its two branches, and an exporter may name the
        split after the caller."""
        readers = [r for lay in parts for r in self.readers.get(lay.id, [])]
        if not readers or any(lay.id in self.lifted.outputs for lay in parts):
            return
        common = paths[readers[0]]
        for r in readers[1:]:
            p = paths[r]
            k = 0
            while k < min(len(common), len(p)) and common[k] == p[k]:
                k += 1
            common = common[:k]
        own = paths[parts[0].id]
        if len(common) > len(own) and common[:len(own)] == own:
            for lay in parts:
                paths[lay.id] = list(common)

    def collapse(self, scope: Instance) -> Instance | Layer | list:
        """A scope of one item is that item (a layer takes the scope's name, if it has none); a scope whose
        parts no data joins is no block but a module called several times (PyTorch's ResNet calls one ReLU
        thrice): its items go to its parent."""
        items = []
        for item in scope.items:
            done = self.collapse(item) if isinstance(item, Instance) else item
            items.extend(done if isinstance(done, list) else [done])
        scope.items = items
        if scope.path and len(scope.items) > 1 and not self.connected(scope.items):
            return scope.items
        if scope.path and len(scope.items) == 1:
            only = scope.items[0]
            if isinstance(only, Layer):
                name = meaningful(scope.local)
                if name and only.id not in self.labels:
                    self.labels[only.id] = name
            return only
        return scope

    def connected(self, items: list) -> bool:
        """Does data join the items (through one another: an edge between two, in either direction)?"""
        owner = {t: k for k, item in enumerate(items) for t in produced(item)}
        g = nx.Graph()
        g.add_nodes_from(range(len(items)))
        for k, item in enumerate(items):
            for t in needed(item, self):
                if t in owner and owner[t] != k:
                    g.add_edge(owner[t], k)
        return nx.is_connected(g)

    # -- bottom up, one height at a time: equal instances become one definition
    def process_all(self, root: Instance) -> None:
        levels: dict[int, list[Instance]] = {}
        def height(inst: Instance) -> int:
            h = 1 + max((height(i) for i in inst.items if isinstance(i, Instance)), default=0)
            if inst is not root:
                levels.setdefault(h, []).append(inst)
            return h
        height(root)
        for h in sorted(levels):
            groups: dict[tuple, list[Instance]] = {}
            for inst in levels[h]:
                if not self.prepare(inst) or not inst.outputs:
                    continue                        # dissolved into its parent
                groups.setdefault(signature(inst, self), []).append(inst)
            for members in groups.values():
                if len(members) > 1:
                    self.definitions.append(define(members, self))
        if not self.prepare(root):
            raise AssertionError("the network's layers depend on each other round a circle")

    def prepare(self, scope: Instance) -> bool:
        """Splice, find the boundary, order the items (each after what it reads), find the repeats.
        False when the items depend on each other round a circle (the scope is then dissolved)."""
        scope.items = self.spliced(scope)
        self.boundary(scope)
        order = self.item_order(scope)
        if order is None:
            return False
        scope.items = self.repeats(Instance(scope.path, scope.local, order, scope.inputs, scope.outputs))
        return True

    def spliced(self, scope: Instance) -> list:
        """The scope's items, with each child instance that became no call (a definition of one instance,
        a circular scope) replaced by its own items."""
        out = []
        for item in scope.items:
            if isinstance(item, Instance):
                if item.definition is None:
                    out.extend(item.items)
                else:
                    out.append(Call(item))
            else:
                out.append(item)
        return sorted(out, key=first_layer)

    def boundary(self, scope: Instance) -> None:
        made = {lay for item in scope.items for lay in produced(item)}
        reads: list[int] = []
        for item in scope.items:
            for i in needed(item, self):
                if i not in made and i not in reads:
                    reads.append(i)
        scope.inputs = reads
        outs = []
        for i in sorted(made):
            outside = [r for r in self.readers.get(i, []) if r not in made]
            if outside or i in self.lifted.outputs:
                outs.append(i)
        scope.outputs = outs

    def item_order(self, scope: Instance) -> list | None:
        """The items in an order where each comes after what it reads (ties: the earlier layer first),
        or None when they depend on each other round a circle."""
        return dependency_order(scope.items, produced, lambda item: needed(item, self), key=first_layer)

    def repeats(self, scope: Instance) -> list:
        """Runs of calls of one definition with equal arguments, each reading only the previous one's
        single output, which nothing else reads: one `Repeat`."""
        out: list = []
        for item in scope.items:
            last = out[-1] if out else None
            prev = last.calls[-1] if isinstance(last, Repeat) else last
            if isinstance(item, Call) and isinstance(prev, Call) and self.chained(prev, item):
                if isinstance(last, Repeat):
                    last.calls.append(item)
                else:
                    out[-1] = Repeat([prev, item])
                continue
            out.append(item)
        return out

    def chained(self, a: Call, b: Call) -> bool:
        ia, ib = a.instance, b.instance
        return (ia.definition is ib.definition and ia.args == ib.args and len(ia.inputs) == 1
                and len(ib.inputs) == 1 and ia.outputs == ib.inputs
                and self.readers.get(ia.outputs[0], []) and
                all(r in set(produced(Call(ib))) for r in self.readers.get(ia.outputs[0], []))
                and ia.outputs[0] not in self.lifted.outputs)


def first_layer(item) -> int:
    return min(produced(item))


def produced(item) -> list[int]:
    if isinstance(item, Layer):
        return [item.id]
    if isinstance(item, Call):
        return produced_all(item.instance)
    if isinstance(item, Repeat):
        return [i for c in item.calls for i in produced(c)]
    return produced_all(item)


def produced_all(inst: Instance) -> list[int]:
    return [i for item in inst.items for i in produced(item)]


def needed(item, s: Structurer) -> list[int]:
    if isinstance(item, Layer):
        return s.deps(item)
    if isinstance(item, Call):
        return list(item.instance.inputs)
    if isinstance(item, Repeat):
        return list(item.calls[0].instance.inputs)
    made = set(produced_all(item))
    return [i for it in item.items for i in needed(it, s) if i not in made]


def structure(lifted: Lifted) -> Program:
    return Structurer(lifted).run()


# ------------------------------------------------------------------ equal up to numbers
def is_number(v: Any) -> bool:
    """A value that may differ between instances of one block (and so be a parameter)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, NUMERIC):
        return True
    return isinstance(v, tuple) and bool(v) and all(is_number(x) for x in v)


def outputs_of(item) -> list[int]:
    if isinstance(item, Layer):
        return [item.id]
    inst = item.instance if isinstance(item, Call) else item.calls[-1].instance
    return list(inst.outputs)


def refs(inst: Instance, s: Structurer) -> tuple[dict[int, tuple], list[tuple]]:
    """Where each tensor of the instance comes from: ("in", k) or ("item", index, output)."""
    where = {t: ("in", k) for k, t in enumerate(inst.inputs)}
    for idx, item in enumerate(inst.items):
        for j, t in enumerate(outputs_of(item)):
            where[t] = ("item", idx, j)
    return where, [where[t] for t in inst.outputs]


def slots(item) -> list[tuple[str, Any]]:
    """The item's numbers, by name: a layer's numeric arguments, a call's arguments (and a repeat's count)."""
    if isinstance(item, Layer):
        return [(k, v) for k, v in item.attrs.items() if is_number(v) and k != "of"]
    inst = item.instance if isinstance(item, Call) else item.calls[0].instance
    out = [(p.name, a) for p, a in zip(inst.definition.params, inst.args)]
    return out + ([("count", len(item.calls))] if isinstance(item, Repeat) else [])


def shape_of(item, s: Structurer) -> tuple:
    """What an item is, numbers left out."""
    if isinstance(item, Layer):
        fixed = tuple(sorted((k, v) for k, v in item.attrs.items() if not is_number(v) and k != "of"))
        return ("L", item.op, fixed, tuple(k for k, _ in slots(item)))
    inst = item.instance if isinstance(item, Call) else item.calls[0].instance
    return ("C" if isinstance(item, Call) else "R", id(inst.definition))


def signature(inst: Instance, s: Structurer) -> tuple:
    where, outs = refs(inst, s)
    items = []
    for item in inst.items:
        items.append((shape_of(item, s), tuple(where[t] for t in needed(item, s))))
    return (tuple(items), tuple(outs), len(inst.inputs))


# ------------------------------------------------------------------ definitions
PARAM_NAMES = {"out": "c", "pad": "padding", "count": "n", "multiplier": "m", "groups": "groups", "k": "k",
               "start": "c", "stop": "c"}


def define(members: list[Instance], s: Structurer) -> Definition:
    d = Definition(definition_name(members, s), members)
    first = members[0]
    columns: dict[tuple, list] = {}
    for inst in members:
        for idx, item in enumerate(inst.items):
            for key, value in slots(item):
                columns.setdefault((idx, key), []).append(value)
    taken = {"in"} | {p for p in ("channels", "height", "width", "length")}
    params: list[tuple[Param, list]] = []
    # An item's padding after its other numbers: it may be written as a function of its kernel or dilation.
    for (idx, key), values in sorted(columns.items(), key=lambda kv: (kv[0][0], kv[0][1] == "pad")):
        if all(v == values[0] for v in values):
            d.slots[(idx, key)] = values[0]
            continue
        d.slots[(idx, key)] = relation(values, key, members, params, s) or _new_param(key, values, params, taken)
    for k in range(1, len(first.inputs)):
        params.append((Param(_fresh("skip" if k == 1 else f"t{k}", taken), tensor=True), []))
    d.params = _ordered([p for p, _ in params if not p.tensor], params) + [p for p, _ in params if p.tensor]
    for inst in members:
        inst.definition = d
        inst.args = []
    for p in d.params:
        values = next(v for q, v in params if q is p)
        for inst, v in zip(members, values or [None] * len(members)):
            inst.args.append(v)
    for idx in range(len(first.items)):
        names = {label_of(inst.items[idx], s.labels) for inst in members}
        if len(names) == 1 and None not in names:
            d.labels[idx] = names.pop()
    return d


def relation(values: list, key: str, members: list[Instance], params: list, s: Structurer) -> Expr | None:
    """The column as `channels(in)`, an earlier parameter, or an integer multiple or part of one."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if all(inst.inputs and v == s.layers[inst.inputs[0]].shape[1] for v, inst in zip(values, members)):
            return Expr("channels(in)")
        for p, column in params:
            if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in column):
                continue
            if column == values:
                return Expr(p.name)
            if all(v % c == 0 for v, c in zip(values, column)) and len({v // c for v, c in zip(values, column)}) == 1:
                return Expr(f"{values[0] // column[0]} * {p.name}")
            if all(c % v == 0 for v, c in zip(values, column) if v) and len({c // v for v, c in zip(values, column) if v}) == 1 and all(values):
                return Expr(f"{p.name} // {column[0] // values[0]}")
    for p, column in params:
        if column == values:
            return Expr(p.name)
        if key == "pad" and all(_half_kernel(v, c) for v, c in zip(values, column)):
            return Expr(f"{p.name} // 2")
        if key == "pad" and all(_square(c) and v == ((c[0], c[0]), (c[0], c[0])) for v, c in zip(values, column)):
            return Expr(p.name)       # a dilated 3x3 conv's padding is its dilation
    return None


def _square(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] and isinstance(v[0], int)


def _half_kernel(pad, kernel) -> bool:
    """pad = ((k//2, k//2), (k//2, k//2)) for a square odd kernel (k, k)."""
    if not (isinstance(kernel, tuple) and len(kernel) == 2 and kernel[0] == kernel[1] and kernel[0] % 2):
        return False
    h = kernel[0] // 2
    return pad == ((h, h), (h, h))


def _new_param(key: str, values: list, params: list, taken: set) -> Expr:
    p = Param(_fresh(PARAM_NAMES.get(key, identifier(key) or "v"), taken))
    params.append((p, list(values)))
    return Expr(p.name)


def _fresh(base: str, taken: set) -> str:
    name, k = base, 2
    while name in taken or is_builtin(name) or name in KEYWORDS:
        name, k = f"{base}{k}", k + 1
    taken.add(name)
    return name


def _ordered(plain: list[Param], params: list) -> list[Param]:
    """Required parameters first, then those whose most common value (shared by at least half the
    instances, and by two) is their default."""
    required, defaulted = [], []
    for p in plain:
        values = next(v for q, v in params if q is p)
        counts = Counter(repr(v) for v in values)
        text, n = counts.most_common(1)[0]
        if plain and p is not plain[0] and n >= 2 and 2 * n >= len(values):
            p.default = next(v for v in values if repr(v) == text)
            defaulted.append(p)
        else:
            required.append(p)
    return required + defaulted


def label_of(item, labels: dict[int, str]) -> str | None:
    """An item's meaningful name: a layer's scope's, a block instance's own — not one that only numbers
    the instances of its block (`basic_3`, cnnc's own default names)."""
    if isinstance(item, Layer):
        return labels.get(item.id)
    if isinstance(item, Call):
        name = meaningful(item.instance.local)
        if name is None or re.sub(r"_\d+$", "", name) == item.instance.definition.name:
            return None
        return name
    return None


def definition_name(members: list[Instance], s: Structurer) -> str:
    stems = {re.sub(r"_?\d+$", "", m.local) for m in members}
    taken = {d.name for d in s.definitions}
    if len(stems) == 1:
        stem = identifier(stems.pop())
        if stem and not stem.endswith("_"):
            return _fresh(stem, taken)
    return _fresh(structural_name(members[0], s), taken)


def structural_name(inst: Instance, s: Structurer) -> str:
    """A name for a block whose instances carry none: what it does."""
    ops = [item.op if isinstance(item, Layer) else "call" for item in inst.items]
    where, _ = refs(inst, s)
    reads_in = [item for item in inst.items if isinstance(item, Layer) and inst.inputs and inst.inputs[0] in item.inputs]
    if "add" in ops:
        return "residual"
    if any(lay.op == "concat" for lay in reads_in):
        return "dense_layer"
    if any(lay.op == "mul" for lay in reads_in):
        return "gated" if "global_avgpool" not in ops else "squeeze_excite"
    if "concat" in ops:
        return "branches"
    if len(ops) <= 4 and "call" not in ops:
        words = {"batchnorm": "bn", "depthwise_conv": "dwconv", "global_avgpool": "pool", "swish": "silu"}
        return "_".join(words.get(op, op) for op in ops)
    return "unit"
