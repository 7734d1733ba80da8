"""Hostile source text: escaped, clipped and correctly located diagnostics; limits that stop the parser."""
from __future__ import annotations

import pytest

from cnnc.dsl.parser import MAX_INT_DIGITS, MAX_NESTING, parse, parse_file
from cnnc.dsl.source import QUOTE_WIDTH, CnncError, Diagnostic, Loc, SourceRegistry, printable

NET = "network N {{\n    input x: [1, 8, 8]\n    {body}\n}}\n"


def error_in(text: str, file: str = "hostile.cnn") -> CnncError:
    with pytest.raises(CnncError) as info:
        parse(text, file)
    return info.value


def caret_target(rendered: str) -> str:
    """The quoted text from the caret onwards (the character the caret stands under first)."""
    lines = rendered.splitlines()
    quoted, caret = lines[1], lines[2]
    return quoted[caret.index("^"):]


# ------------------------------------------------------------- terminal control
def test_control_characters_in_a_quoted_line_are_escaped_and_the_caret_stays_aligned():
    text = NET.format(body='x -> relu # \x1b]0;PWNED\x07 \x1b[2J\n    oops oops')
    err = error_in(text)
    rendered = err.render()
    assert "\x1b" not in rendered and "\x07" not in rendered
    assert err.loc.line == 4 and caret_target(rendered).startswith("oops")
    SourceRegistry.add("esc.cnn", 'x = "\x1b[2J" + y\n')
    quoted = Diagnostic("error", "bad", Loc("esc.cnn", 1, 14)).render()
    assert '"\\x1b[2J" + y' in quoted and caret_target(quoted).startswith("y")


def test_control_characters_in_messages_notes_and_hints_are_escaped():
    d = Diagnostic("error", 'got the string "\x1b]52;c;aGk=\x07"', None, "hint \x1b[2J")
    d.notes.append(__import__("cnnc.dsl.source", fromlist=["Note"]).Note("note \x9b31m", None))
    rendered = d.render(color=True)
    assert "\\x1b]52;c;aGk=\\x07" in rendered and "hint \\x1b[2J" in rendered and "note \\x9b31m" in rendered
    # the only escape sequences left are cnnc's own colours
    assert rendered.replace("\x1b[0m", "").count("\x1b[") == rendered.count("\x1b[0m")


def test_printable_keeps_ordinary_text_and_escapes_controls():
    assert printable("conv(64, 3) → é") == "conv(64, 3) → é"
    assert printable("a\tb\x0cc\x85d\u2028e\x00") == "a b\\x0cc\\x85d\\u2028e\\x00"


# ------------------------------------------------------------- long lines
def test_a_huge_line_is_quoted_clipped_around_the_column_with_the_caret_under_the_cause():
    body = "x" + " -> relu" * 5000 + " -> nosuch" + " -> relu" * 5000
    text = NET.format(body=body)
    from cnnc.compiler.driver import compile_file  # noqa: F401  (the error comes from elaboration; see below)
    SourceRegistry.add("long.cnn", text)
    col = body.index("nosuch") + 5
    rendered = Diagnostic("error", "unknown name 'nosuch'", Loc("long.cnn", 3, col, col + 6)).render()
    quoted = rendered.splitlines()[1]
    assert len(quoted) <= QUOTE_WIDTH + 10 and quoted.count("…") == 2
    assert caret_target(rendered).startswith("nosuch") and rendered.splitlines()[2].endswith("^~~~~~")
    assert len(rendered) < 400


def test_a_short_line_is_quoted_whole():
    SourceRegistry.add("short.cnn", "x -> relu\n")
    rendered = Diagnostic("error", "m", Loc("short.cnn", 1, 6)).render()
    assert rendered.splitlines()[1] == "    1 | x -> relu" and caret_target(rendered) == "relu"


# ------------------------------------------------------------- line counting
@pytest.mark.parametrize("separator", ["\x0c", "\x85", "\u2028", "\u2029", "\x1c", "\r"])
def test_only_newlines_count_as_line_breaks_when_quoting(separator):
    text = f"# one{separator}still one\n" + NET.format(body="x -> nosuch(1)")
    err = error_in(text.replace("nosuch(1)", "nosuch(1 2)"))
    assert err.loc.line == 4
    rendered = err.render()
    assert "nosuch(1 2)" in rendered.splitlines()[1]
    assert caret_target(rendered).startswith("2)")


def test_crlf_files_are_quoted_without_the_carriage_return():
    err = error_in(NET.format(body="x -> relu )").replace("\n", "\r\n"))
    assert err.loc.line == 3 and "\\r" not in err.render() and caret_target(err.render()).startswith(")")


