"""Random and mutated programs: only the project's user-error type escapes, quickly."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS = [p.read_text() for p in sorted(EXAMPLES.glob("*.cnn"))[:12]]
TOKENS = ["->", "(", ")", "[", "]", "{", "}", ",", "=", ":", "*", "+", "//", "-", "x", "in", "conv", "relu",
          "maxpool(2)", "0", "1", "3", "1000000", "-1", "H", "same", "if", "else", "block", "network", "\n",
          "input x: [1, 8, 8]", "concat(", "channels(in)", "true", "1e309", '"', "#", "unpool(x)", "* 100000"]
# Hostile text (issue 9): terminal control, odd line breaks, a BOM, absurd literals and nesting, bad imports.
# Hostile text (issue 9): terminal escapes, a BOM, odd line breaks, NUL, deep nesting, huge literals.
HOSTILE = ["\x1b[2J", "\x1b]0;title\x07", "\x9b", "\x0c", "\v", "\x85", "\u2028", "\ufeff", "\r", "\x00",
           "9" * 40, "9" * 5000, "1e400", "(" * 300, ")" * 300, "-" * 300, "if true { " * 90,
           "if true { relu } else {", "not " * 300, 'import "/dev/zero"\n', 'import "a\x00.cnn"\n', '"\x1b[31m"',
           "# \x1b]52;c;aGk=\x07\n", "x" * 500]
TOKENS += HOSTILE


def compile_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.cnn"
    path.write_text(text, encoding="utf-8")
    try:
        compile_file(path)
    except CnncError as err:
        rendered = err.render()  # rendering a diagnostic must not fail either …
        assert all(line.isprintable() for line in rendered.splitlines()), rendered  # … nor echo control bytes
        assert all(len(line) < 1000 for line in rendered.splitlines())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_examples_raise_only_user_errors(tmp_path, seed, data):
    lines = seed.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        action = data.draw(st.sampled_from(["delete", "duplicate", "insert", "cut"]))
        if not lines:
            break
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "insert":
            col = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:col] + data.draw(st.sampled_from(TOKENS)) + lines[i][col:]
        else:
            col = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:col]
    compile_text(tmp_path, "\n".join(lines))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_raises_only_user_errors(tmp_path, tokens):
    compile_text(tmp_path, "network N {\n input x: [1, 8, 8]\n " + " ".join(tokens) + "\n}\n")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_user_errors(tmp_path, text):
    compile_text(tmp_path, text)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(HOSTILE)), min_size=1,
                                        max_size=4))
def test_hostile_text_spliced_into_examples_raises_only_clean_user_errors(tmp_path, seed, splices):
    text = seed
    for position, piece in splices:
        i = position % (len(text) + 1)
        text = text[:i] + piece + text[i:]
    compile_text(tmp_path, text)


@pytest.mark.parametrize("body", [
    "x -> conv(4, 3, pad = 1) * 1000000000",
    "x -> many * 10000\n}\nblock many() {\n    relu * 10000",
    "x -> linear(1000000000)",
    "x -> conv(1000000, 1) -> conv(1000000, 1)",
])
def test_absurd_programs_fail_fast(tmp_path, body):
    path = tmp_path / "absurd.cnn"
    path.write_text(f"network N {{\n    input x: [1, 8, 8]\n    {body}\n}}\n")
    start = time.perf_counter()
    with pytest.raises(CnncError):
        compile_file(path)
    assert time.perf_counter() - start < 60  # a guard against hangs, not a speed test (see bench/)


def test_absurd_but_valid_large_program_is_fine(tmp_path):
    path = tmp_path / "deep.cnn"
    path.write_text("network N {\n    input x: [1, 8, 8]\n    x -> relu * 5000\n}\n")
    assert len(compile_file(path).net.layers()) == 5000
