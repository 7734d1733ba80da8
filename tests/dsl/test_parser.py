"""The parser: the brief's constructs become the right AST; syntax errors point at the cause."""
from __future__ import annotations

import pytest

from cnnc.dsl import ast
from cnnc.dsl.parser import parse
from cnnc.dsl.source import CnncError


def only_network(src: str) -> ast.Network:
    (item,) = [i for i in parse(src, "t.cnn").items if isinstance(i, ast.Network)]
    return item


def test_chain_over_several_lines_with_comments():
    net = only_network("""
network N {  # trailing comment
    input x: [1, 28, 28]
    x -> conv(6, 5, pad = 2)   # first
      # a comment line inside the chain
      -> relu
      -> flatten
}
""")
    decl, stmt = net.body
    assert isinstance(decl, ast.InputDecl) and [d.value for d in decl.dims] == [1, 28, 28]
    chain = stmt.expr
    assert isinstance(chain, ast.Chain)
    assert [s.id if isinstance(s, ast.Name) else s.func for s in chain.steps] == ["conv", "relu", "flatten"]
    conv = chain.steps[0]
    assert [a.value for a in conv.args] == [6, 5]
    assert conv.kwargs[0].name == "pad" and conv.kwargs[0].value.value == 2
    assert (conv.loc.line, conv.loc.col) == (4, 10)


def test_arguments_may_span_lines_and_nest_tuples():
    net = only_network("""
network N {
    input x: [1, H, W]
    x -> conv(1, (1, 7),
              pad = ((0, 0),
                     (3, 3)),
              weights = [[[[1, 2, 3, 4, 5, 6, 7]]]])
}
""")
    call = net.body[1].expr.steps[0]
    k = call.args[1]
    assert isinstance(k, ast.TupleExpr) and [i.value for i in k.items] == [1, 7]
    pad = call.kwargs[0].value
    assert isinstance(pad.items[0], ast.TupleExpr)
    assert isinstance(call.kwargs[1].value, ast.ListExpr)


def test_precedence_of_arithmetic_comparison_and_logic():
    net = only_network("network N { a = 1 + 2 * 3 // 4 - -1 == 3 or not 1 < 2 and true }")
    e = net.body[0].value
    assert e.op == "or"
    assert e.left.op == "==" and e.left.left.op == "-"
    assert e.left.left.left.right.op == "//" and e.left.left.left.right.left.op == "*"
    assert e.right.op == "and" and e.right.left.op == "not"


def test_blocks_labels_repeat_if_else_if():
    items = parse("""
block b(c, stride = 1) {
    skip = if stride != 1 { conv(c, 1, stride = stride) } else if c > 4 { in } else { identity }
    (in + skip) -> relu
}
network N(classes = 10) {
    input x: [3, 32, 32]
    x -> stem: conv(8, 3) -> b(8) * 3 -> fc: linear(classes)
    output x
}
train N { data = mnist10k(val = 0.1)
          optimizer = sgd(lr = 0.1, momentum = 0.9) }
import "other.cnn"
""", "t.cnn").items
    block, net, train, imp = items
    assert [p.name for p in block.params] == ["c", "stride"] and block.params[1].default.value == 1
    skip = block.body[0].value
    assert isinstance(skip, ast.IfExpr) and isinstance(skip.orelse[0].expr, ast.IfExpr)
    chain = net.body[1].expr
    assert isinstance(chain.steps[0], ast.Labeled) and chain.steps[0].label == "stem"
    rep = chain.steps[1]
    assert isinstance(rep, ast.BinOp) and rep.op == "*" and rep.right.value == 3
    assert isinstance(net.body[2], ast.Output)
    assert [e.key for e in train.entries] == ["data", "optimizer"]
    assert imp.path == "other.cnn"


def test_floats_strings_negative_numbers():
    net = only_network('network N { a = 1e-5\n b = .5\n c = 2.\n d = "s"\n e = -3 }')
    values = [s.value for s in net.body]
    assert values[0].value == 1e-5 and values[1].value == 0.5 and values[2].value == 2.0
    assert values[3].value == "s" and values[4].op == "-"


def syntax_error(src: str) -> CnncError:
    with pytest.raises(CnncError) as info:
        parse(src, "bad.cnn")
    return info.value


@pytest.mark.parametrize("src, line, col, message, extra", [
    # a missing closing parenthesis: located where the parser noticed, with the opener as a note
    ("network N {\n    input x: [1, 28, 28]\n    x -> conv(6, 5 -> relu\n}\n", 4, 1,
     "unexpected '}'; expected ')' or ','", "the '(' opened here is not closed"),
    ("network N {\n    input x = [1, 28, 28]\n}\n", 2, 13, "unexpected '='; expected ':'",
     "declared with a colon"),
    ("network N {\n    x -> conv(8, 3, pad = 'same')\n}\n", 2, 27, "unexpected character \"'\"",
     "double quotes"),
    ("network N {\n    input x: [1, 28, 28]\n", 2, 25, "unexpected end of file",
     "the '{' opened here is not closed"),
    ("network N {\n    input x: [1, 28, 28]\n    x -> -> relu\n}\n", 3, 10, "unexpected '->'", None),
    ("network N {\n    a = if 1 == 1 { in }\n}\n", 3, 1, "unexpected '}'; expected 'else'", "needs an `else`"),
    ("block { relu }\n", 1, 7, "unexpected '{'; expected a name", None),
    ("network N {\n    x -> conv(8 3)\n}\n", 2, 17, "unexpected '3'", "',' or ')' missing"),
])
def test_syntax_errors_point_at_their_cause(src, line, col, message, extra):
    err = syntax_error(src)
    assert (err.loc.line, err.loc.col) == (line, col), err.render()
    assert err.message.startswith(message), err.render()
    rendered = err.render()
    assert rendered.splitlines()[0].startswith(f"bad.cnn:{line}:{col}: error: ")
    # the source line is quoted with a caret under the column
    src_line = src.splitlines()[line - 1]
    assert src_line in rendered
    caret_line = rendered.splitlines()[2]
    assert caret_line.index("^") - caret_line.index("^") + len(f"{line:>5} | ") + col - 1 == caret_line.index("^")
    if extra:
        assert extra in rendered


def test_caret_sits_under_the_column():
    err = syntax_error("network N {\n    input x: [1, 28, 28]\n    x -> conv(8 3)\n}\n")
    lines = err.render().splitlines()
    gutter = len("    3 | ")
    assert lines[1] == "    3 |     x -> conv(8 3)"
    assert lines[2].index("^") == gutter + err.loc.col - 1
    assert lines[1][lines[2].index("^")] == "3"


def test_expected_tokens_are_words_not_terminal_names():
    err = syntax_error("network N {\n    input : [1]\n}\n")
    assert "expected a name" in err.message
    assert "NAME" not in err.message and "__" not in err.message
