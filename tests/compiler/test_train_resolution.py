"""A train section means one thing whatever the order of its keys; flags lay over it by one rule.

Class-level tests for issue 20's first defects (a learning rate dropped when `lr` came before
`optimizer`, keys that silently overwrote each other): every permutation of a section's keys resolves
to the same record or to the same located error, and so does every order of the flags over it; each
key's resolved value, written back (`key_text`), reads back to the same record; two spellings of one
setting are merged when they agree and refused at their lines when they do not.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cnnc.cli import main
from cnnc.compiler.driver import compile_file
from cnnc.compiler.train_spec import (given_text, key_text, override, record, set_key_text, summary,
                                      with_data)
from cnnc.compiler.train_vocab import KEYS
from cnnc.dsl.source import CnncError

NET = "network N(classes = 3) {\n    input x: [1, 8, 8]\n    x -> conv(4, 3, pad = 1) -> relu -> flatten -> linear(classes)\n}\n"

# Values for the keys of a section: several per key, among them spellings that set what another key sets
# (lr / optimizer(lr), val and test / data(val, test), normalize / preprocess), equal or not.
VALUES = {
    "data": ["synthetic(n = 64)", "synthetic(n = 64, val = 0.25)", "synthetic(n = 64, val = 0.5, limit = 40)"],
    "epochs": ["2", "7"],
    "batch": ["16"],
    "drop_last": ["true"],
    "seed": ["3"],
    "loss": ["cross_entropy", "0.5 * cross_entropy + mse", "[mse]"],
    "optimizer": ["adam", "adam(lr = 0.1)", "sgd(momentum = 0.9, lr = 0.25)", "rmsprop(lr = 0.1, alpha = 0.9)"],
    "lr": ["0.1", "0.05"],
    "schedule": ["cosine", "plateau(monitor = train_loss, patience = 1)", "warmup(2, then = step(3))"],
    "augment": ["[hflip]", "[random_crop(2), gaussian_noise(0.05)]"],
    "preprocess": ["[normalize]", "[center, scale(2)]"],
    "normalize": ["normalize", "normalize(0.5, 0.25)"],
    "l1": ["0.001"], "l2": ["0.01"],
    "early_stop": ["3", "early_stop(monitor = train_loss, patience = 2, min_delta = 0.01)"],
    "val": ["0.25", "0.5"],
    "classes": ['["a", "b", "c"]'],
    "init": ["xavier_uniform", "normal(0.02)"],
    "bootstrap": ["true"],
}
KEY_NAMES = sorted(VALUES)


def _source(entries: list[tuple[str, str]]) -> str:
    body = "".join(f"    {k} = {v}\n" for k, v in entries)
    return f"{NET}train N {{\n{body}}}\n"


def _outcome(tmp_path, entries: list[tuple[str, str]]):
    """The record a section resolves to, or its error: the message and the keys its locations point at."""
    path = tmp_path / "net.cnn"
    path.write_text(_source(entries))
    try:
        cfg = compile_file(path).net.train
    except CnncError as err:
        return ("error", err.message, _keys_at(err, entries))
    return ("record", record(cfg), summary(cfg))


def _keys_at(err: CnncError, entries: list[tuple[str, str]]) -> frozenset:
    """The keys a diagnostic's locations (its own and its notes') stand on (line 5 is the section's first)."""
    locs = [err.loc] + [note.loc for note in err.diagnostic.notes]
    return frozenset(entries[loc.line - 6][0] for loc in locs if loc is not None and loc.line >= 6)


sections = st.lists(st.sampled_from(KEY_NAMES), min_size=1, max_size=8, unique=True).flatmap(
    lambda keys: st.tuples(*[st.sampled_from(VALUES[k]).map(lambda v, k=k: (k, v)) for k in keys]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=sections, order=st.randoms(use_true_random=False))
def test_every_order_of_a_sections_keys_resolves_to_one_record_or_one_located_error(tmp_path, section, order):
    entries = list(section)
    shuffled = entries[:]
    order.shuffle(shuffled)
    assert _outcome(tmp_path, entries) == _outcome(tmp_path, shuffled)


FLAGS = ["--train lr=0.2", "--train optimizer=adam", "--train optimizer=sgd(lr=0.3)", "--train epochs=2",
         "--train data=synthetic(n=32)", "--train val=0.5", "--train normalize=normalize",
         "--train preprocess=[scale(3)]", "--train schedule=cosine"]


def _flag(text: str) -> Given:
    return given_text(text.split(" ", 1)[1], "--train")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=sections, flags=st.lists(st.sampled_from(FLAGS), min_size=1, max_size=4, unique=True),
       order=st.randoms(use_true_random=False))
def test_every_order_of_the_flags_over_a_section_resolves_the_same(tmp_path, section, flags, order):
    path = tmp_path / "net.cnn"
    path.write_text(_source(list(section)))
    try:
        cfg = compile_file(path).net.train
    except CnncError:
        return   # the section's own error: the test above
    shuffled = flags[:]
    order.shuffle(shuffled)
    outcomes = []
    for sequence in (flags, shuffled):
        try:
            outcomes.append(record(override(cfg, [_flag(f) for f in sequence])))
        except CnncError as err:
            outcomes.append(("error", frozenset(re.findall(r"--train \S+", err.message))))
    assert outcomes[0] == outcomes[1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=sections)
def test_every_keys_resolved_value_written_back_reads_back_to_the_same_record(tmp_path, section):
    """`--train KEY=<key_text(cfg, KEY)>` over the record changes nothing: what a search trial's table
    and "best" command show is what it trained with."""
    path = tmp_path / "net.cnn"
    path.write_text(_source(list(section)))
    try:
        cfg = compile_file(path).net.train
    except CnncError:
        return
    for key in KEYS:
        if key in ("normalize", "kfold", "sync_bn", "snapshots", "loss_weights", "test") or \
                (getattr(cfg, key, True) is None):
            continue   # keys the section above never sets to something --train can write
        assert record(set_key_text(cfg, f"{key}={key_text(cfg, key)}", "--train")) == record(cfg), key


# ------------------------------------------------------------------ the rules, by example
def _cfg(tmp_path, entries):
    path = tmp_path / "net.cnn"
    path.write_text(_source(entries))
    return compile_file(path).net.train


def _error(tmp_path, entries) -> CnncError:
    with pytest.raises(CnncError) as e:
        _cfg(tmp_path, entries)
    return e.value


def test_the_rate_is_the_optimizers_whichever_comes_first(tmp_path):
    for entries in ([("lr", "0.1"), ("optimizer", "adam")], [("optimizer", "adam"), ("lr", "0.1")],
                    [("lr", "0.1"), ("optimizer", "adam(lr = 0.1)")]):
        cfg = _cfg(tmp_path, entries)
        assert (cfg.optimizer.name, cfg.lr) == ("adam", 0.1)
        assert record(cfg)["optimizer"]["lr"] == 0.1 and summary(cfg).startswith("adam(lr = 0.1)")


def test_two_rates_that_differ_are_refused_at_the_later_naming_both(tmp_path):
    err = _error(tmp_path, [("lr", "0.1"), ("optimizer", "adam(lr = 0.2)")])
    assert err.message == "lr = 0.1 and optimizer = adam(lr = 0.2) both set the learning rate, differently"
    assert (err.loc.line, err.loc.col) == (7, 5) and err.diagnostic.notes[0].loc.line == 6
    err = _error(tmp_path, [("optimizer", "adam(lr = 0.2)"), ("lr", "0.1")])
    assert err.message == "lr = 0.1 and optimizer = adam(lr = 0.2) both set the learning rate, differently"
    assert err.loc.line == 7


@pytest.mark.parametrize("entries, message", [
    ([("normalize", "normalize"), ("preprocess", "[scale(2)]")],
     "normalize = [normalize] and preprocess = [scale(factor = 2)] both set the preprocessing, differently"),
    ([("val", "0.2"), ("data", "synthetic(n = 64, val = 0.1)")],
     "data = synthetic(n = 64, val = 0.1) and val = 0.2 both set the validation fraction, differently"),
    ([("data", "synthetic(n = 64, test = 0.1)"), ("test", "0.3")],
     "data = synthetic(n = 64, test = 0.1) and test = 0.3 both set the test fraction, differently"),
])
def test_keys_that_set_one_thing_differently_are_refused_at_their_lines(tmp_path, entries, message):
    err = _error(tmp_path, entries)
    assert err.message == message and err.loc.line == 7 and err.diagnostic.notes[0].loc.line == 6


def test_keys_that_set_one_thing_alike_are_one_setting(tmp_path):
    cfg = _cfg(tmp_path, [("val", "0.25"), ("data", "synthetic(n = 64, val = 0.25)")])
    assert cfg.val == 0.25 and "val" not in record(cfg)["data"]


@pytest.mark.parametrize("entries, message, line", [
    ([("schedule", "plateau(patience = 0)")], "schedule plateau watches val_loss, but the run has no "
                                              "validation split", 6),
    ([("data", "synthetic(n = 64, val = 0.25)"), ("schedule", "plateau(mode = max)")],
     "schedule 'plateau': mode = max says higher is better, but it watches val_loss, which is better lower", 7),
    ([("early_stop", "5")], "early_stop watches val_loss, but the run has no validation split", 6),
    ([("optimizer", "sgd(nesterov = true)")], "sgd(nesterov = true) needs momentum > 0 and dampening 0", 6),
    ([("loss", "[mse, mse]")], "2 losses for 1 output (linear)", 6),
])
def test_settings_that_do_not_fit_are_refused_at_their_line(tmp_path, entries, message, line):
    err = _error(tmp_path, entries)
    assert err.message.startswith(message) and err.loc.line == line, err.render()


def test_a_flag_replaces_what_it_sets_and_keeps_the_rest(tmp_path):
    cfg = _cfg(tmp_path, [("optimizer", "sgd(lr = 0.3, momentum = 0.9)"), ("data", "synthetic(n = 64, val = 0.25)")])
    adam = set_key_text(cfg, "optimizer=adam", "--train")
    assert (adam.optimizer.name, adam.lr) == ("adam", 0.3)                # the file's rate stays
    assert set_key_text(cfg, "optimizer=adam(lr=0.01)", "--train").lr == 0.01
    assert set_key_text(cfg, "data=synthetic(n=32)", "--train").val == 0.25   # the file's split stays
    assert set_key_text(cfg, "lr=0.5", "--train").optimizer == cfg.optimizer
    with pytest.raises(CnncError) as e:                                   # two flags at odds
        override(cfg, [given_text("lr=0.1", "--train"), given_text("optimizer=adam(lr=0.2)", "--train")])
    assert e.value.message == ("--train lr=0.1 and --train optimizer=adam(lr=0.2) both set the learning rate, "
                               "differently")
    moved = with_data(cfg, "mnist10k", 100)
    assert moved.data.name == "path" and moved.data.options["limit"] == 100 and moved.val == 0.25


def test_flags_may_mend_what_the_file_alone_lacks(tmp_path, capsys):
    """The record is checked once the flags lie over the file: `cnnc check` refuses a plateau without a
    validation split, `cnnc run --train val=0.25` runs it; a network of two outputs without a train section
    runs with its losses given as a flag."""
    path = tmp_path / "net.cnn"
    path.write_text(_source([("data", "synthetic(n = 32)"), ("schedule", "plateau(patience = 0)"), ("epochs", "1")]))
    assert main(["check", str(path)]) == 1
    assert "schedule plateau watches val_loss, but the run has no validation split" in capsys.readouterr().err
    assert main(["run", str(path), "--train", "val=0.25", "--out", str(tmp_path / "r")]) == 0
    assert "plateau on val_loss" in capsys.readouterr().out
    two = tmp_path / "two.cnn"
    two.write_text("network T {\n    input x: [1, 4, 4]\n    f = x -> flatten\n    f -> a: linear(3)\n"
                   "    f -> b: linear(2)\n    output a, b\n}\n")
    argv = ["run", str(two), "--train", "data=synthetic(n = 32)", "--epochs", "1", "--out", str(tmp_path / "t")]
    assert main(argv) == 1
    assert "the network has 2 outputs (a, b); give a loss for each" in capsys.readouterr().err
    assert main(argv + ["--train", "loss=[cross_entropy, mse]", "--overwrite"]) == 0
    assert "loss a: cross_entropy, b: mse" in capsys.readouterr().out
