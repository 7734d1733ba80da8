"""Stage 3 (runtime): the NumPy kernels, one per op of docs/internals.md.

Each kernel module registers its kernels into their ops' entries
(`register("kernel", op)` of compiler/ops.py, beside their definitions);
importing this package imports every module, so afterwards
`implementation(op, "kernel")` answers for every op of the table except
`input`. `KERNELS` is a read-only view of those registrations (op name ->
`Kernel`, a forward and a backward function, see `_core`), not a second list.
Kernels receive batched channels-first tensors (`[N, C, H, W]` or `[N, F]`),
the parameters by their contract names and the normalised attributes; they
keep the input's dtype (float32 for training, float64 for gradient checks).
Ops live in modules by family: conv, linear, pool, activation, norm, dropout,
structure, channels. Importing changes no process setting: a command that trains or
predicts calls `keep_freed_memory()` (`_alloc`) when it starts.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from ...compiler.ops import OPS, implementation
from . import activation, channels, conv, dropout, linear, norm, pool, structure  # noqa: F401  (they register)
from ._alloc import keep_freed_memory
from ._core import Context, Kernel
from .pool import MaxPoolIndices


class _RegisteredKernels(Mapping):
    """Op name -> the kernel registered in its entry, for every op that has one (a live view)."""

    def __getitem__(self, op: str) -> Kernel:
        kernel = implementation(op, "kernel")
        if kernel is None:
            raise KeyError(op)
        return kernel

    def __iter__(self) -> Iterator[str]:
        return (op for op in OPS if implementation(op, "kernel") is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


KERNELS: Mapping[str, Kernel] = _RegisteredKernels()

__all__ = ["KERNELS", "Context", "Kernel", "MaxPoolIndices", "keep_freed_memory"]
