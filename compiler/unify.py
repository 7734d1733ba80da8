"""Stage 2 (compiler): shape unification at merge points, on top of `symbolic`.

Where tensors meet (`add`, `mul`, `concat`, `unpool` and its pooling layer),
their sizes must agree. Concrete sizes are left to the op's shape rule; a
symbolic size (`H // 2` against `(H - 2) // 2 + 1`) is decided with
`symbolic.equal_when`, and agreement that holds only for some input sizes is
recorded as a constraint on the symbol (remembering where it came from, for
`cnnc compile` to report). Disagreement is an error naming both shapes and
the layers that made them.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..dsl.source import CnncError, Loc
from .naming import Tensor
from .ops import fmt_shape
from .symbolic import Constraints, Dim, equal_when, is_symbolic


class ShapeUnifier:
    """Makes sizes agree under `constraints`; `producer(node)` describes a node for messages."""

    def __init__(self, constraints: Constraints, producer: Callable[[int], tuple[str, Loc | None]]):
        self.constraints = constraints
        self.producer = producer
        self.sources: list[tuple[str, Loc | None]] = []  # (symbol, where a constraint on it was derived)

    def report(self, shapes: Iterable[tuple]) -> dict[str, dict]:
        """For each symbol in `shapes`: its constraint in words, smallest value, residues and sources."""
        symbols: set[str] = set()
        for shape in shapes:
            for d in shape:
                if isinstance(d, Dim):
                    symbols |= d.symbols()
        out = {}
        for s in sorted(symbols):
            sources = [loc for n, loc in self.sources if n == s]
            modulus, residues = self.constraints.residues.get(s, (1, frozenset({0})))
            out[s] = {"constraint": self.constraints.describe(s), "smallest": self.constraints.smallest(s),
                      "modulus": modulus, "residues": sorted(residues), "sources": sources}
        return out

    def merge(self, op: str, inputs: list[Tensor], loc: Loc) -> list[tuple]:
        """The input shapes of a merge, symbolic sizes made to agree with the first input's."""
        shapes = [list(t.shape) for t in inputs]
        first = shapes[0]
        start = 1 if op == "concat" else 0  # concat joins along channels: they need not agree
        for other in shapes[1:]:
            if len(other) != len(first):
                continue  # the shape rule reports rank mismatches
            for i in range(start, len(first)):
                if op != "concat" and (first[i] == 1 or other[i] == 1):
                    continue  # broadcasting
                if is_symbolic(first[i]) or is_symbolic(other[i]):
                    other[i] = self.agree(first[i], other[i], loc, op, inputs)
        return [tuple(s) for s in shapes]

    def match(self, a: tuple, b: tuple, loc: Loc, what: str) -> tuple:
        """Shape `a` with each symbolic size made to agree with `b`'s."""
        if len(a) != len(b):
            return a
        return tuple(self.agree(y, x, loc, what, []) if is_symbolic(x) or is_symbolic(y) else x
                     for x, y in zip(a, b))

    def agree(self, a, b, loc: Loc, op: str, inputs: list[Tensor]):
        verdict, detail = equal_when(a, b, self.constraints)
        if verdict == "yes":
            return a
        if verdict == "when":
            name, modulus, residues = detail
            if not self.constraints.restrict(name, modulus, residues):
                raise self.mismatch(op, inputs, loc, f"no value of {name} makes {a} and {b} agree "
                                                     "together with the other constraints")
            self.sources.append((name, loc))
            return a
        reason = f"{a} and {b} never agree" if verdict == "no" else f"cannot prove that {a} equals {b}"
        raise self.mismatch(op, inputs, loc, reason)

    def mismatch(self, op: str, inputs: list[Tensor], loc: Loc, reason: str) -> CnncError:
        shapes = " and ".join(fmt_shape(t.shape) for t in inputs)
        err = CnncError(f"{op}: shapes {shapes} do not line up: {reason}", loc,
                        "bind the input size with --input NAME=CxHxW to see concrete shapes")
        for t in inputs:
            display, where = self.producer(t.node)
            err.add_note(f"{fmt_shape(t.shape)} comes from {display}", where)
        return err
