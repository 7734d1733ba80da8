"""Stage 3 (runtime), import: a `Program` (blocks.py) written as `.cnn` text.

Each body — a block definition, then the network — is written as statements of
chains: a chain starts at a layer or call and follows the one reader of its
output while that reader takes it alone (`conv(…) -> batchnorm -> relu`); a
tensor read by several statements gets a name (a meaningful label of the
layer that makes it, or `t1`, `t2`, …); merges are expressions (`a + b`,
`concat(a, b)`, `max(a, b)`). A layer's arguments come from the op table
(compiler/ops.py): the required ones positional, the others as keywords only
where they differ from the default, in the shortest form (`3` for `(3, 3)`,
`pad = 1`, `pad = causal`). Besides the text, `write` gives the layers in the
order the compiler will create them, so the weights can be saved under the
names the compiled file gives them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...compiler.ops import OPS, REQUIRED, SURFACE, normalised_name
from .blocks import Call, Definition, Expr, Instance, Program, Repeat, identifier, label_of, outputs_of
from .lift import KEYWORDS, Layer

SHOWN_AS = {"swish": "silu"}      # ops written under PyTorch's name


# ------------------------------------------------------------------ values as text
def number(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(int(v)) + ".0" if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)


def pair(v: Any, signal: bool) -> str:
    if isinstance(v, Expr):
        return v.text
    if signal:
        return number(v[1])
    return number(v[0]) if v[0] == v[1] else f"({number(v[0])}, {number(v[1])})"


def padding(v: Any, signal: bool, kernel: Any = None, dilation: Any = None) -> str:
    if isinstance(v, Expr):
        return v.text
    (t, b), (l, r) = v
    if signal:
        if l == r:
            return number(l)
        return "causal"            # the lifter refuses any other one-sided padding of a signal
    if t == b and l == r:
        return number(t) if t == l else f"({number(t)}, {number(l)})"
    return f"(({number(t)}, {number(b)}), ({number(l)}, {number(r)}))"


def value_text(kind: str, v: Any, signal: bool) -> str:
    if isinstance(v, Expr):
        return v.text
    if kind in ("pair", "pair0", "opt_pair"):
        return pair(v, signal)
    if kind == "padding":
        return padding(v, signal)
    if isinstance(v, tuple):
        return "(" + ", ".join(value_text(kind, x, signal) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, str):
        return v
    return number(v)


def default_of(attr, signal: bool) -> Any:
    """An attribute's default in the normalised form the lifter keeps."""
    d = attr.default
    if d is REQUIRED or d is None:
        return d
    if attr.kind in ("pair", "pair0", "opt_pair"):
        return (0 if attr.kind == "pair0" else 1, d) if signal else (d, d)
    if attr.kind == "padding":
        return ((0, 0), (d, d)) if signal else ((d, d), (d, d))
    return d


def call_text(layer: Layer, values: dict, names: dict[int, str], signal: bool) -> str:
    """`op(args)` for a layer: required arguments positional, the rest by keyword where not the default."""
    op = layer.op
    shown = SHOWN_AS.get(op, op)
    spec = SURFACE[op] if op in SURFACE else OPS[op].attrs
    args = []
    for attr in spec:
        key = attr.name
        if key == "like":
            if len(layer.inputs) > 1:
                args.append(f"like = {names[layer.inputs[1]]}")
            continue
        if key == "of":
            args.append(names[layer.attrs["of"]])
            continue
        if key not in values:
            continue
        v = values[key]
        if op == "maxpool" and key == "stride" and v == values.get("k"):
            continue                        # the stride defaults to the kernel size
        if attr.default is REQUIRED:
            args.append(value_text(attr.kind, v, signal))
        elif isinstance(v, Expr) or v != default_of(attr, signal):
            args.append(f"{key} = {value_text(attr.kind, v, signal)}")
    return f"{shown}({', '.join(args)})" if args else shown


