"""`cnnc compile`'s table fits the terminal (COLUMNS or the terminal's width), `--wide` keeps every name
whole, names are shortened in the middle, and the totals give the parameters' size in MB as torchinfo."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnnc.cli import main

RESNET50 = str(Path(__file__).resolve().parents[2] / "examples" / "resnet50.cnn")


@pytest.mark.parametrize("columns", [70, 100, 160])
def test_every_row_fits_the_width_and_long_names_keep_both_ends(columns, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["compile", RESNET50]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= columns
    rows = [line for line in lines if line.startswith("layer4.bottleneck_1.conv_bn_1.batchnorm ")]
    shortened = [line for line in lines if line.startswith("layer4") and "…" in line.split()[0]]
    if columns >= 100:          # the longest name (39) fits from 100 columns on
        assert rows and not shortened
    else:
        assert shortened and all(line.split()[0].startswith("layer4") for line in shortened)
    assert any(line.split()[0].endswith(("conv", "relu_1", "relu", "norm")) for line in shortened + rows)


def test_wide_keeps_every_name_whole(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "70")
    assert main(["compile", RESNET50, "--wide"]) == 0
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if "…" in line and not line.startswith("  … ")]  # folds only
    assert "\nlayer4.bottleneck_1.conv_bn_1.batchnorm batchnorm" in out


def test_the_totals_give_the_parameters_size_in_mb_as_torchinfo(capsys):
    assert main(["compile", RESNET50]) == 0
    out = capsys.readouterr().out
    # torchinfo on torchvision's resnet50: "Params size (MB): 102.23" (25,557,032 x 4 bytes / 10^6)
    assert "param size   102.23 MB (float32" in out
    assert "[field-exceeds-input]" not in capsys.readouterr().err
