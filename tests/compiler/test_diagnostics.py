"""Every user error: its message, its location (line, column) and its hint or notes."""
from __future__ import annotations

import pytest

NET = "network N {{\n    input x: [3, 32, 32]\n    {body}\n}}\n"


def net(body: str) -> str:
    return NET.format(body=body)


CASES = [
    # (id, program, line, col, message fragment, hint/note fragment or None)
    ("unknown-layer", net("x -> conv(8, 3) -> maxpol(2)"), 3, 24, "unknown name 'maxpol'", "did you mean 'maxpool'?"),
    ("unknown-name-in-arg", net("x -> conv(chanels, 3)"), 3, 15, "unknown name 'chanels'", None),
    ("unknown-keyword", net("x -> conv(8, 3, strid = 2)"), 3, 21, "'conv' has no argument 'strid'",
     "did you mean 'stride'?"),
    ("missing-argument", net("x -> conv(8)"), 3, 10, "'conv' needs its argument 'k'", "conv(out, k)"),
    ("too-many-positional", net("x -> relu(1)"), 3, 15, "'relu' takes at most 0 positional arguments", None),
    ("duplicate-argument", net("x -> conv(8, 3, k = 3)"), 3, 21, "argument 'k' of 'conv' is given twice", None),
    ("groups-divide", net("x -> conv(8, 3, groups = 2)"), 3, 30, "groups must divide the input channels, "
     "but 2 does not divide 3", "input [3, 32, 32] comes from input 'x'"),
    ("dropout-p", net("x -> dropout(1.5)"), 3, 18, "p must satisfy 0 <= p < 1, got 1.5", None),
    ("choice", net("x -> upsample(2, mode = bilinar)"), 3, 29, "mode must be one of nearest, bilinear",
     "did you mean 'bilinear'?"),
    ("kernel-too-big", net("x -> conv(8, 3) -> maxpool(8) -> conv(8, 5)"), 3, 46,
     "kernel of size 5 does not fit the padded input", "comes from 'maxpool'"),
    ("padding-word", net("x -> conv(8, 3, pad = sme)"), 3, 27, "pad must be an integer", "did you mean 'same'?"),
    ("pool-padding", net("x -> maxpool(2, pad = 2)"), 3, 27, "pooling padding must be at most half the kernel", None),
    ("linear-needs-flat", net("x -> linear(10)"), 3, 10, "linear needs a flat input, got [3, 32, 32]",
     "insert `flatten`"),
    ("add-mismatch", net("y = x -> conv(8, 3)\n    x + y"), 4, 7, "cannot add tensors of shapes [3, 32, 32] and "
     "[8, 30, 30]", "comes from 'conv'"),
    ("concat-mismatch", net("y = x -> maxpool(2)\n    concat(x, y)"), 4, 5, "concat joins channels", None),
    ("repeat-count", net("x -> relu * 1000000000"), 3, 17, "repeat count 1000000000 is out of range", None),
    ("tensor-too-big", "network N {\n    input x: [3, 100000, 100000]\n    x -> relu\n}\n", 2, 5,
     "a tensor of 30,000,000,000 elements per sample is too large", None),
    ("nothing-piped", net("conv(8, 3)"), 3, 5, "nothing is piped into 'conv' here", "start the chain with a tensor"),
    ("tensor-after-arrow", net("y = x -> relu\n    x -> y"), 4, 10, "'y' is a tensor, not a layer", "label it"),
    ("number-after-arrow", net("x -> 3"), 3, 10, "only a layer or a block can follow '->'", None),
    ("empty-output", "network N {\n    input x: [3, 4, 4]\n    x -> conv(1, 3) -> conv(1, 3)\n}\n", 3, 32,
     "kernel of size 3 does not fit", None),
    ("weights-shape", net("x -> conv(1, 3, weights = [[1, 2], [3, 4]])"), 3, 31,
     "weights have shape [2, 2], but this layer needs [1, 3, 3, 3]", None),
    ("bool-attr", net("x -> conv(8, 3, bias = 1)"), 3, 28, "bias must be true or false, got the integer 1", None),
    ("unpool-needs-maxpool", net("p = x -> avgpool(2)\n    p -> unpool(p)"), 4, 17,
     "unpool needs the label of a maxpool layer", "label the pooling layer"),
    ("unpool-shape", net("x -> p: maxpool(2) -> conv(8, 3, pad = 1) -> unpool(p)"), 3, 57,
     "unpool's input [8, 16, 16] must have the shape of p's output [3, 16, 16]", None),
    ("label-on-a-value", net("x -> conv(p: width, 1)"), 3, 15, "the label 'p' must name a layer or a block, "
     "not the name 'width'", "bind a value"),
    ("symbolic-condition", "network N {\n    input x: [3, H, W]\n    x -> conv(if height(x) > 8 { 4 } else { 2 }, 1)"
     "\n}\n", 3, 28, "cannot decide '>' on a size that depends on H", "--input"),
    ("in-outside-block", net("in -> relu"), 3, 5, "`in` exists only inside a block", None),
    ("no-input", "network N {\n    a = 1\n}\n", 1, 9, "network 'N' declares no input", "input x:"),
    ("label-twice", net("x -> a: conv(8, 3) -> a: relu"), 3, 27, "'a' is already defined in this scope", None),
    ("division-by-zero", net("x -> conv(8 // 0, 3)"), 3, 17, "division by zero", None),
    ("symbolic-mismatch", "network N {\n    input x: [1, H, W]\n    y = x -> maxpool(2)\n    x + y\n}\n", 4, 7,
     "shapes [1, H, W] and [1, H//2, W//2] do not line up", "--input"),
    ("block-missing-param", "block b(c) { conv(c, 1) }\n" + net("x -> b()"), 4, 10,
     "block 'b' needs its parameter 'c'", None),
    ("block-unknown-param", "block b(c) { conv(c, 1) }\n" + net("x -> b(d = 3)"), 4, 12,
     "block 'b' has no parameter 'd'", None),
    ("error-inside-block", "block b(c) {\n    conv(c, 3, groups = 2)\n}\n" + net("x -> b(8)"), 2, 25,
     "groups must divide the input channels", "in block 'b', applied here"),
    ("train-unknown-key", net("x -> relu") + "train N {\n    epocs = 3\n}\n", 6, 13, "unknown train key 'epocs'",
     "did you mean 'epochs'?"),
    ("train-unknown-optimizer", net("x -> relu") + "train N {\n    optimizer = adamm(lr = 0.1)\n}\n", 6, 17,
     "unknown optimizer 'adamm'", "did you mean 'adam'?"),
    ("train-bad-option", net("x -> relu") + "train N {\n    optimizer = sgd(lr = 0.1, momentun = 0.9)\n}\n", 6, 17,
     "optimizer 'sgd' has no option 'momentun'", "did you mean 'momentum'?"),
    ("train-epochs", net("x -> relu") + "train N {\n    epochs = 0\n}\n", 6, 14, "epochs must be a positive integer",
     None),
    ("train-twice", net("x -> relu") + "train N {\n    seed = 1\n    seed = 2\n}\n", 7, 5,
     "train key 'seed' is given twice", "first given here"),
    ("dup-block", "block b(c) { relu }\nblock b(c) { relu }\n" + net("x -> b(1)"), 2, 7,
     "block 'b' is defined twice", "first defined here"),
]


