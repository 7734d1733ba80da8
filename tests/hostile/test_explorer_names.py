"""Issue 23, item 5: names that are markup reach the explorer page as text and run nothing.

Every string from a `.cnn` file or the files beside it (file and folder
names, imported paths, source lines and their comments, class names, the
image's name) travels in the page's one JSON object, written by
`viz.explorer.script_json`, and is put into the page as text. Layer and
block names are identifiers in the language, so the page is also built from
data whose every name was replaced by markup, as a caller of the Python API
could hand it over. In chromium: no script of the attacker runs (no
`window.PWNED`, no alert), the text shows literally, and nothing is fetched.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from cnnc.cli import main
from cnnc.compiler.driver import compile_file
from cnnc.viz.explorer import page_data, page_html, script_json

from hostile_harness import ROOT

PAYLOADS = ('<img src=x onerror="window.PWNED=1">', "</script><script>window.PWNED=1</script>",
            "<!--<script>window.PWNED=1</script>-->", "]]><svg onload=window.PWNED=1>", "\u2028x\u2029&amp;")
FILE_NAME = '<img src=x onerror="window.PWNED=1">'            # a file may not hold "/": the first payload
IMPORT_DIR = "x</script><script>window.PWNED=1</script>"      # "/" splits it into folders, the path keeps it

BLOCKS = "block pair(c) {\n    conv(c, 3, pad = 1) -> relu  # </script><script>window.PWNED=1</script>\n}\n"
MAIN = textwrap.dedent(f"""\
    import "{IMPORT_DIR}/blocks.cnn"
    network Tiny {{
        input x: [1, 8, 8]
        x -> p: pair(4) -> flatten -> linear(2)  # <img src=x onerror="window.PWNED=1">
    }}
    train Tiny {{
        data = synthetic(classes = 2, shape = (1, 8, 8), n = 16, seed = 0)
        classes = ["<img src=x onerror=window.PWNED=1>", "</script><script>window.PWNED=1</script>"]
    }}
    """)


def test_script_json_keeps_every_payload_inside_its_script_element():
    for payload in PAYLOADS:
        text = script_json({"name": payload, payload: [payload]})
        assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
        assert json.loads(text) == {"name": payload, payload: [payload]}


def _no_script_ran(browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    assert browser.js("return window.PWNED === undefined")
    with pytest.raises(NoAlertPresentException):
        browser.driver.switch_to.alert.text  # noqa: B018 -- reading it is the check
    assert browser.js("return [...document.images].every(i => i.src.startsWith('data:'))")
    assert browser.js("return document.querySelectorAll('script').length") == 3
    assert browser.console_errors() == []


def _show_everything(browser) -> None:
    """Unfold every block, select every layer and block: every text path of the page is drawn."""
    browser.js("document.getElementById('depth').value = 9; document.getElementById('unfold').click()")
    for item in browser.js("return [...document.querySelectorAll('#graph [data-id]')].map(e => e.dataset.id)"):
        browser.js("document.querySelector(`#graph [data-id=\"${CSS.escape(arguments[0])}\"]`)"
                   ".dispatchEvent(new MouseEvent('click', {bubbles: true}))", item)


@pytest.fixture
def hostile_files(tmp_path):
    (tmp_path / IMPORT_DIR).mkdir(parents=True)
    (tmp_path / IMPORT_DIR / "blocks.cnn").write_text(BLOCKS)
    source = tmp_path / (FILE_NAME + ".cnn")
    source.write_text(MAIN)
    image = tmp_path / (FILE_NAME + ".png")
    from PIL import Image
    Image.new("L", (8, 8), 128).save(image)
    return source, image


def test_hostile_file_names_source_lines_and_classes_run_nothing(browser, hostile_files, tmp_path, monkeypatch):
    source, _ = hostile_files
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "page.html"
    assert main(["viz", source.name, "--style", "html", "-o", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert "<img src=x" not in html and html.lower().count("</script") == 3
    browser.open(page.as_uri())
    _show_everything(browser)
    _no_script_ran(browser)
    assert browser.js("return document.getElementById('net-source').textContent") == source.name
    for layer, comment in (("p.relu", "# </script><script>window.PWNED=1</script>"),
                           ("linear", '# <img src=x onerror="window.PWNED=1">')):
        search = browser.driver.find_element("id", "search")
        search.clear()
        search.send_keys(layer + "\n")
        quoted = browser.js("return [...document.querySelectorAll('#selection pre.src')].map(e => e.textContent)")
        assert any(q.endswith(comment) for q in quoted), quoted      # the source line, as text
        locs = browser.js("return [...document.querySelectorAll('#selection .loc')].map(e => e.textContent)")
        assert layer != "p.relu" or any(IMPORT_DIR in loc for loc in locs)   # the imported path, as text
    _no_script_ran(browser)


def test_hostile_names_of_layers_blocks_and_network_run_nothing(browser, tmp_path):
    """Layer and block names are identifiers in a .cnn file; a caller of page_html may pass anything."""
    compiled = compile_file(ROOT / "examples" / "resnet18.cnn")
    text = json.dumps(page_data(compiled))
    for i, (word, payload) in enumerate(zip(("ResNet18", "basic_3", "conv_bn_relu", "fc", "relu"), PAYLOADS)):
        text = text.replace(word, json.dumps(f"{payload}#{i}")[1:-1])
    page = tmp_path / "names.html"
    page.write_text(page_html(data=json.loads(text)), encoding="utf-8")
    browser.open(page.as_uri())
    _show_everything(browser)
    _no_script_ran(browser)
    assert browser.js("return document.getElementById('net-name').textContent") == PAYLOADS[0] + "#0"
    browser.driver.find_element("id", "search").send_keys(PAYLOADS[1] + "#1\n")
    assert PAYLOADS[1] in browser.js("return document.getElementById('panel-title').textContent")
    _no_script_ran(browser)


def test_a_hostile_image_name_runs_nothing(browser, hostile_files, tmp_path, monkeypatch):
    """The image's name and the class names reach the page with the feature maps and the prediction."""
    source, image = hostile_files
    monkeypatch.chdir(tmp_path)
    fixed = tmp_path / (FILE_NAME + "-fixed.cnn")
    fixed.write_text("network F {\n    input x: [1, H, W]\n    x -> e: conv(1, 3, pad = 1, bias = false, "
                     "trainable = false, weights = [[0, 1, 0], [1, -4, 1], [0, 1, 0]])\n}\n")
    page = tmp_path / "image.html"
    assert main(["viz", fixed.name, "--style", "html", "--image", image.name, "-o", str(page)]) == 0
    browser.open(page.as_uri())
    _show_everything(browser)
    _no_script_ran(browser)
    assert image.name in browser.js("return document.getElementById('network-panel').textContent")
