"""Stage 3 (runtime): lowering a checked graph to an execution plan.

A `Plan` is the network's layers in topological order as `Step`s, each bound
to its kernel (runtime/kernels), its normalised attributes and the keys of
its parameters in one store (`"{owner}.{param}"`, so layers that share
weights share arrays). `forward` runs the steps in train or eval mode, frees
every activation after its last consumer and returns a tape of kernel caches;
`backward` walks the tape in reverse, summing gradients where a tensor feeds
several layers. A plan runs on one kernel set (`kernels/sets.py`: the NumPy
kernels, or the compiled `fast` ones with their own lowering of the graph),
chosen when it is built. The runtime reads the compiler's graph records, never
the parser.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from ..compiler.graph import Network, ParamSpec
from ..compiler.fusion import ALL_OPS
from ..compiler.ops import OPS, OpSpec
from ..compiler.train_vocab import INIT, bound_options
from ..dsl.source import CnncError
from .kernels import Context, Kernel, sets
from .kernels.signal import lift


@dataclass(frozen=True)
class Step:
    name: str
    op: str
    kernel: Kernel
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    params: tuple[tuple[str, str], ...]  # (kernel's parameter name, store key)
    needs_input_grad: bool


@dataclass
class Tape:
    """What a training forward pass leaves for the backward pass."""

    caches: list[tuple[Step, Any]]
    outputs: dict[str, np.ndarray]


class Plan:
    # The op table whose entries hold the kernels (FusedPlan adds the fused ops).
    ops: Mapping[str, OpSpec] = OPS

    def __init__(self, net: Network, param_specs: Mapping[str, Mapping[str, ParamSpec]],
                 seed: int = 0, dtype: type = np.float32, params: Mapping[str, np.ndarray] | None = None,
                 init: Any = None, kernels: str | sets.Choice | None = None):
        """`params` gives the store (e.g. folded weights); otherwise it is drawn with `seed`, and `init`
        (the train section's `init`, a Spec) is the initialisation of layers without their own.
        `kernels` names the kernel set (default: `sets.choose()`, the environment's or the fastest)."""
        require_concrete(net, "the runtime", "bind the input with --input NAME=CxHxW (or let the data decide it)")
        self.net = net
        self.dtype = dtype
        self.kernel_set = kernels if isinstance(kernels, sets.Choice) else sets.choose(kernels)
        self.specs = {f"{owner}.{p}": spec for owner, ps in param_specs.items() for p, spec in ps.items()}
        self._names_by_owner = {owner: list(ps) for owner, ps in param_specs.items()}
        self.inputs = tuple(net.inputs)
        if self.kernels != "numpy":
            self.ops = ALL_OPS          # the fast set's lowering makes fused steps
        self.outputs = tuple(net.outputs)   # lowers the graph into `steps` (the setter)
        if params is None:
            self.params = initial_parameters(net, param_specs, seed, dtype, init)
        else:
            missing = [k for k in self.specs if k not in params]
            if missing:
                raise CnncError(f"the parameters do not fit the network: no '{missing[0]}'")
            self.params = {k: params[k] for k in self.specs}
        self.trainable = {k for k, s in self.specs.items() if s.trainable and not s.buffer}

    @property
    def kernels(self) -> str:
        """The name of the kernel set the steps run on."""
        return self.kernel_set.name

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    @outputs.setter
    def outputs(self, names) -> None:
        """The tensors `forward` returns (the network's outputs, or any layers a caller asks for): the
        graph is lowered again so that each of them stays a tensor of its own."""
        self._outputs = tuple(names)
        net = self.net if self._outputs == tuple(self.net.outputs) else replace(self.net, outputs=self._outputs)
        # The steps run the graph as the kernel set lowers it (the same parameters under the same keys).
        self._lowered = sets.lowered(net, self.kernels)
        self.steps = [self._step(node) for node in self._lowered.layers()]
        self._last_use = self._liveness()
        self.batch_independent = not any(self.couples_batch(s) for s in self.steps)

    def couples_batch(self, step: Step) -> bool:
        """Does the step couple the samples of a batch in training? Batchnorm does; nothing else."""
        return self.ops[step.op].has("batch_statistics")

    @property
    def lowered(self) -> Network:
        """The graph the steps run: the network (with `outputs` as its outputs) as the kernel set lowers
        it: itself on the NumPy set, each batchnorm and the activation after it one step on the fast
        set (kernels/sets.py `lowered`)."""
        return self._lowered

    # ------------------------------------------------------------- lowering
    def _kernel(self, op: str) -> Kernel | None:
        return sets.kernel(op, self.kernels, self.ops)

    def _step(self, node) -> Step:
        kernel = self._kernel(node.op)
        if kernel is None:
            raise CnncError(f"the runtime has no kernel for '{node.op}' (layer '{node.name}')", node.loc)
        shapes = self._lowered.shapes
        if any(len(shapes[i]) == 2 for i in node.inputs):  # a [C, L] signal: the 2-D kernel, lifted
            kernel = lift(kernel, tuple(shapes[node.name]))
        owner = node.shares or node.name
        keys = tuple((p, f"{owner}.{p}") for p in self._param_names(owner))
        needs = any(i not in self.net.inputs for i in node.inputs)
        return Step(node.name, node.op, kernel, node.inputs, node.attrs, keys, needs)

    def _param_names(self, owner: str) -> list[str]:
        return self._names_by_owner.get(owner, [])

    def _liveness(self) -> dict[str, int]:
        last = {}
        for i, step in enumerate(self.steps):
            for src in step.inputs:
                last[src] = i
        return last

    # ------------------------------------------------------------- running
    def forward(self, inputs: Mapping[str, np.ndarray] | np.ndarray, training: bool = False,
                rng: np.random.Generator | None = None, keep_tape: bool | None = None
                ) -> tuple[dict[str, np.ndarray], Tape | None]:
        """Run the network on a batch. Returns the outputs by name and, for training, the tape."""
        values = self._bind_inputs(inputs)
        keep = training if keep_tape is None else keep_tape
        ctx = Context(training=training, rng=rng if rng is not None else np.random.default_rng(0))
        caches: list[tuple[Step, Any]] = []
        outputs = set(self.outputs)
        for i, step in enumerate(self.steps):
            ctx.node, ctx.need_input_grad = step.name, step.needs_input_grad
            xs = tuple(values[s] for s in step.inputs)
            params = {p: self.params[k] for p, k in step.params}
            y, cache = step.kernel.forward(xs, params, step.attrs, ctx)
            values[step.name] = y
            if keep:
                caches.append((step, cache))
            for s in set(step.inputs):  # free what no later step reads
                if self._last_use.get(s) == i and s not in outputs:
                    del values[s]
        result = {o: values[o] for o in self.outputs}
        return result, (Tape(caches, result) if keep else None)

    def backward(self, tape: Tape, output_grads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Gradients of the loss w.r.t. every trainable parameter, by store key."""
        grads: dict[str, np.ndarray] = {k: g for k, g in output_grads.items()}
        param_grads: dict[str, np.ndarray] = {}
        for step, cache in reversed(tape.caches):
            dy = grads.pop(step.name, None)
            if dy is None:
                continue  # nothing downstream of this layer reaches the loss
            dxs, dparams = step.kernel.backward(dy, cache)
            for src, dx in zip(step.inputs, dxs):
                if dx is None or src in self.net.inputs:
                    continue
                grads[src] = dx if src not in grads else grads[src] + dx
            for p, key in step.params:
                g = dparams.get(p)
                if g is None or key not in self.trainable:
                    continue
                param_grads[key] = g if key not in param_grads else param_grads[key] + g
        return param_grads

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """The first output for every sample of x, in eval mode, batch by batch."""
        out = [self.forward({self.inputs[0]: x[i:i + batch]})[0][self.outputs[0]] for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0,) + tuple(self.net.shapes[self.outputs[0]]), self.dtype)

    def _bind_inputs(self, inputs) -> dict[str, np.ndarray]:
        if isinstance(inputs, np.ndarray):
            if len(self.inputs) != 1:
                raise CnncError(f"the network has inputs {', '.join(self.inputs)}; give each by name")
            inputs = {self.inputs[0]: inputs}
        values = {}
        for name in self.inputs:
            if name not in inputs:
                raise CnncError(f"no data for the network's input '{name}'")
            x = np.asarray(inputs[name], dtype=self.dtype)
            expected = tuple(self.net.shapes[name])
            if tuple(x.shape[1:]) != expected:
                raise CnncError(f"input '{name}' has per-sample shape {list(x.shape[1:])}, "
                                f"but the network declares {list(expected)}")
            values[name] = x
        return values

    # ------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        return dict(self.params)

    def load_state(self, arrays: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
        """Copy a checkpoint's parameters in, after `checkpoint.fit` has checked they fit."""
        from .checkpoint import fit
        for k, a in fit(arrays, self.params, source).items():
            self.params[k][...] = a


def require_concrete(net: Network, who: str, hint: str = "bind the input with --input NAME=CxHxW") -> None:
    """Refuse a network with symbolic sizes: `who` ("the runtime", "--emit numpy") needs them bound."""
    for name, shape in net.shapes.items():
        if not all(isinstance(d, int) for d in shape):
            raise CnncError(f"{who} needs concrete sizes, but '{name}' has shape "
                            f"[{', '.join(map(str, shape))}]", hint=hint)


# ------------------------------------------------------------ initialisation
def _followed_by_relu(net: Network, name: str) -> bool:
    """Does the first activation downstream of this layer rectify? The look-ahead passes through
    the ops that declare `init_transparent` (norms, pools, dropout, pad, crop, add, concat, ...)."""
    frontier, seen = [name], set()
    while frontier:
        node = frontier.pop()
        for nxt in net.graph.successors(node):
            if nxt in seen:
                continue
            seen.add(nxt)
            spec = OPS[net.node(nxt).op]
            if spec.has("rectifier"):
                return True
            if spec.has("init_transparent"):
                frontier.append(nxt)
    return False


DRAWN = ("he_normal", "xavier_uniform")   # the weights an `init` replaces (not norms' scales, not biases)


def initial_parameters(net: Network, param_specs, seed: int, dtype=np.float32,
                       init: Any = None) -> dict[str, np.ndarray]:
    """Weights as each layer's `init` attribute, else the train section's `init`, say; without either,
    He-normal before rectifiers and Xavier-uniform otherwise (sigmoid, tanh, logits). Biases zero."""
    rng = np.random.default_rng(seed)
    default = None if init is None else (init.name, tuple(init.kwargs))
    out: dict[str, np.ndarray] = {}
    for owner, specs in param_specs.items():
        chosen = _layer_init(net, owner, specs) or default
        for pname, spec in specs.items():
            if chosen is not None and pname == "weight" and spec.init in DRAWN:
                out[f"{owner}.{pname}"] = draw_init(chosen, spec, rng).astype(dtype)
            else:
                out[f"{owner}.{pname}"] = _init(spec, pname, _followed_by_relu(net, owner), rng, dtype)
    return out


def _layer_init(net: Network, owner: str, specs) -> tuple | None:
    """A layer's own `init`; refused beside fixed `weights`, which would silently win."""
    node = net.node(owner) if owner in net.graph else None
    chosen = node.attrs.get("init") if node is not None else None
    if chosen is not None and any(s.init == "fixed" for s in specs.values()):
        raise CnncError(f"'{owner}' gives both fixed weights and init = {chosen[0]}", node.loc,
                        "drop one: fixed weights are the initial weights")
    return chosen


def _init(spec: ParamSpec, pname: str, relu_next: bool, rng: np.random.Generator, dtype) -> np.ndarray:
    shape = tuple(int(d) for d in spec.shape)
    if spec.init == "fixed":
        return np.array(spec.value, dtype=dtype).reshape(shape)
    if spec.init == "ones":
        return np.ones(shape, dtype)
    if spec.init in DRAWN and pname == "weight":
        if relu_next:
            return (rng.standard_normal(shape) * np.sqrt(2.0 / spec.fan_in)).astype(dtype)
        limit = np.sqrt(6.0 / (spec.fan_in + spec.fan_out))
        return rng.uniform(-limit, limit, shape).astype(dtype)
    return np.zeros(shape, dtype)


# ------------------------------------------------------------ named initialisers (train_vocab INIT)
def fans(spec: ParamSpec) -> tuple[int, int]:
    """fan_in and fan_out as torch.nn.init computes them from a weight's shape: [out, in, *kernel]
    (conv, a 1-D conv's [out, in/groups, k], linear; a transposed conv's [in, out/groups, kh, kw] is read
    the same way, as torch does). A locally connected weight [O, th, tw, C, kh, kw] has no such layout:
    its spec's fans (C*kh*kw, O*kh*kw)."""
    shape = tuple(int(d) for d in spec.shape)
    if len(shape) in (2, 3, 4):
        field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        return shape[1] * field, shape[0] * field
    return int(spec.fan_in), int(spec.fan_out)


def _gain(a: float) -> float:
    return float(np.sqrt(2.0 / (1.0 + a * a)))   # torch.nn.init.calculate_gain("leaky_relu", a)


def kaiming_normal(shape, fan_in, fan_out, rng, *, a=0.0, mode="fan_in"):
    fan = fan_in if mode == "fan_in" else fan_out
    return rng.standard_normal(shape) * (_gain(a) / np.sqrt(fan))


def kaiming_uniform(shape, fan_in, fan_out, rng, *, a=0.0, mode="fan_in"):
    fan = fan_in if mode == "fan_in" else fan_out
    bound = _gain(a) * np.sqrt(3.0 / fan)
    return rng.uniform(-bound, bound, shape)


def xavier_normal(shape, fan_in, fan_out, rng, *, gain=1.0):
    return rng.standard_normal(shape) * (gain * np.sqrt(2.0 / (fan_in + fan_out)))


def xavier_uniform(shape, fan_in, fan_out, rng, *, gain=1.0):
    bound = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


def normal(shape, fan_in, fan_out, rng, *, std, mean=0.0):
    return mean + std * rng.standard_normal(shape)


def uniform(shape, fan_in, fan_out, rng, *, a):
    return rng.uniform(-a, a, shape)


def zeros(shape, fan_in, fan_out, rng):
    return np.zeros(shape)


INITIALISERS = {f.__name__: f for f in (kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform,
                                        normal, uniform, zeros)}


def draw_init(chosen: tuple, spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """A weight drawn by a named initialiser: `chosen` is (name, ((option, value), ...))."""
    name, given = chosen
    options = bound_options(INIT, name, dict(given))
    shape = tuple(int(d) for d in spec.shape)
    return INITIALISERS[name](shape, *fans(spec), rng, **options)
