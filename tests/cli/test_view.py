"""`cnnc view`: the live explorer on 127.0.0.1, as a person uses it.

Started as a real process on a free port: the page opens in chromium; saving
the file changes the page; a mistake shows in the page as the compiler
prints it (file:line:col, the quoted line, the hint) over the last graph that
compiled; the fix brings the graph back. Only the page and its data are
served, only to a loopback Host; Ctrl-C (SIGINT) stops it with status 0.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

NET = """\
network Small {
    input x: [1, 16, 16]
    x -> conv(4, 3, pad = 1) -> relu -> maxpool(2) -> flatten -> linear(10)
}
"""


@pytest.fixture
def served(tmp_path):
    source = tmp_path / "small.cnn"
    source.write_text(NET)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", "view", str(source)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C stops\)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        yield source, match.group(1), proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def labels(browser) -> list[str]:
    return browser.js("return [...document.querySelectorAll('#graph .node text')].map(t => t.textContent)")


def save(path: Path, text: str) -> None:
    """Write as an editor does, and make sure the modification time moves even on a coarse clock."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


@pytest.mark.slow
def test_view_reloads_on_save_shows_errors_in_the_page_and_stops_on_ctrl_c(browser, served):
    source, url, proc = served
    browser.open(url)
    assert any("conv 3×3, 4" in t for t in labels(browser))
    save(source, NET.replace("conv(4, 3", "conv(8, 5"))
    browser.wait("return [...document.querySelectorAll('#graph .node text')].some(t => t.textContent.includes('conv 5×5, 8'))")
    wrong = NET.replace("conv(4, 3", "conv(8, 5").replace("maxpool(2)", "maxpol(2)")
    line = wrong.splitlines()[2]
    save(source, wrong)
    browser.wait("return !document.getElementById('error').hidden")
    error = browser.js("return document.getElementById('error-text').textContent")
    assert error.splitlines()[0] == f"{source}:3:{line.index('maxpol') + 1}: error: unknown name 'maxpol'"
    assert f"    3 | {line}" in error
    assert "hint: did you mean 'maxpool'?" in error
    assert any("conv 5×5, 8" in t for t in labels(browser))       # the last good graph stays
    save(source, NET)
    browser.wait("return document.getElementById('error').hidden")
    browser.wait("return [...document.querySelectorAll('#graph .node text')].some(t => t.textContent.includes('conv 3×3, 4'))")
    assert browser.console_errors() == []
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    out, err = proc.communicate()
    assert "stopped" in out and "Traceback" not in err


@pytest.mark.slow
def test_view_grows_the_curves_while_metrics_are_written(browser, tmp_path):
    def epochs(n: int) -> list[str]:
        return [json.dumps({"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e}) for e in range(1, n + 1)]

    source, metrics = tmp_path / "small.cnn", tmp_path / "metrics.jsonl"
    source.write_text(NET)
    metrics.write_text("\n".join(epochs(2)) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", "view", str(source), "--metrics", str(metrics)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"at (\S+) \(Ctrl-C stops\)", proc.stdout.readline()).group(1)
        browser.open(url)
        heading = "return [...document.querySelectorAll('#network-panel h3')].map(h => h.textContent).join('|')"
        assert "2 epochs" in browser.js(heading)
        with metrics.open("a") as f:                       # as cnnc run appends an epoch
            f.write(epochs(3)[-1] + "\n")
        browser.wait(heading.replace("return ", "return (") + ").includes('3 epochs')")
        assert browser.console_errors() == []
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_view_serves_only_the_page_and_its_data_to_loopback(served):
    source, url, proc = served
    status, page = _get(url)
    assert status == 200 and b"connect-src 'self'" in page and b'data-live="1"' in page
    assert _get(url + "data.json")[0] == 200 and _get(url + "version")[0] == 200
    assert _get(url + "small.cnn")[0] == 404 and _get(url + "../small.cnn")[0] == 404
    assert _get(url, host="attacker.example:80")[0] == 403          # a DNS-rebinding page is refused
    listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout \
        if Path("/usr/bin/ss").exists() or Path("/bin/ss").exists() else ""
    port = url.rsplit(":", 1)[1].strip("/")
    for line in listening.splitlines():
        if f":{port} " in line:
            assert "127.0.0.1:" + port in line, line
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_view_refuses_a_busy_port(tmp_path, served):
    _, url, _ = served
    port = url.rsplit(":", 1)[1].strip("/")
    (tmp_path / "other.cnn").write_text(NET)
    done = subprocess.run([sys.executable, "-m", "cnnc", "view", "other.cnn", "--port", port], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"cnnc: error: --port {port}: cannot listen on 127.0.0.1:{port}")
    assert "hint: choose another port" in done.stderr

