"""The progress display (runtime/progress.py) as a person sees it: on a 70-column terminal (a pty),
on a pipe, and on Ctrl-C; and its parts: fields as data, the whole-run total, plain lines."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from cnnc.runtime.progress import Progress, render_fields, wanted
from cnnc.runtime.train.trainer import EpochStats, bar_fields

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "examples" / "lenet5.cnn"


# ------------------------------------------------------------------ parts
def test_fields_are_data_and_those_that_do_not_fit_are_left_out_from_the_end():
    fields = {"loss": "loss 0.1234", "accuracy": "acc 97.50%", "speed": "3,200 samples/s"}
    assert render_fields(fields, 200) == "loss 0.1234  acc 97.50%  3,200 samples/s"
    assert render_fields(fields, len("loss 0.1234  acc 97.50%")) == "loss 0.1234  acc 97.50%"
    assert render_fields(fields, 5) == ""
    fields["lr"] = "lr 0.003"       # another figure is another entry
    assert render_fields(fields, 200).endswith("3,200 samples/s  lr 0.003")


def test_the_training_bar_shows_loss_accuracy_lr_and_samples_per_second():
    stats = EpochStats()
    stats.add(0.5, 64, {"y": (32, 64)})
    assert bar_fields(stats, 8.0, 0.003) == {"loss": "loss 0.5000", "accuracy": "acc 50.00%", "lr": "lr 0.003",
                                             "speed": "8 samples/s"}


def test_quiet_prints_only_warnings_stops_and_the_final_figures(tmp_path):
    """--quiet (issue 25): no record line, no line per epoch, no header; the warnings and the test figures."""
    net = tmp_path / "dead.cnn"
    net.write_text(DEAD_RELU)
    runs = {}
    for quiet in (False, True):
        proc = subprocess.run([sys.executable, "-m", "cnnc", "run", str(net), "--epochs", "2", "--limit", "64",
                               "--out", str(tmp_path / f"run{quiet}")] + (["--quiet"] if quiet else []),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs[quiet] = (proc.stdout + proc.stderr).splitlines()
    loud, quiet = runs[False], runs[True]
    assert any(line.startswith("epoch 2/2  train loss") for line in loud), loud
    assert any(line.startswith("train: ") for line in loud), loud
    warnings = [line for line in loud if "warning:" in line]
    assert warnings, loud                                   # the network is built to warn (a dead ReLU layer)
    assert [line for line in quiet if "warning:" in line] == warnings
    assert [line for line in quiet if line.startswith("test: ")] == [l for l in loud if l.startswith("test: ")]
    assert not [line for line in quiet if line.startswith(("epoch ", "train: ", "Dead: "))], quiet


DEAD_RELU = """
network Dead {
    input x: [1, 28, 28]
    x -> flatten -> linear(16) -> affine(1, -100) -> relu -> linear(10)
}
train Dead {
    data = mnist10k
    epochs = 2
}
"""


def test_a_hidden_progress_prints_plain_lines_and_draws_nothing():
    err, out = io.StringIO(), io.StringIO()
    with Progress("epoch 1/2", 10, shown=False, stream=err, out=out) as bar:
        bar.start_run(10)
        bar.update(3, {"loss": "loss 1.0"})
        bar.write("epoch 1/2  train loss 1.0")
    assert err.getvalue() == "" and out.getvalue() == "epoch 1/2  train loss 1.0\n"
    assert not wanted(io.StringIO()) and not wanted(sys.stderr, quiet=True)


def test_the_total_covers_every_run_and_a_resumed_run_counts_what_is_left():
    err = io.StringIO()
    bar = Progress("k-fold", shown=True, runs=3, stream=err, out=io.StringIO())
    bar.start_run(100)                      # fold 1 of 3: about 300 steps in all
    assert bar.bar.total == 300
    bar.update(100)
    bar.start_run(90)                       # fold 2 is a little shorter: 100 done, 90 + 90 to come
    assert bar.bar.total == 280
    bar.close()
    resumed = Progress("epoch 4/10", shown=True, stream=err, out=io.StringIO())
    resumed.start_run(1000, done=300)
    assert (resumed.bar.n, resumed.bar.total) == (300, 1000)
    resumed.close()


# ------------------------------------------------------------------ as seen on a terminal
def _on_pty(args, columns=70, interrupt_after=None, timeout=120):
    """Run `python -m cnnc ARGS` on a pseudo-terminal of `columns`; everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", *args], stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True, env=env, start_new_session=True)
    os.close(slave)
    out, start, sent = b"", time.monotonic(), False
    while time.monotonic() - start < timeout:
        if interrupt_after is not None and not sent and b"%|" in out and time.monotonic() - start > interrupt_after:
            os.killpg(proc.pid, signal.SIGINT)      # what Ctrl-C sends to the terminal's foreground group
            sent = True
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    os.close(master)
    return out.decode("utf-8", "replace"), proc.returncode


