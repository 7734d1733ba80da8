"""Hostile programs: imports of things that are not .cnn sources, non-finite numbers, deep and huge inputs.

Each is refused with one located line (exit 1 from the CLI), never a
traceback, never by quoting the refused file, never by blocking or by
reading until memory runs out.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnc.compiler import elaborate as elaborate_module
from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

NET = "network N {{\n    input x: [1, 8, 8]\n    {body}\n}}\n"
SECRET = "root:$6$TOPSECRET:19000:0:99999:7:::\n"


def importing(tmp_path: Path, target: str) -> Path:
    main = tmp_path / "main.cnn"
    main.write_text(f'import "{target}"\n' + NET.format(body="x -> relu"), encoding="utf-8")
    return main


def import_error(tmp_path: Path, target: str) -> CnncError:
    with pytest.raises(CnncError) as info:
        compile_file(importing(tmp_path, target))
    err = info.value
    assert (err.loc.line, err.loc.col) == (1, 1), err.render()  # located at the import statement
    assert "TOPSECRET" not in err.render()
    return err


def run_cli(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnc", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


# ------------------------------------------------------------- imports
def test_importing_a_file_that_is_not_a_cnn_source_does_not_quote_it(tmp_path):
    (tmp_path / "shadow").write_text(SECRET)
    err = import_error(tmp_path, str(tmp_path / "shadow"))
    assert err.message.endswith("not a .cnn source file") and "names a .cnn file" in err.hint


@pytest.mark.parametrize("target", ["/etc/shadow", "/proc/self/environ", "/dev/zero", "/etc/passwd"])
def test_system_files_are_refused_by_name(tmp_path, target):
    err = import_error(tmp_path, target)
    assert err.message == f'cannot import "{target}": not a .cnn source file'


def test_a_cnn_link_to_another_kind_of_file_is_refused(tmp_path):
    (tmp_path / "shadow").write_text(SECRET)
    (tmp_path / "blocks.cnn").symlink_to(tmp_path / "shadow")
    err = import_error(tmp_path, "blocks.cnn")
    assert "is a link to a file that is not a .cnn source file" in err.message
    (tmp_path / "environ.cnn").symlink_to("/proc/self/environ")
    assert "is a link to a file that is not a .cnn source file" in import_error(tmp_path, "environ.cnn").message


def test_a_cnn_file_that_is_not_utf8_is_refused_without_quoting_it(tmp_path):
    (tmp_path / "bad.cnn").write_bytes(SECRET.encode() + b"\xff\xfe\n")
    err = import_error(tmp_path, "bad.cnn")
    assert "not a UTF-8 text file" in err.message


def test_an_oversized_import_is_refused_before_it_is_read(tmp_path, monkeypatch):
    (tmp_path / "big.cnn").write_text("# " + "x" * 5000 + "\n")
    monkeypatch.setenv("CNNC_MAX_SOURCE", "4096")
    err = import_error(tmp_path, "big.cnn")
    assert "more than the limit of 4.0 KiB" in err.message and "docs/security.md" in err.hint


def test_a_fifo_import_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    err = import_error(tmp_path, "pipe.cnn")
    assert err.message == f"import '{tmp_path / 'pipe.cnn'}' is not a regular file (a device, pipe or socket)"


def test_a_directory_import_is_refused(tmp_path):
    (tmp_path / "lib.cnn").mkdir()
    assert "is a directory" in import_error(tmp_path, "lib.cnn").message


@pytest.mark.parametrize("target, message", [
    ("a\x00b.cnn", 'cannot import "a\\x00b.cnn": the path contains a NUL byte'),
    ("a/" * 3000 + "x.cnn", "the path is too long"),
    ("a" * 300 + ".cnn", "the path is too long"),
    ("", 'cannot import "": not a .cnn source file'),
])
def test_impossible_import_paths_are_located_errors(tmp_path, target, message):
    err = import_error(tmp_path, target)
    assert message in err.message and len(err.message) < 400


def test_an_import_through_a_symlink_loop_is_a_located_error(tmp_path):
    (tmp_path / "a.cnn").symlink_to(tmp_path / "b.cnn")
    (tmp_path / "b.cnn").symlink_to(tmp_path / "a.cnn")
    err = import_error(tmp_path, "a.cnn")
    assert err.message == 'cannot import "' + str(tmp_path / "a.cnn") + '": too many levels of symbolic links'


def test_a_good_import_still_works_through_a_cnn_link(tmp_path):
    (tmp_path / "real.cnn").write_text("block b() { relu }\n")
    (tmp_path / "lib.cnn").symlink_to(tmp_path / "real.cnn")
    main = tmp_path / "main.cnn"
    main.write_text('import "lib.cnn"\n' + NET.format(body="x -> b()"))
    assert compile_file(main).net.name == "N"


def test_cli_refuses_fifo_and_device_imports_quickly(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    (tmp_path / "zero.cnn").symlink_to("/dev/zero")
    for target, message in [("pipe.cnn", f"import '{tmp_path / 'pipe.cnn'}' is not a regular file"),
                            ("zero.cnn", f'cannot import "{tmp_path / "zero.cnn"}": it is a link to a file that '
                                         "is not a .cnn"),
                            ("/dev/zero", 'cannot import "/dev/zero": not a .cnn source file')]:
        main = importing(tmp_path, target)
        r = run_cli("check", str(main), cwd=tmp_path, timeout=30)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith(f"{main}:1:1: error: {message}"), r.stderr
    fifo_main = tmp_path / "pipe.cnn"  # the main file itself a FIFO: refused, not waited on
    r = run_cli("check", str(fifo_main), cwd=tmp_path, timeout=30)
    assert r.returncode == 1 and "is not a regular file" in r.stderr


# ------------------------------------------------------------- huge and deep programs
def test_cli_on_a_900kb_chain_is_fast_and_its_message_short(tmp_path):
    path = tmp_path / "huge.cnn"
    path.write_text(NET.format(body="x" + " -> relu" * 112_000))
    assert 850_000 < path.stat().st_size < 1 << 20
    start = time.perf_counter()
    r = run_cli("check", str(path), cwd=tmp_path, timeout=120)
    elapsed = time.perf_counter() - start
    assert r.returncode == 1 and r.stderr.startswith(f"{path}:3:")
    assert "error: the file has more than 100,000 tokens" in r.stderr.splitlines()[0]
    assert len(r.stderr) < 1000 and "…" in r.stderr
    assert elapsed < 60  # about 2 s of CPU; a guard against the old minutes, not a benchmark


def test_cli_refuses_a_source_over_the_size_limit_before_reading_it(tmp_path):
    path = tmp_path / "huge.cnn"
    path.write_text(NET.format(body="x" + " -> relu" * 140_000))
    r = run_cli("check", str(path), cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == f"cnnc: error: source file '{path}' is 1.1 MiB, more than the limit of 1.0 MiB\n" \
        "  hint: see docs/security.md to raise the limit".strip()


def test_cli_deep_nesting_and_long_literals_exit_1(tmp_path):
    for body, message in [("y = " + "if true { " * 1000 + "1" + " } else { 2 }" * 1000, "nests more than"),
                          ("y = " + "(" * 1000 + "1," + ")," * 999 + ")", "nests more than"),
                          ("x -> conv(" + "9" * 5000 + ", 3)", "an integer literal of 5000 digits is too long")]:
        path = tmp_path / "deep.cnn"
        path.write_text(NET.format(body=body))
        r = run_cli("check", str(path), cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr.splitlines()[0] and len(r.stderr) < 1000


def test_recursion_exhausted_while_elaborating_is_a_located_error(tmp_path, monkeypatch):
    import contextlib
    path = tmp_path / "deep.cnn"
    path.write_text("block b() { relu }\n" + NET.format(body="x" + " -> b()" * 3 + "\n    y = " + "-" * 200 + "1"))
    defs = elaborate_module.load(path)
    monkeypatch.setattr(elaborate_module, "recursion_room", lambda: contextlib.nullcontext())
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 150)  # room for the blocks, not for the expression
    try:
        with pytest.raises(CnncError) as info:
            elaborate_module.elaborate(defs)
    finally:
        sys.setrecursionlimit(before)
    assert info.value.message == "the program nests too deeply to elaborate"
    assert info.value.loc.line == 5 and info.value.loc.col > 9  # inside the `- - - 1` being evaluated


def test_elaborating_does_not_change_the_recursion_limit():
    before = sys.getrecursionlimit()
    compile_file(Path(__file__).resolve().parents[2] / "examples" / "lenet5.cnn")
    assert sys.getrecursionlimit() == before


# ------------------------------------------------------------- non-finite numbers
@pytest.mark.parametrize("layer, attr", [("batchnorm", "eps"), ("leaky_relu", "slope"), ("elu", "alpha"),
                                         ("layernorm", "eps"), ("lppool(2, p = v)", "p")])
@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_non_finite_attributes_are_located_errors(tmp_path, layer, attr, value, shown):
    call = layer if "(" in layer else f"{layer}({attr} = v)"
    path = tmp_path / "nan.cnn"
    path.write_text("network N(v = 0.5) {\n    input x: [2, 8, 8]\n    x -> " + call + "\n}\n")
    with pytest.raises(CnncError) as info:
        compile_file(path, args={"v": value})
    err = info.value
    assert err.message == f"{attr} must be a finite number, got the number {shown}"
    assert (err.loc.line, err.loc.col) == (3, 10 + call.index("v)") + 0) and "pad's value" in err.hint


def test_an_overflowing_literal_is_refused_as_an_attribute(tmp_path):
    path = tmp_path / "inf.cnn"
    path.write_text(NET.format(body="x -> leaky_relu(slope = 1e400)"))
    with pytest.raises(CnncError, match="slope must be a finite number, got the number inf") as info:
        compile_file(path)
    assert (info.value.loc.line, info.value.loc.col) == (3, 29)


def test_pad_value_may_be_minus_infinity_but_not_nan(tmp_path):
    path = tmp_path / "pad.cnn"
    path.write_text("network N(v = 0.0) {\n    input x: [1, 8, 8]\n    x -> pad(1, value = v) -> maxpool(2)\n}\n")
    net = compile_file(path, args={"v": float("-inf")}).net
    assert [net.graph.nodes[n]["node"].attrs.get("value") for n in net.graph if "pad" in n] == [float("-inf")]
    with pytest.raises(CnncError, match="value must be a number, got the number nan"):
        compile_file(path, args={"v": float("nan")})
