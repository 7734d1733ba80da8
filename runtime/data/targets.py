"""Stage 3 (runtime), data: what the network expects of the data — input shapes and target kinds.

`NetworkShapes` is all the data side knows of a network: its per-sample input
and output shapes (every output's, by name, for a network with several, with
the kind of target each output's loss takes). The target kinds are the kinds of label a loss can take (a
loss names its kind: train/losses.py); `check_dataset` compares every split with the
network's declared input and the loss's target kind before any training
starts, so a mismatch becomes a `CnncError` with a hint instead of a shape
error deep in a kernel, and returns the labels in canonical dtypes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from ...dsl.source import CnncError
from .containers import INT64_MAX, Dataset, Split, Targets

# Target kinds: what a loss compares the network's output with.
CLASS = "class"              # int labels [N] in [0, K)
PIXEL_CLASS = "pixel_class"  # int labels [N, H, W] in [0, K) (or ignore_index)
BINARY = "binary"            # 0/1 (or probabilities) [N] / [N, 1]
MULTILABEL = "multilabel"    # 0/1 [N, K]
REAL = "real"                # any float targets, same size as the output


@dataclass(frozen=True)
class NetworkShapes:
    """A network's per-sample input shape (its first input) and output shape (its first output),
    channels first; a symbolic dimension is any non-int value. `outputs` has every output's shape by
    name, and `kinds` the target kind of each output's loss when the caller knows it."""

    input: tuple
    output: tuple
    outputs: dict[str, tuple] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, net, kinds: Mapping[str, str] | None = None) -> "NetworkShapes":
        """The shapes of a checked `Network` (compiler/graph.py)."""
        outputs = {o: tuple(net.shapes[o]) for o in net.outputs}
        return cls(tuple(net.shapes[next(iter(net.inputs))]), outputs[net.outputs[0]], outputs, dict(kinds or {}))


class TargetSpec(Protocol):
    """What the checks ask of a loss (train/losses.py `LossSpec` is one): its name for messages,
    its target kind, whether it also takes class labels (as one-hot targets), and its options
    (`ignore_index`, a label that counts for nothing)."""

    name: str
    target_kind: str
    one_hot_labels: bool
    options: Mapping[str, Any]


