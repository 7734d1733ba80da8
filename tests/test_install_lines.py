"""Every `pip install` line a user can copy works: in README.md and docs/, an install is typed in a
clone's folder (`.`, `'.[extra]'`); the messages cnnc prints name `'cnnc[extra]'` (cnnc is installed
by then). Either way the extra must exist in pyproject.toml (issue 21: lines that could not work)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted(p for part in ("app", "runtime", "compiler", "viz", "dsl") for p in (ROOT / part).rglob("*.py"))

INSTALL = re.compile(r"pip install\s+((?:-[-\w]+\s+)*)('[^']*'|\S+)")
LOCAL = re.compile(r"^\.(\[(?P<extras>[\w,]+)\])?$")
NAMED = re.compile(r"^cnnc\[(?P<extras>[\w,]+)\]$")


def _installs(text: str):
    for m in INSTALL.finditer(text):
        yield m.group(2).strip("'`\"")


def _doc_commands(path: Path):
    """(install target, typed?) of a document: its code blocks are typed as they are; `inline code` in
    the prose may also quote what cnnc prints once installed ('cnnc[extra]')."""
    text = path.read_text(encoding="utf-8")
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            yield from ((target, True) for target in _installs(line.split("#")[0]))
    for inline in re.findall(r"`([^`\n]*pip install[^`\n]*)`", text):
        yield from ((target, False) for target in _installs(inline))


def _extras(target: str) -> list[str]:
    m = LOCAL.match(target) or NAMED.match(target)
    assert m, f"`pip install {target}`: neither this clone ('.', '.[extra]') nor 'cnnc[extra]'"
    return [e for e in (m.group("extras") or "").split(",") if e]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_a_documented_install_is_typed_in_the_clone_and_names_real_extras(doc):
    for target, typed in _doc_commands(doc):
        assert not typed or LOCAL.match(target), \
            f"{doc.name}: the block's `pip install {target}` does not install this clone ('.' or '.[extra]')"
        for extra in _extras(target):
            assert extra in EXTRAS, f"{doc.name}: `pip install {target}`: no extra '{extra}' in pyproject.toml"


def test_every_message_names_an_extra_that_exists():
    seen = 0
    for path in SOURCES:
        for target in _installs(path.read_text(encoding="utf-8")):
            m = NAMED.match(target)
            if m is None:
                continue
            seen += 1
            for extra in m.group("extras").split(","):
                assert extra in EXTRAS, f"{path.relative_to(ROOT)}: 'cnnc[{extra}]' is no extra of pyproject.toml"
    assert seen >= 4    # torch, onnx, dask, fast: the walk reads them
