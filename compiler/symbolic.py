"""Stage 2 (compiler): symbolic dimensions such as `H`, `H//2`, `2*(H//16)`.

A `Dim` is a polynomial with integer coefficients over atoms, where an atom is
either a symbol (`H`) or the floor of a polynomial divided by a positive
integer (`(H - 1)//2`). Floors are kept canonical (integer multiples pulled
out, nested floors merged), so equal sizes usually compare equal structurally.
Where they do not (`H//8` against `2*(H//16)`), `equal_when` decides for which
residues of the symbol they agree: such expressions are periodic in the
symbol, so checking one period is a proof. The analysis turns the residues
into constraints a user can read: "H must be a multiple of 16".

Arithmetic with plain ints returns plain ints whenever the result is constant,
so the shape rules in `ops.py` are written once for both concrete and symbolic
sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import Union

Number = Union[int, "Dim"]


class SymbolicComparison(Exception):
    """A comparison whose truth depends on the value of a symbol."""

    def __init__(self, expr: "Dim"):
        super().__init__(f"the value of {expr} depends on {', '.join(sorted(expr.symbols()))}")
        self.expr = expr


@dataclass(frozen=True, order=True)
class Sym:
    name: str

    def key(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Floor:
    """floor(num / den) with den > 1 and num not a multiple of den."""

    num: "Dim"
    den: int

    def key(self) -> str:
        return f"~{self.num}//{self.den}"

    def __str__(self) -> str:
        inner = str(self.num)
        if len(self.num.terms) > 1 or not _is_atomic(self.num):
            inner = f"({inner})"
        return f"{inner}//{self.den}"


Atom = Union[Sym, Floor]
Monomial = tuple  # tuple of (atom, power), sorted by atom key


def _is_atomic(p: "Dim") -> bool:
    if len(p.terms) != 1:
        return False
    (mono, coeff), = p.terms.items()
    return coeff == 1 and len(mono) == 1 and mono[0][1] == 1


def _mono_mul(a: Monomial, b: Monomial) -> Monomial:
    powers: dict = {}
    for atom, p in a + b:
        powers[atom] = powers.get(atom, 0) + p
    return tuple(sorted(powers.items(), key=lambda ap: ap[0].key()))


class Dim:
    """An integer-valued expression over symbols; immutable."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict):
        self.terms = {m: c for m, c in terms.items() if c != 0}
        self._hash = None

    # ------------------------------------------------------------ construction
    @staticmethod
    def symbol(name: str) -> "Dim":
        return Dim({((Sym(name), 1),): 1})

    @staticmethod
    def const(value: int) -> "Dim":
        return Dim({(): int(value)})

    @staticmethod
    def lift(x: Number) -> "Dim":
        if isinstance(x, Dim):
            return x
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"not an integer size: {x!r}")
        return Dim.const(x)

    def simplify(self) -> Number:
        """A plain int when constant, else self."""
        if not self.terms:
            return 0
        if len(self.terms) == 1 and () in self.terms:
            return self.terms[()]
        return self

    # --------------------------------------------------------------- queries
    def constant_term(self) -> int:
        return self.terms.get((), 0)

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for mono in self.terms:
            for atom, _ in mono:
                out |= {atom.name} if isinstance(atom, Sym) else atom.num.symbols()
        return out

    def evaluate(self, env: dict[str, int]) -> int:
        total = 0
        for mono, coeff in self.terms.items():
            value = coeff
            for atom, power in mono:
                base = env[atom.name] if isinstance(atom, Sym) else atom.num.evaluate(env) // atom.den
                value *= base ** power
            total += value
        return total

    def period(self) -> int:
        """A period L of the floor pattern: f(x + L) - f(x) is a polynomial without floors."""
        L = 1
        for mono in self.terms:
            for atom, _ in mono:
                if isinstance(atom, Floor):
                    inner = atom.den * atom.num.period()
                    L = L * inner // gcd(L, inner)
        return L

    # ------------------------------------------------------------- arithmetic
    def __add__(self, other: Number) -> Number:
        other = Dim.lift(other)
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = terms.get(m, 0) + c
        return Dim(terms).simplify()

    __radd__ = __add__

    def __neg__(self) -> Number:
        return Dim({m: -c for m, c in self.terms.items()}).simplify()

    def __sub__(self, other: Number) -> Number:
        return self + (-Dim.lift(other))

    def __rsub__(self, other: Number) -> Number:
        return Dim.lift(other) + (-self)

    def __mul__(self, other: Number) -> Number:
        other = Dim.lift(other)
        terms: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = _mono_mul(m1, m2)
                terms[m] = terms.get(m, 0) + c1 * c2
        return Dim(terms).simplify()

    __rmul__ = __mul__

    def __floordiv__(self, other: Number) -> Number:
        if isinstance(other, Dim):
            other = other.simplify()
            if isinstance(other, Dim):
                raise SymbolicComparison(other)
        return floordiv(self, int(other))

    def __rfloordiv__(self, other: Number) -> Number:
        raise SymbolicComparison(self)

    def __mod__(self, other: Number) -> Number:
        return self - (self // other) * other

    def __rmod__(self, other: Number) -> Number:
        raise SymbolicComparison(self)

    def __truediv__(self, other):
        raise SymbolicComparison(self)

    # ------------------------------------------------------------- comparison
    def __eq__(self, other) -> bool:
        if isinstance(other, (int, Dim)) and not isinstance(other, bool):
            return Dim.lift(other).terms == self.terms
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self.terms.items()))
        return self._hash

    def _undecidable(self, other):
        raise SymbolicComparison(self - other if isinstance(self - other, Dim) else self)

    __lt__ = __le__ = __gt__ = __ge__ = _undecidable

    def __bool__(self) -> bool:
        raise SymbolicComparison(self)

    def __index__(self):
        raise SymbolicComparison(self)

    def __int__(self):
        raise SymbolicComparison(self)

    # ------------------------------------------------------------------ text
    def __str__(self) -> str:
        parts = []
        for mono, coeff in sorted(self.terms.items(), key=lambda mc: (len(mc[0]) == 0, _mono_rank(mc[0]))):
            wrap = abs(coeff) != 1 or len(mono) > 1
            body = "*".join(_atom_text(a, wrap) if p == 1 else f"{_atom_text(a, True)}^{p}" for a, p in mono)
            if not body:
                text = str(abs(coeff))
            elif abs(coeff) == 1:
                text = body
            else:
                text = f"{abs(coeff)}*{body}"
            sign = "-" if coeff < 0 else "+"
            parts.append((sign, text))
        if not parts:
            return "0"
        first_sign, first = parts[0]
        out = ("-" if first_sign == "-" else "") + first
        for sign, text in parts[1:]:
            out += f" {sign} {text}"
        return out

    def __repr__(self) -> str:
        return f"Dim({self})"


