"""Every program in the language brief stays valid (shared/spec/language.md, beside the repo)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.compiler.elaborate import load

BRIEF = Path(__file__).resolve().parents[3] / "shared" / "spec" / "language.md"
BLOCKS = re.findall(r"```\n(.*?)```", BRIEF.read_text(), re.S) if BRIEF.exists() else []
PROGRAMS = [b for b in BLOCKS if re.search(r"^(network|block|train) ", b, re.M)]


@pytest.mark.skipif(not BRIEF.exists(), reason="the language brief is not beside this checkout")
def test_the_brief_has_programs():
    assert len(PROGRAMS) >= 5


@pytest.mark.parametrize("program", PROGRAMS, ids=[f"snippet{i}" for i in range(len(PROGRAMS))])
def test_brief_program_is_valid(tmp_path, program):
    path = tmp_path / "brief.cnn"
    # Blocks-only snippets may rely on blocks from earlier snippets (e.g. ResNet uses basic).
    path.write_text(program)
    defs = load(path)
    for name in defs.main_networks:
        compile_file(path, network=name)
    if defs.main_networks:
        return
    for block in defs.blocks.values():  # blocks-only snippets: each applies to a typical input
        params = ", ".join(p.name for p in block.params if p.default is None)
        args = ", ".join("16" for p in params.split(", ") if p)
        probe = tmp_path / "probe.cnn"
        probe.write_text(program + f"\nnetwork Probe {{\n    input x: [16, 32, 32]\n    x -> {block.name}({args})\n}}\n")
        compile_file(probe, network="Probe")
