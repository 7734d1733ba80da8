"""Stage 2 (compiler): the compiler's front door, `compile_file`.

Loads a `.cnn` file and its imports, elaborates one network (optionally with
input sizes bound and network parameters set), validates its `train` section
and runs every analysis. The CLI, the runtime and viz start from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..dsl.source import CnncError, Diagnostic
from .analysis import Analysis, analyse
from .elaborate import elaborate, load
from .graph import Network
from .lints import allowed, check_allowed


@dataclass(repr=False)
class Compiled:
    net: Network
    analysis: Analysis
    allow: frozenset[str] = frozenset()   # the `--allow` names: training's warnings obey them too

    def __repr__(self) -> str:   # the graph and its analyses are thousands of lines: name them only
        return f"<Compiled {self.net.name}: {len(self.net.layers())} layers, from {self.net.source}>"

    @property
    def warnings(self) -> list[Diagnostic]:
        return self.analysis.warnings


def compile_file(path: str | Path, network: str | None = None, inputs: dict[str, tuple] | None = None,
                 args: dict[str, Any] | None = None, allow: set[str] | frozenset = frozenset(),
                 with_train: bool = True, train_layers: Sequence[Sequence[Any]] = (),
                 text: str | None = None) -> Compiled:
    """Parse, elaborate, check and analyse one network of a `.cnn` file (or of `text`, named `path`).
    Its train section is resolved with `train_layers` (the command line's flags, a search trial's axes:
    compiler/train_spec.py `Given`s) over it, and the resolved record checked as a whole: a flag may
    mend what the file alone lacks."""
    defs = load(path, text)
    try:
        net = elaborate(defs, network, inputs, args)
    except CnncError as err:
        if inputs:
            _explain_with_constraints(err, defs, network, args, inputs)
        raise
    if with_train:
        attach_train(defs, net, train_layers)
    result = Compiled(net, analyse(net), check_allowed(allow))
    result.analysis.warnings = allowed(result.analysis.warnings, result.allow)
    return result


def attach_train(defs, net: Network, layers: Sequence[Sequence[Any]] = ()) -> None:
    """net.train: the network's train section with `layers` over it, resolved (None without either)."""
    section = defs.trains.get(net.name)
    if section is not None or any(layers):
        from .train_spec import validate_train
        net.train = validate_train(section, net, layers)


def with_train(compiled: Compiled, path: str | Path, layers: Sequence[Sequence[Any]]) -> Compiled:
    """A compiled network (compiled `with_train = False`) with its train section and `layers` resolved."""
    attach_train(load(path), compiled.net, layers)
    return compiled


def _explain_with_constraints(err: CnncError, defs, network, args, inputs) -> None:
    """A bound size that breaks the program: say which derived constraint it breaks."""
    try:
        symbolic = elaborate(defs, network, None, args)
    except CnncError:
        return
    for name, shape in symbolic.inputs.items():
        given = inputs.get(name)
        if given is None or len(given) != len(shape):
            continue
        for declared, value in zip(shape, given):
            sym = str(declared)
            info = symbolic.symbols.get(sym)
            if info and info["constraint"] and not _satisfies(symbolic, sym, value):
                smallest = f" (the smallest valid {sym} is {info['smallest']})" if info["smallest"] else ""
                err.diagnostic.hint = f"{info['constraint']}, and --input gives {sym} = {value}{smallest}"
                return


def _satisfies(net, sym: str, value: int) -> bool:
    rule = net.symbols[sym]
    return value % rule["modulus"] in rule["residues"]


def network_names(path: str | Path) -> list[str]:
    """The networks a file itself defines (not its imports), in order."""
    return list(load(path).main_networks)


def parse_shape(text: str, flag: str = "--input") -> tuple[str, tuple[int, ...]]:
    """'x=3x224x224' -> ('x', (3, 224, 224))."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip():
        raise CnncError(f"{flag} {text}: expected NAME=CxHxW, e.g. x=3x224x224")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise CnncError(f"{flag} {text}: dimensions must be positive integers separated by 'x'") from None
    if not shape or any(d < 1 for d in shape):
        raise CnncError(f"{flag} {text}: dimensions must be positive integers separated by 'x'")
    return name.strip(), shape


def parse_assignment(text: str, flag: str = "--set") -> tuple[str, Any]:
    """'classes=100' -> ('classes', 100); values are ints, floats, true/false or words."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise CnncError(f"{flag} {text}: expected NAME=VALUE")
    value = value.strip()
    for convert in (int, float):
        try:
            return name.strip(), convert(value)
        except ValueError:
            pass
    if value in ("true", "false"):
        return name.strip(), value == "true"
    raise CnncError(f"{flag} {text}: the value must be a number or true/false")
