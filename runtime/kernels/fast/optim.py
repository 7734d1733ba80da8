"""Stage 3 (runtime): the optimizers' updates as compiled loops (the `fast` kernel set).

One pass over each parameter updates it and its state in place, where the
NumPy update (runtime/train/optim.py) makes three to eight passes and as many
temporaries: SGD (momentum, dampening, Nesterov, weight decay) and Adam /
AdamW (AMSGrad). The formulas, their order of operations and the rounding of
their constants are the NumPy updates', in the parameter's dtype, compiled
without fastmath: the two updates are equal bit for bit. `UPDATES` maps an optimizer's name to
its update, which `Optimizer.step` calls in place of its own (`fast_update`);
the other optimizers keep their NumPy update.
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import jit


@jit(exact=True)
def _sgd(p, g, buf, first, lr, momentum, damped, nesterov, weight_decay):
    """`damped` = 1 − dampening, rounded to the dtype once, as NumPy rounds the Python float."""
    for i in range(p.size):
        d = g[i] + weight_decay * p[i] if weight_decay != 0 else g[i]
        if momentum != 0:
            if first:
                buf[i] = d
            else:
                buf[i] = buf[i] * momentum + damped * d
            d = d + momentum * buf[i] if nesterov else buf[i]
        p[i] -= lr * d


@jit(exact=True)
def _adam(p, g, m, v, vmax, amsgrad, decay, decoupled, shrink, kept1, kept2, beta2, step_size, bias2_sqrt, eps):
    """`shrink` = 1 − lr·decay, `kept1` = 1 − β1, `kept2` = 1 − β2, each rounded once as NumPy does."""
    for i in range(p.size):
        if decoupled:
            p[i] *= shrink
            d = g[i]
        else:
            d = g[i] + decay * p[i] if decay != 0 else g[i]
        m[i] += (d - m[i]) * kept1
        v[i] = v[i] * beta2 + kept2 * d * d
        s = v[i]
        if amsgrad:
            vmax[i] = max(vmax[i], s)
            s = vmax[i]
        p[i] -= step_size * (m[i] / (math.sqrt(s) / bias2_sqrt + eps))


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def sgd(opt, p: np.ndarray, g: np.ndarray, state: dict, step: int, lr: float) -> None:
    t = p.dtype.type
    buf = _flat(state["momentum_buffer"]) if opt.momentum else _flat(p)    # unused without momentum
    _sgd(_flat(p), _flat(np.ascontiguousarray(g)), buf, step == 1, t(lr), t(opt.momentum), t(1.0 - opt.dampening),
         opt.nesterov, t(opt.weight_decay))


def adam(opt, p: np.ndarray, g: np.ndarray, state: dict, step: int, lr: float) -> None:
    t = p.dtype.type
    m, v = _flat(state["exp_avg"]), _flat(state["exp_avg_sq"])
    vmax = _flat(state["max_exp_avg_sq"]) if opt.amsgrad else v
    step_size = lr / (1.0 - opt.beta1 ** step)
    _adam(_flat(p), _flat(np.ascontiguousarray(g)), m, v, vmax, opt.amsgrad, t(opt.weight_decay), opt.decoupled,
          t(1.0 - lr * opt.weight_decay), t(1.0 - opt.beta1), t(1.0 - opt.beta2), t(opt.beta2), t(step_size),
          t(math.sqrt(1.0 - opt.beta2 ** step)), t(opt.eps))


UPDATES = {"sgd": sgd, "adam": adam, "adamw": adam}
