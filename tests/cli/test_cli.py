"""The command line: exit statuses, diagnostics on stderr, the JSON contract, help texts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnc.cli import COMMANDS, build_parser, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnc", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_check_ok_and_warnings_on_stderr():
    r = run("check", str(EXAMPLES / "lenet5.cnn"))
    assert r.returncode == 0
    assert "LeNet5 is valid (12 layers, 1 warning)" in r.stdout
    assert "warning: 4 sigmoid/tanh activations" in r.stderr


def test_user_error_exits_1_with_a_located_diagnostic_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("network N {\n    input x: [1, 28, 28]\n    x -> conv(6, 5) -> maxpol(2)\n}\n")
    r = run("compile", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{bad}:3:24: error: unknown name 'maxpol'")
    assert "^~~~~~" in r.stderr and "did you mean 'maxpool'?" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("argv, message", [
    (["compile", "missing.cnn"], "missing.cnn: no such file"),
    (["compile", "{lenet}", "--input", "x=1x28"], "--input x=1x28 has 2 dimensions"),
    (["compile", "{lenet}", "--input", "x=axb"], "--input x=axb: dimensions must be positive integers"),
    (["compile", "{lenet}", "--set", "classes=ten"], "--set classes=ten: the value must be a number"),
    (["compile", "{lenet}", "--network", "LeNet"], "--network LeNet: no network of that name"),
    (["compile", str(EXAMPLES)], "is a directory"),
])
def test_flag_and_file_errors_name_their_cause(argv, message):
    argv = [a.replace("{lenet}", str(EXAMPLES / "lenet5.cnn")) for a in argv]
    r = run(*argv)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_bad_usage_exits_2():
    r = run("compile")
    assert r.returncode == 2 and "usage:" in r.stderr
    assert run("compile", "x.cnn", "--format", "xml").returncode == 2


def test_help_on_every_command(capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == set(COMMANDS) >= {"check", "compile", "run", "predict", "viz", "apply", "export"}
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert f"usage: cnnc {name}" in capsys.readouterr().out


def test_json_follows_the_contract(capsys):
    assert main(["compile", str(EXAMPLES / "resnet18.cnn"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["network"] == "ResNet18" and doc["inputs"] == {"x": [3, 224, 224]}
    stem = doc["layers"][0]
    assert stem == {"name": "stem.conv", "op": "conv", "inputs": ["x"], "shape": [64, 112, 112],
                    "params": 9408, "macs": 118013952, "flops": 236027904,
                    "rf": {"size": [7, 7], "stride": [2, 2], "padding": [3, 3]},
                    "loc": f"{EXAMPLES / 'resnet18.cnn'}:4:5", "block": "stem"}
    assert all({"name", "op", "inputs", "shape", "params", "macs", "flops", "rf", "loc"} <= set(l)
               for l in doc["layers"])
    assert doc["outputs"] == {"fc": {"shape": [1000], "rf": None}}
    t = doc["totals"]
    assert (t["params"], t["trainable_params"], t["macs"]) == (11689512, 11689512, 1814073344)
    assert {"flops", "activation_bytes"} <= set(t)
    assert isinstance(doc["warnings"], list) and all({"loc", "message"} <= set(w) for w in doc["warnings"])


def test_json_prints_symbolic_sizes_as_strings(capsys):
    assert main(["compile", str(EXAMPLES / "unet.cnn"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["inputs"] == {"x": [1, "H", "W"]}
    pool = next(l for l in doc["layers"] if l["op"] == "maxpool")
    assert pool["shape"] == [64, "H//2", "W//2"]
    assert doc["constraints"]["H"] == {"rule": "H must be a multiple of 16", "smallest": 16}


def test_table_fits_100_columns_and_folds_repeats(capsys):
    assert main(["compile", str(EXAMPLES / "resnet18.cnn"), "--allow", "all"]) == 0
    out = capsys.readouterr().out
    assert max(len(l) for l in out.splitlines()) <= 100
    assert "… 1 more × basic" in out and "basic_2.conv" not in out
    assert "parameters   11,689,512 (11.69 M)" in out and "MACs         1,814,073,344 (1.81 G)" in out
    assert main(["compile", str(EXAMPLES / "resnet18.cnn"), "--allow", "all", "--expand"]) == 0
    assert "basic_2.conv" in capsys.readouterr().out
    assert main(["compile", str(EXAMPLES / "resnet18.cnn"), "--allow", "all", "--depth", "0"]) == 0
    rows = capsys.readouterr().out
    assert any(line.split()[:3] == ["basic_8", "basic", "(block)"] for line in rows.splitlines())
    assert "basic_8.conv" not in rows


def test_input_binding_on_the_command_line(capsys):
    assert main(["compile", str(EXAMPLES / "unet.cnn"), "--input", "x=1x64x64", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"]["conv"]["shape"] == [2, 64, 64] and isinstance(doc["totals"]["macs"], int)
    assert main(["compile", str(EXAMPLES / "unet.cnn"), "--input", "x=1x60x60"]) == 1
    assert "concat" in capsys.readouterr().err


def test_check_covers_every_network_of_a_file(tmp_path, capsys):
    f = tmp_path / "two.cnn"
    f.write_text("network A {\n    input x: [1]\n    x -> relu\n}\nnetwork B {\n    input x: [2]\n    x -> relu\n}\n")
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "A is valid" in out and "B is valid" in out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_stdout_on_a_full_device_is_one_line_and_exit_1():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", "import sys; from cnnc.cli import main; sys.exit(main())",
                               "compile", str(EXAMPLES / "resnet18.cnn")], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "cnnc: error: cannot write the output: No space left on device"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.parametrize("argv, message", [
    (["compile", "NET", "--depth", "-3"], "--depth -3: the depth must be 0 or more"),
    (["compile", "NET", "-o", "x.py"], "-o x.py: only --emit writes a file"),
    (["compile", "NET", "--checkpoint", "c.npz"], "--checkpoint c.npz: only --emit reads weights"),
])
def test_compile_flag_mistakes(capsys, argv, message):
    code = main([str(EXAMPLES / "lenet5.cnn") if a == "NET" else a for a in argv])
    assert code == 1
    assert f"cnnc: error: {message}" in capsys.readouterr().err


SLOW_RUN = """
network Slow {
    input x: [1, 8, 8]
    x -> conv(4, 3, pad = 1) -> relu -> flatten -> linear(3)
}
train Slow {
    data = synthetic(n = 2000, classes = 3)
    epochs = 1000
    batch = 8
    optimizer = sgd(lr = 0.01)
}
"""


def test_two_concurrent_runs_into_one_directory(tmp_path):
    """The second run fails at once, naming the first; the first run's files stay its own."""
    import signal
    import time
    src = tmp_path / "slow.cnn"
    src.write_text(SLOW_RUN)
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "cnnc", "run", str(src), "--out", str(out), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "last.npz").exists():  # the first run is under way and has saved an epoch
            assert first.poll() is None and time.monotonic() < deadline, first.stderr and first.stderr.read()
            time.sleep(0.05)
        for extra in ([], ["--overwrite"], ["--resume"]):
            start = time.monotonic()
            second = run("run", str(src), "--out", str(out), "--quiet", *extra)
            assert second.returncode == 1, second.stderr
            assert second.stderr.strip().splitlines()[0] == \
                f"cnnc: error: run directory '{out}' is in use by another cnnc run (pid {first.pid})"
            assert "Traceback" not in second.stderr and time.monotonic() - start < 30
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    assert first.returncode == 130
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, len(lines) + 1))  # one run's epochs, in order
    from cnnc.runtime import checkpoint
    assert checkpoint.load(out / "last.npz").epoch >= 1  # SIGINT left a usable checkpoint


