"""Stage 1 (dsl): parse `.cnn` text into the AST of `dsl.ast`.

Lark's LALR parser runs on `cnn.lark` with positions propagated; a small
post-lexer makes new lines significant only where a statement can end. Syntax
errors become `CnncError`s that point at the offending token and say, in
words, what was expected there.

Source text is untrusted: it is read through the one bounded reader
(`read_source`, at most CNNC_MAX_SOURCE bytes, regular files only, UTF-8 with
an optional byte-order mark), and parsing stops with a located error at the
first token past the `tokens` limit (dsl/files.py LIMITS), at a tree nested deeper than `MAX_NESTING`
(lark's transformer recurses on it) and at an absurdly long integer literal,
so no input makes the parser slow, deep or exit with an internal error.
"""
from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast, files
from .source import CnncError, Loc, SourceRegistry

MAX_NESTING = 256            # levels of the syntax tree; a 60-deep `if` or a 250-term sum is near it
MAX_INT_DIGITS = 30          # an integer literal longer than this is a mistake (sizes stop at 2**62)

# A new line is no statement end after these tokens (the expression goes on) …
_CONTINUES_AFTER = {"ARROW", "PLUS", "MINUS", "MUL_OP", "POW", "COMP_OP", "COMMA", "EQUAL", "COLON",
                    "LPAR", "LSQB", "LBRACE", "OR", "AND", "NOT", "IF", "ELSE", "_NL"}
# … nor before these (the next line continues the statement).
_CONTINUES_BEFORE = {"ARROW", "RBRACE", "ELSE", "RPAR", "RSQB"}


class _NewlinePostLexer:
    """Drops `_NL` tokens that cannot end a statement (see the grammar header)."""

    always_accept = ("_NL",)

    def __init__(self):
        self.file = "<input>"  # set by `parse` before each run, for the location of a limit error
        self.max_tokens = files.LIMITS["tokens"][0]

    def process(self, stream):
        depth = 0
        previous = None
        pending = None
        for count, tok in enumerate(stream):
            if count >= self.max_tokens:
                # Stop while parsing: a 10 MB chain would otherwise take minutes before any limit.
                raise CnncError(f"the file has more than {self.max_tokens:,} tokens", _loc(self.file, tok),
                                "a network this large is a mistake (set CNNC_MAX_TOKENS to raise the limit)")
            if tok.type == "_NL":
                if depth == 0 and (previous is None or previous.type not in _CONTINUES_AFTER):
                    pending = pending or tok
                continue
            if pending is not None:
                if tok.type not in _CONTINUES_BEFORE:
                    yield pending
                pending = None
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            previous = tok
            yield tok
        if pending is not None:
            yield pending


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("cnnc.dsl").joinpath("cnn.lark").read_text(encoding="utf-8")
    # The post-lexer looks one token ahead, so the lexer must not depend on the
    # parser state: a basic (not contextual) lexer.
    return Lark(grammar, parser="lalr", lexer="basic", postlex=_NewlinePostLexer(), propagate_positions=True,
                maybe_placeholders=False)


def _check_nesting(tree: Tree, file: str) -> None:
    """Refuse a tree deeper than MAX_NESTING, at its first too-deep node (walked without recursion)."""
    stack = [(tree, 1, tree)]
    while stack:
        node, depth, located = stack.pop()
        if not node.meta.empty:
            located = node
        if depth > MAX_NESTING:
            raise CnncError(f"this expression nests more than {MAX_NESTING} levels deep", _loc(file, located.meta),
                            "split it into named parts or blocks")
        stack.extend((child, depth + 1, located) for child in node.children if isinstance(child, Tree))


def _loc(file: str, meta_or_token) -> Loc:
    line = getattr(meta_or_token, "line", None) or 1
    col = getattr(meta_or_token, "column", None) or 1
    end_line = getattr(meta_or_token, "end_line", None)
    end_col = getattr(meta_or_token, "end_column", None)
    return Loc(file, line, col, end_col if end_line == line else None)


