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
    ("network-param-unset", "network N(width) {\n    input x: [3, 32, 32]\n    x -> conv(width, 3)\n}\n", 1, 11,
     "network 'N' needs a value for its parameter 'width'", "--set width=VALUE"),
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


SYM = "network N {{\n    input x: [3, H, W]\n    {body}\n}}\n"
FN = "def f(n) = n\n"

# Numeric functions, tensor-number arithmetic, max of tensors, `* 0` and resizing (issue 11, part A).
LANGUAGE_CASES = [
    ("def-recursion", "def f(n) = if n <= 0 { 1 } else { f(n - 1) }\n" + net("x -> conv(f(2), 1)"), 1, 35,
     "numeric function 'f' calls itself (f -> f)", "cannot recurse"),
    ("def-mutual-recursion", "def f(n) = g(n)\ndef g(n) = f(n) + 1\n" + net("x -> conv(f(2), 1)"), 2, 12,
     "numeric function 'f' calls itself (f -> g -> f)", "in function 'g', called here"),
    ("float-size", "network N(wm = 1.25) {\n    input x: [3, 32, 32]\n    x -> conv(32 * wm, 3)\n}\n", 3, 18,
     "out must be an integer, got the number 40.0", "int(…), round(…), ceil(…) or floor(…)"),
    ("float-repeat", net("x -> relu * (3 / 2)"), 3, 20, "a repeat count must be an integer, got the number 1.5",
     "int(…), round(…)"),
    ("negative-repeat", net("x -> relu * (0 - 1)"), 3, 20, "repeat count -1 is out of range (0 to 10000)",
     "`* 0` passes the tensor on unchanged"),
    ("upsample-zero-size", net("x -> upsample(size = (0, 4))"), 3, 26, "size must be at least 1, got 0", None),
    ("upsample-scale-and-size", net("x -> upsample(2, size = (4, 4))"), 3, 29,
     "upsample: give one of scale, size and like, not scale and size", "keep the one"),
    ("upsample-scale-and-like", net("y = x -> maxpool(2)\n    y -> upsample(2, like = x)"), 4, 29,
     "give one of scale, size and like, not scale and like", None),
    ("upsample-corners-nearest", net("x -> upsample(size = (4, 4), align_corners = true)"), 3, 50,
     "align_corners applies to mode = bilinear only", "write mode = bilinear"),
    ("upsample-symbolic-size", SYM.format(body="x -> upsample(size = (height(x) * 2, 5))"), 3, 26,
     "size must be a known integer, but it depends on H", "upsample(like = t)"),
    ("upsample-like-flat", net("f = x -> flatten\n    x -> upsample(like = f)"), 4, 26,
     "like must be a [C, H, W] tensor, got [3072]", None),
    ("tensor-floordiv", net("x // 2"), 3, 7, "tensors support '+', '-', '*' and '/', not '//'", None),
    ("number-over-tensor", net("1 / x"), 3, 7, "'/' divides a tensor by a number, not a number by a tensor", None),
    ("tensor-over-tensor", net("x / x"), 3, 7, "'/' divides a tensor by a number, not by a tensor", None),
    ("tensor-over-zero", net("x / 0"), 3, 9, "division by zero", None),
    ("tensor-plus-symbolic", SYM.format(body="x + height(x)"), 3, 9,
     "a number combined with a tensor must be known, but it depends on H", "--input"),
    ("tensor-plus-unknown", net("x + fo"), 3, 9, "unknown name 'fo'", None),
    ("max-tensor-and-number", net("max(x, 1)"), 3, 12, "max takes tensors or numbers, not both",
     "max(x, 0) of a tensor is `x -> relu`"),
    ("def-after-arrow", FN + net("x -> f(2)"), 4, 10, "'f' is a numeric function: it cannot follow '->'",
     "use its value as an argument"),
    ("def-applies-layer", "def f(n) { conv(n, 1) }\n" + net("x -> conv(f(2), 1)"), 1, 12,
     "numeric function 'f' cannot apply 'conv'", "build layers in a block"),
    ("def-gives-a-string", 'def f(n) { "s" }\n' + net("x -> conv(f(2), 1)"), 1, 12,
     "function 'f' must give a number", None),
    ("def-takes-a-tensor", FN + net("x -> conv(f(x), 1)"), 4, 17, "function 'f' takes numbers, got a tensor",
     "channels(t)"),
    ("def-too-many-arguments", FN + net("x -> conv(f(1, 2), 1)"), 4, 20, "function 'f' takes 1 arguments, got 2",
     None),
    ("def-unknown-keyword", FN + net("x -> conv(f(m = 1), 1)"), 4, 17, "function 'f' has no parameter 'm'",
     "its parameters: n"),
    ("def-missing-argument", FN + net("x -> conv(f(), 1)"), 4, 15, "function 'f' needs its parameter 'n'", None),
    ("def-and-block-share-a-name", "block f(c) { relu }\n" + FN + net("x -> relu"), 2, 5, "'f' is already a block",
     "defined here"),
    ("round-of-a-tensor", net("x -> conv(round(x), 1)"), 3, 21, "expected a number, got a tensor", None),
    ("round-two-arguments", net("x -> conv(round(1.5, 2), 1)"), 3, 15, "'round' takes one number, got 2", None),
    ("int-of-infinity", net("x -> conv(int(1e400), 1)"), 3, 19, "'int' needs a finite number", None),
]


@pytest.mark.parametrize("program, line, col, message, extra", [c[1:] for c in LANGUAGE_CASES],
                         ids=[c[0] for c in LANGUAGE_CASES])
def test_language_error_message_and_location(error_of, program, line, col, message, extra):
    test_error_message_and_location(error_of, program, line, col, message, extra)


def test_numeric_functions_that_multiply_their_work_are_stopped(error_of):
    """f_k calls f_(k-1) twice: 2^40 calls would never end; elaboration stops at a bound, located."""
    defs = "def f0(n) = n\n" + "".join(f"def f{k}(n) = f{k - 1}(n) + f{k - 1}(n)\n" for k in range(1, 41))
    err = error_of(defs + net("x -> conv(f40(1), 1)"))
    assert "numeric functions were called more than 100,000 times" in err.message
    assert err.loc.line >= 2 and "bind a value once" in err.render()
