"""Benchmark: the explorer page (`cnnc viz --style html`) — its size, and its times in headless chromium.

    python bench/bench_explorer.py            # ResNet-152, DenseNet-121 (+ ResNet-18 with an image)
    python bench/bench_explorer.py --repeat 5

For each network: the page's bytes (and what the vendored layout library
takes of them); the time from navigation to the folded graph drawn (the
page's `window.cnnc.timings.openMs`, measured by the page itself after its
first layout and render) against the time the same browser takes to open the
static Graphviz SVG of the same network (`cnnc viz -o net.svg`), in the same
run; the time to unfold the largest top-level block (layout and drawing, the
page's `lastUnfoldMs`) and to open every block at once. Targets: a folded
page opens in under 2 s; unfolding a stage relayouts in under 0.5 s; the
pages of ResNet-152 and DenseNet-121 without images are well under 2 MB.

With an image, the page of ResNet-18 (seeded initial weights: a checkpoint's
maps compress alike) holds every layer's first 16 maps and every conv's
kernels: its size is printed too.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from cnnc.compiler.driver import compile_file
from cnnc.viz import diagram, render
from cnnc.viz.explorer import ASSETS, LAYOUT_LIBRARY, Inside, page_html

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("resnet152", "densenet121")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900")


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def open_ms(driver, url: str, page: bool) -> float:
    driver.get("about:blank")
    driver.get(url)
    if page:
        return driver.execute_script("return window.cnnc.timings.openMs")
    return driver.execute_script("const t = performance.timing; return t.loadEventEnd - t.navigationStart")


def largest_top_block(driver) -> str:
    return driver.execute_script(
        "const d = window.cnnc.data(); return d.top.filter(i => d.containers[i])"
        ".sort((a, b) => d.containers[b].layers - d.containers[a].layers)[0]")


def resnet18_with_image(tmp: Path) -> int:
    """The bytes of ResNet-18's page with the shipped photograph, every tensor and every kernel embedded."""
    import numpy as np
    from cnnc.runtime.apply import GREY_PHOTO, forward
    from cnnc.runtime.data.images import convert_channels, read_image, resize
    from cnnc.runtime.plan import initial_parameters
    compiled = compile_file(ROOT / "examples" / "resnet18.cnn")
    store = initial_parameters(compiled.net, compiled.analysis.params, seed=0)
    image = resize(convert_channels(read_image(GREY_PHOTO), 3), (224, 224))
    names = ["x"] + [n.name for n in compiled.net.layers()]
    tensors = forward(compiled, image, names, store)
    kernels = [(n, np.asarray(store[f"{n}.weight"], np.float32)) for n in names
               if f"{n}.weight" in store and store[f"{n}.weight"].ndim == 4]
    page = page_html(compiled, inside=Inside(str(GREY_PHOTO), image, tensors, kernels, "stem.conv"))
    (tmp / "resnet18-image.html").write_text(page, encoding="utf-8")
    return len(page.encode("utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    library = (ASSETS / LAYOUT_LIBRARY).stat().st_size
    driver = browser(str(tmp / "profile"))
    print(f"layout library {LAYOUT_LIBRARY}: {library / 1024:.0f} KiB of every page")
    print(f"{'network':<12} {'page KiB':>9} {'open ms (Q2)':>13} {'SVG open ms':>12} {'ratio':>6} "
          f"{'unfold ms':>10} {'block':<10} {'all open ms':>12} {'nodes':>6}")
    ok = True
    try:
        for name in NETWORKS:
            compiled = compile_file(ROOT / "examples" / f"{name}.cnn")
            page, svg = tmp / f"{name}.html", tmp / f"{name}.svg"
            page.write_text(page_html(compiled), encoding="utf-8")
            svg.write_bytes(render(diagram(compiled), "svg"))
            opens, svgs, unfolds, alls = [], [], [], []
            for _ in range(args.repeat):
                svgs.append(open_ms(driver, svg.as_uri(), page=False))
                opens.append(open_ms(driver, page.as_uri(), page=True))
                block = largest_top_block(driver)
                driver.execute_script("window.cnnc.unfold(arguments[0])", block)
                unfolds.append(driver.execute_script("return window.cnnc.timings.lastUnfoldMs"))
                alls.append(driver.execute_script(
                    "const t = performance.now(); document.getElementById('depth').value = 99; "
                    "document.getElementById('unfold').click(); return performance.now() - t"))
            nodes = driver.execute_script("return document.querySelectorAll('#graph .node').length")
            o, s, u, a = (statistics.median(v) for v in (opens, svgs, unfolds, alls))
            size = page.stat().st_size
            print(f"{name:<12} {size / 1024:>9.0f} {o:>13.0f} {s:>12.0f} {o / s:>6.2f} {u:>10.0f} "
                  f"{block[2:]:<10} {a:>12.0f} {nodes:>6}")
            ok &= o < 2000 and u < 500 and size < 2 * 1024 * 1024
    finally:
        driver.quit()
    print(f"ResNet-18 with a 224x224 image (maps and kernels embedded): "
          f"{resnet18_with_image(tmp) / 1024 / 1024:.2f} MiB")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