class _ToAst(Transformer):
    """Lark tree -> dsl.ast, attaching a Loc to every node."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _l(self, meta) -> Loc:
        return _loc(self.file, meta)

    # --- top level
    @v_args(meta=True)
    def start(self, meta, items):
        return tuple(items)

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        return ast.Import(children[0][1:-1], self._l(meta))

    def _split_def(self, children):
        name = children[0]
        params = children[1] if len(children) == 3 else ()
        return name, params, children[-1]

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, params, body = self._split_def(children)
        return ast.Block(str(name), params, body, _loc(self.file, name))

    @v_args(meta=True)
    def func_def(self, meta, children):
        name, params, body = children
        if not isinstance(body, tuple):  # `def f(x) = expr`: one statement, its value
            body = (ast.ExprStmt(body.loc, body),)
        return ast.Function(str(name), params, body, _loc(self.file, name))

    @v_args(meta=True)
    def network_def(self, meta, children):
        name, params, body = self._split_def(children)
        return ast.Network(str(name), params, body, _loc(self.file, name))

    @v_args(meta=True)
    def train_def(self, meta, children):
        return ast.Train(str(children[0]), tuple(children[1:]), _loc(self.file, children[0]))

    @v_args(meta=True)
    def train_entry(self, meta, children):
        return ast.TrainEntry(str(children[0]), children[1], _loc(self.file, children[0]))

    def param_list(self, children):
        return tuple(children)

    @v_args(meta=True)
    def param(self, meta, children):
        return ast.Param(str(children[0]), children[1] if len(children) > 1 else None,
                         _loc(self.file, children[0]))

    def body(self, children):
        return tuple(children)

    # --- statements
    @v_args(meta=True)
    def input_decl(self, meta, children):
        return ast.InputDecl(self._l(meta), str(children[0]), tuple(children[1:]))

    @v_args(meta=True)
    def output_stmt(self, meta, children):
        return ast.Output(self._l(meta), tuple(children))

    @v_args(meta=True)
    def assign(self, meta, children):
        return ast.Assign(_loc(self.file, children[0]), str(children[0]), children[1])

    @v_args(meta=True)
    def tuple_assign(self, meta, children):
        return ast.TupleAssign(_loc(self.file, children[0]), tuple(str(c) for c in children[:-1]), children[-1])

    @v_args(meta=True)
    def expr_stmt(self, meta, children):
        return ast.ExprStmt(self._l(meta), children[0])

    # --- expressions
    @v_args(meta=True)
    def if_expr(self, meta, children):
        cond, then, orelse = children
        if isinstance(orelse, ast.IfExpr):
            orelse = (ast.ExprStmt(orelse.loc, orelse),)
        return ast.IfExpr(self._l(meta), cond, then, orelse)

    @v_args(meta=True)
    def chain(self, meta, children):
        parts = [c for c in children if not (isinstance(c, Token) and c.type == "ARROW")]
        return ast.Chain(parts[0].loc, parts[0], tuple(parts[1:]))

    @v_args(meta=True)
    def label(self, meta, children):
        return ast.Labeled(_loc(self.file, children[0]), str(children[0]), children[1])

    @v_args(meta=True)
    def or_op(self, meta, children):
        return ast.BinOp(self._l(meta), "or", children[0], children[1])

    @v_args(meta=True)
    def and_op(self, meta, children):
        return ast.BinOp(self._l(meta), "and", children[0], children[1])

    @v_args(meta=True)
    def not_op(self, meta, children):
        return ast.UnaryOp(self._l(meta), "not", children[0])

    @v_args(meta=True)
    def compare(self, meta, children):
        left, op, right = children
        return ast.BinOp(_loc(self.file, op), str(op), left, right)

    binop = compare

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.UnaryOp(self._l(meta), "-", children[1])

    @v_args(meta=True)
    def int_lit(self, meta, children):
        digits = str(children[0])
        if len(digits) > MAX_INT_DIGITS:  # Python refuses to convert past 4300 digits anyway
            raise CnncError(f"an integer literal of {len(digits)} digits is too long", self._l(meta),
                            f"integers have at most {MAX_INT_DIGITS} digits here")
        return ast.Int(self._l(meta), int(digits))

    @v_args(meta=True)
    def float_lit(self, meta, children):
        return ast.Float(self._l(meta), float(children[0]))

    @v_args(meta=True)
    def string_lit(self, meta, children):
        return ast.Str(self._l(meta), str(children[0])[1:-1])

    @v_args(meta=True)
    def true_lit(self, meta, children):
        return ast.Bool(self._l(meta), True)

    @v_args(meta=True)
    def false_lit(self, meta, children):
        return ast.Bool(self._l(meta), False)

    @v_args(meta=True)
    def name(self, meta, children):
        return ast.Name(_loc(self.file, children[0]), str(children[0]))

    @v_args(meta=True)
    def call(self, meta, children):
        func = children[0]
        args, kwargs = [], []
        for a in (children[1] if len(children) > 1 else ()):
            (kwargs if isinstance(a, ast.Keyword) else args).append(a)
        return ast.Call(self._l(meta), str(func), tuple(args), tuple(kwargs), _loc(self.file, func))

    def arg_list(self, children):
        return children

    @v_args(meta=True)
    def kwarg(self, meta, children):
        return ast.Keyword(str(children[0]), children[1], _loc(self.file, children[0]))

    @v_args(meta=True)
    def empty_tuple(self, meta, children):
        return ast.TupleExpr(self._l(meta), ())

    @v_args(meta=True)
    def tuple_lit(self, meta, children):
        return ast.TupleExpr(self._l(meta), tuple(children))

    @v_args(meta=True)
    def list_lit(self, meta, children):
        return ast.ListExpr(self._l(meta), tuple(children))

    @v_args(meta=True)
    def subscript(self, meta, children):
        value, start, stop = children
        return ast.Subscript(self._l(meta), value, start, stop)

    def slice_bound(self, children):
        return children[0] if children else None


# Terminal names in words, for "expected …" messages.
_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "ARROW": "'->'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'",
    "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'", "MUL_OP": "an operator", "POW": "'**'",
    "COMP_OP": "a comparison",
    "$END": "the end of the file",
}


def _describe(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
        if pattern.type == "str":
            return f"'{pattern.value}'"
    except KeyError:
        pass
    return terminal.lower()


def _expected_words(expected) -> str:
    words = sorted({_describe(t) for t in expected if not t.startswith("__")})
    if len(words) > 6:
        words = words[:6] + ["…"]
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1] if words else "something else"


def _token_text(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'"


def _syntax_error(err: UnexpectedInput, file: str, text: str) -> CnncError:
    line, col = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        hint = "strings use double quotes" if ch == "'" else None
        return CnncError(f"unexpected character {ch!r}", Loc(file, line, col), hint)
    if isinstance(err, UnexpectedEOF):
        lines = _lines(text) or [""]
        return CnncError(f"unexpected end of file; expected {_expected_words(err.expected)}",
                         Loc(file, len(lines), len(lines[-1]) + 1),
                         "is a '}' or ')' missing?")
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    if tok.type in ("_NL", "$END") or tok.line is None:
        # Point just after the last real character: where the user stopped typing.
        line = getattr(tok, "line", None) or line
        lines = _lines(text)
        line = min(line, len(lines)) if lines else 1
        while line > 1 and not lines[line - 1].split("#")[0].strip():
            line -= 1
        col = len(lines[line - 1].split("#")[0].rstrip()) + 1 if lines else 1
    else:
        line, col = tok.line, tok.column
    expected = set(err.expected)
    hint = _hint_for(tok, expected) or _line_start_hint(tok, text)
    end = col + len(str(tok)) if tok.type not in ("_NL", "$END") else None
    out = CnncError(f"unexpected {_token_text(tok)}; expected {_expected_words(expected)}",
                    Loc(file, line, col, end), hint)
    if tok.type == "$END":
        out.diagnostic.hint = "is a closing '}', ')' or ']' missing?"
    opened = _unclosed_bracket(text, getattr(tok, "start_pos", None), braces=tok.type == "$END")
    if opened is not None and ({"RPAR", "RSQB", "RBRACE"} & expected or tok.type == "$END"):
        out.add_note(f"the '{opened[2]}' opened here is not closed", Loc(file, opened[0], opened[1]))
    return out


def _unclosed_bracket(text: str, upto: int | None, braces: bool = False) -> tuple[int, int, str] | None:
    """(line, col, char) of the innermost bracket still open at offset `upto`."""
    if upto is None:
        upto = len(text)
    stack: list[tuple[int, int, str]] = []
    line, col, in_comment, in_string = 1, 1, False, False
    for ch in text[:upto]:
        if ch == "\n":
            in_comment, in_string = False, False
            line, col = line + 1, 1
            continue
        if not in_comment and ch == '"':
            in_string = not in_string
        elif not in_string and ch == "#":
            in_comment = True
        elif not (in_comment or in_string):
            if ch in ("([{" if braces else "(["):
                stack.append((line, col, ch))
            elif ch in (")]}" if braces else ")]") and stack:
                stack.pop()
        col += 1
    return stack[-1] if stack else None


def _lines(text: str) -> list[str]:
    """The lines of `text` as the lexer counts them (by "\\n" only), like `str.splitlines` otherwise."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and not lines[-1] else lines


