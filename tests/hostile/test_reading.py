"""Issue 9, class 5: reading what it should not.

`import` names `.cnn` source files: regular, size-capped files. Anything
else (/etc/shadow, /proc/self/environ, a binary file, a link to a secret) is
refused without quoting a byte of it. Here the "shadow" file is one the test
makes, carrying a secret marker that must never appear in cnnc's output.
"""
from __future__ import annotations

import os

import pytest

from hostile_harness import SECRET, refused
from hostile_inputs import shadow_text



def test_import_of_a_shadow_file_does_not_quote_it(scratch):
    scratch.write("shadow", shadow_text())
    scratch.write("net.cnn", 'import "shadow"\n')
    refused(scratch.run("check", "net.cnn"), scratch)


def test_import_through_a_symlink_to_a_shadow_file_does_not_quote_it(scratch):
    scratch.write("secret/shadow", shadow_text())
    os.symlink("secret/shadow", scratch.path("lib.cnn"))
    scratch.write("net.cnn", 'import "lib.cnn"\n')
    refused(scratch.run("check", "net.cnn"), scratch)


def test_import_of_proc_self_environ_does_not_quote_it(scratch):
    scratch.write("net.cnn", 'import "/proc/self/environ"\n')
    refused(scratch.run("check", "net.cnn", env={"HOSTILE_SECRET": SECRET}), scratch)


def test_metrics_from_a_shadow_file_does_not_quote_it(scratch):
    scratch.tiny()
    scratch.write("shadow", shadow_text())
    refused(scratch.run("viz", "tiny.cnn", "--style", "curves", "--metrics", "shadow", "-o", "c.svg"), scratch)


@pytest.mark.parametrize("name", ["shadow.npz", "shadow.npy", "shadow.png"])
def test_predict_on_a_shadow_file_does_not_quote_it(scratch, checkpoint, name):
    scratch.tiny()
    scratch.write(name, shadow_text())
    refused(scratch.run("predict", "tiny.cnn", "best.npz", name), scratch)


def test_data_from_a_shadow_file_does_not_quote_it(scratch):
    scratch.tiny()
    scratch.write("shadow.npz", shadow_text())
    refused(scratch.run("run", "tiny.cnn", "--data", "shadow.npz", "--out", "r"), scratch)


def test_checkpoint_that_is_a_shadow_file_is_not_quoted(scratch):
    scratch.tiny()
    scratch.write("shadow.npz", shadow_text())
    refused(scratch.run("predict", "tiny.cnn", "shadow.npz"), scratch)
