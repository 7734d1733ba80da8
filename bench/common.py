"""Stage 3 (runtime) benchmarks: what several benchmark scripts share.

No side effects and no optional dependency on import (bench_onnx.py runs without PyTorch), so any
script or test can use it.
"""
from __future__ import annotations

import statistics

import numpy as np

from cnnc.runtime.plan import Plan


def randomise_bn(plan: Plan, rng: np.random.Generator) -> None:
    """Batchnorm statistics and affines away from 0/1, so that folding them matters."""
    for key, v in plan.params.items():
        owner, kind = key.rsplit(".", 1)
        if plan.net.node(owner).op == "batchnorm":
            v[...] = {"running_mean": rng.normal(0, 0.1, v.shape), "running_var": rng.uniform(0.5, 2.0, v.shape),
                      "weight": rng.uniform(0.2, 0.6, v.shape), "bias": rng.normal(0, 0.1, v.shape)}[kind]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3) of the values (inclusive method; one value is its own quartiles)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3
