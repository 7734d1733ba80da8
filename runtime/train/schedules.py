"""Stage 3 (runtime): learning-rate schedules with torch.optim.lr_scheduler semantics.

A schedule maps a 0-based epoch to the learning rate used during that epoch:
`sched.lr(e)` equals the rate a PyTorch scheduler reports after `e` calls to
`scheduler.step()`. Epoch-based schedules (`step`, `cosine`, `constant`) use
closed forms, so they are stateless and resuming cannot drift; `plateau` is
driven by `sched.observe(value)` once per epoch with the figure its `monitor`
names (`sched.monitor`: val_loss, val_accuracy, train_loss or train_accuracy;
the trainer reads it from the epoch's record), as ReduceLROnPlateau's
`step(metric)`, and its rate takes effect from the next epoch; `warmup`
ramps linearly for its own epochs and then hands over to any other schedule,
which starts from its epoch 0 with the remaining epochs (SequentialLR with one
milestone). `make_schedule(spec, base_lr, epochs)` accepts a name, a
`(name, kwargs)` pair or a `{"name": ..., **kwargs}` dict, nested for
`warmup(then=...)`; `cosine_restarts` (SGDR) also says which epochs end a
cycle (`cycle_end`), where snapshot ensembles keep a checkpoint;
`state_dict()` holds plain numbers only, for JSON metadata.
Names, options, aliases (`every`, `min_lr`) and required options come from the
train vocabulary (compiler/train_vocab.py `SCHEDULE`); each class's
constructor takes exactly its entry's options, under their runtime names.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from ...compiler.train_vocab import SCHEDULE
from ...dsl.source import CnncError, did_you_mean

State = dict[str, float]
Spec = Any  # str | (str, dict) | dict | Schedule | None


class Schedule:
    """Base: a constant rate. Subclasses override `lr`, and `observe` if metric-driven."""

    name = "constant"

    def __init__(self, base_lr: float, epochs: int) -> None:
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)

    def lr(self, epoch: int) -> float:
        return self.base_lr

    @property
    def monitor(self) -> str | None:
        """The figure of an epoch's record `observe` wants (None: the schedule watches nothing)."""
        return None

    def observe(self, metric: float) -> None:
        """Report the end-of-epoch value of `monitor`; only metric-driven schedules care."""

    def cycle_end(self, epoch: int) -> bool:
        """Whether epoch `epoch` ends a cycle (the next one restarts the rate); only warm restarts do."""
        return False

    @property
    def restarts(self) -> bool:
        """Whether the rate restarts (so that `cycle_end` can be true): snapshot ensembles need it."""
        return False

    def state_dict(self) -> State:
        return {}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        if state:
            raise CnncError(f"schedule '{self.name}' has no state, but the checkpoint has "
                            f"{sorted(state)}", hint="the checkpoint was saved with another schedule")