@pytest.mark.parametrize("program, line, col, message, extra", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_message_and_location(error_of, program, line, col, message, extra):
    err = error_of(program)
    rendered = err.render()
    assert message in err.message, rendered
    assert (err.loc.line, err.loc.col) == (line, col), rendered
    assert rendered.startswith(f"{err.loc.file}:{line}:{col}: error: ")
    assert program.splitlines()[line - 1] in rendered  # the source line is quoted
    if extra:
        assert extra in rendered, rendered


def test_recursion_without_end_is_reported_with_the_call_chain(error_of):
    err = error_of("block r(n) { conv(4, 3, pad = 1) -> r(n) }\nnetwork N {\n    input x: [3, 8, 8]\n    x -> r(1)\n}\n")
    assert "nested more than 200 deep" in err.message
    notes = [n.message for n in err.diagnostic.notes]
    assert notes[0] == "in block 'r', applied here (×199)" and notes[-1] == "in block 'r', applied here"
    assert err.diagnostic.notes[-1].loc.line == 4


def test_missing_import_points_at_the_import(error_of):
    err = error_of('import "nowhere.cnn"\n' + net("x -> relu"))
    assert (err.loc.line, err.loc.col) == (1, 1) and 'cannot import "' in err.message
    assert "relative to the importing file" in err.hint
