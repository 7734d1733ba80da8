"""Stage 3 (runtime): the engines `cnnc run --engine` chooses from, and how each is built.

An engine is what computes a training run — a batch's loss and gradients, an
optimizer step, predictions, the state a checkpoint holds; the trainer
(trainer.py) owns everything else. `numpy` is the embedded runtime
(numpy_engine.py `NumpyEngine`), `torch` is PyTorch (torch_engine.py,
the `cnnc[torch]` extra). This module is light so the command line can list
the engines without importing either; it imports each engine's module when
that engine is built.
"""
from __future__ import annotations

from typing import Any

from ...dsl.source import CnncError

ENGINES = ("numpy", "torch")   # the first is the default


def make_engine(name: str, compiled, cfg, base_lr: float, hyper: dict[str, Any], is_weight,
                threads: int | None = None, device: str | None = None, kernels: str | None = None):
    """`kernels` is the numpy engine's kernel set (runtime/kernels/sets.py; None: its default choice)."""
    if name == "numpy":
        from .numpy_engine import NumpyEngine
        if device not in (None, "cpu"):
            raise CnncError(f"--device {device}: the numpy engine runs on the CPU",
                            hint="train on a GPU with --engine torch")
        return NumpyEngine(compiled, cfg, base_lr, hyper, is_weight, threads, kernels)
    if kernels is not None:
        raise CnncError(f"--kernels {kernels}: the kernel sets are the numpy engine's; --engine {name} computes "
                        "with its own", hint=f"drop --kernels, or drop --engine {name}")
    if name == "torch":
        from .torch_engine import TorchEngine, World
        return TorchEngine(compiled, cfg, base_lr, hyper, is_weight, device or "cpu", threads,
                           World.from_environment())
    raise CnncError(f"--engine {name}: unknown engine", hint="choose one of " + ", ".join(ENGINES))
