"""Stage 3 (runtime): the `fast` kernel set, compiled with Numba (the `cnnc[fast]` extra).

Importing this package compiles nothing: it registers each fast kernel into its
op's entry beside the NumPy kernel (`register("fast", op)`), and every loop is
compiled on its first call and cached on disk (`_jit`). Plans choose the set
through kernels/sets.py, the one module that imports this package; nothing
else in cnnc imports Numba. Every fast kernel gives its NumPy kernel's
results to float32 rounding (tests/runtime/test_kernels_fast.py).
"""
from __future__ import annotations

from ._jit import version
from . import activation, conv, norm, optim, pool  # noqa: F401  (they register)

__all__ = ["version"]
