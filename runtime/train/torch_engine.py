"""Stage 3 (runtime): `cnnc run --engine torch` — the train section on PyTorch, one process or several.

The trainer (trainer.py) keeps everything that defines a run — data,
splits, preprocessing, augmentation, shuffling, schedules, early stop,
metrics, checkpoints — and asks an engine only to compute: a batch's loss and
gradients, an optimizer step, predictions, and the state it holds. This
engine computes with the module `cnnc export --to torch` generates (built in
memory from the same op rules, so its parameter names are cnnc's), starts
from the NumPy engine's seeded initial weights, and steps with torch.optim's
optimizer of the same name and hyper-parameters (cnnc's optimizers reproduce
torch.optim's formulas and state slots, so the state converts both ways).
The loss is the train vocabulary's own loss, evaluated on the predictions:
its gradient is fed back into PyTorch's backward pass, so a loss is defined
once for both engines. Checkpoints are cnnc's, so a run may resume on either
engine.

Several processes (`--nproc N`, or a launcher such as torchrun that sets
RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) train with DistributedDataParallel:
every rank draws the same global batch (same seed, same shuffle, same
augmentation) and computes its own contiguous share of it, the loss gradient
of each share is weighted so DDP's average is the global batch's mean
gradient, and the per-step loss and accuracy counts are summed over the ranks.
With `sync_bn = true` batchnorm normalises with the statistics of the global
batch (summed with differentiable all-reduces, on any device), so N processes
follow the same trajectory as one. Rank 0 alone writes checkpoints and
metrics; its validation result is the one every rank acts on. A step all the
processes take together (joining, the gradient average, agreeing on rank 0's
result, leaving) that fails because another process is gone raises
`LostPeer`, a one-line error naming this process, never PyTorch's
RuntimeError; a run that fails leaves without waiting for the others.
"""
from __future__ import annotations

import contextlib
import os
import re
import types
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ...compiler.ops import OPS
from ...dsl.source import CnncError
from ..export.torch_module import module_source
from ..export.torch_rules import require_torch
from ..data.containers import take
from ..processes import LostPeer, joined_group
from .optim import OPTIMIZERS
from ..plan import initial_parameters, require_concrete

DEVICES = ("cpu", "cuda", "mps")
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> "World":
        """The launcher's environment (torchrun's variables, which `--nproc` sets too), else one process."""
        if "WORLD_SIZE" not in env:
            return cls()
        missing = [v for v in LAUNCHER_VARIABLES if v not in env]
        if missing:
            raise CnncError(f"the launcher's environment sets WORLD_SIZE but not {missing[0]}",
                            hint="start several processes with `cnnc run --nproc N` or torchrun")
        try:
            rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
            local_rank = int(env.get("LOCAL_RANK", rank))
            local_size = int(env.get("LOCAL_WORLD_SIZE", size))
        except ValueError:
            raise CnncError("the launcher's RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers") from None
        if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < local_size):
            raise CnncError(f"the launcher's RANK {rank} does not fit WORLD_SIZE {size}")
        return cls(rank, size, local_rank, local_size)


def share(n: int, world: World) -> np.ndarray:
    """The indices of a batch of n samples this rank computes: one contiguous share per rank."""
    return np.array_split(np.arange(n), world.size)[world.rank]


def _device(torch: Any, name: str, world: World) -> Any:
    if name not in DEVICES:
        raise CnncError(f"--device {name}: unknown device", hint="choose one of " + ", ".join(DEVICES))
    if name == "cuda":
        if not torch.cuda.is_available():
            raise CnncError("--device cuda: PyTorch sees no CUDA device on this machine",
                            hint="train on the CPU with --device cpu")
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CnncError("--device mps: PyTorch sees no Apple GPU (MPS) on this machine",
                            hint="train on the CPU with --device cpu")
        if world.size > 1:
            raise CnncError("--device mps trains in one process only", hint="drop --nproc")
    return torch.device(name)


def load_module(text: str, name: str = "cnnc_torch_engine") -> types.ModuleType:
    """The generated module, executed in memory (its text was built from our own op rules)."""
    module = types.ModuleType(name)
    exec(compile(text, f"<{name}>", "exec"), module.__dict__)
    return module


