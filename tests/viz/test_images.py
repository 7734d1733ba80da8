"""viz/images.py: the display mappings against hand-computed grey levels, grids, and the
activations and kernels pictures read back from their pixels and their layout chunk."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnc.dsl.source import CnncError
from cnnc.viz.images import (MAPPINGS, NEGATIVE, PAGE_H, PAGE_W, POSITIVE, Panel, activations_png, diverging, grid,
                             kernels_png, png_bytes, read_layout, to_grey)


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
    with pytest.raises(CnncError, match="NaN or infinite values in the values: there is no picture of them"):
        to_grey(np.array([[0.0, np.nan]]), "minmax")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_picture_of_values_refuses_non_finite_values_by_name(bad):
    """One check (`require_finite`) for feature maps, bar charts and kernels alike: never a flat tile
    labelled 'scale [-nan, nan]'."""
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 2, 3] = bad
    with pytest.raises(CnncError, match="NaN or infinite values in 'conv': there is no picture of them"):
        activations_png([Panel("conv", (2, 4, 4), maps)])
    with pytest.raises(CnncError, match="NaN or infinite values in 'pool'"):
        activations_png([Panel("pool", (2, 1, 1), maps[:, 2:3, 3:4])])
    with pytest.raises(CnncError, match="NaN or infinite values in the weights of 'c2'"):
        kernels_png([("c1", np.ones((2, 1, 3, 3))), ("c2", maps.reshape(2, 2, 4, 2))], first="c1")


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
    # the vector [0, 1, 2, 3, 4] is a bar chart: one bar per value, from the zero line at the bottom
    heights = [int((img[y0:y1, x0:x1] != 255).any(axis=-1).any(axis=1).sum()) for x0, y0, x1, y1 in fc["tiles"]]
    assert len(heights) == 5 and heights[0] == 1 and heights[-1] == fc["tiles"][0][3] - fc["tiles"][0][1]
    assert all(a < b for a, b in zip(heights, heights[1:]))  # the axis line, then growing bars
    assert fc["kind"] == "bars" and fc["ticks"] == ["4", "0"]


def test_one_value_per_channel_is_a_bar_chart_on_one_scale():
    """A global pool's [C, 1, 1]: not C tiles each min-max mapped on its own (all black), but C bars on
    one scale, negative values below the zero line in another colour."""
    values = np.array([2.0, -1.0, 0.5], np.float32).reshape(3, 1, 1)
    data = activations_png([Panel("pool", (3, 1, 1), values)])
    (panel,) = read_layout(data)["panels"]
    img = pixels(data)
    columns = [img[y0:y1, x0 + 1] for x0, y0, x1, y1 in panel["tiles"]]
    blue, orange = list(POSITIVE), list(NEGATIVE)
    counts = [(sum(p.tolist() == blue for p in c), sum(p.tolist() == orange for p in c)) for c in columns]
    (b0, o0), (b1, o1), (b2, o2) = counts
    assert o0 == b1 == o2 == 0 and b0 > 0 and o1 > 0 and b2 > 0
    assert b0 == pytest.approx(4 * b2, rel=0.1) and b0 == pytest.approx(2 * o1, rel=0.1)  # one scale: 2, -1, 0.5
    assert panel["label"] == "pool  3x1x1  [-1, 2]" and panel["ticks"] == ["2", "0", "-1"]


def test_a_long_vector_shares_columns_and_says_so():
    values = np.arange(1000, dtype=np.float32)
    (panel,) = read_layout(activations_png([Panel("fc", (1000,), values)]))["panels"]
    assert len(panel["tiles"]) == 334 and "a bar per 3 values (their range)" in panel["label"]


def test_the_input_is_the_image_as_read_in_colour():
    rgb = np.zeros((3, 8, 8), np.float32)
    rgb[0] = 1.0  # pure red
    data = activations_png([Panel("x", (3, 8, 8), rgb, image=True)])
    (panel,) = read_layout(data)["panels"]
    x0, y0, x1, y1 = panel["tiles"][0]
    assert panel["kind"] == "rgb" and (x1 - x0) == 128 and pixels(data)[y0 + 5, x0 + 5].tolist() == [255, 0, 0]
    assert panel["label"] == "x  3x8x8  the image as read, RGB"


def test_panels_fill_rows_and_pages_of_a_screen():
    """Sixty 16-channel layers: rows of panels on pages no larger than PAGE_W x PAGE_H, every layer on
    exactly one page, the footer naming the next page."""
    panels = [Panel(f"l{i}", (16, 16, 16), np.random.default_rng(i).random((16, 16, 16))) for i in range(60)]
    first = read_layout(activations_png(panels))
    pages = first["pages"]
    assert pages > 1 and first["page"] == 1
    seen = []
    for page in range(1, pages + 1):
        data = activations_png(panels, page)
        layout = read_layout(data)
        with Image.open(io.BytesIO(data)) as img:
            assert img.size[0] <= PAGE_W and img.size[1] <= PAGE_H
        rows = {p["box"][1] for p in layout["panels"]}
        assert len(rows) < len(layout["panels"])  # panels side by side, not one column
        seen += [p["name"] for p in layout["panels"]]
    assert seen == [p.name for p in panels]
    with pytest.raises(CnncError, match=f"--page {pages + 1}: the picture has {pages} pages"):
        activations_png(panels, pages + 1)


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