def _hint_for(tok: Token, expected: set[str]) -> str | None:
    if tok.type == "EQUAL" and "COLON" in expected:
        return "an input is declared with a colon: `input x: [3, 224, 224]`"
    if "RPAR" in expected and tok.type in ("_NL", "NAME", "INT"):
        return "is a ',' or ')' missing?"
    if tok.type == "RBRACE" and "ELSE" in expected:
        return "an `if` used as a value needs an `else` branch"
    if tok.type == "_NL" and "ELSE" in expected:
        return "an `if` used as a value needs an `else` branch"
    return None


# Tokens that join two operands: a line that starts with one continues nothing (a new line ended the
# statement before it), which Python's habit of open lines makes an easy slip.
_BINARY = {"PLUS": "+", "MUL_OP": None, "POW": "**", "COMP_OP": None, "OR": "or", "AND": "and"}


def _line_start_hint(tok: Token, text: str) -> str | None:
    """The hint for a binary operator that starts a line: say where the statement ended and how to go on."""
    if tok.type not in _BINARY or tok.line is None:
        return None
    lines = _lines(text)
    if tok.line > len(lines) or lines[tok.line - 1][:tok.column - 1].strip():
        return None
    op = _BINARY[tok.type] or str(tok)
    return (f"a new line ended the statement before this '{op}': end the previous line with '{op}' "
            f"(a line ending in an operator goes on) or put the whole expression in parentheses")