def counted(n: Any, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_inputs(x: np.ndarray, expected: tuple[Any, ...], where: str) -> None:
    if x.dtype.kind not in "biuf":
        raise CnncError(f"{where}: the inputs have dtype {x.dtype}, which is not numeric",
                        hint="store images and features as integer or float arrays")
    if len(x) == 0:
        raise CnncError(f"{where}: there are no samples")
    have = tuple(x.shape[1:])

    def same(a: Any, b: int) -> bool:  # symbolic dimensions (non-ints) match anything
        return not isinstance(a, (int, np.integer)) or int(a) == b

    if len(have) == len(expected) and all(same(a, b) for a, b in zip(expected, have)):
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise CnncError(f"{where}: the inputs contain NaN or infinite values")
        return
    if len(expected) == 3 and len(have) == 3:
        if not same(expected[0], have[0]):
            raise CnncError(
                f"{where}: the network expects {counted(expected[0], 'channel')}, the data has {have[0]}",
                hint=f"declare the input with {counted(have[0], 'channel')}, or convert the data "
                     + ("(e.g. repeat the grey channel to get RGB)" if have[0] == 1 else
                        "(e.g. average the colour channels to get greyscale)"))
        raise CnncError(
            f"{where}: the network expects {expected[1]}x{expected[2]} inputs, the data is "
            f"{have[1]}x{have[2]}",
            hint="change the input size in the network, or resize/crop the data")
    if len(expected) == 1 and len(have) == 1:
        raise CnncError(f"{where}: the network expects {expected[0]} input features, "
                        f"the data has {have[0]}")
    hint = "reshape the data, or change the network's input declaration"
    if all(isinstance(d, (int, np.integer)) for d in expected) and math.prod(expected) == math.prod(have):
        hint = f"the sizes agree, so reshape each sample from {shape_text(have)} to {shape_text(expected)}"
    raise CnncError(f"{where}: the network expects inputs of shape {shape_text(expected)} per sample, "
                    f"the data has {shape_text(have)}", hint=hint)


def _integral_labels(y: np.ndarray, where: str, k: int | None = None,
                     allowed: int | None = None) -> np.ndarray:
    """Class labels as int64, after checking (on the original values, so a uint64 label is
    reported as it is, not wrapped) that they are whole numbers in [0, k) or `allowed`."""
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise CnncError(f"{where}: class labels must be integers, got dtype {y.dtype}",
                        hint="use a regression loss (mse, smooth_l1) for real-valued targets")
    if y.dtype.kind not in "biuf":
        raise CnncError(f"{where}: class labels must be integers, got dtype {y.dtype}")
    if k is not None:
        _check_range(y, k, where, allowed)
    elif y.size and (float(y.max()) > INT64_MAX or float(y.min()) < -INT64_MAX):
        big = int(y.max()) if float(y.max()) > INT64_MAX else int(y.min())
        raise CnncError(f"{where}: the labels hold {big}, too large for a class index",
                        hint="number the classes from 0")
    return y.astype(np.int64)


def _check_range(y: np.ndarray, k: int, where: str, allowed: int | None = None) -> None:
    bad = (y < 0) | (y >= k)
    if allowed is not None and (allowed >= 0 or y.dtype.kind != "u"):  # no uint equals a negative
        bad &= y != allowed
    if bad.any():
        lo, hi = int(y[bad].min()), int(y[bad].max())
        seen = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise CnncError(f"{where}: labels must lie in [0, {k}), the data has label(s) {seen}",
                        hint=f"the network's last layer has {k} outputs, one per class; number the "
                             "classes from 0, or change the output size")


def _check_targets(y: np.ndarray, n: int, spec: TargetSpec, output: tuple, where: str) -> np.ndarray:
    """One output's targets against its shape and its loss's kind, in canonical dtypes."""
    num_classes = output[0] if output and isinstance(output[0], (int, np.integer)) else None
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise CnncError(f"{where}: the labels have dtype {y.dtype}, which is not numeric")
    if len(y) != n:
        raise CnncError(f"{where}: {n} inputs but {len(y)} labels")
    kind = spec.target_kind
    per_sample = math.prod(y.shape[1:])
    if kind == CLASS:
        if y.ndim > 2 or per_sample != 1:
            raise CnncError(f"{where}: loss {spec.name} needs one class label per sample, the labels "
                            f"have shape {shape_text(y.shape)}",
                            hint="for 0/1 targets per class use multilabel_bce")
        return _integral_labels(y.reshape(-1), where, num_classes, spec.options.get("ignore_index"))
    if kind == PIXEL_CLASS:
        if y.ndim != 3:
            raise CnncError(f"{where}: loss {spec.name} needs one mask [H, W] per sample, the "
                            f"labels have shape {shape_text(y.shape)}")
        return _integral_labels(y, where, num_classes, spec.options.get("ignore_index"))
    if spec.one_hot_labels and y.dtype.kind in "iu" and y.ndim == 1 and num_classes is not None and num_classes > 1:
        return _integral_labels(y, where, num_classes)   # class labels: mse compares one-hot targets
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise CnncError(f"{where}: the targets contain NaN or infinite values")
    if kind in (BINARY, MULTILABEL) and ((y < 0) | (y > 1)).any():
        raise CnncError(f"{where}: loss {spec.name} needs targets between 0 and 1, the data has "
                        f"values from {y.min()} to {y.max()}")
    values = math.prod(output) if all(isinstance(d, (int, np.integer)) for d in output) else None
    if values is not None and per_sample != values:
        if len(output) == 1:
            raise CnncError(f"{where}: the network has {counted(values, 'output')}, but each target "
                            f"has {counted(per_sample, 'value')} (labels of shape {shape_text(y.shape)})",
                            hint="the last layer needs one output per target value")
        raise CnncError(f"{where}: the network's output is {shape_text(output)} ({counted(values, 'value')}), but "
                        f"each target has {counted(per_sample, 'value')} (targets of shape {shape_text(y.shape)})",
                        hint="a real-valued target has one value per output value (an image for an image "
                             "output, as an autoencoder's)")
    return y.astype(np.float32)


def _check_all_targets(y: Targets, n: int, shapes: NetworkShapes, losses: Mapping[str, TargetSpec],
                       where: str) -> Targets:
    """Targets for every output: one array for a one-output network, a dict by output name for several."""
    if len(losses) == 1:
        (name, spec), = losses.items()
        if isinstance(y, dict):
            raise CnncError(f"{where}: the data has targets for {', '.join(sorted(y))}, but the network has one "
                            f"output ({name})", hint="keep one target array (y, or y_train)")
        return _check_targets(y, n, spec, shapes.outputs.get(name, shapes.output), where)
    if not isinstance(y, dict):
        raise CnncError(f"{where}: the network has {len(losses)} outputs ({', '.join(losses)}), but the data has "
                        "one target per sample", hint="give a target array per output: an .npz with y_train_NAME "
                                                      "(or y_NAME) for each output NAME (docs/data.md)")
    missing = [o for o in losses if o not in y]
    if missing:
        raise CnncError(f"{where}: no targets for output{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                        f"the data has targets for {', '.join(sorted(y)) or 'none'}",
                        hint="name each output's targets after it: y_train_NAME (or y_NAME) in an .npz")
    extra = sorted(set(y) - set(losses))
    if extra:
        raise CnncError(f"{where}: targets for {', '.join(extra)}, which the network does not output "
                        f"(its outputs: {', '.join(losses)})")
    return {o: _check_targets(y[o], n, spec, shapes.outputs[o], f"{where}, output {o}") for o, spec in losses.items()}


def check_dataset(ds: Dataset, shapes: NetworkShapes, loss: TargetSpec | Mapping[str, TargetSpec]) -> Dataset:
    """Refuse data that does not fit the network; return it with labels in canonical dtypes.

    `shapes.input` is the per-sample input (`[C, H, W]` or `[F]`; non-int entries are
    symbolic and match anything); each output's targets are checked against its shape
    (the class axis, or every value for regression) and the kind its loss takes: `loss`
    is one `TargetSpec`, or one per output name for a network with several.
    """
    losses = dict(loss) if isinstance(loss, Mapping) else {next(iter(shapes.outputs), "output"): loss}
    fixed: dict[str, Split] = {}
    for split_name, split in ds.splits():
        where = f"data '{ds.name}' ({split_name} split)"
        _check_inputs(np.asarray(split.x), tuple(shapes.input), where)
        fixed[split_name] = Split(split.x, _check_all_targets(split.y, len(split.x), shapes, losses, where))
    return replace(ds, train=fixed["train"], val=fixed.get("validation"), test=fixed.get("test"))
