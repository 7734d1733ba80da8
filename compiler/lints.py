"""Stage 2 (compiler): the warnings the compiler can give, each declared once with its name.

Every warning carries a name (`[field-exceeds-input]` at the end of its
line) that `--allow NAME` silences; `--allow all` silences every one.
`warning` is the one way to make a warning, so a warning without a
declared name cannot exist, and `check_allowed` refuses an `--allow` name
that no warning has (instead of silently allowing nothing). docs/analysis.md
lists the same names (a test keeps them in step).
"""
from __future__ import annotations

from typing import Any, Iterable

from ..dsl.source import CnncError, Diagnostic, Loc, did_you_mean

LINTS: dict[str, str] = {
    "field-exceeds-input": "from this layer on, the receptive field is more than 4 times the input (a field "
                           "somewhat larger than the input is normal in deep classifiers: ResNet-50 reaches 427 "
                           "at 224)",
    "asymmetric-padding": "padding differs between top/bottom or left/right (`same` with an even kernel)",
    "dropped-pixels": "the last real rows/columns fall outside every window (floor division)",
    "saturating-activations": "four or more sigmoid/tanh in a row: vanishing gradients (gates that scale "
                              "another tensor, as in squeeze-and-excitation, do not count)",
    "dropout-before-batchnorm": "dropout feeds batchnorm directly (variance shift)",
    "unused": "a bound tensor is never used",
    "unreachable": "a layer contributes to no output",
    "misaligned": "merged paths look at different places of the input",
    "shadowing": "a binding or parameter hides another name (a layer, block, function or built-in) in its scope",
    "input-override": "`--input` replaces a concrete size the file declares",
    "softmax-before-cross-entropy": "the network ends in softmax and the loss is cross_entropy, which applies "
                                    "softmax itself (softmax twice)",
    "batchnorm-momentum": "batchnorm momentum above 0.5: cnnc follows PyTorch (the weight of the new batch, "
                          "0.1), not Paddle or Keras (the weight of the old statistics, 0.9)",
}
ALL = "all"

# The warnings a run gives while it trains (runtime/train/diagnostics.py `Rules` reads the per-layer
# statistics; its thresholds and docs/diagnostics.md's suggestions are there). `--allow` silences them too.
TRAINING_WARNINGS: dict[str, str] = {
    "dead-units": "most units of a rectifier (relu, ...) are never positive on the probe samples",
    "saturated-units": "most outputs of a sigmoid/tanh sit at the ends of its range",
    "vanishing-gradients": "the first weight's gradient norm is a tiny fraction of the last weight's",
    "exploding-gradients": "a step's weight gradient norm is ten times the epoch's mean before it",
    "update-ratio": "a weight's update-to-weight ratio |dw|/|w| is far from about 1e-3",
    "flat-loss": "the training loss does not move over several epochs",
    "overfitting": "the validation loss rises while the training loss falls",
}


def warning(code: str, message: str, loc: Loc | None, hint: str | None = None) -> Diagnostic:
    """A warning named `code`, which must be declared in LINTS (or TRAINING_WARNINGS)."""
    if code not in LINTS and code not in TRAINING_WARNINGS:
        raise KeyError(f"undeclared lint '{code}'")
    return Diagnostic("warning", message, loc, hint, code=code)


def check_allowed(names: Iterable[str]) -> frozenset[str]:
    """The `--allow` names, each a declared lint, a training warning or `all`."""
    names = frozenset(names)
    known = [*LINTS, *TRAINING_WARNINGS]
    for name in sorted(names):
        if name != ALL and name not in known:
            raise CnncError(f"--allow {name}: no warning has that name",
                            hint=did_you_mean(name, [*known, ALL], f"the names: {', '.join(known)}, or all"))
    return names


def allowed(diagnostics: list[Diagnostic], names: frozenset[str]) -> list[Diagnostic]:
    """The warnings that `--allow names` does not silence."""
    if ALL in names:
        return []
    return [d for d in diagnostics if d.code not in names]


# ---------------------------------------------------------------- lints of conventions learners trip on
def batchnorm_momentum_lints(net: Any) -> list[Diagnostic]:
    """A batchnorm momentum above 0.5 is most likely Paddle's or Keras's convention (0.9, 0.99)."""
    out = []
    for node in net.layers():
        m = node.attrs.get("momentum") if node.op == "batchnorm" else None
        if m is not None and m > 0.5:
            out.append(warning(
                "batchnorm-momentum", f"'{node.name}': batchnorm momentum {m:g} gives the new batch a weight of "
                f"{m:g} in the running statistics (PyTorch's convention, whose default is 0.1)", node.loc,
                f"if {m:g} is the weight of the old statistics (Paddle, Keras), write momentum = {1 - m:.4g}"))
    return out


CROSS_ENTROPY_LOSSES = ("cross_entropy", "pixel_cross_entropy")


def softmax_cross_entropy_lints(net: Any, loss: str) -> list[Diagnostic]:
    """An output made by softmax fed to a loss that applies softmax itself: softmax twice."""
    if loss not in CROSS_ENTROPY_LOSSES:
        return []
    out = []
    for name in net.outputs:
        node = net.node(name)
        if node.op == "softmax":
            out.append(warning(
                "softmax-before-cross-entropy", f"'{node.name}': the network ends in softmax and the loss "
                f"{loss} applies softmax itself, so the outputs are squashed twice", node.loc,
                f"end the network in the logits (drop this softmax): {loss} takes logits, and predict "
                "still ranks the classes the same"))
    return out