def _atom_text(atom: Atom, wrap: bool) -> str:
    return f"({atom})" if wrap and isinstance(atom, Floor) else str(atom)


def _mono_rank(mono: Monomial) -> tuple:
    # Plain symbols before floors, so `H - 4*(H//4)` rather than `-4*(H//4) + H`.
    return tuple((isinstance(a, Floor), a.key(), p) for a, p in mono)


def floordiv(p: Dim, d: int) -> Number:
    """floor(p / d) in canonical form."""
    if d <= 0:
        raise ValueError("floor division by a non-positive size")
    if d == 1:
        return p.simplify()
    whole: dict = {}
    rest: dict = {}
    for m, c in p.terms.items():
        q, r = divmod(c, d)
        if q:
            whole[m] = q
        if r:
            rest[m] = r
    result = Dim(whole)
    if not rest:
        return result.simplify()
    rest_dim = Dim(rest)
    if set(rest) == {()}:
        return result.simplify()  # 0 < r < d: floor(r/d) = 0
    # floor((floor(x/a) + b)/d) = floor((x + a*b)/(a*d)) for integer x.
    b = rest.get((), 0)
    variable = {m: c for m, c in rest.items() if m != ()}
    if len(variable) == 1:
        (mono, coeff), = variable.items()
        if coeff == 1 and len(mono) == 1 and mono[0][1] == 1 and isinstance(mono[0][0], Floor):
            inner = mono[0][0]
            return result + floordiv(inner.num + inner.den * b, inner.den * d)
    return result + Dim({((Floor(rest_dim, d), 1),): 1})   # `+` simplifies (to an int if the floor cancels)


