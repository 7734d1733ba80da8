"""Issue 9, class 6: terminal control.

ESC/OSC/BEL bytes in comments, strings and paths must reach the terminal
escaped: a diagnostic that quotes them raw can clear the screen, set the
window title or write the clipboard. The harness fails any case whose stdout
or stderr holds a raw ESC, BEL or CSI.
"""
from __future__ import annotations

from hostile_harness import TINY, refused
from hostile_inputs import ESCAPES



def test_escape_sequences_in_a_comment_are_quoted_escaped(scratch):
    scratch.write("net.cnn", "network N {\n    input x: [1, 8, 8]\n    x -> nosuchop  # " + ESCAPES + "\n}\n")
    refused(scratch.run("check", "net.cnn"), scratch)


def test_escape_sequences_in_a_string_are_quoted_escaped(scratch):
    scratch.write("net.cnn", 'network N {\n    input x: [1, 8, 8]\n    x -> conv(4, "' + ESCAPES + '")\n}\n')
    refused(scratch.run("check", "net.cnn"), scratch)


def test_escape_sequences_in_the_source_name_are_escaped(scratch):
    scratch.write(ESCAPES + ".cnn", "network N {\n    input x: [1, 8, 8]\n    x -> nosuchop\n}\n")
    refused(scratch.run("check", ESCAPES + ".cnn"), scratch)


def test_escape_sequences_in_an_import_path_are_escaped(scratch):
    scratch.write("net.cnn", 'import "' + ESCAPES + '.cnn"\n')
    refused(scratch.run("check", "net.cnn"), scratch)


def test_escape_sequences_in_a_data_path_are_escaped(scratch):
    scratch.tiny()
    refused(scratch.run("run", "tiny.cnn", "--data", ESCAPES + ".npz", "--out", "r"), scratch)


def test_escape_sequences_in_a_checkpoint_path_are_escaped(scratch):
    scratch.tiny()
    refused(scratch.run("predict", "tiny.cnn", ESCAPES + ".npz"), scratch)


def test_escape_sequences_in_a_metrics_path_are_escaped(scratch):
    scratch.tiny()
    refused(scratch.run("viz", "tiny.cnn", "--style", "curves", "--metrics", ESCAPES, "-o", "c.svg"), scratch)


def test_escape_sequences_in_a_network_parameter_are_escaped(scratch):
    scratch.tiny()
    refused(scratch.run("check", "tiny.cnn", "--set", "classes=" + ESCAPES), scratch, status=(1, 2))


def test_escape_in_a_valid_file_is_not_echoed_on_success(scratch):
    scratch.write("net.cnn", "# " + ESCAPES + "\n" + TINY)
    result = scratch.run("compile", "net.cnn")
    assert result.status == 0 and "\x1b" not in result.out + result.err, str(result)