# ------------------------------------------------------------------ bodies
@dataclass
class Scope:
    """What a body's statements may name: its inputs, the names given so far, what is taken."""
    names: dict[int, str]
    taken: set
    generic: int = 0

    def fresh(self, base: str | None) -> str:
        if base is None or base in self.taken:
            while True:
                self.generic += 1
                candidate = f"t{self.generic}"
                if candidate not in self.taken:
                    break
            base = candidate
        self.taken.add(base)
        return base


@dataclass
class Written:
    lines: list[str]
    order: list[int]                 # item indices in the order the compiler elaborates them


class BodyWriter:
    """Writes one body: a definition's (values as expressions of its parameters) or the network's."""

    def __init__(self, program: Program, items: list, inputs: list[int], outputs: list[int],
                 scope: Scope, definition: Definition | None, implicit_in: bool, indent: str = "    "):
        self.p, self.items, self.inputs, self.outputs = program, items, inputs, outputs
        self.scope, self.d, self.implicit_in, self.indent = scope, definition, implicit_in, indent
        self.index = {}
        for k, item in enumerate(items):
            for t in outputs_of(item):
                self.index[t] = k
        self.readers: dict[int, list[int]] = {}
        for k, item in enumerate(items):
            for t in _reads(item):
                self.readers.setdefault(t, []).append(k)

    # -- values of an item
    def values(self, k: int, item) -> dict:
        if isinstance(item, Layer):
            own = dict(item.attrs)
        else:
            inst = item.instance if isinstance(item, Call) else item.calls[0].instance
            own = {p.name: a for p, a in zip(inst.definition.params, inst.args)}
            if isinstance(item, Repeat):
                own["count"] = len(item.calls)
        if self.d is not None:
            for (idx, key), v in self.d.slots.items():
                if idx == k:
                    own[key] = v
        return own

    def labels(self) -> dict[int, str]:
        """Each item's label, where it has a meaningful one no other item of the body shares."""
        found = dict(self.d.labels) if self.d is not None else \
            {k: lab for k, item in enumerate(self.items) if (lab := label_of(item, self.p.labels))}
        counts = {}
        for lab in found.values():
            counts[lab] = counts.get(lab, 0) + 1
        out = {k: lab for k, lab in found.items() if counts[lab] == 1 and lab not in self.scope.taken}
        self.scope.taken.update(out.values())
        return out

    # -- statements
    def write(self) -> Written:
        self.label_of = self.labels()
        lines, order, done = [], [], set()
        for k in range(len(self.items)):
            if k in done:
                continue
            chain = [k]
            while True:
                nxt = self.follower(chain[-1])
                if nxt is None:
                    break
                chain.append(nxt)
            done.update(chain)
            order.extend(chain)
            lines.append(self.statement(chain, last=len(done) == len(self.items)))
        tail = self.value_line()
        if tail:
            lines.append(tail)
        return Written(lines, order)

    def follower(self, k: int) -> int | None:
        """The item that continues the chain after item k: the one reader of its only output, when that
        reader takes it as its piped input and it is no body output."""
        outs = outputs_of(self.items[k])
        if len(outs) != 1 or outs[0] in self.outputs:
            return None
        readers = self.readers.get(outs[0], [])
        if len(readers) != 1:
            return None
        nxt = readers[0]
        if not self.is_step(self.items[nxt]) or _reads(self.items[nxt])[:1] != outs:
            return None
        if _reads(self.items[nxt]).count(outs[0]) != 1:
            return None
        return nxt

    @staticmethod
    def is_step(item) -> bool:
        if isinstance(item, Layer):
            return item.op not in ("add", "mul", "concat", "maximum", "minimum")
        inst = item.instance if isinstance(item, Call) else item.calls[0].instance
        return len(inst.outputs) == 1 or isinstance(item, Call)

    def statement(self, chain: list[int], last: bool) -> str:
        end = self.items[chain[-1]]
        outs = outputs_of(end)
        final = last and outs == self.outputs
        # A tensor named after the layer that makes it: the label becomes the variable's name.
        var = self.label_of.pop(chain[-1], None) if not final and len(outs) == 1 else None
        first = self.items[chain[0]]
        parts = []
        if self.is_step(first):
            source = _reads(first)[0]
            if not (self.implicit_in and source == self.inputs[0]):
                parts.append(self.scope.names[source])
            parts.append(self.step(chain[0], first))
        else:
            parts.append(self.merge(first, len(chain) > 1))
        parts += [self.step(k, self.items[k]) for k in chain[1:]]
        if final:
            self.scope.names.update({t: "" for t in outs})
            return wrapped(self.indent, parts)
        if len(outs) == 1:
            name = var if var is not None else self.scope.fresh(None)
            self.scope.names[outs[0]] = name
            return wrapped(f"{self.indent}{name} = ", parts)
        names = [self.scope.fresh(None) for _ in outs]
        self.scope.names.update(dict(zip(outs, names)))
        return wrapped(f"{self.indent}{', '.join(names)} = ", parts)

    def merge(self, item: Layer, piped: bool) -> str:
        names = [self.scope.names[i] for i in item.inputs]
        if item.op in ("add", "mul"):
            text = (" + " if item.op == "add" else " * ").join(names)
            return f"({text})" if piped else text
        fn = {"concat": "concat", "maximum": "max", "minimum": "min"}[item.op]
        return f"{fn}({', '.join(names)})"

    def step(self, k: int, item) -> str:
        lab = self.label_of.get(k)
        prefix = f"{lab}: " if lab else ""
        if isinstance(item, Layer):
            signal = len(self.p.layers[item.inputs[0]].shape) == 3
            return prefix + call_text(item, self.values(k, item), self.scope.names, signal)
        inst = item.instance if isinstance(item, Call) else item.calls[0].instance
        values = self.values(k, item)
        d = inst.definition
        args, keyword = [], False
        for p, arg_input in zip(d.params, _tensor_args(d, inst)):
            if p.tensor:
                args.append(self.scope.names[arg_input] if not keyword else f"{p.name} = {self.scope.names[arg_input]}")
                continue
            v = values[p.name]
            if p.default is not None and not isinstance(v, Expr) and v == p.default:
                keyword = True
                continue
            text = _arg_text(v, d, p, self.p)
            args.append(f"{p.name} = {text}" if keyword or p.default is not None else text)
            keyword = keyword or p.default is not None
        call = f"{d.name}({', '.join(args)})" if args else d.name
        if isinstance(item, Repeat):
            count = values["count"]
            return f"{call} * {count.text if isinstance(count, Expr) else count}"
        return ("" if isinstance(item, Repeat) else prefix) + call

    def value_line(self) -> str | None:
        missing = [t for t in self.outputs if self.scope.names.get(t) != ""]
        if not missing:
            return None
        names = [self.scope.names[t] for t in self.outputs]
        if self.d is not None:
            return self.indent + (names[0] if len(names) == 1 else "(" + ", ".join(names) + ")")
        return f"{self.indent}output {', '.join(names)}"