def test_unexpected_end_of_file_points_at_the_last_line_after_a_form_feed():
    err = error_in("# a\x0cb\nnetwork N {\n    input x: [1, 8, 8]\n")
    assert "unexpected end of file" in err.message and err.loc.line == 3


# ------------------------------------------------------------- encodings
def test_a_byte_order_mark_is_skipped_and_columns_are_unchanged(tmp_path):
    path = tmp_path / "bom.cnn"
    path.write_bytes(b"\xef\xbb\xbf" + NET.format(body="x -> relu )").encode())
    with pytest.raises(CnncError) as info:
        parse_file(path)
    assert (info.value.loc.line, info.value.loc.col) == (3, 15)
    assert caret_target(info.value.render()) == ")"
    path.write_bytes(b"\xef\xbb\xbf" + NET.format(body="x -> relu").encode())
    assert parse_file(path).items[0].name == "N"


def test_a_file_that_is_not_utf8_is_refused_without_quoting_it(tmp_path):
    path = tmp_path / "latin.cnn"
    path.write_bytes(b"SECRET=hunter2 \xff\xfe\n")
    with pytest.raises(CnncError) as info:
        parse_file(path)
    assert "not a UTF-8 text file" in info.value.message and "hunter2" not in info.value.render()


def test_the_main_file_is_read_with_the_source_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.cnn"
    path.write_text(NET.format(body="x -> relu"))
    monkeypatch.setenv("CNNC_MAX_SOURCE", "20")
    with pytest.raises(CnncError, match=r"source file '.*big.cnn' is \d+ bytes, more than the limit of 20 bytes"):
        parse_file(path)


def test_a_missing_main_file_keeps_its_message(tmp_path):
    with pytest.raises(CnncError, match="missing.cnn: no such file"):
        parse_file(tmp_path / "missing.cnn")


def test_a_fifo_as_the_main_file_is_refused_without_blocking(tmp_path):
    import os
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    with pytest.raises(CnncError, match="not a regular file"):
        parse_file(fifo)


# ------------------------------------------------------------- parser limits
@pytest.mark.parametrize("value", [
    "if true { " * 1000 + "1" + " } else { 2 }" * 1000,
    "(" * 1000 + "1," + ")," * 999 + ")",
    "[" * 1000 + "1" + "]" * 1000,
    "-" * 5000 + "1",
    "not " * 3000 + "true",
    "1" + " + 1" * 5000,
    "a" + " -> b" * 2 + " * 2" * 3000,
])
def test_deep_nesting_is_a_located_error_not_a_recursion_error(value):
    err = error_in(NET.format(body=f"y = {value}"))
    assert err.message == f"this expression nests more than {MAX_NESTING} levels deep"
    assert err.loc.line == 3 and err.loc.col > 1 and "split it" in err.hint


def test_nesting_below_the_limit_parses():
    parse(NET.format(body="y = " + "if true { " * 40 + "1" + " } else { 2 }" * 40), "ok.cnn")
    parse(NET.format(body="y = " + "(" * 500 + "1" + ")" * 500), "ok.cnn")  # brackets alone add no depth


def test_an_absurdly_long_integer_literal_is_a_located_error():
    err = error_in(NET.format(body="x -> conv(" + "9" * 5000 + ", 3)"))
    assert err.message == "an integer literal of 5000 digits is too long"
    assert (err.loc.line, err.loc.col) == (3, 15) and str(MAX_INT_DIGITS) in err.hint
    assert len(err.render()) < 600


def test_parsing_stops_at_the_token_limit_with_its_location(monkeypatch):
    monkeypatch.setenv("CNNC_MAX_TOKENS", "50")
    err = error_in(NET.format(body="x" + " -> relu" * 100))
    assert err.message == "the file has more than 50 tokens" and "CNNC_MAX_TOKENS" in err.hint
    assert err.loc.line == 3 and caret_target(err.render()).startswith("->")
    monkeypatch.setenv("CNNC_MAX_TOKENS", "many")
    with pytest.raises(CnncError, match="CNNC_MAX_TOKENS='many': expected a whole number of tokens"):
        parse("network N {}\n")


def test_a_message_repeating_a_huge_name_is_clipped():
    name = "x" * 100_000
    err = error_in(NET.format(body=f"x -> relu(1 {name})"))
    rendered = err.render()
    assert len(rendered) < 1500 and all(len(line) < 600 for line in rendered.splitlines())
    assert rendered.splitlines()[0].startswith("hostile.cnn:3:17: error: unexpected 'xxx") and "…" in rendered