class StepSchedule(Schedule):
    """StepLR: multiply by gamma every step_size epochs."""

    name = "step"

    def __init__(self, base_lr: float, epochs: int, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(base_lr, epochs)
        if int(step_size) < 1:
            raise CnncError(f"schedule step: step_size must be a positive integer, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineSchedule(Schedule):
    """CosineAnnealingLR (closed form; beyond T_max it keeps following the cosine, as torch)."""

    name = "cosine"

    def __init__(self, base_lr: float, epochs: int, T_max: int | None = None,
                 eta_min: float = 0.0) -> None:
        super().__init__(base_lr, epochs)
        self.T_max = int(T_max) if T_max is not None else max(1, self.epochs)
        if self.T_max < 1:
            raise CnncError(f"schedule cosine: T_max must be a positive integer, got {T_max}")
        self.eta_min = float(eta_min)

    def lr(self, epoch: int) -> float:
        cos = math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + cos) / 2.0


class CosineRestartsSchedule(Schedule):
    """CosineAnnealingWarmRestarts stepped once per epoch: cycles of T_0, T_0*T_mult, ... epochs."""

    name = "cosine_restarts"

    def __init__(self, base_lr: float, epochs: int, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        super().__init__(base_lr, epochs)
        if int(T_0) < 1 or int(T_mult) < 1:
            raise CnncError(f"schedule cosine_restarts: T_0 and T_mult must be positive integers, got {T_0}, {T_mult}")
        self.T_0, self.T_mult, self.eta_min = int(T_0), int(T_mult), float(eta_min)

    def _position(self, epoch: int) -> tuple[int, int]:
        """(epochs into the current cycle, the cycle's length); walked in integers, so never off by one."""
        t_cur, t_i = int(epoch), self.T_0
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.T_mult
        return t_cur, t_i

    def lr(self, epoch: int) -> float:
        t_cur, t_i = self._position(epoch)
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0

    def cycle_end(self, epoch: int) -> bool:
        t_cur, t_i = self._position(epoch)
        return t_cur == t_i - 1

    @property
    def restarts(self) -> bool:
        return True


class PlateauSchedule(Schedule):
    """ReduceLROnPlateau: cut the rate by `factor` after `patience` epochs without improvement of the
    `monitor` figure; `mode` None follows the monitor (min for a loss, max for an accuracy)."""

    name = "plateau"
    _STATE = ("current", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def __init__(self, base_lr: float, epochs: int, monitor: str = "val_loss", mode: str | None = None,
                 factor: float = 0.1, patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        super().__init__(base_lr, epochs)
        self._monitor = monitor
        mode = mode if mode is not None else ("max" if monitor.endswith("accuracy") else "min")
        if mode not in ("min", "max"):
            raise CnncError(f"schedule plateau: mode must be 'min' or 'max', got '{mode}'")
        if threshold_mode not in ("rel", "abs"):
            raise CnncError("schedule plateau: threshold_mode must be 'rel' or 'abs', "
                            f"got '{threshold_mode}'")
        if not 0.0 < factor < 1.0:
            raise CnncError(f"schedule plateau: factor must lie in (0, 1), got {factor}",
                            hint="the rate is multiplied by factor, so 0.1 divides it by ten")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor, self.patience, self.threshold = float(factor), int(patience), float(threshold)
        self.cooldown, self.min_lr, self.eps = int(cooldown), float(min_lr), float(eps)
        self.current = self.base_lr
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    @property
    def monitor(self) -> str:
        return self._monitor

    def lr(self, epoch: int) -> float:
        return self.current

    def _is_better(self, value: float) -> bool:
        if self.threshold_mode == "rel":
            margin = 1.0 - self.threshold if self.mode == "min" else 1.0 + self.threshold
            target = self.best * margin
        else:
            target = self.best - self.threshold if self.mode == "min" else self.best + self.threshold
        return value < target if self.mode == "min" else value > target

    def observe(self, metric: float) -> None:
        value = float(metric)
        self.last_epoch += 1
        if self._is_better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            new = max(self.current * self.factor, self.min_lr)
            if self.current - new > self.eps:  # torch ignores negligible reductions
                self.current = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def state_dict(self) -> State:
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        missing = [key for key in self._STATE if key not in state]
        if missing or set(state) - set(self._STATE):
            raise CnncError(f"schedule plateau: checkpoint state has keys {sorted(state)}, "
                            f"expected {list(self._STATE)}",
                            hint="the checkpoint was saved with another schedule")
        self.current, self.best = float(state["current"]), float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])


class WarmupSchedule(Schedule):
    """Linear warm-up from start_factor * lr to lr over `epochs`, then `then` (LinearLR + SequentialLR)."""

    name = "warmup"

    def __init__(self, base_lr: float, epochs: int, warmup_epochs: int, then: Spec = None,
                 start_factor: float | None = None) -> None:
        super().__init__(base_lr, epochs)
        if int(warmup_epochs) < 1:
            raise CnncError(f"schedule warmup: epochs must be a positive integer, got {warmup_epochs}")
        self.warmup_epochs = int(warmup_epochs)
        # Default 1/(n+1): epoch 0 already learns (n=2 gives 1/3, 2/3, then the full rate).
        self.start_factor = 1.0 / (self.warmup_epochs + 1) if start_factor is None else float(start_factor)
        if not 0.0 < self.start_factor <= 1.0:
            raise CnncError(f"schedule warmup: start_factor must lie in (0, 1], got {start_factor}")
        self.then = make_schedule(then, base_lr, max(1, self.epochs - self.warmup_epochs))
        self.last_epoch = -1  # the epoch of the latest lr() call: decides who gets observe()

    def lr(self, epoch: int) -> float:
        self.last_epoch = epoch
        n = self.warmup_epochs
        if epoch < n:
            return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * epoch / n)
        return self.then.lr(epoch - n)

    def cycle_end(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs and self.then.cycle_end(epoch - self.warmup_epochs)

    @property
    def restarts(self) -> bool:
        return self.then.restarts

    @property
    def monitor(self) -> str | None:
        return self.then.monitor

    def observe(self, metric: float) -> None:
        # Metrics measured while the rate was still ramping would poison plateau's "best".
        if self.last_epoch >= self.warmup_epochs:
            self.then.observe(metric)

    def state_dict(self) -> State:
        state: State = {"last_epoch": self.last_epoch}
        state.update({f"then.{k}": v for k, v in self.then.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        if "last_epoch" not in state:
            raise CnncError("schedule warmup: checkpoint state lacks 'last_epoch'",
                            hint="the checkpoint was saved with another schedule")
        self.last_epoch = int(state["last_epoch"])
        self.then.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("then.")})


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Schedule, "step": StepSchedule, "cosine": CosineSchedule,
    "cosine_restarts": CosineRestartsSchedule,
    "plateau": PlateauSchedule, "warmup": WarmupSchedule,
}
_ALIASES = {"none": "constant"}


def _split_spec(spec: Spec) -> tuple[str, dict[str, Any]]:
    if spec is None:
        return "constant", {}
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        if "name" not in kwargs:
            raise CnncError(f"schedule spec {spec!r} has no 'name'")
        return str(kwargs.pop("name")), kwargs
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], Mapping):
        return str(spec[0]), dict(spec[1])
    raise CnncError(f"cannot read schedule spec {spec!r}",
                    hint="write a name, (name, {options}) or {'name': ..., options}")


def make_schedule(spec: Spec, base_lr: float, epochs: int) -> Schedule:
    """Build a schedule from `spec` for a run of `epochs` epochs starting at `base_lr`."""
    if isinstance(spec, Schedule):
        return spec
    name, kwargs = _split_spec(spec)
    name = _ALIASES.get(name.lower(), name.lower())
    cls = SCHEDULES.get(name)
    if cls is None:
        raise CnncError(f"unknown learning-rate schedule '{name}'",
                        hint=did_you_mean(name, SCHEDULES, "known schedules: " + ", ".join(SCHEDULES)))
    entry = SCHEDULE.entries[name]
    bound: dict[str, Any] = {}
    for key, value in kwargs.items():
        option = entry.option(key)
        if option is None:
            raise CnncError(f"schedule '{name}' has no option '{key}'",
                            hint="its options: " + (", ".join(entry.names) or "none"))
        bound[option.target] = value
    for option in entry.options:
        if option.required and option.target not in bound:
            raise CnncError(f"schedule '{name}' needs option '{option.name}'")
    return cls(base_lr, epochs, **bound)
