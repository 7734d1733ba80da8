"""Shared fixtures: write .cnn programs to a temp dir and compile them."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cnnc.compiler.driver import compile_file
from cnnc.dsl.source import CnncError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# The suite runs on the reference (NumPy) kernels unless told otherwise: `CNNC_KERNELS=fast pytest` runs
# it on the compiled set. The fast set's own tests (tests/runtime/test_kernels_fast.py) ask for it by name.
os.environ.setdefault("CNNC_KERNELS", "numpy")


@pytest.fixture
def write(tmp_path):
    """write(source, name="net.cnn") -> path of the dedented program."""
    def _write(source: str, name: str = "net.cnn") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
        return path
    return _write


@pytest.fixture
def compile_src(write):
    """compile_src(source, **kwargs) -> Compiled."""
    def _compile(source: str, **kwargs):
        return compile_file(write(source), **kwargs)
    return _compile


@pytest.fixture
def error_of(write):
    """error_of(source, **kwargs) -> the CnncError compiling it raises (fails if none)."""
    def _error(source: str, **kwargs) -> CnncError:
        path = write(source)
        with pytest.raises(CnncError) as info:
            compile_file(path, **kwargs)
        return info.value
    return _error


# ------------------------------------------------------------------ a real browser (explorer pages)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900")


class Browser:
    """Headless Debian chromium driven by Selenium, with what a page test asks: console errors,
    the requests a page made, a screenshot's colours."""

    def __init__(self, driver):
        self.driver = driver

    def open(self, url: str, wait_ready: bool = True):
        self.driver.get_log("browser")
        self.driver.get_log("performance")
        self.driver.get(url)
        if wait_ready:
            self.wait("return !!(window.cnnc && window.cnnc.ready)")
        return self.driver

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, script: str, timeout: float = 10.0, *args):
        import time
        end = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for: {script}")
            time.sleep(0.05)

    def console_errors(self) -> list[dict]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def requests(self) -> list[str]:
        """Every URL the page asked for since it was opened (Chrome's performance log)."""
        import json
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def screenshot_colours(self, path: Path) -> int:
        """Saves a screenshot and returns how many distinct colours it has (a blank page has one or two)."""
        from PIL import Image
        self.driver.save_screenshot(str(path))
        with Image.open(path) as image:
            return len(image.convert("RGB").getcolors(1 << 24) or [])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless chromium per test module; skipped where Debian's chromium and chromedriver are absent
    (.ci/run installs them, so they run in CI)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
