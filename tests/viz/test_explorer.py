"""The explorer page (`cnnc viz --style html`) in a real browser: headless Debian chromium through Selenium.

Pages of several examples open from file:// with no console error and no
request; clicking a block changes the node count and the layout; search
selects and centres; the side panel's figures are those of `cnnc compile
--format json`; a feature-map unit's highlighted field is the receptive-field
analysis's; a layer's panel shows its own training diagnostics from a real
run's metrics.jsonl, and a layer without records none; screenshots are not
blank. Built once per module, one browser.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
from pathlib import Path

import pytest

from cnnc.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PHOTO = next((p for p in [Path("/work/shared/data/images/camera.png")] if p.exists()),
             ROOT / "runtime" / "datasets" / "images" / "camera.png")

# A network of fixed weights with strides, padding and pooling: unit fields that grow and move.
FIXED = textwrap.dedent("""\
    network Fixed {
        input x: [1, H, W]
        x -> c1: conv(1, 3, pad = 1, bias = false, trainable = false,
                      weights = [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
          -> maxpool(2, stride = 2)
          -> c2: conv(1, 3, stride = 2, pad = 1, bias = false, trainable = false,
                      weights = [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    }
    """)


def cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def compile_json(*argv: str) -> dict:
    return json.loads(cli("compile", *argv, "--format", "json"))


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pages")
    (root / "fixed.cnn").write_text(FIXED)
    made = {}
    for name, argv in {"lenet5": [str(EXAMPLES / "lenet5.cnn")], "resnet18": [str(EXAMPLES / "resnet18.cnn")],
                       "small_unet": [str(EXAMPLES / "small_unet.cnn")],
                       "efficientnet": [str(EXAMPLES / "efficientnet.cnn")],
                       "sobel_xy": [str(EXAMPLES / "sobel_xy.cnn"), "--image", str(PHOTO)],
                       "fixed": [str(root / "fixed.cnn"), "--image", str(PHOTO)]}.items():
        made[name] = root / f"{name}.html"
        cli("viz", *argv, "--style", "html", "-o", str(made[name]))
    return made


def open_page(browser, page: Path):
    return browser.open(page.as_uri())


def node_ids(browser) -> list[str]:
    return browser.js("return [...document.querySelectorAll('#graph .node')].map(e => e.dataset.id)")


def panel_figures(browser) -> dict:
    return browser.js("const o = {}; document.querySelectorAll('#selection tr[data-key]').forEach(r => "
                      "{ const v = r.querySelector('td[data-value]'); o[r.dataset.key] = JSON.parse(v.dataset.value); }); "
                      "return o")


def click_node(browser, item: str) -> None:
    browser.js("document.querySelector(`#graph .node[data-id=\"${arguments[0]}\"]`)"
               ".dispatchEvent(new MouseEvent('click', {bubbles: true}))", item)


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "small_unet", "efficientnet", "sobel_xy"])
def test_page_opens_offline_with_no_error_no_request_and_is_not_blank(browser, pages, name, tmp_path):
    open_page(browser, pages[name])
    assert browser.console_errors() == []
    assert [u for u in browser.requests() if u != pages[name].as_uri() and not u.startswith("data:")] == []
    assert len(node_ids(browser)) >= 3
    assert browser.screenshot_colours(tmp_path / f"{name}.png") > 20


def test_the_page_states_a_policy_that_allows_no_request(pages):
    page = pages["resnet18"].read_text(encoding="utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in policy and "connect-src" not in policy and "unsafe" not in policy
    page = page.replace("http://www.w3.org/2000/svg", "")   # the SVG namespace's name, never fetched
    assert "http://" not in page and "https://" not in page


def test_a_click_unfolds_a_block_and_its_header_folds_it(browser, pages):
    open_page(browser, pages["resnet18"])
    before = node_ids(browser)
    assert "b:basic_3" in before and "basic_3.add" not in before
    click_node(browser, "b:basic_3")
    after = node_ids(browser)
    assert "b:basic_3" not in after and "basic_3.add" in after and len(after) > len(before)
    assert browser.js("return document.querySelector('#graph .cluster[data-id=\"b:basic_3\"]') !== null")
    # the layout is redone: the next block moved down to make room
    browser.js("document.querySelector('#graph .cluster-head[data-id=\"b:basic_3\"]')"
               ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
    assert sorted(node_ids(browser)) == sorted(before)
    assert browser.console_errors() == []


def test_a_repeat_unfolds_into_its_instances(browser, pages):
    open_page(browser, pages["resnet18"])
    click_node(browser, "r:basic_1")
    ids = node_ids(browser)
    assert {"b:basic_1", "b:basic_2"} <= set(ids) and "r:basic_1" not in ids


def test_fold_all_and_unfold_to_a_depth(browser, pages):
    open_page(browser, pages["resnet18"])
    browser.js("document.getElementById('depth').value = 9; document.getElementById('unfold').click()")
    every = node_ids(browser)
    layers = compile_json(str(EXAMPLES / "resnet18.cnn"))["layers"]
    assert sorted(every) == sorted(["x"] + [entry["name"] for entry in layers])
    browser.js("document.getElementById('fold-all').click()")
    assert len(node_ids(browser)) < len(every) / 4


def test_search_selects_a_layer_and_centres_it(browser, pages):
    open_page(browser, pages["resnet18"])
    target = "basic_6.conv_bn_relu.conv"
    box = browser.driver.find_element("id", "search")
    box.send_keys("basic_6.conv_bn_relu.co\n")
    browser.wait("return document.getElementById('panel-title') && "
                 "document.getElementById('panel-title').textContent === arguments[0]", 5, target)
    node = browser.js(f"return document.querySelector('#graph .node.selected[data-id=\"{target}\"]')"
                      ".getBoundingClientRect().toJSON()")
    canvas = browser.js("return document.getElementById('canvas').getBoundingClientRect().toJSON()")
    assert abs(node["x"] + node["width"] / 2 - (canvas["x"] + canvas["width"] / 2)) < 2
    assert abs(node["y"] + node["height"] / 2 - (canvas["y"] + canvas["height"] / 2)) < 2


@pytest.mark.parametrize("layer", ["stem.conv", "basic_3.conv_bn_relu.conv", "basic_3.add", "fc", "global_avgpool"])
def test_the_panel_shows_the_compile_json_figures_of_a_layer(browser, pages, layer):
    entry = {e["name"]: e for e in compile_json(str(EXAMPLES / "resnet18.cnn"))["layers"]}[layer]
    open_page(browser, pages["resnet18"])
    browser.driver.find_element("id", "search").send_keys(layer + "\n")
    browser.wait("return document.getElementById('panel-title').textContent === arguments[0]", 5, layer)
    shown = panel_figures(browser)
    for key in ("shape", "params", "macs", "flops"):
        assert shown[key] == entry[key], key
    if entry["rf"] is None:
        assert shown["rf"] is None
    else:
        assert [shown["rf_size"], shown["rf_stride"], shown["rf_padding"]] == \
               [entry["rf"]["size"], entry["rf"]["stride"], entry["rf"]["padding"]]
    text = browser.js("return document.querySelector('#selection tr[data-key=\"macs\"] td.num').textContent")
    assert int(text.replace(",", "")) == entry["macs"]
    source = browser.js("return document.querySelector('#selection .loc').textContent")
    assert source == entry["loc"]


def test_a_block_shows_the_totals_of_its_layers(browser, pages):
    report = compile_json(str(EXAMPLES / "resnet18.cnn"))
    members = [e for e in report["layers"] if e.get("block", "").split(".")[0] == "basic_3"]
    open_page(browser, pages["resnet18"])
    click_node(browser, "b:basic_3")
    shown = panel_figures(browser)
    assert shown["layers"] == len(members) == 9
    for key in ("params", "macs", "flops"):
        assert shown[key] == sum(e[key] for e in members), key
    assert shown["share_macs"] == pytest.approx(shown["macs"] / report["totals"]["macs"])


def test_the_totals_at_the_top_are_those_cnnc_compile_prints(browser, pages):
    table = cli("compile", str(EXAMPLES / "resnet18.cnn"))
    open_page(browser, pages["resnet18"])
    summary = browser.js("return document.getElementById('summary').textContent")
    assert summary and summary in table


def test_sobel_page_shows_both_edge_maps(browser, pages, tmp_path):
    open_page(browser, pages["sobel_xy"])
    shown = browser.js("return [...document.querySelectorAll('.output-maps')].map(d => "
                       "[d.dataset.name, d.querySelector('img').naturalWidth, d.querySelector('img').naturalHeight])")
    assert [s[0] for s in shown] == ["gx.conv", "gy.conv"]
    assert all(w >= 128 and h >= 128 for _, w, h in shown)
    assert browser.screenshot_colours(tmp_path / "sobel.png") > 50


def _click_unit(browser, layer: str, i: int, j: int) -> dict:
    """Click unit (i, j) of channel 0 of `layer`'s maps where it is drawn: the unit the page took (a shrunk
    map's pixel covers several units) and the field it highlighted."""
    from selenium.webdriver.common.action_chains import ActionChains
    browser.driver.find_element("id", "search").clear()
    browser.driver.find_element("id", "search").send_keys(layer + "\n")
    browser.wait("return document.getElementById('maps') && document.getElementById('maps').complete")
    browser.js("document.getElementById('maps').scrollIntoView({block: 'center'})")
    img = browser.driver.find_element("id", "maps")
    width, height, natural_w, natural_h = browser.js(
        "const i = document.getElementById('maps'); return [i.clientWidth, i.clientHeight, i.naturalWidth, i.naturalHeight]")
    entry = browser.js("return window.cnnc.data().inside.maps[arguments[0]]", layer)
    (th, tw), (_, h, w) = entry["tile"], entry["shape"]
    x = (j + 0.5) * tw / w * width / natural_w       # the unit's centre, in CSS pixels from the content's corner
    y = (i + 0.5) * th / h * height / natural_h
    ActionChains(browser.driver).move_to_element_with_offset(img, round(x - width / 2), round(y - height / 2)) \
        .click().perform()
    unit = browser.js("return window.cnnc.state.unit")
    assert unit["name"] == layer and unit["channel"] == 0
    assert abs(unit["i"] - i) <= h / th + 1 and abs(unit["j"] - j) <= w / tw + 1   # the clicked pixel's units
    field = browser.driver.find_element("id", "field")
    return {"unit": (unit["i"], unit["j"]),
            "rows": [int(v) for v in field.get_attribute("data-rows").split(",")],
            "cols": [int(v) for v in field.get_attribute("data-cols").split(",")],
            "box": browser.js("return document.getElementById('field').getBoundingClientRect().toJSON()"),
            "image": browser.js("const i = document.getElementById('input-image'), r = i.getBoundingClientRect(); "
                                "return {x: r.x + i.clientLeft, y: r.y + i.clientTop, width: i.clientWidth, "
                                "height: i.clientHeight}")}


def _expected(rf: dict, i: int, j: int, size: tuple[int, int]) -> tuple[list[int], list[int]]:
    """The analysis' field of unit (i, j): rows -P + i*S to -P + i*S + r - 1, clipped to the input."""
    def span(axis: int, u: int, n: int) -> list[int]:
        start = -rf["padding"][axis] + u * rf["stride"][axis]
        return [max(0, start), min(n - 1, start + rf["size"][axis] - 1)]
    return span(0, i, size[0]), span(1, j, size[1])


@pytest.mark.parametrize("page, layer, unit", [("sobel_xy", "gx.conv", (0, 0)), ("sobel_xy", "gy.conv", (200, 310)),
                                               ("fixed", "c2", (0, 0)), ("fixed", "c2", (37, 81)),
                                               ("fixed", "maxpool", (100, 13))])
def test_a_unit_highlights_the_field_the_analysis_gives(browser, pages, tmp_path, page, layer, unit):
    from PIL import Image
    size = Image.open(PHOTO).size[::-1]
    source = str(EXAMPLES / "sobel_xy.cnn") if page == "sobel_xy" else str(pages[page].with_name("fixed.cnn"))
    report = compile_json(source, "--input", f"{'img' if page == 'sobel_xy' else 'x'}=1x{size[0]}x{size[1]}")
    rf = {e["name"]: e for e in report["layers"]}[layer]["rf"]
    open_page(browser, pages[page])
    got = _click_unit(browser, layer, *unit)
    rows, cols = _expected(rf, *got["unit"], size)
    assert (got["rows"], got["cols"]) == (rows, cols)
    image, box = got["image"], got["box"]     # and it is drawn there on the input picture
    scale_y, scale_x = image["height"] / size[0], image["width"] / size[1]
    assert box["y"] - image["y"] == pytest.approx(rows[0] * scale_y, abs=1.5)
    assert box["x"] - image["x"] == pytest.approx(cols[0] * scale_x, abs=1.5)
    assert box["height"] == pytest.approx((rows[1] - rows[0] + 1) * scale_y, abs=1.5)
    assert browser.console_errors() == []
    browser.driver.save_screenshot(str(tmp_path / "field.png"))


def test_the_notebook_iframe_shows_the_page(browser, tmp_path):
    from cnnc.compiler.driver import compile_file
    from cnnc.viz.explorer import iframe_html, page_html
    wrapper = tmp_path / "notebook.html"
    wrapper.write_text("<!DOCTYPE html><html><body>"
                       + iframe_html(page_html(compile_file(EXAMPLES / "lenet5.cnn"))) + "</body></html>")
    browser.open(wrapper.as_uri(), wait_ready=False)
    browser.driver.switch_to.frame(browser.driver.find_element("tag name", "iframe"))
    try:
        browser.wait("return !!(window.cnnc && window.cnnc.ready)")
        assert len(node_ids(browser)) >= 10
        assert browser.js("return document.getElementById('net-name').textContent") == "LeNet5"
    finally:
        browser.driver.switch_to.default_content()
    assert browser.console_errors() == []


# A classifier of fixed weights: the identity conv, the image's mean m, logits (m, 2m, -m).
CLASSIFIER = textwrap.dedent("""\
    network Cls {
        input x: [1, 32, 32]
        x -> conv(1, 3, pad = 1, bias = false, trainable = false, weights = [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
          -> global_avgpool -> flatten
          -> linear(3, bias = false, trainable = false, weights = [[1], [2], [-1]])
    }
    train Cls {
        data = synthetic(classes = 3, shape = (1, 32, 32), n = 16, seed = 0)
        classes = ["cat", "<b>dog</b>", "bird"]
    }
    """)


def test_a_classifier_shows_its_top_classes_by_name(browser, tmp_path):
    import math
    (tmp_path / "cls.cnn").write_text(CLASSIFIER)
    page = tmp_path / "cls.html"
    cli("viz", str(tmp_path / "cls.cnn"), "--style", "html", "--image", str(PHOTO), "--resize", "32x32", "-o", str(page))
    browser.open(page.as_uri())
    rows = browser.js("return [...document.querySelectorAll('#top-classes tr')].map(r => "
                      "[r.cells[0].textContent, parseFloat(r.cells[1].textContent)])")
    assert [name for name, _ in rows] == ["<b>dog</b>", "cat", "bird"]        # names as text, best first
    p = {name: share / 100 for name, share in rows}
    m = math.log(p["<b>dog</b>"] / p["cat"])                                   # softmax of (m, 2m, -m)
    assert 0 < m < 1 and math.log(p["cat"] / p["bird"]) == pytest.approx(2 * m, abs=0.01)
    assert browser.js("return document.querySelector('#top-classes b')") is None


def epochs(n: int) -> list[str]:
    return [json.dumps({"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5 + e / 40, "val_loss": 1.2 / e,
                        "val_accuracy": 0.5 + e / 50, "lr": 0.1, "seconds": 1.0}) for e in range(1, n + 1)]


def test_metrics_give_curves_and_the_confusion_matrix(browser, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    test = {"split": "test", "loss": 0.3, "accuracy": 0.75, "confusion": [[3, 1], [1, 3]]}
    metrics.write_text("\n".join(epochs(4) + [json.dumps(test)]) + "\n")
    page = tmp_path / "lenet5.html"
    cli("viz", str(EXAMPLES / "lenet5.cnn"), "--style", "html", "--metrics", str(metrics), "-o", str(page))
    browser.open(page.as_uri())
    heading = browser.js("return [...document.querySelectorAll('#network-panel h3')].map(h => h.textContent)")
    assert f"training ({metrics}, 4 epochs)" in heading
    sizes = browser.js("return ['curves', 'confusion'].map(c => { const i = document.querySelector('img.' + c); "
                       "return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null; })")
    assert all(s and s[0] > 100 and s[1] > 100 for s in sizes), sizes
    assert browser.console_errors() == []


# ------------------------------------------------------------------ errors (no browser)
LENET = str(EXAMPLES / "lenet5.cnn")


@pytest.mark.parametrize("argv, message", [
    (["-o", "x.svg"], "cnnc: error: -o x.svg: --style html writes one page, .html"),
    (["-o", "x.html", "--depth", "-1"], "cnnc: error: --depth -1: the depth must be 0 or more"),
    (["-o", "x.html", "--layers", "conv_1"], "cnnc: error: --layers is for --style activations, kernels or diagnostics, not --style html"),
    (["-o", "x.html", "--image", str(PHOTO)], "cnnc: error: 'conv_1' has no fixed weight: without --checkpoint"),
    (["-o", "x.html", "--image", str(PHOTO), "--input", "x=1x28x28"],
     "cnnc: error: --input x=1x28x28: with --image or --checkpoint the sizes come from the image"),
    (["-o", "x.html", "--metrics", "no/such.jsonl"], "cnnc: error: --metrics no/such.jsonl: no such file"),
])
def test_page_user_errors(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code = main(["viz", LENET, "--style", "html", *argv])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(message) and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_view_refuses_a_negative_depth(capsys):
    assert main(["view", LENET, "--depth", "-2"]) == 1
    assert capsys.readouterr().err.startswith("cnnc: error: --depth -2: the depth must be 0 or more")


# ------------------------------------------------------------------ per-layer diagnostics (a real run)
TINY = textwrap.dedent("""\
    network Tiny {
        input x: [1, 8, 8]
        x -> conv(4, 3, pad = 1) -> relu -> maxpool(2, stride = 2)
          -> flatten -> linear(3)
    }
    train Tiny {
        data      = synthetic(n = 48, classes = 3, val = 0.25)
        epochs    = 3
        batch     = 16
        loss      = cross_entropy
        optimizer = sgd(lr = 0.1)
        seed      = 0
    }
    """)


def _diagnostics(browser) -> dict | None:
    """The selected layer's diagnostics as the panel shows them: the picture's SVG text and size, and the
    figures table's values by epoch."""
    import base64
    shown = browser.js("const i = document.getElementById('diagnostics'); if (!i) return null; "
                       "return {src: i.src, complete: i.complete, width: i.naturalWidth, "
                       "rows: [...document.querySelectorAll('#diagnostics-figures tr[data-epoch]')].map(r => "
                       "[Number(r.dataset.epoch), ...[...r.querySelectorAll('td[data-value]')]"
                       ".map(td => JSON.parse(td.dataset.value))])}")
    if shown is not None:
        shown["svg"] = base64.b64decode(shown.pop("src").split(",", 1)[1]).decode("utf-8")
    return shown


def test_a_layer_shows_its_own_diagnostics_of_a_real_run(browser, tmp_path):
    (tmp_path / "tiny.cnn").write_text(TINY)
    assert main(["run", str(tmp_path / "tiny.cnn"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    records = {(layer["layer"], r["epoch"]): layer for line in metrics.read_text().splitlines()
               if "layers" in (r := json.loads(line)) for layer in r["layers"]}
    assert {name for name, _ in records} == {"conv", "relu", "linear"}
    page = tmp_path / "tiny.html"
    cli("viz", str(tmp_path / "tiny.cnn"), "--style", "html", "--metrics", str(metrics), "-o", str(page))
    browser.open(page.as_uri())
    line = records[("conv", 3)]["line"]
    assert line == records[("relu", 3)]["line"] == 3       # the relu shares the conv's line (and its fused group)

    click_node(browser, "conv")
    browser.wait("const i = document.getElementById('diagnostics'); return i && i.complete")
    conv = _diagnostics(browser)
    weight = lambda e: records[("conv", e)]["params"]["weight"]
    assert conv["width"] == 380 and f"conv (conv, line {line})" in conv["svg"] and "relu" not in conv["svg"]
    assert f">{weight(3)['grad_norm']:.3g}<" in conv["svg"] and f">{weight(3)['update_ratio']:.3g}<" in conv["svg"]
    assert "weights (weight)" in conv["svg"] and "Histograms" not in conv["svg"]
    assert conv["rows"] == [[e, weight(e)["grad_norm"], weight(e)["update_ratio"]] for e in (1, 2, 3)]
    assert browser.js("return document.getElementById('fused') !== null")

    click_node(browser, "relu")
    browser.wait("const i = document.getElementById('diagnostics'); return i && i.complete")
    relu = _diagnostics(browser)
    dead = [records[("relu", e)]["activation"]["dead"] for e in (1, 2, 3)]
    assert f"relu (relu, line {line})" in relu["svg"] and "conv (" not in relu["svg"]
    assert "dead units" in relu["svg"] and f">{dead[-1]:.1%}<" in relu["svg"] and "activation (probe)" in relu["svg"]
    assert relu["rows"] == [[e, d] for e, d in zip((1, 2, 3), dead)]

    for plain in ("maxpool", "flatten"):             # no records: nothing new on their panels
        click_node(browser, plain)
        assert browser.js("return document.getElementById('panel-title').textContent") == plain
        assert _diagnostics(browser) is None
        assert browser.js("return document.querySelector('#diagnostics-figures')") is None
    assert browser.console_errors() == []
    assert browser.screenshot_colours(tmp_path / "tiny.png") > 20
