"""Choosing the kernel set on the command line: `cnnc run --kernels`, CNNC_KERNELS, what the first line
says, the errors a user can hit, and that `cnnc check`/`compile` never import Numba."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LENET = str(ROOT / "examples" / "lenet5.cnn")
HAS_NUMBA = importlib.util.find_spec("numba") is not None
RUN = ["run", LENET, "--epochs", "1", "--limit", "64"]


def cnnc(*argv: str, env: dict | None = None, block_numba: bool = False) -> subprocess.CompletedProcess:
    """`cnnc ARGV` in a fresh process; `block_numba` makes `import numba` fail there (no extra installed)."""
    prelude = "import sys; sys.modules['numba'] = None; " if block_numba else "import sys; "
    code = prelude + "from cnnc.cli import main; code = main(sys.argv[1:]); " \
                     "print('numba imported' if 'numba' in sys.modules and sys.modules['numba'] else '', " \
                     "file=sys.stderr); sys.exit(code)"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=600)


@pytest.mark.parametrize("argv", [["check", LENET], ["compile", LENET], ["compile", LENET, "--fuse"],
                                  ["compile", LENET, "--format", "json"]])
def test_check_and_compile_never_import_numba(argv):
    done = cnnc(*argv, env={"CNNC_KERNELS": "fast"})
    assert done.returncode == 0, done.stderr
    assert "numba imported" not in done.stderr


@pytest.mark.skipif(not HAS_NUMBA, reason="needs the cnnc[fast] extra")
@pytest.mark.parametrize("kernels", ["numpy", "fast"])
def test_run_says_which_kernels_it_uses_in_its_first_line(tmp_path, kernels):
    done = cnnc(*RUN, "--out", str(tmp_path), "--kernels", kernels, "--threads", "1")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    expected = "fast kernels (Numba " if kernels == "fast" else "numpy kernels on 1 thread"
    assert first.startswith("LeNet5: ") and expected in first, first
    assert ("numba imported" in done.stderr) == (kernels == "fast")


@pytest.mark.skipif(not HAS_NUMBA, reason="needs the cnnc[fast] extra")
def test_the_first_run_says_it_compiles_and_the_next_does_not(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    lines = [cnnc(*RUN, "--out", str(tmp_path / "run"), "--overwrite", "--kernels", "fast", env=env).stdout
             .splitlines()[0] for _ in range(2)]
    assert f"compiling once into {tmp_path / 'cache'}" in lines[0]
    assert "compiling" not in lines[1] and "fast kernels (Numba " in lines[1]


@pytest.mark.skipif(not HAS_NUMBA, reason="needs the cnnc[fast] extra")
def test_the_environment_chooses_when_the_flag_does_not_and_the_flag_wins(tmp_path):
    done = cnnc(*RUN, "--out", str(tmp_path / "a"), env={"CNNC_KERNELS": "fast"})
    assert "fast kernels" in done.stdout.splitlines()[0]
    done = cnnc(*RUN, "--out", str(tmp_path / "b"), "--kernels", "numpy", env={"CNNC_KERNELS": "fast"})
    assert "numpy kernels" in done.stdout.splitlines()[0]


@pytest.mark.skipif(not HAS_NUMBA, reason="needs the cnnc[fast] extra")
def test_without_a_choice_the_fast_kernels_run_where_numba_imports(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CNNC_KERNELS"}
    done = subprocess.run([sys.executable, "-m", "cnnc", *RUN, "--out", str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "fast kernels (Numba " in done.stdout.splitlines()[0]


def test_without_numba_the_default_is_numpy_and_says_why(tmp_path):
    env = {"CNNC_KERNELS": ""}
    done = cnnc(*RUN, "--out", str(tmp_path), env=env, block_numba=True)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert "numpy kernels (Numba does not import" in first and "pip install 'cnnc[fast]'" in first


def test_asking_for_fast_kernels_without_numba_is_one_clear_error(tmp_path):
    for how in (["--kernels", "fast"], []):
        done = cnnc(*RUN, "--out", str(tmp_path), *how, env={"CNNC_KERNELS": "fast"}, block_numba=True)
        assert done.returncode == 1
        assert "error: the fast kernels need Numba, which does not import here" in done.stderr
        assert "pip install 'cnnc[fast]'" in done.stderr and "Traceback" not in done.stderr


def test_an_unknown_kernel_set_is_refused():
    done = cnnc(*RUN, "--kernels", "gpu")
    assert done.returncode == 2 and "--kernels: invalid choice: 'gpu'" in done.stderr
    done = cnnc(*RUN, env={"CNNC_KERNELS": "gpu"})
    assert done.returncode == 1 and "error: CNNC_KERNELS 'gpu': no such kernel set" in done.stderr
    assert "choose one of numpy, fast" in done.stderr and "Traceback" not in done.stderr


def test_kernels_with_the_torch_engine_is_refused(tmp_path):
    pytest.importorskip("torch")
    done = cnnc(*RUN, "--out", str(tmp_path), "--engine", "torch", "--kernels", "numpy")
    assert done.returncode == 1
    assert "error: --kernels numpy: the kernel sets are the numpy engine's" in done.stderr