def parse(text: str, file: str = "<input>") -> ast.Program:
    """Parse one `.cnn` source text. Raises CnncError on a syntax error or a limit reached."""
    text = text.removeprefix("\ufeff")  # a byte-order mark: columns count from after it
    SourceRegistry.add(file, text)
    lark = _parser()
    postlex = lark.options.postlex
    postlex.file, postlex.max_tokens = file, files.limit("tokens")
    try:
        tree = lark.parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, file, text) from None
    _check_nesting(tree, file)
    try:
        items = _ToAst(file).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, CnncError):
            raise err.orig_exc from None
        raise
    except RecursionError:  # only when called with little stack left: MAX_NESTING fits the default limit
        raise CnncError("the program nests too deeply to parse here", _loc(file, tree.meta),
                        "split deep expressions into named parts or blocks") from None
    return ast.Program(file, items)


def read_source(path: str | Path, what: str = "source file") -> str:
    """The text of a `.cnn` file: a regular file of at most CNNC_MAX_SOURCE bytes, in UTF-8.

    The content is never quoted in an error (the file may be anything, e.g. a
    secret): only its name, escaped.
    """
    shown = files.describe_path(path)
    if "\x00" not in str(path) and not os.path.lexists(path):
        raise CnncError(f"{shown}: no such file")
    data = files.read_bytes(path, what, files.limit("source"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CnncError(f"{shown}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None


def parse_file(path: str | Path) -> ast.Program:
    return parse(read_source(path), str(path))
