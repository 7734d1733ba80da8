"""Shared helpers for the kernel tests: running a kernel, finite differences, torch.

The test files load this module by path (tests run with --import-mode=importlib,
so the test directory is not on sys.path): see `load_helpers` at their top.
`check_grads` and `torch_compare` check an op's NumPy kernel and, where Numba
imports and the op has one, its fast kernel (runtime/kernels/sets.py): every
gradient check of the suite runs on both kernel sets.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from functools import lru_cache

from cnnc.dsl.source import CnncError
from cnnc.runtime.kernels import Context, Kernel, sets

RTOL_FD = 1e-5          # float64 central differences vs the analytic backward
RTOL_TORCH = 1e-5       # float32 against PyTorch, relative to the tensor's magnitude


def ctx_factory(training: bool = False, seed: int = 0, saved: Mapping | None = None,
                node: str = "node") -> Callable[[], Context]:
    """A zero-argument maker of identical fresh contexts (same rng stream every call)."""
    def make() -> Context:
        return Context(training=training, rng=np.random.default_rng(seed),
                       saved=dict(saved or {}), node=node)
    return make


@lru_cache(maxsize=1)
def fast_available() -> bool:
    """Does the fast kernel set load here (Numba installed and importable)?"""
    try:
        sets.load("fast")
    except CnncError:
        return False
    return True


def kernel_sets_of(op: str, table=None) -> list[str]:
    """The kernel sets in which `op` has a kernel of its own: numpy, and fast where it has one."""
    has_fast = fast_available() and sets.kernel(op, "fast", table) is not sets.kernel(op, "numpy", table)
    return ["numpy"] + (["fast"] if has_fast else [])


def kernel_of(op: str, kernel_set: str = "numpy") -> Kernel:
    kernel = sets.kernel(op, kernel_set)
    if kernel is None:
        raise KeyError(op)
    return kernel


def run(op: str, xs: Sequence[np.ndarray], params: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping[str, Any] | None = None, ctx: Context | None = None, kernel_set: str = "numpy"):
    """(y, cache) of one forward call; params are passed as given (batchnorm mutates them)."""
    return kernel_of(op, kernel_set).forward(tuple(xs), dict(params or {}), dict(attrs or {}), ctx or Context())


def _loss(op, xs, params, attrs, make_ctx, dy, kernel_set) -> float:
    fresh = {k: v.copy() for k, v in params.items()}    # running statistics must not drift
    y, _ = run(op, xs, fresh, attrs, make_ctx(), kernel_set)
    return float(np.sum(y * dy))


def numeric_grad(op, xs, params, attrs, make_ctx, dy, target: np.ndarray, h: float = 1e-6,
                 kernel_set: str = "numpy") -> np.ndarray:
    """Central differences of Σ y·dy with respect to every element of `target` (in place, restored)."""
    g = np.zeros_like(target)
    for idx in np.ndindex(target.shape):
        old = target[idx]
        target[idx] = old + h
        up = _loss(op, xs, params, attrs, make_ctx, dy, kernel_set)
        target[idx] = old - h
        down = _loss(op, xs, params, attrs, make_ctx, dy, kernel_set)
        target[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, what: str = "",
                 atol_rel: float | None = None) -> None:
    """assert_allclose with an absolute floor relative to the expected tensor's magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    atol = (rtol if atol_rel is None else atol_rel) * max(scale, 1e-3)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def check_grads(op: str, xs: Sequence[np.ndarray], params: Mapping[str, np.ndarray] | None = None,
                attrs: Mapping[str, Any] | None = None, *, make_ctx: Callable[[], Context] | None = None,
                inputs: Sequence[int] | None = None, wrt_params: Sequence[str] = (),
                no_grad_inputs: Sequence[int] = (), seed: int = 0, rtol: float = RTOL_FD) -> None:
    """Analytic backward against float64 central differences for inputs and parameters, on every
    kernel set that has a kernel of its own for `op`."""
    for kernel_set in kernel_sets_of(op):
        _check_grads(op, kernel_set, xs, params, attrs, make_ctx, inputs, wrt_params, no_grad_inputs, seed, rtol)