def test_an_unexpected_os_error_is_an_internal_error_not_a_traceback(monkeypatch, capsys):
    import errno
    from cnnc import cli

    def broken(args):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    monkeypatch.delenv("CNNC_DEBUG", raising=False)
    assert cli.main(["check", str(EXAMPLES / "lenet5.cnn")]) == 70
    assert "cnnc: internal error: PermissionError" in capsys.readouterr().err


@pytest.mark.parametrize("command, more", [("compile", []), ("check", []), ("viz", ["-o", "x.svg"])])
def test_a_flag_of_another_command_shows_this_commands_usage(tmp_path, command, more):
    r = run(command, str(EXAMPLES / "lenet5.cnn"), *more, "--batch", "3", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(f"usage: cnnc {command} ")
    assert r.stderr.rstrip().endswith(f"cnnc {command}: error: unrecognized arguments: --batch 3")


COLOUR = """network Colour(classes = 5) {
    input x: [3, 12, 12]
    x -> conv(4, 3, pad = 1) -> relu -> global_avgpool -> flatten -> linear(classes)
}
"""


@pytest.mark.parametrize("data", ["synthetic", "synthetic_classes"])
def test_run_data_synthetic_fits_the_network(tmp_path, capsys, data):
    """`--data synthetic` (what `cnnc run --help` offers) and a synthetic set's own name generate data
    of the network's input shape and classes, as `data = synthetic(...)` does."""
    source = tmp_path / "colour.cnn"
    source.write_text(COLOUR)
    assert main(["run", str(source), "--data", data, "--epochs", "1", "--limit", "40",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "Colour: 40 training samples, 128 test from synthetic_classes" in out
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["split"] == "test" and len(rows[-1]["confusion"]) == 5   # the network's 5 classes


def test_run_help_offers_only_data_that_exists(capsys):
    from cnnc.runtime.data.standard import STANDARD
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    offered = text.split("--data PATH ")[1].split(" --out")[0]
    assert all(name in offered for name in ["mnist10k", *STANDARD, "synthetic"])
