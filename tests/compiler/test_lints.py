"""The warning names: declared once (compiler/lints.py), documented, checked on --allow."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cnnc.cli import main
from cnnc.compiler.lints import LINTS, check_allowed, warning
from cnnc.dsl.source import CnncError

ROOT = Path(__file__).resolve().parents[2]


def test_docs_list_exactly_the_declared_lints():
    text = (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `([a-z-]+)` \|", text.split("## Lints", 1)[1], re.M)
    assert table == list(LINTS)


def test_every_warning_the_compiler_gives_names_a_declared_lint():
    used = set()
    for path in (ROOT / "compiler").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "warning", "warn") and node.args and isinstance(node.args[0], ast.Constant):
                used.add(node.args[0].value)
    assert used and used <= set(LINTS), used - set(LINTS)
    assert set(LINTS) - used == set(), f"declared but never given: {set(LINTS) - used}"


def test_an_undeclared_lint_cannot_be_made():
    with pytest.raises(KeyError):
        warning("made-up", "x", None)


def test_allow_refuses_a_name_no_warning_has(capsys):
    code = main(["check", str(ROOT / "examples" / "lenet5.cnn"), "--allow", "saturating-activation"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cnnc: error: --allow saturating-activation: no warning has that name" in err
    assert "did you mean 'saturating-activations'?" in err
    with pytest.raises(CnncError, match="the names: field-exceeds-input"):
        check_allowed({"zzz"})


def test_allow_silences_the_named_warning_only(capsys):
    lenet = str(ROOT / "examples" / "lenet5.cnn")
    assert main(["check", lenet]) == 0
    assert "[saturating-activations]" in capsys.readouterr().err
    assert main(["check", lenet, "--allow", "saturating-activations"]) == 0
    assert "[saturating-activations]" not in capsys.readouterr().err
    assert main(["check", lenet, "--allow", "all"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_field_somewhat_larger_than_the_input_is_normal_and_far_larger_warns(write, capsys):
    """ResNet-50's field reaches 427 at 224 (1.9x), as torchvision users expect: no warning. Past four
    times the input it warns, once, where the field crosses that size."""
    assert main(["check", str(ROOT / "examples" / "resnet50.cnn")]) == 0
    assert "field-exceeds-input" not in capsys.readouterr().err
    deep = write("# nine 3x3 convs on 4x4: the field grows by 2 a layer\nnetwork Deep {\n    input x: [1, 4, 4]\n"
                 "    x -> conv(2, 3, pad = 1) * 9 -> flatten -> linear(2)\n}\n")
    assert main(["check", str(deep)]) == 0
    err = capsys.readouterr().err
    assert err.count("[field-exceeds-input]") == 1
    assert "receptive field 17x17 is more than 4 times the input 4x4 from here on" in err
