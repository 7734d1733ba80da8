"""docs/python.ipynb runs in a real Jupyter kernel (nbclient + ipykernel) and shows what it says.

The notebook is copied beside a link to examples/ in a temporary folder (so its run directory
lands there) and executed cell by cell; then its outputs are read: the network's display carries
the explorer as `text/html` (a sandboxed iframe) and the diagram as `image/svg+xml`, the training
callback printed the epoch's metrics.jsonl record, and the predictions name their classes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]


def _outputs(nb, marker: str) -> list[dict]:
    """The outputs of the one code cell whose source contains `marker`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, marker
    return cells[0].outputs


def _text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


@pytest.mark.slow
def test_the_python_notebook_runs_in_a_kernel(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "docs").mkdir()
    notebook = tmp_path / "docs" / "python.ipynb"
    shutil.copy(ROOT / "docs" / "python.ipynb", notebook)
    nb = nbformat.read(notebook, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}}).execute()

    shown = next(o for o in _outputs(nb, "net   #") if o["output_type"] == "execute_result")["data"]
    assert shown["text/html"].startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in shown["text/html"]
    assert "cnnc explorer" in shown["text/html"] and "LeNet5" in shown["text/html"]
    assert "<svg" in shown["image/svg+xml"]
    assert shown["text/plain"].startswith("<cnnc network LeNet5: 12 layers, 61.71 K parameters")

    assert _text(_outputs(nb, "print(net.totals")).split("\n")[0] == "61706 416520"
    assert "parameters   61,706" in _text(_outputs(nb, "print(net.table())"))
    diagram = next(o for o in _outputs(nb, "net.diagram(") if o["output_type"] == "execute_result")["data"]
    assert "<svg" in diagram["image/svg+xml"]

    trained = _outputs(nb, "callback=on_epoch")
    lines = _text(trained).splitlines()
    callback = [line for line in lines if line.startswith("callback: epoch 1, train loss ")]
    assert len(callback) == 1 and any(line.startswith("epoch 1/1  train loss") for line in lines)
    record = json.loads((tmp_path / "docs" / "runs" / "notebook-lenet5" / "metrics.jsonl").read_text()
                        .splitlines()[0])
    assert callback[0] == (f"callback: epoch 1, train loss {record['train_loss']:.4f}, "
                           f"val accuracy {record['val_accuracy']:.2%}")   # the record metrics.jsonl holds
    run = next(o for o in trained if o["output_type"] == "execute_result")["data"]["text/plain"]
    assert run.startswith("<cnnc run LeNet5: 1 epoch(s), test accuracy ")

    predicted = _text(_outputs(nb, "run.predict(")).splitlines()
    assert len(predicted) == 5
    for k, line in enumerate(predicted):   # "test #0: 7 (61.2%), 9 (10.3%)  [label 7]": classes by name
        name, _, rest = line.partition(": ")
        assert name == f"test #{k}" and rest.count("%)") == 2 and rest.split("  [label ")[1][:-1] in "0123456789"