WIDTH = 100


def wrapped(lead: str, parts: list[str]) -> str:
    """`lead` and the chain's parts joined by ` -> `, continued on lines that start with `->` (indented two
    more than the statement) when a line would pass WIDTH characters."""
    lines, line = [], lead + parts[0]
    more = " " * (len(lead) - len(lead.lstrip()) + 2) + "-> "
    for part in parts[1:]:
        if len(line) + 4 + len(part) > WIDTH:
            lines.append(line)
            line = more + part
        else:
            line += " -> " + part
    return "\n".join(lines + [line])


def _reads(item) -> list[int]:
    """Every tensor an item needs named or piped: a layer's inputs (and an unpool's pool), a call's."""
    if isinstance(item, Layer):
        return list(item.inputs) + ([item.attrs["of"]] if item.op == "unpool" else [])
    inst = item.instance if isinstance(item, Call) else item.calls[0].instance
    return list(inst.inputs)


def _tensor_args(d: Definition, inst: Instance) -> list:
    extra = iter(inst.inputs[1:])
    return [next(extra) if p.tensor else None for p in d.params]


def _arg_text(v: Any, d: Definition, p, program: Program) -> str:
    kind, signal = _kind_of(d, p.name, program)
    return value_text(kind, v, signal)


def _kind_of(d: Definition, param: str, program: Program) -> tuple[str, bool]:
    """How a parameter's value is written: the attribute kind of the first place it is used, and
    whether that layer works on a [C, L] signal (its sizes are written as integers)."""
    first = d.instances[0]
    for (idx, key), v in d.slots.items():
        if isinstance(v, Expr) and v.text == param:
            item = first.items[idx]
            if isinstance(item, Layer):
                spec = SURFACE[item.op] if item.op in SURFACE else OPS[item.op].attrs
                attr = next((a for a in spec if a.name == key), None)
                signal = bool(item.inputs) and len(program.layers[item.inputs[0]].shape) == 3
                return (attr.kind if attr is not None else "number"), signal
            inst = item.instance if isinstance(item, Call) else item.calls[0].instance
            return _kind_of(inst.definition, key, program) if key != "count" else ("number", False)
    return "number", False