def _check_grads(op, kernel_set, xs, params, attrs, make_ctx, inputs, wrt_params, no_grad_inputs, seed, rtol):
    what = f"{op} ({kernel_set} kernels)"
    xs = [np.array(x, dtype=np.float64) for x in xs]
    params = {k: np.array(v, dtype=np.float64) for k, v in (params or {}).items()}
    attrs = dict(attrs or {})
    make_ctx = make_ctx or ctx_factory()
    y, cache = run(op, xs, {k: v.copy() for k, v in params.items()}, attrs, make_ctx(), kernel_set)
    assert y.dtype == np.float64, what
    dy = np.random.default_rng(seed + 1000).standard_normal(y.shape)
    dxs, dparams = kernel_of(op, kernel_set).backward(dy.copy(), cache)
    assert len(dxs) == len(xs), f"{what}: {len(dxs)} input gradients for {len(xs)} inputs"
    for i in no_grad_inputs:
        assert dxs[i] is None, f"{what}: input {i} must get no gradient"
    for i in (range(len(xs)) if inputs is None else inputs):
        if i in no_grad_inputs:
            continue
        num = numeric_grad(op, xs, params, attrs, make_ctx, dy, xs[i], kernel_set=kernel_set)
        assert dxs[i] is not None and dxs[i].dtype == np.float64, what
        assert_close(dxs[i], num, rtol, f"{what} d/dx{i}", atol_rel=1e-7)
    for name in wrt_params:
        assert name in dparams, f"{what}: no gradient for {name}"
        num = numeric_grad(op, xs, params, attrs, make_ctx, dy, params[name], kernel_set=kernel_set)
        assert dparams[name].dtype == np.float64, what
        assert_close(dparams[name], num, rtol, f"{what} d/d{name}", atol_rel=1e-7)


def spread_values(rng: np.random.Generator, shape: tuple[int, ...], gap: float = 0.01,
                  low: float = -1.0) -> np.ndarray:
    """Distinct values at least `gap` apart, shuffled: maxima are unique and FD-stable."""
    return (low + gap * rng.permutation(int(np.prod(shape)))).reshape(shape)


def away_from(x: np.ndarray, points: Sequence[float], gap: float = 0.02) -> np.ndarray:
    """x with every value within `gap` of a kink moved `gap` away (keeps FD off the kinks)."""
    x = x.copy()
    for p in points:
        near = np.abs(x - p) < gap
        x[near] = p + np.where(x[near] >= p, gap, -gap)
    return x


# ------------------------------------------------------------------ torch

def torch_compare(op: str, xs: Sequence[np.ndarray], params: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                  torch_fn: Callable, *, make_ctx: Callable[[], Context] | None = None,
                  grad_inputs: Sequence[int] | None = None, wrt_params: Sequence[str] = (),
                  seed: int = 0, rtol: float = RTOL_TORCH) -> None:
    """Forward and gradients of our float32 kernel (each kernel set's) against `torch_fn(*inputs, **params)`
    in float32."""
    for kernel_set in kernel_sets_of(op):
        _torch_compare(op, kernel_set, xs, params, attrs, torch_fn, make_ctx, grad_inputs, wrt_params, seed, rtol)