def _screen(raw: str, columns: int) -> list[str]:
    """What a terminal of `columns` shows: \\r returns to the line's start, a full line wraps, ESC[2K erases
    the row and ESC[K (ESC[0K) the row from the cursor on; other escape sequences are ignored."""
    lines, line, col = [], [], 0
    for ch in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw.replace("\x1b[2K", "\x00").replace("\x1b[0K", "\x01")
                     .replace("\x1b[K", "\x01")):
        if ch == "\x00":
            line = [" "] * col
            continue
        if ch == "\x01":
            del line[col:]
            continue
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col == columns:               # the terminal wraps: what stays above is stale
                lines.append("".join(line).rstrip())
                line, col = [], 0
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    lines.append("".join(line).rstrip())
    return lines


def test_the_screen_emulation_erases_rows_as_a_terminal_does():
    """The emulation the terminal tests read: a bar cleared by ESC[2K before a message leaves the message alone
    on its row (a bar interrupted before tqdm ended its line is cleared this way: runtime/progress.py fresh_row)."""
    bar = "\repoch 1/30   0%|          | ETA ?"
    assert _screen(bar + "\r\x1b[2Kcnnc: interrupted\r\n", 70) == ["cnnc: interrupted", ""]
    assert _screen(bar + "\rcnnc: interrupted\r\n", 70) == ["cnnc: interrupted" + bar[1 + 17:], ""]   # not cleared
    assert _screen("abcdef\rab\x1b[K\n", 70) == ["ab", ""]


@pytest.mark.slow
def test_training_on_a_70_column_terminal_leaves_no_stale_lines(tmp_path):
    # 4,000 digits: an epoch of ~110 steps lasts long enough for the bar to be redrawn with its figures
    # (tqdm redraws at most every 0.1 s; 14 steps of the fast kernels ended before the first redraw)
    raw, code = _on_pty(["run", str(LENET), "--epochs", "2", "--limit", "4000", "--out", str(tmp_path / "run")])
    assert code == 0, raw
    bars = [seg for seg in re.split(r"[\r\n]", raw) if "%|" in seg]
    assert bars and max(len(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b)) for b in bars) < 70
    assert any("ETA" in b and "loss" in b for b in bars)      # the figures, as far as they fit
    screen = [line for line in _screen(raw, 70) if line]
    # no row of a bar is left behind (a wrapped bar leaves rows that its \r cannot reach)
    assert not [line for line in screen if "%|" in line or "█" in line or "ETA" in line], screen
    assert [line[:10] for line in screen if line.startswith("epoch ")] == ["epoch 1/2 ", "epoch 2/2 "]


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.4, 1.0, 1.7, 2.5])   # while the data loads, the bar draws, batches run
def test_ctrl_c_ends_the_bar_line_before_the_message(tmp_path, after):
    raw, code = _on_pty(["run", str(LENET), "--epochs", "30", "--out", str(tmp_path / "run")],
                        interrupt_after=after)
    assert code == 130, raw
    screen = _screen(raw, 70)
    assert "cnnc: interrupted" in screen          # on a line of its own
    assert not any("cnnc: interrupted" in line and line != "cnnc: interrupted" for line in screen)


def test_not_a_terminal_gives_plain_lines(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cnnc", "run", str(LENET), "--epochs", "1", "--limit", "96",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr and "\x1b" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("train: ") and lines[2].startswith("epoch 1/1  train loss "), lines
