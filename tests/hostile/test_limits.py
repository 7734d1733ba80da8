"""Issue 9, class 7: slow paths and huge messages.

Limits apply while parsing (a 900 KB chain of `-> relu` is refused in
seconds, not minutes), and a diagnostic is short: quoted lines are clipped
around the column, long paths are clipped (the harness caps each stderr line
at 400 characters and the whole message at 4000).
"""
from __future__ import annotations

import time

import pytest

from hostile_harness import refused
from hostile_inputs import relu_chain



@pytest.mark.slow
def test_a_900_kb_relu_chain_is_refused_quickly_and_briefly(scratch):
    scratch.write("chain.cnn", relu_chain(900_000))
    start = time.monotonic()
    result = scratch.run("check", "chain.cnn", timeout=20)
    refused(result, scratch)
    assert time.monotonic() - start < 20, "the layer limit is reached only after elaborating everything"


def test_an_error_far_along_a_long_line_is_quoted_clipped(scratch):
    scratch.write("wide.cnn", "network N {\n    input x: [1, 8, 8]\n    x -> relu" + " " * 100_000
                  + "-> nosuchop\n}\n")
    refused(scratch.run("check", "wide.cnn"), scratch)


def test_a_very_long_path_is_clipped_in_the_message(scratch):
    folder = "/".join(["d" * 200] * 6)
    scratch.write(folder + "/net.cnn", "network N {\n    input x: [1, 8, 8]\n    x -> nosuchop\n}\n")
    refused(scratch.run("check", folder + "/net.cnn"), scratch)


def test_many_errors_still_give_one_diagnostic(scratch):
    scratch.write("many.cnn", "network N {\n    input x: [1, 8, 8]\n" + "    x -> nosuchop\n" * 2000 + "}\n")
    refused(scratch.run("check", "many.cnn"), scratch)
