"""Stage 1 (dsl): source files, locations and the one user-error type.

Every stage raises `CnncError` for a mistake the user can fix. It carries a
`Loc` (file, line, column) and renders as the classic compiler diagnostic:
`file.cnn:LINE:COL: error: message`, the source line, a caret under the
column, then optional notes and a hint. The CLI prints it and exits 1; nothing
else is allowed to escape to the user.

Rendering is the one place where user text reaches the terminal, so it is made
harmless here: control characters (ESC, OSC sequences, form feeds, U+0085 …)
in messages, notes, hints, file names and quoted lines are shown escaped
(`\x1b`), and a quoted line is clipped to about `QUOTE_WIDTH` characters
around the column, with `…` marks, so a huge one-line file cannot flood it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    col: int
    end_col: int | None = None  # exclusive end column on the same line, for a wider underline

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


PATH_WIDTH = 160  # characters of a file path in a location, at most
QUOTE_WIDTH = 100  # characters of a source line quoted under a diagnostic, at most (plus … marks)
MESSAGE_WIDTH = 500  # characters of a message, note or hint; more only when it repeats huge user text


class SourceRegistry:
    """Remembers the text of every file read, so diagnostics can quote lines."""

    _texts: dict[str, str] = {}

    @classmethod
    def add(cls, name: str, text: str) -> None:
        cls._texts[name] = text

    @classmethod
    def line(cls, name: str, line: int) -> str | None:
        """Line `line` (1-based) of a registered file, counted as the lexer counts: by "\n" only.

        (`str.splitlines` would also split at form feeds, U+0085 or U+2028 and
        quote the wrong line.) Only files the parser has read are quoted:
        nothing is read from disk here.
        """
        text = cls._texts.get(name)
        if text is None or line < 1:
            return None
        lines = text.split("\n")
        if line > len(lines) or (line == len(lines) and not lines[-1] and line > 1):
            return None
        return lines[line - 1].removesuffix("\r")


@dataclass
class Note:
    """A secondary message, optionally pointing at another place."""

    message: str
    loc: Loc | None = None


@dataclass
class Diagnostic:
    severity: str  # "error" or "warning"
    message: str
    loc: Loc | None = None
    hint: str | None = None
    notes: list[Note] = field(default_factory=list)
    code: str | None = None  # the lint name, for warnings that can be silenced

    def render(self, color: bool = False) -> str:
        def paint(text: str, style: str) -> str:
            if not color:
                return text
            codes = {"error": "1;31", "warning": "1;35", "note": "1;36", "bold": "1", "caret": "1;32"}
            return f"\x1b[{codes[style]}m{text}\x1b[0m"

        head = f"{_where(self.loc)}: " if self.loc else "cnnc: "
        suffix = f" [{self.code}]" if self.code else ""
        out = [paint(head, "bold") + paint(f"{self.severity}:", self.severity) + f" {_shown(self.message)}{suffix}"]
        out += _quote(self.loc, paint)
        for note in self.notes:
            where = f"{_where(note.loc)}: " if note.loc else ""
            out.append(f"  {paint('note:', 'note')} {where}{_shown(note.message)}")
        if self.hint:
            out.append(f"  {paint('hint:', 'note')} {_shown(self.hint)}")
        return "\n".join(out)


def _cell(ch: str) -> str:
    """How one character of user text is shown: itself if printable, a tab as a space, else escaped."""
    if ch.isprintable():
        return ch
    if ch == "\t":
        return " "
    return repr(ch)[1:-1]  # '\x1b', '\x0c', '\x85', '\u2028'


def printable(text: str) -> str:
    """User text made safe for a terminal: control characters escaped, so none is obeyed."""
    return text if text.isprintable() else "".join(_cell(c) for c in text)


def _shown(text: str) -> str:
    """Text of a message as printed: escaped, and clipped in the middle if a huge name made it huge."""
    text = printable(text)
    if len(text) <= MESSAGE_WIDTH:
        return text
    return text[:MESSAGE_WIDTH - 100] + "…" + text[-99:]


def _where(loc: Loc) -> str:
    """`file:line:col`, escaped, with a very long file path clipped in the middle."""
    name = printable(loc.file)
    if len(name) > PATH_WIDTH:
        name = name[:PATH_WIDTH // 3] + "…" + name[-(PATH_WIDTH - PATH_WIDTH // 3 - 1):]
    return f"{name}:{loc.line}:{loc.col}"


def _window(cells: list[str], col: int) -> tuple[int, int]:
    """The slice of a line's cells to quote: all of it if short, else about QUOTE_WIDTH around `col`."""
    if sum(map(len, cells)) <= QUOTE_WIDTH:
        return 0, len(cells)
    lo, used = col, 0
    while lo > 0 and used + len(cells[lo - 1]) <= QUOTE_WIDTH * 2 // 5:
        lo -= 1
        used += len(cells[lo])
    hi, used = lo, 0
    while hi < len(cells) and used + len(cells[hi]) <= QUOTE_WIDTH:
        used += len(cells[hi])
        hi += 1
    return lo, hi


def _quote(loc: Loc | None, paint) -> list[str]:
    if loc is None:
        return []
    text = SourceRegistry.line(loc.file, loc.line)
    if text is None:
        return []
    cells = [_cell(c) for c in text]
    col = min(max(loc.col - 1, 0), len(cells))
    lo, hi = _window(cells, col)
    left = "…" if lo > 0 else ""
    shown = left + "".join(cells[lo:hi]) + ("…" if hi < len(cells) else "")
    width = (loc.end_col - loc.col) if loc.end_col and loc.end_col > loc.col else 1
    under = sum(len(c) for c in cells[col:min(col + width, hi)])
    offset = len(left) + sum(len(c) for c in cells[lo:col])
    gutter = f"{loc.line:>5} | "
    return [gutter + shown, " " * (len(gutter) + offset) + paint("^" + "~" * (max(under, 1) - 1), "caret")]


class CnncError(Exception):
    """A user error: something in the input (file, flag, data) the user can fix."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None,
                 notes: list[Note] | None = None):
        super().__init__(message)
        self.diagnostic = Diagnostic("error", message, loc, hint, list(notes or []))

    @property
    def message(self) -> str:
        return self.diagnostic.message

    @property
    def loc(self) -> Loc | None:
        return self.diagnostic.loc

    @property
    def hint(self) -> str | None:
        return self.diagnostic.hint

    def add_note(self, message: str, loc: Loc | None = None) -> "CnncError":
        notes = self.diagnostic.notes
        if notes and notes[-1].message.split(" (×")[0] == message and notes[-1].loc == loc:
            # Recursion repeats the same call site: count it instead of repeating it.
            times = int(notes[-1].message.split(" (×")[1][:-1]) + 1 if " (×" in notes[-1].message else 2
            notes[-1] = Note(f"{message} (×{times})", loc)
        else:
            notes.append(Note(message, loc))
        return self

    def render(self, color: bool = False) -> str:
        return self.diagnostic.render(color)

    def __str__(self) -> str:
        return self.render()


def did_you_mean(word: str, candidates: Iterable[str], fallback: str | None = None) -> str | None:
    """The hint for a misspelt name: "did you mean 'x'?", else `fallback` (e.g. the list of choices)."""
    close = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1)
    return f"did you mean '{close[0]}'?" if close else fallback
