"""Stage 3 (runtime): the one progress display — a tqdm bar on a terminal or in a notebook, plain lines elsewhere.

Training, downloads, search and k-fold show their progress through `Progress`;
nothing here prints unless a caller made a `Progress` and asked it to show
(`shown`): the command line decides that (`wanted`: a terminal, or a Jupyter
kernel, and no `--quiet`). On a terminal the bar is tqdm's, redrawn in place
on stderr and cut to the terminal's width (`COLUMNS` or the terminal's own),
so a narrow terminal never wraps it into stale lines; in a notebook it is
tqdm's widget (`tqdm.auto`). tqdm was chosen over rich: it is one small
pure-Python wheel with no dependencies, it is what PyTorch and Hugging Face
users already see, and it does exactly this (rich brings pygments and
markdown-it for tables and colours cnnc does not use).

- **Fields as data**: `update(n, fields)` takes the figures shown after the
  bar as an ordered mapping name -> the text shown (`{"loss": "loss 0.1234",
  "acc": "acc 97.50%", "rate": "3,200 samples/s"}`); whatever does not fit
  the width is left out from the end, so the bar itself always keeps at
  least `MIN_BAR` columns. Adding a figure is adding an entry.
- **Whole-run ETA**: the bar counts the steps of the whole run (every epoch;
  with `runs=K`, K runs of about the same length, as the folds of k-fold),
  and its ETA is the remaining steps at the run's average rate so far
  (`smoothing=0`: the time between epochs, spent validating, counts too).
- **Lines above the bar**: `write(line)` clears the bar, prints the line
  (stdout) and lets the next update redraw the bar; without a bar it is a
  plain `print`.
- **Ctrl-C**: `close()` (also on leaving the `with` block through an
  exception) ends the bar's line, so the interruption's message starts a
  line of its own.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import IO, Mapping

MIN_BAR = 10          # columns the bar itself keeps on a narrow terminal
MIN_INTERVAL = 0.1    # seconds between two redraws
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| ETA {remaining}{postfix}"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is no terminal, but a bar still shows)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        return type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:   # an IPython without a running shell: not a notebook
        return False


def wanted(stream: IO | None = None, quiet: bool = False) -> bool:
    """Should a command show bars on `stream` (default stderr)? A terminal or a notebook, unless quiet."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return False
    return bool(getattr(stream, "isatty", lambda: False)()) or in_notebook()


def fresh_row(stream: IO | None = None) -> None:
    """On a terminal, the cursor to the start of a cleared row: what is written next has a line of
    its own even if an interruption arrived while a bar was drawing (before its line was ended).
    After an ended line the row is empty already, so clearing it loses nothing."""
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        stream.write("\r\x1b[2K")


def columns(stream: IO | None = None) -> int:
    """The width to draw in: COLUMNS, else the terminal's, else 80 (`shutil.get_terminal_size`'s rule,
    asked of the stream the bar is drawn on)."""
    if os.environ.get("COLUMNS", "").isdigit() and int(os.environ["COLUMNS"]) > 0:
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size((stream or sys.stderr).fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


def render_fields(fields: Mapping[str, str], room: int) -> str:
    """'loss 0.1234  acc 97.50%': as many whole fields, from the first, as fit in `room` columns."""
    shown = ""
    for text in fields.values():
        candidate = f"{shown}  {text}" if shown else text
        if len(candidate) > room:
            break
        shown = candidate
    return shown


class Progress:
    """A bar over `total` steps (see the module docstring); `shown=False` draws nothing and
    `write` prints plain lines. `runs` > 1: the total is K runs of about the length of the
    first (`start_run` re-estimates it as each run starts)."""

    def __init__(self, label: str, total: int | None = None, *, shown: bool = True, unit: str = "it",
                 byte_sizes: bool = False, runs: int = 1, stream: IO | None = None, out: IO | None = None):
        self.label, self.runs, self.started = label, max(1, runs), 0
        self.context = ""                    # put before the label, e.g. "fold 2/5"
        self.stream = stream if stream is not None else sys.stderr
        self.out = out                       # where write() prints (default: sys.stdout at the time)
        self.fields: dict[str, str] = {}
        self._shown, self._options = shown, {"unit": unit, "unit_scale": byte_sizes,
                                             "unit_divisor": 1024 if byte_sizes else 1000}
        self.bar = None
        if shown and total is not None:
            self._draw(total)

    def _draw(self, total: int | None) -> None:
        """Make the tqdm bar (on first use: a bar whose total is not known yet is not drawn before it is)."""
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=self._desc(), file=self.stream, smoothing=0, dynamic_ncols=True,
                        leave=False, mininterval=MIN_INTERVAL, bar_format=BAR_FORMAT if total else None, **self._options)

    def _desc(self) -> str:
        return f"{self.context} {self.label}" if self.context else self.label

    @property
    def shown(self) -> bool:
        return self._shown

    # ------------------------------------------------------------ counting
    def start_run(self, steps: int, done: int = 0) -> None:
        """A run of `steps` steps starts, `done` of them finished before (a resumed run). The
        total becomes the steps so far, this run's and, for each run still to come, as many."""
        self.started += 1
        if not self._shown:
            return
        if self.bar is None:
            self._draw(steps)
        if self.started == 1 and done:
            self.bar.n = self.bar.last_print_n = done   # a resumed run: its rate counts from here on
            self.bar.initial = done
        elif done:
            self.bar.n += done
        self.bar.total = self.bar.n + (steps - done) + steps * max(0, self.runs - self.started)
        self.bar.refresh()

    def set_label(self, label: str) -> None:
        self.label = label
        if self.bar is not None:
            self.bar.set_description_str(self._desc(), refresh=False)

    def update(self, n: int = 1, fields: Mapping[str, str] | None = None) -> None:
        """`n` more steps done; `fields` (name -> the text shown) follow the bar, in order."""
        if self.bar is None and self._shown:
            self._draw(None)
        if self.bar is None:
            return
        if fields is not None:
            self.fields = dict(fields)
        self._fit_fields()
        self.bar.update(n)

    def _fit_fields(self) -> None:
        # the label, " 100%|", the bar, "| ETA 1:23:45", ", " and the fields
        fixed = len(self._desc()) + len(" 100%|") + len("| ETA 00:00:00") + len(", ")
        room = columns(self.stream) - 1 - fixed - MIN_BAR
        self.bar.postfix = render_fields(self.fields, room) or None

    # ------------------------------------------------------------ lines
    def write(self, line: str) -> None:
        """A line above the bar (the bar is redrawn by the next update); a plain line without one."""
        out = self.out if self.out is not None else sys.stdout
        if self.bar is None:
            print(line, file=out, flush=True)
            return
        self.bar.clear()
        print(line, file=out, flush=True)

    def clear(self) -> None:
        if self.bar is not None:
            self.bar.clear()

    def close(self, interrupted: bool = False) -> None:
        """Remove the bar; after an interruption leave its last state and end its line."""
        self._shown = False
        if self.bar is None:
            return
        bar, self.bar = self.bar, None
        if interrupted:
            bar.leave = True    # tqdm ends the line, so what is printed next starts its own
        bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(interrupted=kind is not None)
