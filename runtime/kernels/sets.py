"""Stage 3 (runtime): the kernel sets a plan can run on, and which one it runs.

Two sets: `numpy`, the reference kernels every op has (registered in its entry
as `"kernel"`), and `fast`, compiled kernels for the ops where NumPy passes
cost the most (registered beside them as `"fast"`, by the `cnnc[fast]`
extra's package `kernels.fast`, which needs Numba). A plan on the fast set
takes an op's fast kernel where it has one and its NumPy kernel otherwise, and
lowers its graph with the fusions the fast kernels exist for (`lowered`).

The choice, in order: the caller's (`cnnc run --kernels`), the environment
variable CNNC_KERNELS, else `fast` when Numba imports and `numpy` when it
does not. Asking for `fast` without Numba is an error that says how to get
it. This module never imports Numba itself (`cnnc check`/`compile` never
reach it); `load` does, once, when a plan first asks for the fast set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ...compiler.ops import OpSpec, implementation
from ...dsl.source import CnncError

ENV = "CNNC_KERNELS"
BACKEND = {"numpy": "kernel", "fast": "fast"}    # the key each set's kernels have in the op entries
SETS = tuple(BACKEND)      # `cnnc run --kernels` (the first: the reference)
INSTALL = "pip install 'cnnc[fast]'"


@dataclass(frozen=True)
class Choice:
    """The kernel set a run uses, and why (for the line `cnnc run` starts with)."""

    name: str
    note: str = ""      # e.g. the Numba version, or why the fast set is not available

    def describe(self) -> str:
        return f"{self.name} kernels" + (f" ({self.note})" if self.note else "")


_unavailable: str | None = None      # why Numba did not import, once tried


def load(name: str) -> str:
    """Make sure set `name`'s kernels are registered; returns a note (the Numba version) or ""."""
    if name == "numpy":
        return ""
    global _unavailable
    try:
        from . import fast
    except ImportError as err:          # Numba missing, or built for another NumPy
        _unavailable = str(err) or type(err).__name__
        raise CnncError(f"the fast kernels need Numba, which does not import here: {_unavailable}",
                        hint=f"{INSTALL}, or choose --kernels numpy") from None
    return fast.version()


def choose(name: str | None = None, source: str = "--kernels") -> Choice:
    """The kernel set to run on: `name`, else $CNNC_KERNELS, else fast when Numba imports."""
    if name is None and os.environ.get(ENV):
        name, source = os.environ[ENV].strip(), ENV
    if name is not None:
        if name not in SETS:
            raise CnncError(f"{source} {name!r}: no such kernel set", hint="choose one of " + ", ".join(SETS))
        return Choice(name, load(name))
    if _unavailable is None:
        try:
            return Choice("fast", load("fast"))
        except CnncError:
            pass
    return Choice("numpy", f"Numba does not import: {_unavailable}; {INSTALL}")


def kernel(op: str, kernel_set: str, table: Mapping[str, OpSpec] | None = None) -> Any | None:
    """The kernel `op` runs on in `kernel_set`: its fast kernel if it has one there, else its NumPy one."""
    if kernel_set != "numpy":
        impl = implementation(op, BACKEND[kernel_set], table)
        if impl is not None:
            return impl
    return implementation(op, "kernel", table)


def lowered(net, kernel_set: str):
    """The graph a plan on `kernel_set` runs: on the fast set, batchnorm and the activation after it
    become one `fused_bn` step (compiler/fusion.py `fuse_bn_relu`; same parameters, same store keys),
    whose fast kernel normalises and rectifies in one pass. The NumPy set runs the graph as it is."""
    if kernel_set == "numpy":
        return net
    from ...compiler.fusion import fuse_bn_relu
    return fuse_bn_relu(net, "train")


def optimizer_update(kernel_set: str, optimizer: str) -> Any | None:
    """The compiled update of `optimizer` (its name) on `kernel_set`, or None (its NumPy update)."""
    if kernel_set == "numpy":
        return None
    from .fast.optim import UPDATES
    return UPDATES.get(optimizer)
