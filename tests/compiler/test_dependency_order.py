"""compiler/graph.py `dependency_order`: the order the torch module's and `cnnc import`'s block scopes use."""
from __future__ import annotations

from cnnc.compiler.graph import dependency_order

# (name, what it produces, what it needs)
ITEMS = [("c", {"c"}, {"b"}), ("a", {"a"}, set()), ("b", {"b"}, {"a", "x"}), ("d", {"d"}, set())]


def order(items, key=None):
    got = dependency_order(items, lambda i: i[1], lambda i: i[2], key=key)
    return None if got is None else [i[0] for i in got]


def test_each_item_comes_after_what_it_needs_and_ties_go_by_position():
    assert order(ITEMS) == ["a", "b", "c", "d"]       # d is free from the start, but comes after a by position


def test_ties_go_by_the_key_when_one_is_given():
    assert order(ITEMS, key=lambda i: {"a": 3, "b": 2, "c": 1, "d": 0}[i[0]]) == ["d", "a", "b", "c"]


def test_items_that_need_each_other_have_no_order():
    assert order([("a", {"a"}, {"b"}), ("b", {"b"}, {"a"})]) is None
