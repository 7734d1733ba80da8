"""Shared fixtures: write .cnn programs to a temp dir and compile them."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# The suite runs on the reference (NumPy) kernels unless told otherwise: `CNNC_KERNELS=fast pytest` runs
# it on the compiled set. The fast set's own tests (tests/runtime/test_kernels_fast.py) ask for it by name.
os.environ.setdefault("CNNC_KERNELS", "numpy")


@pytest.fixture
def write(tmp_path):
    """write(source, name="net.cnn") -> path of the dedented program."""
    def _write(source: str, name: str = "net.cnn") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
        return path
    return _write


@pytest.fixture
def compile_src(write):
    """compile_src(source, **kwargs) -> Compiled."""
    def _compile(source: str, **kwargs):
        return compile_file(write(source), **kwargs)
    return _compile


@pytest.fixture
def error_of(write):
    """error_of(source, **kwargs) -> the CnncError compiling it raises (fails if none)."""
    def _error(source: str, **kwargs) -> CnncError:
        path = write(source)
        with pytest.raises(CnncError) as info:
            compile_file(path, **kwargs)
        return info.value
    return _error
