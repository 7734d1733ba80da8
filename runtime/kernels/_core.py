"""Stage 3 (runtime): the kernel protocol shared by every op module.

A `Kernel` is a pair of plain functions. `forward(xs, params, attrs, ctx)`
takes the op's input tensors (batched, channels first), its parameters by
name, its normalised attributes (docs/internals.md) and the per-pass
`Context`, and returns `(y, cache)`. `backward(dy, cache)` returns the
gradients with respect to each input, in order (None where none flows or the
caller said it does not need it), and a dict of gradients with respect to the
trainable parameters by name. Returned arrays may be views of `dy`, of the
inputs or of the cache: callers treat them as read-only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

Tensors = tuple[np.ndarray, ...]
Params = Mapping[str, np.ndarray]
Attrs = Mapping[str, Any]
InputGrads = tuple["np.ndarray | None", ...]
Grads = tuple[InputGrads, dict[str, np.ndarray]]


@dataclass
class Context:
    """What a kernel may know about the pass it runs in."""

    training: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    saved: dict = field(default_factory=dict)   # per forward pass: side results other nodes read
    node: str = ""                               # name of the node being run
    need_input_grad: bool = True                 # False for the first layer: backward may skip dx


@dataclass(frozen=True)
class Kernel:
    """The NumPy implementation of one op: forward and its vector-Jacobian product."""

    forward: Callable[[Tensors, Params, Attrs, Context], tuple[np.ndarray, Any]]
    backward: Callable[[np.ndarray, Any], Grads]
