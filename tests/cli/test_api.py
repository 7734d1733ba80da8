"""The Python API (app/api.py, docs/python.md): `cnnc.compile`, `cnnc.train` with its callback, `cnnc.predict`.

What a call returns is what the command prints: the same figures as `cnnc compile --format json`,
the same table, the same records as metrics.jsonl, the same predictions. The callback sees each
epoch's record after its checkpoints are written, and returning False or raising StopTraining
ends the run there (the test split still scored); another exception reaches the caller.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import cnnc
from cnnc.cli import main
from cnnc.runtime import checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = """network Tiny(classes = 3) {
    input x: [3, 8, 8]
    x -> conv(4, 3, pad = 1) -> relu -> global_avgpool -> flatten -> linear(classes)
}
train Tiny {
    data = synthetic(n = 64, val = 0.25)
    epochs = 3
    batch = 16
    classes = ["red", "green", "blue"]
}
"""


def quiet(**options):
    return {"progress": False, "log": lambda line: None, **options}


def test_compile_gives_the_figures_and_the_table_of_the_command(capsys):
    resnet = str(ROOT / "examples" / "resnet18.cnn")
    net = cnnc.compile(resnet, classes=100, allow=["all"])
    assert main(["compile", resnet, "--set", "classes=100", "--allow", "all", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert net.totals == printed["totals"] and net.layers == printed["layers"]
    assert net.totals["params"] == 11_227_812          # torchvision's ResNet-18 with a 100-way classifier
    assert main(["compile", resnet, "--set", "classes=100", "--allow", "all"]) == 0
    assert net.table() == capsys.readouterr().out.rstrip("\n")
    assert repr(net) == ("<cnnc network ResNet18: 69 layers, 11.23 M parameters, 1.81 G MACs; x [3, 224, 224] -> fc "
                         "[100]>")
    assert repr(net.compiled).startswith("<Compiled ResNet18: 69 layers, from ")   # not the whole graph


def test_compile_takes_text_inputs_and_allow():
    with pytest.warns(cnnc.LintWarning, match=r"<string>:3:10: warning: .*\[dropped-pixels\]"):
        net = cnnc.compile(TINY.replace("pad = 1", "stride = 2"))
    assert net.warnings and net.warnings[0].startswith("<string>:3:10: warning:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnnc.compile(TINY.replace("pad = 1", "stride = 2"), allow=["dropped-pixels"])
    bound = cnnc.compile(TINY.replace("[3, 8, 8]", "[3, H, W]"), inputs={"x": (3, 16, 12)})
    assert bound.layers[0]["shape"] == [4, 16, 12]
    assert cnnc.compile(TINY.replace("[3, 8, 8]", "[3, H, W]"), inputs={"x": "3x6x6"}).layers[0]["shape"] == [4, 6, 6]


def test_a_mistake_in_text_is_located_in_the_text():
    with pytest.raises(cnnc.CnncError) as info:
        cnnc.compile(TINY.replace("relu", "relux"))
    assert info.value.loc is not None and str(info.value.loc) == "<string>:3:33"
    assert "unknown name 'relux'" in str(info.value) and "did you mean 'relu'" in str(info.value)


def test_the_notebook_display_is_the_explorer_and_the_diagram():
    net = cnnc.compile(TINY)
    html = net._repr_html_()
    assert html.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in html
    assert "&lt;title&gt;cnnc explorer&lt;/title&gt;" in html          # the whole page, escaped as the attribute
    assert net._repr_svg_().lstrip().startswith(("<?xml", "<svg"))
    assert b"<svg" in net.picture("figure")


def test_save_writes_what_cnnc_viz_writes(tmp_path):
    source = tmp_path / "tiny.cnn"
    source.write_text(TINY)
    net = cnnc.compile(source)
    net.save(tmp_path / "api.svg", style="figure")
    assert main(["viz", str(source), "--style", "figure", "-o", str(tmp_path / "cli.svg")]) == 0
    assert (tmp_path / "api.svg").read_bytes() == (tmp_path / "cli.svg").read_bytes()
    page = net.save(tmp_path / "page.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "cnnc explorer" in page
    with pytest.raises(cnnc.CnncError, match="unknown output format"):
        net.save(tmp_path / "x.gif")


def test_the_callback_sees_each_record_and_false_stops_the_run(tmp_path):
    seen = []

    def on_epoch(record):
        seen.append(record)
        assert (tmp_path / "run" / "last.npz").exists()        # after the epoch's checkpoints
        return record["epoch"] < 2

    run = cnnc.train(cnnc.compile(TINY), out=tmp_path / "run", callback=on_epoch, **quiet())
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert seen == written[:2] == run.history and [r["epoch"] for r in seen] == [1, 2]
    assert set(seen[0]) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert run.epochs == 2 and run.stopped == "the callback returned False after epoch 2"
    assert written[2]["split"] == "test" and run.test["accuracy"] == written[2]["accuracy"]   # still scored
    assert checkpoint.load(run.last).epoch == 2


def test_stop_training_ends_the_run_with_its_message_and_other_errors_reach_the_caller(tmp_path):
    def stop(record):
        raise cnnc.StopTraining(f"enough after {record['epoch']}")

    run = cnnc.train(TINY, out=tmp_path / "a", callback=stop, **quiet())
    assert run.epochs == 1 and run.stopped == "enough after 1" and run.test is not None

    def broken(record):
        raise ZeroDivisionError("in the callback")

    with pytest.raises(ZeroDivisionError):
        cnnc.train(TINY, out=tmp_path / "b", callback=broken, **quiet())
    assert checkpoint.load(tmp_path / "b" / "last.npz").epoch == 1     # the finished epoch is kept
    resumed = cnnc.train(TINY, out=tmp_path / "b", resume=True, **quiet())
    assert resumed.epochs == 3


def test_train_takes_the_options_of_cnnc_run_checked_as_the_flags(tmp_path):
    lines = []
    run = cnnc.train(TINY, epochs=1, lr=0.05, train={"optimizer": "adam", "val": 0.5}, limit=40,
                     out=tmp_path / "r", progress=False, log=lines.append)
    assert lines[0].startswith("Tiny: 20 training samples, 20 validation, 16 test from synthetic_classes; 1 epoch "
                               "of batch 16; adam lr 0.05; ") and lines[0].endswith(f"; checkpoints in {tmp_path / 'r'}")
    assert lines[1].startswith("train: adam(lr = 0.05)")    # the record that ran
    assert run.history[0]["lr"] == 0.05
    with pytest.raises(cnnc.CnncError, match="--epochs 0: "):
        cnnc.train(TINY, epochs=0, out=tmp_path / "x", **quiet())
    with pytest.raises(cnnc.CnncError, match="--limit 0: must be"):
        cnnc.train(TINY, limit=0, out=tmp_path / "x", **quiet())
    with pytest.raises(cnnc.CnncError, match="--train optimizer=adamx: "):
        cnnc.train(TINY, train=["optimizer=adamx"], out=tmp_path / "x", **quiet())
    folds = cnnc.train(TINY.replace(", val = 0.25", ""), epochs=1, kfold=2, out=tmp_path / "k", **quiet())
    assert len(folds.folds) == 2 and (tmp_path / "k" / "kfold.json").exists()


def test_predict_names_the_classes_as_cnnc_predict_prints_them(tmp_path, capsys):
    source = tmp_path / "tiny.cnn"
    source.write_text(TINY)
    run = cnnc.train(cnnc.compile(source), epochs=1, out=tmp_path / "run", **quiet())
    p = run.predict(limit=4)
    assert p.classes == ["red", "green", "blue"] and p.probabilities.shape == (4, 3)
    best = p.ranked(2)
    assert [[c for c, _, _ in row] for row in best] == [list(np.argsort(-row)[:2]) for row in p.probabilities]
    assert main(["predict", str(source), str(run.last), "--limit", "4", "--top", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    for line, row, label in zip(printed, best, p.labels):
        shown = ", ".join(f"{c} {name} ({prob:.1%})" for c, name, prob in row)
        assert line.startswith(f"test #") and shown in line and f"[label {label} {p.classes[label]}]" in line
    same = cnnc.predict(source, run.last, limit=4)
    np.testing.assert_array_equal(same.probabilities, p.probabilities)


def test_the_api_is_what_import_cnnc_offers():
    assert {"compile", "train", "predict", "StopTraining", "CnncError", "Network", "Run"} <= set(dir(cnnc))
    with pytest.raises(AttributeError):
        cnnc.no_such_thing


def test_every_keyword_of_train_is_in_the_python_guide():
    """docs/python.md names each keyword `cnnc.train` takes (a keyword added to the API and not to the guide
    is one a user never finds)."""
    import inspect
    guide = (ROOT / "docs" / "python.md").read_text()
    keywords = [p for p in inspect.signature(cnnc.train).parameters if p != "network"]
    assert [k for k in keywords if f"`{k}`" not in guide] == []


def test_quiet_training_logs_only_the_final_figures_and_draws_no_bar(monkeypatch, tmp_path):
    """cnnc.train(quiet=True) is `cnnc run --quiet`: no bar even where one would be drawn, only the final line."""
    from cnnc.runtime import progress
    monkeypatch.setattr(progress, "in_notebook", lambda: True)       # where a bar is drawn by default
    drawn = []
    monkeypatch.setattr(progress.Progress, "start_run", lambda self, *a, **k: drawn.append(self))
    lines: list[str] = []
    net = cnnc.compile(ROOT / "examples" / "lenet5.cnn")
    cnnc.train(net, epochs=1, limit=96, out=tmp_path / "r", log=lines.append, quiet=True)
    assert drawn == [] and [line.split(":")[0] for line in lines] == ["test"], lines