def _torch_compare(op, kernel_set, xs, params, attrs, torch_fn, make_ctx, grad_inputs, wrt_params, seed, rtol):
    import torch

    what = f"{op} ({kernel_set} kernels)"
    xs = [np.asarray(x, dtype=np.float32) for x in xs]
    params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    make_ctx = make_ctx or ctx_factory()
    y, cache = run(op, xs, {k: v.copy() for k, v in params.items()}, attrs, make_ctx(), kernel_set)
    assert y.dtype == np.float32, f"{what} changed float32 to {y.dtype}"
    grad_inputs = range(len(xs)) if grad_inputs is None else grad_inputs
    tx = [torch.tensor(x, requires_grad=i in grad_inputs) for i, x in enumerate(xs)]
    tp = {k: torch.tensor(v, requires_grad=k in wrt_params) for k, v in params.items()}
    ty = torch_fn(*tx, **tp)
    assert_close(y, ty.detach().numpy(), rtol, f"{what} forward")
    dy = np.random.default_rng(seed + 2000).standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(dy))
    dxs, dparams = kernel_of(op, kernel_set).backward(dy, cache)
    for i in grad_inputs:
        assert dxs[i].dtype == np.float32, what
        assert_close(dxs[i], tx[i].grad.numpy(), rtol, f"{what} d/dx{i}")
    for name in wrt_params:
        assert dparams[name].dtype == np.float32, what
        assert_close(dparams[name], tp[name].grad.numpy(), rtol, f"{what} d/d{name}")


def ref_out_size(size: int, k: int, s: int, d: int, lo: int, hi: int, ceil_mode: bool = False) -> int:
    """Output length from PyTorch's documented formula (independent of the kernels' helper)."""
    span = d * (k - 1) + 1
    frac = (size + lo + hi - span) / s
    n = (math.ceil(frac) if ceil_mode else math.floor(frac)) + 1
    if ceil_mode and (n - 1) * s >= size + lo:
        n -= 1
    return n


# ------------------------------------------------------------ one-layer networks
def one_layer_call(op: str) -> str | None:
    """A tiny network whose last layer is `op`, or None for ops needing a special graph."""
    calls = {
        "conv": "conv(4, 3, stride = 2, pad = 1, dilation = 1, groups = 2)", "deconv": "deconv(3, 3, stride = 2, pad = 1)",
        "local": "local(3, 3, stride = 2)", "maxpool": "maxpool(3, stride = 2, pad = 1, ceil_mode = true)",
        "avgpool": "avgpool(2, stride = 2, ceil_mode = true)", "lppool": "lppool(2, stride = 2)",
        "adaptive_avgpool": "adaptive_avgpool(3, 2)", "adaptive_maxpool": "adaptive_maxpool(3, 2)",
        "upsample": "upsample(2, mode = bilinear)",
        "leaky_relu": "leaky_relu(0.2)", "elu": "elu(0.5)", "groupnorm": "groupnorm(2)", "lrn": "lrn(3)",
        "dropout": "dropout(0.3)", "spatial_dropout": "spatial_dropout(0.3)", "pad": "pad(((1, 0), (2, 1)))",
        "flatten": "flatten", "linear": "flatten -> linear(5)", "affine": "affine(0.5, -3)",
        "slice": "slice(1, 3)", "channel_shuffle": "channel_shuffle(2)",
        "stochastic_depth": "stochastic_depth(0.2)", "layer_scale": "layer_scale(0.5)",
    }
    special = {"input", "concat", "add", "mul", "crop", "unpool", "maximum", "minimum"}
    if op in special:
        return None
    return calls.get(op, op)


GRAPH_OPS = {
    "concat": "a = x -> conv(2, 1)\n    concat(x, a)",
    "add": "a = x -> global_avgpool\n    x + a",
    "mul": "a = x -> global_avgpool\n    x * a",
    "crop": "a = x -> conv(1, 3)\n    x -> crop(like = a)",
    "unpool": "x -> p: maxpool(2) -> relu -> unpool(p)",
    "maximum": "a = x -> global_avgpool\n    max(x, a)",
    "minimum": "a = x -> global_avgpool\n    min(x, a)",
}


def one_layer_network(op: str) -> str:
    """A `.cnn` network on a [4, 9, 7] input `x` whose last layer is `op` (every op of the table)."""
    call = one_layer_call(op)
    body = f"x -> {call}" if call is not None else GRAPH_OPS[op]
    return f"network N {{\n    input x: [4, 9, 7]\n    {body}\n}}\n"
