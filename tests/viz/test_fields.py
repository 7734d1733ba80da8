"""Tests for the receptive-field pictures (viz/fields.py): the growth chart and one unit's field."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import pytest

from cnnc.compiler.analysis import FieldState
from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError
from cnnc.viz import rf_grid_svg, rf_svg
from cnnc.viz.fields import field_span

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NS = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode("utf-8"))
    return [t.text or "" for t in root.iter(f"{NS}text")]


@pytest.fixture(scope="module")
def resnet18():
    return compile_file(EXAMPLES / "resnet18.cnn")


@pytest.fixture(scope="module")
def lenet():
    return compile_file(EXAMPLES / "lenet5.cnn")


def upsampling_net(tmp_path) -> Path:
    f = tmp_path / "up.cnn"
    f.write_text("network Up {\n    input x: [1, 16, 16]\n"
                 "    x -> conv(4, 3, pad = 1) -> upsample(2) -> conv(4, 3, pad = 1)\n"
                 "      -> deconv(4, 2, stride = 2) -> conv(2, 3, pad = 1)\n}\n")
    return f


# ---------------------------------------------------------------- the chart
def test_chart_shows_field_sizes_stride_and_the_input(resnet18):
    t = texts(rf_svg(resnet18))
    for value in ("1", "7", "11", "19", "435"):
        assert value in t
    assert "input size 224" in t
    assert "all" in t  # global pooling: the whole input
    assert {"field size", "effective stride"} <= set(t)
    assert "32" in t  # the last effective stride, on the right axis


def test_chart_handles_fractional_strides(tmp_path):
    c = compile_file(upsampling_net(tmp_path))
    t = texts(rf_svg(c))
    assert "1/2" in t and "1/4" in t  # stride axis below 1 after upsample and deconv
    assert any("approximate" in x for x in t)


def test_chart_draws_columns_when_the_field_is_not_square(tmp_path):
    f = tmp_path / "rect.cnn"
    f.write_text("network R {\n    input x: [1, 32, 32]\n    x -> conv(4, (1, 7), pad = (0, 3)) -> conv(4, 3)\n}\n")
    t = texts(rf_svg(compile_file(f)))
    assert "field size (rows)" in t and "field size (columns)" in t


def test_chart_needs_a_spatial_network(tmp_path):
    f = tmp_path / "mlp.cnn"
    f.write_text("network M {\n    input x: [20]\n    x -> linear(10) -> relu -> linear(2)\n}\n")
    with pytest.raises(CnncError, match="no spatial layer"):
        rf_svg(compile_file(f))


# ----------------------------------------------------------------- the grid
def test_field_span_follows_the_formula():
    state = FieldState(Fraction(16), Fraction(4), Fraction(2))
    assert field_span(state, 0) == (-2, 13)
    assert field_span(state, 2) == (6, 21)
    half = FieldState(Fraction(3), Fraction(1, 2), Fraction(1))
    assert field_span(half, 3) == (Fraction(1, 2), Fraction(5, 2))


def test_grid_default_is_the_centre_of_the_last_spatial_layer(lenet):
    t = texts(rf_grid_svg(lenet))
    assert "LeNet5: receptive field of unit (2, 2) of 'avgpool_2'" in t
    assert any(x.startswith("rows 6 … 21  (size 16, stride 4, padding 2)") for x in t)


def test_grid_clips_to_the_input_and_shows_padding(resnet18):
    t = texts(rf_grid_svg(resnet18, unit="0,0"))
    assert any(x.startswith("rows -217 … 217  (size 435, stride 32, padding 217)") for x in t)
    assert "on the input: rows 0 … 217, columns 0 … 217" in t
    assert any("hatched: padding" in x for x in t)


def test_grid_for_a_named_layer(resnet18):
    t = texts(rf_grid_svg(resnet18, layer="stem.conv", unit="1,2"))
    assert any(x.startswith("rows -1 … 5  (size 7, stride 2, padding 3)") for x in t)
    assert any(x.startswith("columns 1 … 7") for x in t)


def test_grid_with_fractional_strides_does_not_crash(tmp_path):
    c = compile_file(upsampling_net(tmp_path))
    t = texts(rf_grid_svg(c, unit="5,6"))
    assert any("approximate" in x for x in t)
    assert any("/" in x and x.startswith("rows") for x in t) or any(x.startswith("rows") for x in t)


def test_grid_errors_name_the_problem(resnet18, lenet):
    with pytest.raises(CnncError) as err:
        rf_grid_svg(resnet18, layer="basic_3.conv")
    assert "no layer of that name" in err.value.message and err.value.hint == "did you mean 'basic_3.conv_1' or 'basic_3.conv_2'?"
    with pytest.raises(CnncError) as err:
        rf_grid_svg(resnet18, layer="fc")
    assert "whole input" in err.value.message and "--layer basic_8.relu" in err.value.hint
    with pytest.raises(CnncError) as err:
        rf_grid_svg(lenet, unit="5,0")
    assert "5×5 units" in err.value.message and "0 to 4" in err.value.hint
    with pytest.raises(CnncError, match="two integers"):
        rf_grid_svg(lenet, unit="2")
    with pytest.raises(CnncError, match="two integers"):
        rf_grid_svg(lenet, unit="a,b")


def test_grid_needs_a_concrete_input_size():
    c = compile_file(EXAMPLES / "unet.cnn")
    with pytest.raises(CnncError) as err:
        rf_grid_svg(c)
    assert "symbolic" in err.value.message and "--input x=1x64x64" in err.value.hint