# ------------------------------------------------------------------ the file
def write(program: Program, source: str, name: str) -> tuple[str, list[Layer]]:
    """The .cnn text and its layers in the compiler's order."""
    model = program.lifted.model
    made = f" ({model.producer}, opset {model.opset})" if model.producer else f" (opset {model.opset})"
    lines = [f"# Imported by `cnnc import` from {source}{made}: the weights are in the checkpoint beside it.", ""]
    bodies: dict[int, Written] = {}
    for d in program.definitions:
        lines += definition_lines(program, d, bodies)
        lines.append("")
    net_scope = Scope({}, set(KEYWORDS) | {d.name for d in program.definitions})
    header = [f"network {name} {{"]
    for i in program.network.inputs:
        layer = program.layers[i]
        var = net_scope.fresh(identifier(layer.name) or "x")
        net_scope.names[i] = var
        header.append(f"    input {var}: [{', '.join(str(d) for d in layer.shape[1:])}]")
    body = BodyWriter(program, program.network.items, program.network.inputs, program.network.outputs,
                      net_scope, None, implicit_in=False).write()
    lines += header + body.lines + ["}", ""]
    order: list[Layer] = []
    walk(program.network.items, body.order, bodies, order)
    return "\n".join(lines), order


def definition_lines(program: Program, d: Definition, bodies: dict) -> list[str]:
    inst = d.instances[0]
    taken = set(KEYWORDS) | {p.name for p in d.params} | {x.name for x in program.definitions} | {"in"}
    scope = Scope({inst.inputs[0]: "in"}, taken)
    for p, t in zip(d.params, _tensor_args(d, inst)):
        if p.tensor:
            scope.names[t] = p.name
    written = BodyWriter(program, inst.items, inst.inputs, inst.outputs, scope, d, implicit_in=True).write()
    bodies[id(d)] = written
    params = ", ".join(p.name if p.default is None else f"{p.name} = {_arg_text(p.default, d, p, program)}"
                       for p in d.params)
    head = f"block {d.name}({params})" if params else f"block {d.name}"
    if len(written.lines) == 1 and "\n" not in written.lines[0] and len(written.lines[0]) < 80:
        return [f"{head} {{ {written.lines[0].strip()} }}"]
    return [head + " {"] + written.lines + ["}"]


def walk(items: list, order: list[int], bodies: dict, out: list[Layer]) -> None:
    """The layers in the order the compiler elaborates the statements (into every block called)."""
    for k in order:
        item = items[k]
        calls = [item] if isinstance(item, Call) else (item.calls if isinstance(item, Repeat) else [])
        if isinstance(item, Layer):
            out.append(item)
        for call in calls:
            inst = call.instance
            walk(inst.items, bodies[id(inst.definition)].order, bodies, out)


def network_name(program: Program, path: str) -> str:
    from pathlib import Path
    graph = program.lifted.model.name
    if program.lifted.model.producer.startswith("cnnc") and identifier(graph) == graph:
        return graph
    stem = Path(path).stem
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", stem) if part)
    name = name if name and not name[0].isdigit() else "Net" + name
    return name if name not in KEYWORDS else name + "Net"
