"""Stage 2 (compiler): the warnings the compiler can give, each declared once with its name.

Every warning carries a name (`[field-exceeds-input]` at the end of its
line) that `--allow NAME` silences; `--allow all` silences every one.
`warning` is the one way to make a warning, so a warning without a
declared name cannot exist, and `check_allowed` refuses an `--allow` name
that no warning has (instead of silently allowing nothing). docs/analysis.md
lists the same names (a test keeps them in step).
"""
from __future__ import annotations

from typing import Iterable

from ..dsl.source import CnncError, Diagnostic, Loc, did_you_mean

LINTS: dict[str, str] = {
    "field-exceeds-input": "from this layer on, the receptive field is larger than the input",
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
}
ALL = "all"


def warning(code: str, message: str, loc: Loc | None, hint: str | None = None) -> Diagnostic:
    """A warning named `code`, which must be declared in LINTS."""
    if code not in LINTS:
        raise KeyError(f"undeclared lint '{code}'")
    return Diagnostic("warning", message, loc, hint, code=code)


def check_allowed(names: Iterable[str]) -> frozenset[str]:
    """The `--allow` names, each a declared lint or `all`."""
    names = frozenset(names)
    for name in sorted(names):
        if name != ALL and name not in LINTS:
            raise CnncError(f"--allow {name}: no warning has that name",
                            hint=did_you_mean(name, [*LINTS, ALL], f"the names: {', '.join(LINTS)}, or all"))
    return names


def allowed(diagnostics: list[Diagnostic], names: frozenset[str]) -> list[Diagnostic]:
    """The warnings that `--allow names` does not silence."""
    if ALL in names:
        return []
    return [d for d in diagnostics if d.code not in names]