# ------------------------------------------------------------ sync batchnorm
def _synchronised(batchnorm_class: type) -> type:
    """The generated BatchNorm whose training statistics are those of every rank's samples together."""
    import torch
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    def forward(self, x):
        if not self.training:
            return batchnorm_class.forward(self, x)
        axes = [0] + list(range(2, x.dim()))
        view = (1, -1) + (1,) * (x.dim() - 2)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count)
        # Two passes, as one process computes them: the mean, then the mean squared deviation.
        mean = all_reduce(x.sum(axes)) / n
        centred = x - mean.view(view)
        var = all_reduce((centred * centred).sum(axes)) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return centred * scale.view(view) + self.bias.view(view)

    return type("SyncBatchNorm", (batchnorm_class,), {"forward": forward})


def _check_sync_bn(net) -> None:
    """sync_bn synchronises batchnorm; any other layer that reads the batch's statistics is refused."""
    for node in net.layers():
        if OPS[node.op].has("batch_statistics") and node.op != "batchnorm":
            raise CnncError(f"sync_bn: layer '{node.name}' ({node.op}) uses batch statistics that the torch "
                            "engine cannot synchronise", node.loc)


# ------------------------------------------------------------ optimizer state
def _torch_optimizer(torch: Any, name: str, params: list, lr: float, hyper: Mapping[str, Any]) -> Any:
    """torch.optim's optimizer of the train section's name, with the same hyper-parameters."""
    cls = getattr(torch.optim, OPTIMIZERS[name].torch_name)
    return cls(params, lr=lr, foreach=False, **hyper)


