"""Stage 3 (runtime): optimizers with PyTorch's update rules, plus L1/L2 penalties.

`make_optimizer(name, params, **hyper)` returns an object whose `step(grads,
lr)` updates the parameter arrays in place, reproducing torch.optim's SGD,
Adam, AdamW, Adagrad and RMSprop formulas and defaults (including the order
of operations, so the two agree to rounding). Like PyTorch, per-parameter
state (momentum buffers, moment estimates, step counts) is created lazily on
the first step that sees a gradient for that parameter, and a parameter
without a gradient in a step is left alone, step count included. The learning
rate is passed to every step because schedules own it; `state_dict()` is a
flat `{"<param>/<slot>": ndarray}` mapping that fits a pickle-free `.npz`.
`penalty()` computes explicit L1/L2 terms for weights only, chosen by name.
The optimizers and their hyper-parameters are those the train vocabulary
declares (compiler/train_vocab.py `OPTIMIZER`): each class's constructor
takes exactly its entry's options.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ...compiler.train_vocab import OPTIMIZER
from ...dsl.source import CnncError, did_you_mean
from ..kernels import sets

Params = dict[str, np.ndarray]
Predicate = Callable[[str, np.ndarray], bool]

# Layers whose ".weight" is a weight matrix/kernel (norm layers' ".weight" is a scale).
WEIGHT_OPS = frozenset({"conv", "linear", "deconv", "local"})


def _check_range(opt: str, name: str, value: float, low: float, high: float | None = None,
                 low_open: bool = False) -> None:
    ok = value > low if low_open else value >= low
    if high is not None:
        ok = ok and value < high
    if not ok:
        bound = f"({low}, " if low_open else f"[{low}, "
        bound += f"{high})" if high is not None else "inf)"
        raise CnncError(f"optimizer {opt}: {name} must lie in {bound}, got {value}")


class Optimizer:
    """Shared bookkeeping: parameters, lazily-created state slots, state (de)serialisation."""

    name = "optimizer"
    torch_name = ""     # the torch.optim class this optimizer reproduces (the torch engine steps with it)
    default_lr = 1e-3
    slots: tuple[str, ...] = ()  # per-parameter state arrays created on first use

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        self.params: Params = dict(params)
        self.lr = self.default_lr if lr is None else float(lr)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps: dict[str, int] = {}
        self.fast_update: Callable | None = None   # this update compiled, from the fast kernel set

    # -- the update

    def step(self, grads: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        """Apply one update to every parameter named in `grads`, in place."""
        lr = self.lr if lr is None else float(lr)
        for key, grad in grads.items():
            p = self._param(key)
            grad = np.asarray(grad)
            if grad.shape != p.shape:
                raise ValueError(f"gradient for '{key}' has shape {grad.shape}, parameter {p.shape}")
            state = self.state.get(key)
            if state is None:
                state = self.state[key] = self._init_state(p)
                self.steps[key] = 0
            self.steps[key] += 1
            update = self._update if self.fast_update is None else partial(self.fast_update, self)
            update(p, grad.astype(p.dtype, copy=False), state, self.steps[key], lr)

    def _param(self, key: str) -> np.ndarray:
        try:
            return self.params[key]
        except KeyError:
            raise KeyError(f"gradient for unknown parameter '{key}'") from None

    def _init_state(self, p: np.ndarray) -> dict[str, np.ndarray]:
        return {slot: np.zeros_like(p) for slot in self.slots}

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray],
                step: int, lr: float) -> None:
        raise NotImplementedError

    # -- persistence

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat numpy-only state: '<param>/<slot>' arrays and '<param>/step' int64 scalars."""
        out: dict[str, np.ndarray] = {}
        for key, state in self.state.items():
            for slot, value in state.items():
                out[f"{key}/{slot}"] = value.copy()
            out[f"{key}/step"] = np.array(self.steps[key], dtype=np.int64)
        return out

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        """Restore state saved by `state_dict`; refuses state that does not fit these parameters."""
        state: dict[str, dict[str, np.ndarray]] = {}
        steps: dict[str, int] = {}
        for full_key, value in d.items():
            key, _, slot = full_key.rpartition("/")
            if key not in self.params:
                raise CnncError(f"optimizer state refers to unknown parameter '{key}'",
                                hint="the checkpoint was saved from a different network")
            if slot == "step":
                steps[key] = int(np.asarray(value))
                continue
            if slot not in self.slots:
                raise CnncError(f"optimizer state has a '{slot}' entry, which {self.name} does not use",
                                hint="the checkpoint was saved with a different optimizer")
            value = np.asarray(value)
            if value.shape != self.params[key].shape:
                raise CnncError(f"optimizer state '{full_key}' has shape {list(value.shape)} but the "
                                f"parameter has {list(self.params[key].shape)}",
                                hint="the checkpoint was saved from a different network")
            state.setdefault(key, {})[slot] = value.astype(self.params[key].dtype, copy=True)
        for key in state.keys() | steps.keys():
            missing = set(self.slots) - set(state.get(key, {}))
            if missing or key not in steps:
                what = sorted(missing)[0] if missing else "step"
                raise CnncError(f"optimizer state for '{key}' lacks its '{what}' entry",
                                hint="the checkpoint is incomplete or from a different optimizer")
        self.state, self.steps = state, steps


