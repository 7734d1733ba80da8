"""Issue 22, item 13: a corrupted results.jsonl on `cnnc search --resume`.

Decided: a line that is not a trial record as the search writes it is an
error naming the file, the line and the field, and nothing runs or is
rewritten (a skipped line would be dropped from the file at the next
rewrite). The class is tested by walking the fields of a real record — every
field, nested ones too, replaced by every kind of hostile value, removed, and
the line cut at every length — not by a list of cases; the CLI cases check
the whole contract (one diagnostic, the search directory untouched).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

from cnnc.dsl.source import CnncError
from cnnc.runtime.select import search
from hostile_harness import TINY, refused, run_cli

# Every JSON value a hostile file can hold in place of a field's value (floats beyond double range
# parse as infinity).
HOSTILE = ["high", "0.97", "", float("nan"), float("inf"), float("-inf"), None, True, False, 0, -1, 2.5,
           1e309, [], [0.5], {}, {"x": 1}]


@pytest.fixture(scope="module")
def real_record(tmp_path_factory) -> dict:
    """The record cnnc search writes for a real (tiny) trial."""
    root = tmp_path_factory.mktemp("record")
    (root / "tiny.cnn").write_text(TINY)
    base = search.Base(str(root / "tiny.cnn"))
    axes = [search.parse_axis("lr=0.05", search.network_parameters(base))]
    settings = search.plan_grid(axes)[0]
    state = search._State([], root / search.RESULTS, lambda line: None)
    state.add(search.run_trial(search.trial_spec(base, settings, axes, root / "trial")), final=True)
    record = search.read_results(root / search.RESULTS)[0]
    assert record["status"] == "ok" and record["figures"], record
    return record


def _leaves(value, path=()):
    """(path, value) of every node of a record: each field, and each entry of a field that is an object."""
    if path:
        yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, path + (key,))


def _set(record: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(record)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _plain(value) -> bool:
    """Plain JSON: finite numbers, text, true/false, null, and lists and objects of them."""
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def _compatible(original, value, where=()) -> bool:
    """A value of the kind the field holds (a finite number for a number, a whole number for a count).
    Inside `train` (the resolved record the trial ran with, kept for people to read; the search decides
    nothing by it) any plain JSON is harmless."""
    if where[:1] == ("train",) and len(where) > 1:
        return _plain(value)
    if isinstance(original, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(original, bool)
    if isinstance(original, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return type(value) is type(original) and (not isinstance(value, dict) or not value)


def _second_line(path: Path, real: dict, bad) -> None:
    """results.jsonl with a good record (the real one for another trial) on line 1 and `bad` (a record,
    or the raw text of a line) on line 2."""
    good = dict(real, settings={"lr": "0.5"}, trial="0123456789")
    line = bad if isinstance(bad, str) else json.dumps(bad, allow_nan=True)
    path.write_text(json.dumps(good) + "\n" + line + "\n")


def _refused_at_line_2(path: Path, field: str) -> None:
    with pytest.raises(CnncError) as info:
        search.read_results(path)
    message = info.value.message
    assert message.startswith(f"{path}:2: ") and "\n" not in message, message
    assert field in message, f"the message does not name the field {field!r}: {message}"


def test_every_field_with_every_hostile_value_is_refused_at_its_line_or_harmless(real_record, tmp_path):
    path = tmp_path / search.RESULTS
    for where, original in _leaves(real_record):
        for value in HOSTILE:
            _second_line(path, real_record, _set(real_record, where, value))
            if not _compatible(original, value, where):
                _refused_at_line_2(path, where[-1] if where[0] == "figures" and len(where) > 1 else where[0])
                continue
            try:
                records = search.read_results(path)
            except CnncError as err:        # refused although of the right kind (a negative count): fine
                assert err.message.startswith(f"{path}:2: "), err.message
                continue
            metric = search.choose_metric(records, None)   # what --resume does with what it read
            assert all(math.isfinite(r["figures"][metric]) for r in search.rank(records, metric)
                       if metric in r.get("figures", {}))


def test_every_field_removed_is_refused_if_the_search_needs_it(real_record, tmp_path):
    path = tmp_path / search.RESULTS
    for field in real_record:
        _second_line(path, real_record, {k: v for k, v in real_record.items() if k != field})
        if search.RECORD_FIELDS[field][0]:
            _refused_at_line_2(path, field)
        else:
            assert len(search.read_results(path)) == 2


def test_every_truncation_of_a_line_is_refused_at_its_line(real_record, tmp_path):
    path = tmp_path / search.RESULTS
    text = json.dumps(real_record)
    for cut in range(1, len(text)):
        _second_line(path, real_record, text[:cut])
        _refused_at_line_2(path, "not a trial record")


def test_every_field_a_search_writes_is_declared(real_record):
    """The reader refuses unknown fields: a field the writer adds must be declared in RECORD_FIELDS."""
    assert set(real_record) <= set(search.RECORD_FIELDS), set(real_record) - set(search.RECORD_FIELDS)
    assert search.record_problem(real_record) is None


@pytest.mark.parametrize("line, field", [
    ("[1, 2]", "not a trial record"), ("null", "not a trial record"), ('"text"', "not a trial record"),
    ('{"settings": {"lr": "0.05"}, "status": "ok", "surprise": 1}', "unknown field 'surprise'"),
    ('{"settings": {"lr": "0.05"}, "status": "ok", "figures": {"speed": 1}}', "'speed'"),
    ('{"settings": {"lr": "0.5"}, "status": "ok"}', "recorded twice"),
])
def test_lines_that_are_no_record_are_refused(real_record, tmp_path, line, field):
    path = tmp_path / search.RESULTS
    _second_line(path, real_record, line)
    _refused_at_line_2(path, field)


def test_a_figure_that_is_not_finite_never_costs_its_trial(tmp_path):
    path = tmp_path / search.RESULTS
    state = search._State([], path, lambda line: None)
    for lr, loss in (("0.1", float("nan")), ("0.2", 0.5)):
        state.add({"settings": {"lr": lr}, "status": "ok", "epochs": 1,
                   "figures": {"train_loss": loss, "train_accuracy": 0.75}}, final=True)
    records = search.read_results(path)
    assert [r["figures"] for r in records] == [{"train_accuracy": 0.75}, {"train_loss": 0.5, "train_accuracy": 0.75}]


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def finished_search(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search")
    (root / "tiny.cnn").write_text(TINY)
    result = run_cli(["search", "tiny.cnn", "--grid", "lr=0.1,0.05", "--out", "s"], root)
    assert result.status == 0, str(result)
    return root


@pytest.mark.parametrize("corrupt", [
    lambda r: _set(r, ("figures", "train_accuracy"), "high"),
    lambda r: _set(r, ("figures", "train_accuracy"), float("nan")),
    lambda r: _set(r, ("figures", "train_accuracy"), float("inf")),
    lambda r: _set(r, ("epochs",), "2"),
    lambda r: json.dumps(r)[:40],
], ids=["text", "NaN", "Infinity", "epochs-text", "truncated"])
def test_resume_refuses_a_corrupted_record_and_changes_nothing(finished_search, scratch, corrupt):
    shutil.copytree(finished_search, scratch.root, dirs_exist_ok=True)
    results = scratch.path("s/results.jsonl")
    lines = results.read_text().splitlines()
    bad = corrupt(json.loads(lines[1]))
    lines[1] = bad if isinstance(bad, str) else json.dumps(bad, allow_nan=True)
    results.write_text("\n".join(lines) + "\n")
    result = scratch.run("search", "tiny.cnn", "--grid", "lr=0.1,0.05", "--out", "s", "--resume")
    refused(result, scratch)
    assert result.err.startswith("cnnc: error: s/results.jsonl:2: "), str(result)
    assert "inf" not in result.out
