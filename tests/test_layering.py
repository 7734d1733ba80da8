"""The stage order holds in the source: dsl <- compiler <- runtime, compiler <- viz, app on top.

Read statically from every module's imports (so a lazy import inside a
function counts too): a library stage never imports a later one, never the
command line, never argparse (commands live in app/), and no module reaches
into another package's private names (a `_name` is shared only inside its package).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"dsl": set(), "compiler": {"dsl"}, "runtime": {"dsl", "compiler"}, "viz": {"dsl", "compiler"}}
PACKAGE_OF = {"dsl": "dsl", "compiler": "compiler", "runtime": "runtime", "viz": "viz"}


def modules(stage: str) -> list[Path]:
    return sorted((ROOT / stage).rglob("*.py"))


def imported(path: Path, stage: str) -> list[tuple[str, list[str], int]]:
    """(absolute module within cnnc, imported names, line) for each import of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = [stage] + list(path.relative_to(ROOT / stage).parent.parts)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("cnnc."):
                mod = node.module[len("cnnc."):]
            else:
                mod = "<external>:" + (node.module or "")
            out.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                mod = a.name[len("cnnc."):] if a.name.startswith("cnnc.") else "<external>:" + a.name
                out.append((mod, [], node.lineno))
    return out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_imports_only_earlier_stages(stage):
    allowed = STAGES[stage] | {stage}
    bad = []
    for path in modules(stage):
        for mod, names, line in imported(path, stage):
            if mod.startswith("<external>:"):
                if mod == "<external>:argparse":
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports argparse (commands live in app/)")
                continue
            top = mod.split(".")[0]
            if top not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports cnnc.{mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("stage", sorted(STAGES) + ["app"])
def test_no_module_imports_another_modules_private_names(stage):
    bad = []
    for path in (modules(stage) if stage != "app" else sorted((ROOT / "app").glob("*.py"))):
        for mod, names, line in imported(path, stage if stage != "app" else "app"):
            if mod.startswith("<external>"):
                continue
            package = ".".join((stage,) + path.relative_to(ROOT / stage).parent.parts)
            same_package = stage != "app" and package in (mod, mod.rsplit(".", 1)[0])
            for name in names:
                if name.startswith("_") and not name.startswith("__") and not same_package:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} from cnnc.{mod}")
    assert not bad, "\n".join(bad)
