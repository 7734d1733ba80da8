"""Development with an editable install: an edit in the tree is what the tests run.

Copies the tracked tree to a temporary folder, installs it editable
(`pip install --no-deps -e`) into a fresh virtual environment that sees this
environment's packages, edits a file of each stage there, and checks that
`import cnnc` in that environment runs the edited files (the four stages map
onto `cnnc.dsl`, `cnnc.compiler`, ... through pyproject's package-dir).
"""
from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pytest.skip("not a git checkout: the tracked tree cannot be listed")
    return [f for f in out.stdout.decode().split("\0") if f]


@pytest.mark.slow
def test_an_edit_in_the_tree_is_what_runs(tmp_path):
    tree = tmp_path / "tree"
    for name in _tracked_files():
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(tree)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("dsl", "compiler", "runtime", "viz"):
        with open(tree / stage / "__init__.py", "a", encoding="utf-8") as f:
            f.write(f"\nEDITED_IN_THE_TREE = {stage!r}\n")
    probe = ("import cnnc, cnnc.dsl, cnnc.compiler, cnnc.runtime, cnnc.viz, cnnc.compiler.ops as ops\n"
             "import cnnc.runtime.data.pipeline as pipeline\n"
             "print(cnnc.dsl.EDITED_IN_THE_TREE, cnnc.compiler.EDITED_IN_THE_TREE, "
             "cnnc.runtime.EDITED_IN_THE_TREE, cnnc.viz.EDITED_IN_THE_TREE)\n"
             "print(ops.__file__)\nprint(cnnc.__file__)\nprint(pipeline.__file__)")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    edited, ops_file, app_file, pipeline_file = out.stdout.splitlines()
    assert edited == "dsl compiler runtime viz"
    assert Path(ops_file) == tree / "compiler" / "ops.py"
    assert Path(app_file) == tree / "app" / "__init__.py"
    assert Path(pipeline_file) == tree / "runtime" / "data" / "pipeline.py"   # a runtime sub-package too
