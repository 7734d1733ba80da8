"""viz/images.py: the display mappings against hand-computed grey levels, grids, and the
activations and kernels pictures read back from their pixels and their layout chunk."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnc.dsl.source import CnncError
from cnnc.viz.images import (MAPPINGS, Panel, activations_png, diverging, grid, kernels_png, png_bytes,
                             read_layout, to_grey)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


# ------------------------------------------------------------------ mappings
def test_minmax_scales_each_channel_from_its_min_to_its_max():
    x = np.array([[[-1.0, 0.0], [1.0, 3.0]], [[10.0, 10.0], [10.0, 10.0]]])
    # channel 0: (x + 1) / 4 * 255 = 0, 63.75, 127.5, 255 -> rounded 0, 64, 128, 255; channel 1 is constant -> 0
    assert to_grey(x, "minmax").tolist() == [[[0, 64], [128, 255]], [[0, 0], [0, 0]]]


def test_abs_scales_magnitudes_by_the_largest():
    x = np.array([[[-2.0, 1.0], [0.0, 0.5]]])
    # |x| / 2 * 255 = 255, 127.5, 0, 63.75
    assert to_grey(x, "abs").tolist() == [[[255, 128], [0, 64]]]
    assert to_grey(np.zeros((1, 2, 2)), "abs").max() == 0


def test_clip_keeps_intensities_and_clips_the_rest():
    x = np.array([[-0.5, 0.2], [1.0, 7.0]])
    # 0, 0.2 * 255 = 51, 255, 255
    assert to_grey(x, "clip").tolist() == [[0, 51], [255, 255]]


def test_an_unknown_mapping_is_refused_with_the_choices():
    with pytest.raises(CnncError, match="unknown display mapping 'log'") as err:
        to_grey(np.zeros((1, 2, 2)), "log")
    assert all(m in err.value.hint for m in MAPPINGS)


def test_non_finite_values_are_refused():
    with pytest.raises(CnncError, match="cannot show values that are NaN or infinite as grey levels"):
        to_grey(np.array([[0.0, np.nan]]), "minmax")


def test_grid_places_tiles_in_rows_with_gaps():
    tiles = [np.full((2, 3), v, np.uint8) for v in (10, 20, 30)]
    g = grid(tiles, gap=1)  # 3 tiles: 2 columns, 2 rows
    assert g.shape == (2 * 2 + 1, 2 * 3 + 1)
    assert g[0, 0] == 10 and g[0, 4] == 20 and g[3, 0] == 30 and g[3, 4] == 255 and g[2, 0] == 255


def test_png_bytes_round_trip_with_text():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = png_bytes(a, {"k": "v"})
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L" and img.size == (4, 3) and img.text["k"] == "v"
        assert np.array_equal(np.asarray(img), a)


def test_diverging_is_blue_white_red():
    rgb = diverging(np.array([-1.0, 0.0, 1.0]), 1.0)
    assert rgb.tolist() == [[51, 51, 255], [255, 255, 255], [255, 51, 51]]


# ------------------------------------------------------------------ activations
def test_activations_one_panel_per_layer_with_labels_and_ranges():
    ramp = np.linspace(-1, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    panels = [Panel("conv", (2, 8, 8), ramp), Panel("fc", (5,), np.arange(5, dtype=np.float32))]
    data = activations_png(panels)
    layout = read_layout(data)
    assert layout["style"] == "activations"
    conv, fc = layout["panels"]
    assert conv["name"] == "conv" and conv["shape"] == [2, 8, 8] and conv["channels"] == 2
    assert conv["label"].startswith("conv  2x8x8  [-1, 1]")
    assert (conv["min"], conv["max"]) == (-1.0, 1.0)
    assert len(conv["tiles"]) == 2 and fc["label"].startswith("fc  5  [0, 4]")
    img = pixels(data)
    x0, y0, x1, y1 = conv["tiles"][0]
    assert (x1 - x0, y1 - y0) == (48, 48)  # 8x8 enlarged 6 times
    tile = img[y0:y1, x0:x1, 0]
    assert tile.min() == 0 and tile.max() > 200  # each channel min-max mapped on its own
    x0, y0, x1, y1 = fc["tiles"][0]
    strip = img[y0 + 8, x0:x1, 0]
    assert strip[0] == 0 and strip[-1] == 255 and (np.diff(strip.astype(int)) >= 0).all()


def test_activations_show_at_most_64_channels_and_say_so():
    layout = read_layout(activations_png([Panel("wide", (70, 2, 2), np.random.default_rng(0).random((70, 2, 2)))]))
    (panel,) = layout["panels"]
    assert len(panel["tiles"]) == 64 and "first 64 of 70 channels" in panel["label"]


# ------------------------------------------------------------------ kernels
def test_kernels_first_layer_rgb_tiles_and_deeper_per_input_channel():
    first = np.zeros((4, 3, 3, 3), np.float32)
    first[0, 0] = 1.0  # output 0 looks for red only
    deeper = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3) - 36
    data = kernels_png([("c1", first), ("c2", deeper)], first="c1")
    layout = read_layout(data)
    c1, c2 = layout["panels"]
    assert (c1["kind"], len(c1["tiles"]), c1["scale"]) == ("rgb", 4, 1.0)
    assert (c2["kind"], len(c2["tiles"]), c2["scale"]) == ("diverging", 8, 36.0)
    assert c1["ticks"] == ["1", "0", "-1"] and c2["ticks"] == ["36", "0", "-36"]
    assert "c2  2x4x3x3" in c2["label"] and "rows: 2 of 2 outputs, columns: 4 of 4 inputs" in c2["label"]
    img = pixels(data)
    x0, y0, x1, y1 = c1["tiles"][0]
    assert img[y0 + 1, x0 + 1].tolist() == [255, 128, 128]  # red weight 1 -> 255, zeros -> mid grey
    x0, y0, x1, y1 = c2["tiles"][0]  # output 0, input 0: weights -36..-28, all negative: blue
    corner = img[y0 + 1, x0 + 1]
    assert corner.tolist() == [51, 51, 255]


def test_a_grey_first_layer_is_grey():
    w = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]], np.float32)
    data = kernels_png([("sobel", w)], first="sobel")
    (panel,) = read_layout(data)["panels"]
    assert panel["kind"] == "grey" and panel["scale"] == 2.0
    x0, y0, x1, y1 = panel["tiles"][0]
    tile = pixels(data)[y0:y1, x0:x1]
    assert (tile[..., 0] == tile[..., 1]).all()  # grey
    k = (y1 - y0) // 3
    # weight -2 at the middle left -> black; +2 at the middle right -> white; 0 in the centre -> 128
    assert tile[k + 1, 1, 0] == 0 and tile[k + 1, -2, 0] == 255 and tile[k + 1, k + 1, 0] == 128
