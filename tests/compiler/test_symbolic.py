"""Symbolic sizes: canonical forms agree with integer arithmetic; residue reasoning is exact."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cnnc.compiler.symbolic import Constraints, Dim, ceildiv, equal_when

H = Dim.symbol("H")

# Random size expressions built the way shape rules build them, paired with a Python function.
ops = st.sampled_from(["add", "sub", "mul", "floordiv", "ceildiv"])


@st.composite
def expressions(draw, depth=4):
    expr, fn = H, (lambda h: h)
    for _ in range(draw(st.integers(0, depth))):
        op, k = draw(ops), draw(st.integers(1, 7))
        if op == "add":
            expr, fn = expr + k, (lambda f, k: lambda h: f(h) + k)(fn, k)
        elif op == "sub":
            expr, fn = expr - k, (lambda f, k: lambda h: f(h) - k)(fn, k)
        elif op == "mul":
            expr, fn = expr * k, (lambda f, k: lambda h: f(h) * k)(fn, k)
        elif op == "floordiv":
            expr, fn = expr // k, (lambda f, k: lambda h: f(h) // k)(fn, k)
        else:
            expr, fn = ceildiv(expr, k), (lambda f, k: lambda h: -(-f(h) // k))(fn, k)
    return expr, fn


@settings(max_examples=300, deadline=None)
@given(expressions(), st.integers(-50, 500))
def test_canonical_form_evaluates_like_integers(pair, h):
    expr, fn = pair
    value = expr.evaluate({"H": h}) if isinstance(expr, Dim) else expr
    assert value == fn(h)


@settings(max_examples=200, deadline=None)
@given(expressions(), expressions())
def test_equal_when_is_exact_on_many_values(a, b):
    (ea, fa), (eb, fb) = a, b
    verdict, detail = equal_when(ea, eb, Constraints())
    samples = range(1000, 1400)
    agree = [h for h in samples if fa(h) == fb(h)]
    if verdict == "yes":
        assert len(agree) == len(samples)
    elif verdict == "no":
        # Not equal for every size; floors of nearby divisors (H//63, H//60) may still agree on
        # long runs, so only a disagreement somewhere is guaranteed.
        assert len(agree) < len(samples)
    elif verdict == "when":
        name, L, residues = detail
        assert agree == [h for h in samples if h % L in residues]


def test_nested_floors_merge_and_print_readably():
    x = H
    for _ in range(4):
        x = (x - 2) // 2 + 1  # maxpool(2) four times
    assert x == H // 16 and str(x) == "H//16"
    assert str(2 * (H // 16)) == "2*(H//16)"
    assert str(H % 4) == "H - 4*(H//4)"
    assert str(ceildiv(H, 2)) == "(H + 1)//2"
    assert (H // 2) * 2 + H % 2 == H


def test_unet_constraint_is_a_multiple_of_16():
    c = Constraints()
    levels = [H]
    for _ in range(4):
        levels.append(levels[-1] // 2)
    up = levels[-1]
    for skip in reversed(levels[:-1]):
        up = 2 * up
        verdict, detail = equal_when(skip, up, c)
        if verdict == "when":
            assert c.restrict(*detail)
        up = skip
    assert c.describe("H") == "H must be a multiple of 16"
    assert c.smallest("H") == 16


def test_contradictory_constraints_leave_nothing():
    c = Constraints()
    assert c.restrict("H", 2, {0})
    assert not c.restrict("H", 4, {1, 3})


def test_a_floor_that_cancels_an_earlier_floor_is_a_plain_integer():
    """floor((H - 2·floor(H/2) + 16) / 2) = floor((H mod 2 + 16) / 2) = 8: the floor it makes cancels the
    one in H's part (a centre crop's bounds computed from two symbolic sizes reach it)."""
    H = Dim.symbol("H")
    assert (H - 2 * (H // 2) + 16) // 2 == 8
    assert all(((h - 2 * (h // 2) + 16) // 2) == 8 for h in range(1, 40))