class SGD(Optimizer):
    """torch.optim.SGD: momentum buffer starts as the first gradient; nesterov looks ahead."""

    name = "sgd"
    torch_name = "SGD"
    default_lr = 1e-3

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None,
                 momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        _check_range("sgd", "momentum", momentum, 0.0)
        _check_range("sgd", "weight_decay", weight_decay, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise CnncError("optimizer sgd: nesterov needs momentum > 0 and dampening 0",
                            hint="set momentum (e.g. 0.9) or drop nesterov")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)
        self.slots = ("momentum_buffer",) if momentum else ()

    def _update(self, p, g, state, step, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state["momentum_buffer"]
            if step == 1:
                buf[...] = g  # PyTorch: the buffer is a clone of the first gradient, undamped
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= lr * g


class Adam(Optimizer):
    """torch.optim.Adam (L2-coupled weight decay; optional AMSGrad)."""

    name = "adam"
    torch_name = "Adam"
    default_lr = 1e-3
    decoupled = False

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None,
                 betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(params, lr)
        b1, b2 = (float(b) for b in betas)
        _check_range(self.name, "betas[0]", b1, 0.0, 1.0)
        _check_range(self.name, "betas[1]", b2, 0.0, 1.0)
        _check_range(self.name, "eps", eps, 0.0)
        _check_range(self.name, "weight_decay", weight_decay, 0.0)
        self.beta1, self.beta2, self.eps = b1, b2, float(eps)
        self.weight_decay, self.amsgrad = float(weight_decay), bool(amsgrad)
        self.slots = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())

    def _update(self, p, g, state, step, lr):
        if self.decoupled:
            p *= 1.0 - lr * self.weight_decay  # AdamW: shrink the weights, not the gradient
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (g - m) * (1.0 - self.beta1)  # torch's lerp_ form of b1*m + (1-b1)*g
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g
        if self.amsgrad:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        bias1 = 1.0 - self.beta1 ** step
        bias2_sqrt = math.sqrt(1.0 - self.beta2 ** step)
        denom = np.sqrt(v) / bias2_sqrt + self.eps
        p -= (lr / bias1) * (m / denom)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    name = "adamw"
    torch_name = "AdamW"
    decoupled = True

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None,
                 betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class Adagrad(Optimizer):
    """torch.optim.Adagrad: accumulated squared gradients; lr decays as lr / (1 + (t-1) decay)."""

    name = "adagrad"
    torch_name = "Adagrad"
    default_lr = 1e-2
    slots = ("sum",)

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None,
                 lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        super().__init__(params, lr)
        _check_range("adagrad", "lr_decay", lr_decay, 0.0)
        _check_range("adagrad", "weight_decay", weight_decay, 0.0)
        _check_range("adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0)
        _check_range("adagrad", "eps", eps, 0.0)
        self.lr_decay, self.weight_decay = float(lr_decay), float(weight_decay)
        self.initial, self.eps = float(initial_accumulator_value), float(eps)

    def _init_state(self, p):
        return {"sum": np.full_like(p, self.initial)}

    def _update(self, p, g, state, step, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = lr / (1.0 + (step - 1) * self.lr_decay)
        state["sum"] += g * g
        p -= clr * (g / (np.sqrt(state["sum"]) + self.eps))


class RMSprop(Optimizer):
    """torch.optim.RMSprop (optionally centered, optionally with momentum)."""

    name = "rmsprop"
    torch_name = "RMSprop"
    default_lr = 1e-2

    def __init__(self, params: Mapping[str, np.ndarray], lr: float | None = None,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False) -> None:
        super().__init__(params, lr)
        _check_range("rmsprop", "alpha", alpha, 0.0)
        _check_range("rmsprop", "eps", eps, 0.0)
        _check_range("rmsprop", "momentum", momentum, 0.0)
        _check_range("rmsprop", "weight_decay", weight_decay, 0.0)
        self.alpha, self.eps, self.weight_decay = float(alpha), float(eps), float(weight_decay)
        self.momentum, self.centered = float(momentum), bool(centered)
        self.slots = (("square_avg",) + (("momentum_buffer",) if momentum > 0 else ())
                      + (("grad_avg",) if centered else ()))

    def _update(self, p, g, state, step, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        sq = state["square_avg"]
        sq *= self.alpha
        sq += (1.0 - self.alpha) * g * g
        if self.centered:
            ga = state["grad_avg"]
            ga += (g - ga) * (1.0 - self.alpha)
            avg = np.sqrt(sq - ga * ga) + self.eps
        else:
            avg = np.sqrt(sq) + self.eps
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad, "rmsprop": RMSprop,
}


def make_optimizer(name: str, params: Mapping[str, np.ndarray], kernels: str | None = None,
                   **hyper: Any) -> Optimizer:
    """Build optimizer `name` over `params` (arrays updated in place); `lr` here is only a default.
    On the fast kernel set (`kernels`, as kernels/sets.py chooses) its update is the compiled one."""
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise CnncError(f"unknown optimizer '{name}'",
                        hint=did_you_mean(name.lower(), OPTIMIZERS, "known optimizers: " + ", ".join(OPTIMIZERS)))
    allowed = OPTIMIZER.entries[cls.name].names
    unknown = sorted(set(hyper) - set(allowed))
    if unknown:
        raise CnncError(f"optimizer '{name}' has no hyper-parameter '{unknown[0]}'",
                        hint="its hyper-parameters: " + ", ".join(allowed))
    optimizer = cls(params, **hyper)
    optimizer.fast_update = sets.optimizer_update(sets.choose(kernels).name, cls.name)
    return optimizer


# ---------------------------------------------------------------- explicit penalties

def default_is_weight(key: str, value: np.ndarray) -> bool:
    """Name-and-shape guess: '.weight' entries of rank >= 2 (norm scales are rank 1)."""
    return key.endswith(".weight") and np.ndim(value) >= 2


def weight_predicate(ops: Mapping[str, str]) -> Predicate:
    """Exact predicate from an owner-name -> op map (e.g. built from the compiled Network)."""

    def is_weight(key: str, value: np.ndarray) -> bool:
        owner, _, param = key.rpartition(".")
        return param == "weight" and ops.get(owner) in WEIGHT_OPS

    return is_weight


def penalty(params: Mapping[str, np.ndarray], l1: float = 0.0, l2: float = 0.0,
            predicate: Predicate | None = None) -> tuple[float, Params]:
    """l1 * sum|w| + l2 * sum w^2 over the selected weights, and its gradient per weight.

    Gradients are returned only for selected keys, to be added to the loss gradients.
    At w == 0 the L1 subgradient is 0 (np.sign), as in PyTorch's `abs` backward.
    """
    chosen = predicate or default_is_weight
    value = 0.0
    grads: Params = {}
    if not (l1 or l2):
        return value, grads
    for key, w in params.items():
        if not chosen(key, w):
            continue
        w64 = w.astype(np.float64, copy=False)
        value += l1 * float(np.abs(w64).sum()) + l2 * float((w64 * w64).sum())
        grads[key] = (l1 * np.sign(w64) + 2.0 * l2 * w64).astype(w.dtype, copy=False)
    return value, grads
