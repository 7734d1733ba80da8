"""Stage 2 (compiler): converting evaluated arguments into normalised attributes.

Each `Attr.kind` of the op-spec table has one converter here. A converter
takes the evaluated value and returns the normalised form (ints, pairs,
`((top, bottom), (left, right))` padding, numpy weights …) or raises
`OpError` saying what was expected and what was given.

Numbers are finite: NaN is refused everywhere, and so is infinity, except for
the attributes in `MAY_BE_INFINITE`, where it means something (see
docs/language.md).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..dsl.source import did_you_mean
from .ops import OpError, Word
from .symbolic import Dim


# Float attributes for which an infinity is meaningful: `pad(value = -inf)` pads with a value that never
# wins a following max pool (PyTorch's max-pool padding). Every other float must be finite.
MAY_BE_INFINITE = {"value"}


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, Word):
        return f"the name '{value.name}'"
    if isinstance(value, Dim):
        return f"the symbolic size {value}"
    if isinstance(value, tuple):
        return f"the tuple {_text(value)}"
    if isinstance(value, list):
        return "a list"
    kind = getattr(value, "kind_name", None)
    return kind or type(value).__name__


def _text(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_text(v) for v in value) + ")"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, Dim):
        raise OpError(f"{name} must be a known integer, but it depends on {', '.join(sorted(value.symbols()))}",
                      "bind the input size with --input NAME=CxHxW")
    if isinstance(value, float):
        raise OpError(f"{name} must be an integer, got {describe(value)}",
                      "make it one with int(…), round(…), ceil(…) or floor(…)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError(f"{name} must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise OpError(f"{name} must be at least {minimum}, got {value}")
    return value


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise OpError(f"{name} must be an integer or a pair (h, w), got {describe(value)}")
        return (_int(value[0], name, minimum), _int(value[1], name, minimum))
    v = _int(value, name, minimum)
    return (v, v)


PADDING_WORDS = ("same", "valid", "full", "causal")   # resolved against the input by compiler/ops.py


def _is_none(value) -> bool:
    return value is None or (isinstance(value, Word) and value.name == "none")


def _padding(value, name: str):
    if isinstance(value, (Word, str)):
        word = value.name if isinstance(value, Word) else value
        if word in PADDING_WORDS:
            return word
        raise OpError(f"{name} must be an integer, (h, w), ((top, bottom), (left, right)), same, valid, full "
                      f"or causal; got {describe(value)}")
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, tuple) for v in value):
        return tuple(_pair(v, name, 0) for v in value)
    h, w = _pair(value, name, 0)
    return ((h, h), (w, w))


def _float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpError(f"{name} must be a number, got {describe(value)}")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond the float range
        raise OpError(f"{name} must be a finite number, got a number too large") from None
    if math.isnan(v) or (math.isinf(v) and name not in MAY_BE_INFINITE):
        what = "a number" if name in MAY_BE_INFINITE else "a finite number"
        raise OpError(f"{name} must be {what}, got {describe(v)}",
                      "NaN and infinity are refused here (only pad's value may be infinite)")
    return v


def _weights(value, name: str) -> np.ndarray | None:
    if _is_none(value):
        return None
    try:
        arr = np.array(_plain(value), dtype=np.float64)
    except ValueError:
        raise OpError(f"{name} must be a rectangular nested list of numbers") from None
    if arr.dtype == object or not np.isfinite(arr).all():
        raise OpError(f"{name} must be a rectangular nested list of finite numbers")
    arr = arr.astype(np.float32)
    arr.setflags(write=False)
    return arr


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpError(f"weights must be numbers, got {describe(value)}")
    return value


def _init(value: Any, name: str) -> tuple | None:
    """A layer's `init`: a word (`kaiming_uniform`) or a tuple of a word and its numbers (`(normal, 0.02)`),
    checked against the train vocabulary's INIT family; normalised to (name, ((option, value), ...))."""
    from .train_vocab import INIT, Invalid
    if _is_none(value):
        return None
    head, args = (value[0], value[1:]) if isinstance(value, tuple) and value else (value, ())
    word = head.name if isinstance(head, Word) else head
    entry = INIT.entries.get(word) if isinstance(word, str) else None
    if entry is None:
        raise OpError(f"{name} must be one of {', '.join(INIT.entries)}; got {describe(value)}",
                      did_you_mean(str(word), INIT.entries))
    if len(args) > len(entry.positional):
        raise OpError(f"{name} = {word} takes {len(entry.positional) or 'no'} number"
                      f"{'s' if len(entry.positional) != 1 else ''}, got {len(args)}")
    options = []
    for option_name, v in zip(entry.positional, args):
        try:
            options.append((option_name, entry.option(option_name).check(v)))
        except Invalid as bad:
            raise OpError(f"{name} = {word}: {option_name} must be {bad}, got {describe(v)}") from None
    given = {o for o, _ in options}
    missing = [o.name for o in entry.options if o.required and o.name not in given]
    if missing:
        raise OpError(f"{name} = {word} needs its {missing[0]}", f"write {name} = ({word}, ...), e.g. "
                      f"{name} = ({word}, 0.02)")
    return (word, tuple(options))


def convert(kind: str, value: Any, name: str, choices: tuple[str, ...] = ()) -> Any:
    """The normalised value of one attribute (see ops.Attr.kind)."""
    if kind == "pos_int":
        return _int(value, name, 1)
    if kind == "int":
        return _int(value, name)
    if kind == "opt_int":
        return None if _is_none(value) else _int(value, name, 1)
    if kind == "pair":
        return _pair(value, name, 1)
    if kind == "pair0":
        return _pair(value, name, 0)
    if kind == "opt_pair":
        return None if _is_none(value) else _pair(value, name, 1)
    if kind == "opt_pair0":
        return None if _is_none(value) else _pair(value, name, 0)
    if kind == "padding":
        return _padding(value, name)
    if kind == "bool":
        if not isinstance(value, bool):
            raise OpError(f"{name} must be true or false, got {describe(value)}")
        return value
    if kind == "float":
        return _float(value, name)
    if kind == "pos_float":
        v = _float(value, name)
        if v <= 0:
            raise OpError(f"{name} must be positive, got {value}")
        return v
    if kind == "prob":
        v = _float(value, name)
        if not 0 <= v < 1:
            raise OpError(f"{name} must satisfy 0 <= {name} < 1, got {value}")
        return v
    if kind == "choice":
        word = value.name if isinstance(value, Word) else value
        if word not in choices:
            raise OpError(f"{name} must be one of {', '.join(choices)}; got {describe(value)}",
                          did_you_mean(str(word), choices))
        return word
    if kind == "weights":
        return _weights(value, name)
    if kind == "init":
        return _init(value, name)
    raise AssertionError(f"unknown attribute kind {kind}")
