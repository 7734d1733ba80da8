"""Stage 2 (compiler): loading a program — a `.cnn` file and, recursively, the files it imports.

`load` parses the main file and every import into one `Definitions` table
(blocks, networks, train sections), refusing import cycles, duplicate
definitions and imports nested too deep; `choose_network` picks the network a
command works on. An import names another `.cnn` source file, relative to the
importing file, and is untrusted input: the path must be a plain `.cnn` path
(no NUL, not too long, no symbolic-link loop, not a kernel pseudo-file, also
after following links), and the file is read through the one bounded reader
(`dsl.parser.read_source`). A refused import is a located error at the
`import` statement that never quotes the refused file's content.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..dsl import ast
from ..dsl.files import describe_path
from ..dsl.parser import parse, read_source
from ..dsl.source import CnncError, Loc, did_you_mean

MAX_IMPORT_DEPTH = 50
MAX_IMPORT_PATH = 4096  # characters of an import path (Linux's PATH_MAX)


@dataclass
class Definitions:
    """Everything a file and its imports define."""

    main: str
    blocks: dict[str, ast.Block] = field(default_factory=dict)
    functions: dict[str, ast.Function] = field(default_factory=dict)   # `def` numeric helpers
    networks: dict[str, ast.Network] = field(default_factory=dict)
    trains: dict[str, ast.Train] = field(default_factory=dict)
    main_networks: list[str] = field(default_factory=list)


def load(path: str | Path, text: str | None = None) -> Definitions:
    """Parse a file and, recursively, the files it imports. With `text`, that is the program, and
    `path` only names it (in messages; imports are relative to its folder)."""
    defs = Definitions(str(path))
    _load_into(defs, Path(path), stack=(), import_loc=None, text=text)
    return defs


_KINDS = {ast.Block: ("blocks", "block"), ast.Function: ("functions", "function"), ast.Network: ("networks", "network"),
          ast.Train: ("trains", "train section for")}


def _load_into(defs: Definitions, path: Path, stack: tuple, import_loc: Loc | None, text: str | None = None) -> None:
    resolved = _resolve(path, import_loc)
    if resolved in stack:
        cycle = " -> ".join(p.name for p in (*stack[stack.index(resolved):], resolved))
        raise CnncError(f"import cycle: {cycle}", import_loc, "a file cannot import itself, directly or not")
    if len(stack) > MAX_IMPORT_DEPTH:
        raise CnncError(f"imports nested more than {MAX_IMPORT_DEPTH} deep", import_loc)
    program = parse(_read(path, import_loc) if text is None else text, str(path))
    for item in program.items:
        if isinstance(item, ast.Import):
            _check_import_path(item.path, item.loc)
            _load_into(defs, path.parent / item.path, (*stack, resolved), item.loc)
            continue
        table_name, what = _KINDS[type(item)]
        table = getattr(defs, table_name)
        key = item.network if isinstance(item, ast.Train) else item.name
        if key in table and table[key].loc != item.loc:
            raise CnncError(f"{what} '{key}' is defined twice", item.loc).add_note("first defined here",
                                                                                  table[key].loc)
        _refuse_block_function_clash(defs, item)
        table[key] = item
        if isinstance(item, ast.Network) and not stack:
            defs.main_networks.append(item.name)


def _refuse_block_function_clash(defs: Definitions, item) -> None:
    """A `def` and a block of one name would make every call ambiguous."""
    if not isinstance(item, (ast.Block, ast.Function)):
        return
    other = defs.functions if isinstance(item, ast.Block) else defs.blocks
    if item.name in other:
        what = "function" if isinstance(item, ast.Block) else "block"
        raise CnncError(f"'{item.name}' is already a {what}", item.loc,
                        "a block and a numeric function cannot share a name").add_note("defined here",
                                                                                     other[item.name].loc)


def _check_import_path(text: str, loc: Loc) -> None:
    """What an import may name, checked before the file system sees the path."""
    shown = describe_path(text)
    if "\x00" in text:
        raise CnncError(f'cannot import "{shown}": the path contains a NUL byte', loc)
    if len(text) > MAX_IMPORT_PATH or any(len(part.encode("utf-8", "replace")) > 255 for part in Path(text).parts):
        raise CnncError(f'cannot import "{shown}": the path is too long', loc)
    if not text.endswith(".cnn"):
        raise CnncError(f'cannot import "{shown}": not a .cnn source file', loc, "an import names a .cnn file")


def _resolve(path: Path, import_loc: Loc | None) -> Path:
    """The real path of a source file (for cycle detection), refusing links out of `.cnn` files."""
    what = f'cannot import "{describe_path(path)}"' if import_loc else describe_path(path)
    try:
        resolved = path.resolve()
    except RuntimeError:  # Path.resolve reports a symbolic-link loop this way
        raise CnncError(f"{what}: too many levels of symbolic links", import_loc) from None
    except (OSError, ValueError) as err:
        reason = (getattr(err, "strerror", None) or str(err)).lower()
        raise CnncError(f"{what}: {reason}", import_loc) from None
    if import_loc is not None and os.path.lexists(path) and resolved.suffix != ".cnn":
        raise CnncError(f"{what}: it is a link to a file that is not a .cnn source file", import_loc,
                        "an import names a .cnn file")
    return resolved


def _read(path: Path, import_loc: Loc | None) -> str:
    if import_loc is None:
        return read_source(path)
    if not os.path.lexists(path):
        raise CnncError(f'cannot import "{describe_path(path)}": no such file', import_loc,
                        "imports are relative to the importing file")
    try:
        return read_source(path, "import")
    except CnncError as err:  # the reader does not know the import statement: point at it
        raise CnncError(err.message, import_loc, err.hint) from None


def choose_network(defs: Definitions, name: str | None) -> str:
    """The network a command works on: the one named, else the file's only (or only trained) one."""
    if name is not None:
        if name not in defs.networks:
            raise CnncError(f"--network {name}: no network of that name in {defs.main}",
                            hint=did_you_mean(name, defs.networks,
                                              f"networks: {', '.join(defs.networks) or 'none'}"))
        return name
    candidates = defs.main_networks or list(defs.networks)
    if not candidates:
        raise CnncError(f"{defs.main} defines no network", hint="a network starts with `network Name { ... }`")
    if len(candidates) > 1:
        trained = [n for n in candidates if n in defs.trains]
        if len(trained) == 1:
            return trained[0]
        raise CnncError(f"{defs.main} defines several networks: {', '.join(candidates)}",
                        hint="choose one with --network NAME")
    return candidates[0]
