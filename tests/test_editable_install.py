"""Development with an editable install: an edit in the tree is what the tests run.

Copies the tracked tree to a temporary folder, installs it editable
(`pip install --no-deps -e`) into a fresh virtual environment, edits a file of
each stage there, and checks that `import cnnc` in that environment runs the
edited files (the four stages map onto `cnnc.dsl`, `cnnc.compiler`, ...
through pyproject's package-dir).

The fresh environment needs cnnc's dependencies without downloading them: it
sees the site-packages of the interpreter running the tests — which, run as
the README says, is the user's own venv, not the base interpreter that
`system_site_packages=True` would show. A `.pth` file in the new environment
adds, after its own site-packages, a mirror of each of those folders: links
to everything in it except cnnc's own files, so an installed (not editable)
cnnc there cannot shadow the editable one.
"""
from __future__ import annotations

import shutil
import site
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


def _is_cnnc(name: str) -> bool:
    """An entry of site-packages that belongs to an installed cnnc (package, metadata, editable hooks)."""
    lowered = name.lower()
    return lowered == "cnnc" or lowered.startswith(("cnnc-", "cnnc.")) or (
        lowered.startswith("__editable__") and "cnnc" in lowered)


def _mirror_of_this_site(tmp_path: Path) -> list[Path]:
    """This interpreter's site-packages folders, each mirrored as a folder of links to all but cnnc."""
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    mirrors = []
    for k, folder in enumerate(Path(f) for f in folders):
        if not folder.is_dir():
            continue
        mirror = tmp_path / f"site-{k}"
        mirror.mkdir()
        for entry in folder.iterdir():
            if not _is_cnnc(entry.name):
                (mirror / entry.name).symlink_to(entry)
        mirrors.append(mirror)
    return mirrors


def _see_this_site(python: Path, tmp_path: Path) -> None:
    """Give the environment of `python` this interpreter's packages, after its own (a .pth file)."""
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    lines = [f"import site; site.addsitedir({str(m)!r})\n" for m in _mirror_of_this_site(tmp_path)]
    (Path(purelib) / "zz-tests-parent-site.pth").write_text("".join(lines), encoding="utf-8")


@pytest.mark.slow
def test_an_edit_in_the_tree_is_what_runs(tmp_path):
    tree = tmp_path / "tree"
    for name in _tracked_files():
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _see_this_site(python, tmp_path)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(tree)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("dsl", "compiler", "runtime", "viz"):
        with open(tree / stage / "__init__.py", "a", encoding="utf-8") as f:
            f.write(f"\nEDITED_IN_THE_TREE = {stage!r}\n")
    probe = ("import cnnc, cnnc.dsl, cnnc.compiler, cnnc.runtime, cnnc.viz, cnnc.compiler.ops as ops\n"
             "import cnnc.runtime.data.pipeline as pipeline, cnnc.cli\n"
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
