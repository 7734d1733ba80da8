"""The stage order holds in the source: dsl <- compiler <- runtime, compiler <- viz, app on top.

Read statically from every module's imports (so a lazy import inside a
function counts too): a library stage never imports a later one, never the
command line, never argparse (commands live in app/), and no module reaches
into another package's private names (a `_name` is shared only inside its package).
Inside the runtime, each part (docs/internals.md "Where things live") imports
only the parts below it, and no module of any stage imports itself back
round a circle of imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"dsl": set(), "compiler": {"dsl"}, "runtime": {"dsl", "compiler"}, "viz": {"dsl", "compiler"}}
PACKAGE_OF = {"dsl": "dsl", "compiler": "compiler", "runtime": "runtime", "viz": "viz"}

# The runtime's parts, bottom up: each is some modules (a folder ends in "/") and may import
# itself and what its row names (a part, or one module of a part).
RUNTIME_PARTS = {
    "kernels": ("kernels/",),
    "processes": ("processes.py",),
    "checkpoint": ("checkpoint.py",),
    "preprocess": ("preprocess.py",),
    "progress": ("progress.py",),
    "execution": ("plan.py", "fused.py", "memory_plan.py"),
    "data": ("data/",),
    "export": ("export/",),
    "train": ("train/",),
    "use": ("predict.py", "apply.py"),
    "select": ("select/",),
    "importer": ("importer/",),
    "face": ("__init__.py",),
}
EXECUTION = {"kernels", "execution"}
MAY_IMPORT = {
    "kernels": set(),
    "processes": set(),
    "checkpoint": set(),
    "preprocess": set(),
    "progress": set(),
    "execution": {"kernels", "checkpoint"},
    "data": {"preprocess", "progress"},
    "export": EXECUTION | {"checkpoint", "preprocess"},
    "train": EXECUTION | {"checkpoint", "preprocess", "progress", "data", "export", "processes"},
    # predict checks a data set's labels against the network's loss: the loss says which targets it takes
    "use": EXECUTION | {"checkpoint", "preprocess", "data", "train/losses.py"},
    "select": EXECUTION | {"checkpoint", "preprocess", "progress", "data", "export", "train", "use", "processes"},
    # reads ONNX, writes .cnn text and a checkpoint: the compiler checks the text, the contract the weights
    "importer": {"checkpoint"},
    "face": set(),
}


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


def module_file(mod: str) -> Path | None:
    """The file of a module given within cnnc ("runtime.data.splits"), or None if it is none of ours.
    The command line is the top package itself: `cnnc.cli` is app/cli.py, `app.runtime` is runtime/."""
    parts = mod.split(".")
    if parts[0] == "app" and parts[1:2] and parts[1] in STAGES:
        parts = parts[1:]
    elif parts[0] not in STAGES and parts[0] != "app":
        parts = ["app", *parts]
    base = ROOT / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path, stage: str) -> list[tuple[Path, int]]:
    """The files of this tree that `path` imports, with the line: `from pkg import mod` names mod's file."""
    out = []
    for mod, names, line in imported(path, stage):
        if mod.startswith("<external>"):
            continue
        targets = [module_file(f"{mod}.{name}") for name in names] if names else []
        submodules = [t for t in targets if t is not None]
        for target in submodules or [module_file(mod)]:
            if target is not None:
                out.append((target, line))
    return out


def runtime_part(path: Path) -> str:
    rel = path.relative_to(ROOT / "runtime").as_posix()
    for part, members in RUNTIME_PARTS.items():
        if any(rel == m or (m.endswith("/") and rel.startswith(m)) for m in members):
            return part
    raise AssertionError(f"runtime/{rel} belongs to no part of RUNTIME_PARTS (add it where it lives)")


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


def test_every_runtime_module_belongs_to_a_part():
    for path in modules("runtime"):
        runtime_part(path)
    assert set(MAY_IMPORT) == set(RUNTIME_PARTS)


def test_a_runtime_part_imports_only_the_parts_below_it():
    bad = []
    for path in modules("runtime"):
        part = runtime_part(path)
        allowed = MAY_IMPORT[part] | {part}
        for target, line in imported_files(path, "runtime"):
            if not target.is_relative_to(ROOT / "runtime"):
                continue
            rel = target.relative_to(ROOT / "runtime").as_posix()
            if runtime_part(target) not in allowed and rel not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({part}) imports runtime/{rel} "
                           f"({runtime_part(target)})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["data", "export", "select", "train", "importer"])
def test_a_runtime_sub_package_says_what_it_holds_and_hands_on_nothing(package):
    """Its __init__ is a docstring alone (what it holds, what it may import): callers import the real module."""
    tree = ast.parse((ROOT / "runtime" / package / "__init__.py").read_text(encoding="utf-8"))
    assert len(tree.body) == 1 and ast.get_docstring(tree), f"runtime/{package}/__init__.py holds more than its docstring"
    assert "may import" in ast.get_docstring(tree)


# The two contracts (the checkpoint file, the preprocessing records) are plain data: of cnnc they read
# only the dsl stage's files and diagnostics, never the compiler.
CONTRACTS = {"checkpoint.py", "preprocess.py"}


def test_the_contracts_import_only_the_dsl_stage():
    bad = [f"runtime/{name}:{line} imports cnnc.{mod}"
           for name in sorted(CONTRACTS) for mod, _, line in imported(ROOT / "runtime" / name, "runtime")
           if not mod.startswith("<external>") and mod.split(".")[0] != "dsl"]
    assert not bad, "\n".join(bad)


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for stage in [*STAGES, "app"]:
        for path in modules(stage) if stage != "app" else sorted((ROOT / "app").glob("*.py")):
            graph.add_node(path)
            for target, line in imported_files(path, stage if stage != "app" else "app"):
                if target != path:
                    graph.add_edge(path, target, line=line)
    return graph


def test_no_module_imports_itself_round_a_circle():
    graph = import_graph()
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    shown = []
    for circle in circles:
        ties = [f"  {a.relative_to(ROOT)}:{graph.edges[a, b]['line']} imports {b.relative_to(ROOT)}"
                for a, b in graph.subgraph(circle).edges]
        shown.append("circle of " + ", ".join(str(p.relative_to(ROOT)) for p in circle) + ":\n" + "\n".join(ties))
    assert not circles, "\n".join(shown)


def test_the_graph_reads_lazy_and_package_imports():
    """The graph this file checks sees an import inside a function and `from package import module`."""
    graph = import_graph()
    engines = ROOT / "runtime" / "train" / "engines.py"
    assert graph.has_edge(engines, ROOT / "runtime" / "train" / "numpy_engine.py")   # inside make_engine
    assert graph.has_edge(ROOT / "runtime" / "predict.py", ROOT / "runtime" / "checkpoint.py")  # from . import


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
