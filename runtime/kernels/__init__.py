"""Stage 3 (runtime): the NumPy kernels, one per op of docs/internals.md.

`KERNELS` maps every op name of the contract's table except `input` to a
`Kernel` (a forward and a backward function, see `_core`). Kernels receive
batched channels-first tensors (`[N, C, H, W]` or `[N, F]`), the parameters
by their contract names and the normalised attributes; they keep the input's
dtype (float32 for training, float64 for gradient checks). Ops live in
modules by family: conv, linear, pool, activation, norm, dropout, structure.
Importing the package asks glibc to keep freed memory for reuse (`_alloc`).
"""
from __future__ import annotations

from . import activation, conv, dropout, linear, norm, pool, structure
from ._alloc import keep_freed_memory
from ._core import Context, Kernel
from .pool import MaxPoolIndices

KERNELS: dict[str, Kernel] = {
    **conv.KERNELS,
    **linear.KERNELS,
    **pool.KERNELS,
    **activation.KERNELS,
    **norm.KERNELS,
    **dropout.KERNELS,
    **structure.KERNELS,
}

KEEPS_FREED_MEMORY = keep_freed_memory()

__all__ = ["KERNELS", "Context", "Kernel", "MaxPoolIndices", "KEEPS_FREED_MEMORY"]