def ceildiv(p: Number, d: int) -> Number:
    return (p + d - 1) // d


def is_symbolic(x) -> bool:
    return isinstance(x, Dim)


def show(x) -> str:
    return str(x)


# ----------------------------------------------------------------- residues
class Constraints:
    """What the program requires of each symbol: residues modulo a period and a minimum."""

    def __init__(self):
        self.residues: dict[str, tuple[int, frozenset[int]]] = {}
        self.positive: list[tuple[Dim, object]] = []  # (expression that must be >= 1, loc)

    def allowed(self, name: str, value: int) -> bool:
        if name not in self.residues:
            return True
        L, rs = self.residues[name]
        return value % L in rs

    def restrict(self, name: str, L: int, rs: set[int]) -> bool:
        """Intersect with `name mod L in rs`; False if nothing remains."""
        if name in self.residues:
            L0, rs0 = self.residues[name]
            M = L0 * L // gcd(L0, L)
            merged = {r for r in range(M) if r % L0 in rs0 and r % L in rs}
            L, rs = M, merged
        L, rs = _reduce_period(L, set(rs))
        self.residues[name] = (L, frozenset(rs))
        return bool(rs)

    def describe(self, name: str) -> str | None:
        if name not in self.residues:
            return None
        L, rs = self.residues[name]
        if L == 1:
            return None
        if rs == {0}:
            return f"{name} must be a multiple of {L}"
        if len(rs) == 1:
            (r,) = rs
            return f"{name} must be {r} more than a multiple of {L} ({name} % {L} == {r})"
        return f"{name} % {L} must be one of {', '.join(map(str, sorted(rs)))}"

    def smallest(self, name: str, limit: int = 1 << 16) -> int | None:
        """The smallest value of `name` meeting its residues and every positivity requirement."""
        relevant = [e for e, _ in self.positive if e.symbols() == {name}]
        for v in range(1, limit):
            if self.allowed(name, v) and all(e.evaluate({name: v}) >= 1 for e in relevant):
                return v
        return None


def _reduce_period(L: int, rs: set[int]) -> tuple[int, set[int]]:
    """The smallest period describing the same residue set (0 mod 16 stays 0 mod 16)."""
    for d in range(1, L + 1):
        if L % d == 0:
            small = {r % d for r in rs}
            if all((r in rs) == (r % d in small) for r in range(L)):
                return d, small
    return L, rs


def equal_when(a: Number, b: Number, constraints: Constraints) -> tuple[str, object]:
    """Decide whether sizes a and b agree.

    Returns ("yes", None), ("no", None), ("when", (symbol, L, residues)) when they
    agree exactly for those residues of a single symbol, or ("unknown", None).
    """
    diff = Dim.lift(a) - Dim.lift(b)
    if not isinstance(diff, Dim):
        return ("yes", None) if diff == 0 else ("no", None)
    names = diff.symbols()
    if len(names) != 1:
        return "unknown", None
    (name,) = names
    L = diff.period()
    if L > 1 << 16:
        return "unknown", None
    base = L * 4096
    values = [diff.evaluate({name: base + r}) for r in range(L)]
    later = [diff.evaluate({name: 2 * base + r}) for r in range(L)]
    if values != later:
        # Grows with the symbol: equal for finitely many values at most.
        return "no", None
    ok = {r for r in range(L) if values[r] == 0}
    if len(ok) == L:
        return "yes", None
    if not ok:
        return "no", None
    already = constraints.residues.get(name)
    if already is not None:
        L0, rs0 = already
        M = L0 * L // gcd(L0, L)
        if all(r % L in ok for r in range(M) if r % L0 in rs0):
            return "yes", None
    return "when", (name, L, ok)
