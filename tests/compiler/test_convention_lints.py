"""Lints of conventions learners trip on: softmax before cross_entropy, Paddle's batchnorm momentum."""
from __future__ import annotations

import pytest

from cnnc.cli import main

SOFTMAX = """network N {{
    input x: [1, 8, 8]
    x -> flatten -> linear(3) -> softmax
}}
train N {{
    loss = {loss}
}}
"""


def lints(compiled, code):
    return [w for w in compiled.warnings if w.code == code]


@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy(label_smoothing = 0.1)"])
def test_softmax_then_cross_entropy_is_named_at_the_softmax(compile_src, loss):
    c = compile_src(SOFTMAX.format(loss=loss))
    [w] = lints(c, "softmax-before-cross-entropy")
    assert w.message == ("'softmax': the network ends in softmax and the loss cross_entropy applies softmax "
                         "itself, so the outputs are squashed twice")
    assert (w.loc.line, w.loc.col) == (3, 34)  # the softmax layer
    assert "drop this softmax" in w.hint


def test_softmax_with_another_loss_or_a_net_ending_in_logits_is_fine(compile_src):
    assert not lints(compile_src(SOFTMAX.format(loss="mse")), "softmax-before-cross-entropy")
    logits = SOFTMAX.replace(" -> softmax", "").format(loss="cross_entropy")
    assert not lints(compile_src(logits), "softmax-before-cross-entropy")


def test_the_softmax_lint_prints_with_its_name_and_can_be_allowed(write, capsys):
    path = write(SOFTMAX.format(loss="cross_entropy"))
    assert main(["check", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"{path}:3:34: warning:" in err and "[softmax-before-cross-entropy]" in err
    assert main(["check", str(path), "--allow", "softmax-before-cross-entropy"]) == 0
    assert "softmax-before-cross-entropy" not in capsys.readouterr().err


BN = """network N {{
    input x: [3, 8, 8]
    x -> conv(4, 3) -> batchnorm(momentum = {m}) -> relu
}}
"""


@pytest.mark.parametrize("m, suggestion", [(0.9, "0.1"), (0.99, "0.01"), (0.6, "0.4")])
def test_a_paddle_momentum_is_named_at_the_batchnorm_with_one_minus_m(compile_src, m, suggestion):
    [w] = lints(compile_src(BN.format(m=m)), "batchnorm-momentum")
    assert w.message == (f"'batchnorm': batchnorm momentum {m:g} gives the new batch a weight of {m:g} in the "
                         "running statistics (PyTorch's convention, whose default is 0.1)")
    assert (w.loc.line, w.loc.col) == (3, 24)  # the batchnorm layer
    assert w.hint == (f"if {m:g} is the weight of the old statistics (Paddle, Keras), "
                      f"write momentum = {suggestion}")


@pytest.mark.parametrize("m", [0.1, 0.5, 0.0])
def test_pytorch_momenta_give_no_warning(compile_src, m):
    assert not lints(compile_src(BN.format(m=m)), "batchnorm-momentum")