class TorchEngine:
    """The compute of a training run on PyTorch (see the module docstring)."""

    name = "torch"

    def __init__(self, compiled, cfg, base_lr: float, hyper: Mapping[str, Any], is_weight,
                 device: str = "cpu", threads: int | None = None, world: World | None = None):
        torch = self.torch = require_torch()
        net = compiled.net
        require_concrete(net, "the torch engine", "bind the input with --input NAME=CxHxW (or let the data decide it)")
        self.world = world or World()
        self.device = _device(torch, device, self.world)
        if threads is not None:
            torch.set_num_threads(threads)
        elif self.world.local_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world.local_size))
        self.cfg, self.inputs, self.outputs = cfg, tuple(net.inputs), tuple(net.outputs)
        text, cls = module_source(net, "", "cnnc run --engine torch", torch)
        self.generated = load_module(text)
        model = getattr(self.generated, cls)()
        initial = initial_parameters(net, compiled.analysis.params, cfg.seed, init=cfg.init)
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in initial.items()})
        if cfg.sync_bn and self.world.size > 1:
            _check_sync_bn(net)
            self._synchronise_batchnorm(model)
        self.model = model.to(self.device)
        self.keys = [k for k, p in model.named_parameters() if p.requires_grad]
        named = dict(model.named_parameters())
        self.trainable = [named[k] for k in self.keys]
        self.weights = [named[k] for k in self.keys if is_weight(k, None)]
        self.network = self.model
        if self.world.size > 1:
            with self._together("joining them"):
                self._init_process_group()
                from torch.nn.parallel import DistributedDataParallel
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.network = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer_name, self.hyper = cfg.optimizer.name, dict(hyper)
        self.optimizer = _torch_optimizer(torch, self.optimizer_name, self.trainable, base_lr, self.hyper)
        self.steps = {k: 0 for k in self.keys}

    def _synchronise_batchnorm(self, model) -> None:
        synced = _synchronised(self.generated.BatchNorm)
        for module in model.modules():
            if type(module) is self.generated.BatchNorm:
                module.__class__ = synced

    def _init_process_group(self) -> None:
        dist = self.torch.distributed
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=self.world.rank, world_size=self.world.size)
            joined_group()      # the process ends without the teardown of gloo's threads (processes.py)

    # ------------------------------------------------------------ steps
    def begin_epoch(self, epoch: int) -> None:
        """Random drops of epoch e come from a generator seeded with (seed, e, rank): resumable."""
        self.torch.manual_seed(int(np.random.default_rng([self.cfg.seed, epoch, 2, self.world.rank])
                                   .integers(0, 2**63 - 1)))

    def _outputs(self, pred) -> dict:
        """The module's outputs by name (it returns the tensor itself when the network has one)."""
        return dict(pred) if isinstance(pred, dict) else {self.outputs[0]: pred}

    def forward_backward(self, xb: np.ndarray, yb, objective, drop_rng=None):
        """The global batch's loss, each output's (correct, counted) and own loss, with the gradients left
        in the parameters."""
        with self._together("training"):
            return self._forward_backward(xb, yb, objective)

    def _forward_backward(self, xb: np.ndarray, yb, objective):
        torch = self.torch
        n = len(xb)
        mine = share(n, self.world)
        weight = self.world.size * len(mine) / n
        if len(mine) == 0:    # fewer samples than ranks: take part in the gradient average with nothing
            mine, weight = np.arange(1), 0.0
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        preds = self._outputs(self.network(torch.from_numpy(np.ascontiguousarray(xb[mine])).to(self.device)))
        values = {o: p.detach().cpu().numpy() for o, p in preds.items()}
        targets = take(yb, mine)
        loss, dpreds, each = objective(values, targets)
        torch.autograd.backward([preds[o] for o in dpreds], [
            torch.from_numpy(np.asarray(g * np.float32(weight), dtype=np.float32)).to(self.device)
            for g in dpreds.values()])
        counts = objective.correct(values, targets) if weight else {o: None for o in objective.outputs}
        mine_n = len(mine) if weight else 0
        loss, counts, each = self._summed(loss, mine_n, counts, each, n)
        return loss + self._penalty(), counts, each

    def _summed(self, loss: float, mine: int, counts: dict, each: dict, n: int):
        """The global batch's mean loss, accuracy counts and per-output losses (each rank computed its share)."""
        if self.world.size == 1:
            return loss, counts, each
        torch = self.torch
        names = list(each)
        values = [loss * mine] + [each[o] * mine for o in names]
        for o in names:
            c = counts.get(o)
            values += [float(c[0]) if c else 0.0, float(c[1]) if c else 0.0, 1.0 if c is not None else 0.0]
        total = torch.tensor(values, dtype=torch.float64)
        self.torch.distributed.all_reduce(total)
        k = len(names) + 1
        summed = {o: float(total[1 + i]) / n for i, o in enumerate(names)}
        counted = {o: (int(total[k + 3 * i]), int(total[k + 3 * i + 1])) if total[k + 3 * i + 2] > 0 else None
                   for i, o in enumerate(names)}
        return float(total[0]) / n, counted, summed

    def _penalty(self) -> float:
        """l1 * sum|w| + l2 * sum w^2 over conv/linear weights, its gradient added to theirs."""
        l1, l2 = float(self.cfg.l1), float(self.cfg.l2)
        if not (l1 or l2):
            return 0.0
        value = 0.0
        with self.torch.no_grad():
            for w in self.weights:
                w64 = w.double()
                value += l1 * float(w64.abs().sum()) + l2 * float((w64 * w64).sum())
                extra = (l1 * self.torch.sign(w64) + 2.0 * l2 * w64).to(w.dtype)
                w.grad = extra if w.grad is None else w.grad + extra
        return value

    def grad_norms(self) -> dict[str, float]:
        """The L2 norm of each parameter's gradient of the last batch (penalty included), before step."""
        torch = self.torch
        have = [(k, p.grad) for k, p in zip(self.keys, self.trainable) if p.grad is not None]
        if not have:
            return {}
        with torch.no_grad():
            # in the gradient's own precision, read in one transfer (a float64 norm per tensor costs ~3% of a
            # LeNet-5 step on the CPU)
            norms = torch.stack([torch.linalg.vector_norm(g) for _, g in have]).tolist()
        return {k: n for (k, _), n in zip(have, norms)}

    def grads(self) -> dict[str, np.ndarray]:
        """Each parameter's gradient of the last batch (penalty included), before step."""
        return {k: p.grad.detach().cpu().numpy().copy() for k, p in zip(self.keys, self.trainable)
                if p.grad is not None}

    def step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        for k, p in zip(self.keys, self.trainable):
            if p.grad is not None:
                self.steps[k] += 1

    def predict(self, xb: np.ndarray) -> dict[str, np.ndarray]:
        """Eval-mode outputs by name."""
        self.model.eval()
        with self.torch.no_grad():
            preds = self._outputs(self.model(self.torch.from_numpy(np.ascontiguousarray(xb)).to(self.device)))
            return {o: p.cpu().numpy() for o, p in preds.items()}

    # ------------------------------------------------------------ state
    def params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """torch.optim's state in cnnc's flat form: '<param>/<slot>' arrays and '<param>/step'."""
        slots = self._slots()
        out: dict[str, np.ndarray] = {}
        for k, p in zip(self.keys, self.trainable):
            if not self.steps[k]:
                continue
            state = self.optimizer.state.get(p, {})
            for slot in slots:
                out[f"{k}/{slot}"] = state[slot].detach().cpu().numpy().copy()
            out[f"{k}/step"] = np.array(self.steps[k], dtype=np.int64)
        return out

    def _slots(self) -> tuple[str, ...]:
        """The state slots of the optimizer, as cnnc's optimizer of the same name declares them."""
        probe = OPTIMIZERS[self.optimizer_name]({"p": np.zeros(1, np.float32)}, **self.hyper)
        return tuple(probe.slots)

    def load_state(self, params: Mapping[str, np.ndarray], optimizer: Mapping[str, np.ndarray], source: str) -> None:
        """Parameters and optimizer state of a cnnc checkpoint, whichever engine wrote it."""
        from ..checkpoint import fit
        current = self.params()
        arrays = fit(params, current, source)
        self.model.load_state_dict({k: self.torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=current[k].dtype))
                                    for k in current})
        # cnnc's optimizer checks the state against these parameters and this optimizer's slots.
        probe = OPTIMIZERS[self.optimizer_name]({k: current[k] for k in self.keys}, **self.hyper)
        probe.load_state_dict(optimizer)
        uses_step = self.optimizer_name != "sgd"
        self.optimizer.state.clear()
        for k, p in zip(self.keys, self.trainable):
            self.steps[k] = probe.steps.get(k, 0)
            if k not in probe.state:
                continue
            state = {slot: self.torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                     for slot, v in probe.state[k].items()}
            if uses_step:
                state["step"] = self.torch.tensor(float(self.steps[k]))
            self.optimizer.state[p] = state

    # ------------------------------------------------------------ ranks
    def agree(self, value: Any) -> Any:
        """Rank 0's value, on every rank (what the main process decided is what every process does)."""
        if self.world.size == 1:
            return value
        box = [value]
        with self._together("taking rank 0's result"):
            self.torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self, finished: bool = True) -> None:
        """Leave together: rank 0 hosts the rendezvous store, so no rank may tear down after it is gone
        (rank 0 finishes later than the others: it alone evaluates the test split). A run that failed
        leaves at once: the others may be waiting in a step this one will never take."""
        dist = self.torch.distributed
        if self.world.size > 1 and dist.is_initialized() and finished:
            self.network = self.model     # drop DDP (its reducer holds the process group) first
            with self._together("finishing"):
                dist.barrier()
            dist.destroy_process_group()

    @contextlib.contextmanager
    def _together(self, doing: str):
        """A step every process takes together; a peer that is gone becomes LostPeer naming this one."""
        try:
            yield
        except RuntimeError as err:
            if self.world.size == 1 or not _peer_gone(self.torch, err):
                raise
            raise LostPeer(f"training process {self.world.rank} of {self.world.size} lost contact with the "
                           f"others while {doing}: {_first_sentence(err)}",
                           hint="another training process ended; continue from the last checkpoint with "
                                "--resume") from None


# What the collectives' transports say when the process at the other end is gone (gloo raises a plain
# RuntimeError quoting its source file; newer releases and NCCL raise torch.distributed's DistError).
_TRANSPORT = re.compile(r"gloo|nccl|connection (?:closed|reset|refused)|broken pipe|socket|timed out",
                        re.IGNORECASE)


def _peer_gone(torch: Any, err: RuntimeError) -> bool:
    return isinstance(err, getattr(torch.distributed, "DistError", ())) or bool(_TRANSPORT.search(str(err)))


def _first_sentence(err: BaseException) -> str:
    """The reason without the transport's source location and advice: 'Read error [127.0.0.1]:60058:
    Connection reset by peer'."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip())
    first = text.split(". ")[0].splitlines()
    return first[0][:200] if first else type(err).__name__
