"""Ensembles: probabilities averaged or voted, members scored beside the ensemble on the same split, members
from seeds, snapshots and other networks, and every mismatch refused naming the flag at fault."""
from __future__ import annotations

import subprocess
import sys

import re
from pathlib import Path

import numpy as np
import pytest

from cnnc.cli import main
from cnnc.compiler.driver import compile_file
from cnnc.runtime import checkpoint
from cnnc.runtime.select.ensemble import combine, score
from cnnc.runtime.plan import Plan
from cnnc.runtime.data.pipeline import inputs, prepare
from cnnc.runtime.data.targets import NetworkShapes
from cnnc.runtime.train.losses import loss_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

TINY = """
network Tiny(classes = 3) {
    input x: [1, 8, 8]
    x -> flatten -> linear(12) -> relu -> linear(classes)
}
train Tiny {
    data = synthetic(n = 96, classes = 3, noise = 0.6)
    epochs = 2
    batch = 16
    optimizer = adam(lr = 0.01)
}
"""


def test_mean_averages_and_vote_counts_with_ties_broken_by_the_mean():
    a = np.array([[0.6, 0.4, 0.0], [0.2, 0.5, 0.3]])
    b = np.array([[0.1, 0.9, 0.0], [0.2, 0.3, 0.5]])
    c = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]])
    np.testing.assert_allclose(combine([a, b, c], "mean"), (a + b + c) / 3)
    votes = combine([a, b, c], "vote")
    np.testing.assert_allclose(votes, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-8)
    assert votes.argmax(axis=1).tolist() == [0, 2]   # sample 1: a three-way tie, class 2 has the highest mean (0.4)
    masks = combine([np.ones((1, 2, 3, 3)) * [[[[0.9]], [[0.1]]]], np.ones((1, 2, 3, 3)) * [[[[0.2]], [[0.8]]]]],
                    "mean")
    assert masks.shape == (1, 2, 3, 3) and np.allclose(masks[0, 0], 0.55)


def test_score_is_accuracy_nll_and_macro_f1():
    prob = np.array([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2]])
    y = np.array([0, 0, 1])
    s = score("m", prob, y, dense=False, with_loss=True)
    assert s.accuracy == pytest.approx(1 / 3)
    assert s.loss == pytest.approx(-(np.log(0.7) + np.log(0.4) + np.log(0.2)) / 3)
    # class 0: precision 1/2, recall 1/2 -> F1 1/2; class 1: precision 0/1, recall 0 -> F1 0
    assert s.macro == pytest.approx(0.25)
    assert score("v", prob, y, dense=False, with_loss=False).loss is None


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three Tiny checkpoints (seeds 0, 1, 2) and a cosine_restarts run with two snapshots."""
    tmp = tmp_path_factory.mktemp("ensemble")
    path = tmp / "tiny.cnn"
    path.write_text(TINY.lstrip())
    for seed in (0, 1, 2):
        assert main(["run", str(path), "--seed", str(seed), "--out", str(tmp / f"s{seed}"), "--quiet",
                     "--threads", "1"]) == 0
    assert main(["run", str(path), "--out", str(tmp / "snap"), "--quiet", "--threads", "1", "--epochs", "4",
                 "--train", "schedule=cosine_restarts(2)", "--train", "snapshots=true"]) == 0
    return tmp


def _by_hand(path: Path, checkpoints: list[Path]) -> list[np.ndarray]:
    """Each member's test-split probabilities, computed here from the plan and the checkpoint."""
    c = compile_file(path)
    out = []
    for ck_path in checkpoints:
        ck = checkpoint.load(ck_path)
        ds = prepare(c.net.train, NetworkShapes.of(c.net), loss_for(c.net.train), records=ck.preprocess)
        plan = Plan(c.net, c.analysis.params)
        plan.load_state(ck.params, str(ck_path))
        logits = plan.predict(inputs(ds, ds.test.x)).astype(np.float64)   # the samples as the network takes them
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append((e / e.sum(axis=1, keepdims=True), ds.test.y))
    return out


def test_evaluate_reports_each_member_and_the_ensemble(members, capsys):
    path = members / "tiny.cnn"
    cks = [members / f"s{i}" / "last.npz" for i in range(3)]
    assert main(["evaluate", str(path), *map(str, cks)]) == 0
    text = capsys.readouterr().out
    assert "Tiny: an ensemble of 3 (averaged probabilities) on the test split" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    hand = _by_hand(path, cks)
    y = hand[0][1]
    for ck, (prob, _) in zip(cks, hand):
        assert rows[str(ck)][0] == f"{(prob.argmax(1) == y).mean():.2%}"
    mean = sum(p for p, _ in hand) / 3
    ensemble = rows["ensemble"]
    assert ensemble[1] == f"{(mean.argmax(1) == y).mean():.2%}"
    assert ensemble[2] == f"{-np.log(mean[np.arange(len(y)), y]).mean():.4f}"


def test_predict_with_an_ensemble_prints_the_averaged_probabilities(members, capsys):
    path = members / "tiny.cnn"
    cks = [members / f"s{i}" / "last.npz" for i in range(2)]
    assert main(["predict", str(path), str(cks[0]), "--ensemble", str(cks[1]), "--limit", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mean = sum(p for p, _ in _by_hand(path, cks)) / 2
    for i, line in enumerate(lines):
        guess, share = re.match(r"test #\d+: (\d+) (?:\S+ )?\(([\d.]+)%\)", line).groups()
        assert int(guess) == mean[i].argmax() and float(share) == pytest.approx(100 * mean[i].max(), abs=0.051)


def test_snapshots_and_other_files_are_members(members, capsys, tmp_path):
    path = members / "tiny.cnn"
    snaps = sorted((members / "snap").glob("snapshot-*.npz"))
    assert [p.name for p in snaps] == ["snapshot-1.npz", "snapshot-2.npz"]
    other = tmp_path / "copy.cnn"
    other.write_text(TINY.lstrip())
    assert main(["evaluate", str(path), str(snaps[0]), "--member", str(other), str(snaps[1]),
                 "--combine", "vote"]) == 0
    text = capsys.readouterr().out
    assert "an ensemble of 2 (majority vote)" in text and "ensemble (vote)" in text


@pytest.mark.parametrize("extra, message", [
    (["--member", "{other}", "{other_ck}"], "--member {other} {other_ck}: its network 'Other' has outputs of "
                                           "shape [4], the first member's 'Tiny' [3]"),
    (["--combine", "vote"], "--combine vote: an ensemble needs two or more checkpoints"),
    (["--member", "{missing}", "{ck}"], "--member {missing} {ck}: "),
])
def test_mismatched_members_are_refused_naming_the_flag(members, tmp_path, capsys, extra, message):
    other = tmp_path / "other.cnn"
    other.write_text(TINY.lstrip().replace("Tiny", "Other").replace("classes = 3)", "classes = 4)", 1)
                     .replace("synthetic(n = 96, classes = 3", "synthetic(n = 32, classes = 4"))
    assert main(["run", str(other), "--out", str(tmp_path / "o"), "--quiet", "--epochs", "1"]) == 0
    capsys.readouterr()
    subst = {"{other}": str(other), "{other_ck}": str(tmp_path / "o" / "last.npz"),
             "{missing}": str(tmp_path / "nope.cnn"), "{ck}": str(members / "s1" / "last.npz")}
    for k, v in subst.items():
        extra = [a.replace(k, v) for a in extra]
        message = message.replace(k, v)
    assert main(["evaluate", str(members / "tiny.cnn"), str(members / "s0" / "last.npz"), *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_predict_refuses_combine_without_members(members, capsys):
    assert main(["predict", str(members / "tiny.cnn"), str(members / "s0" / "last.npz"), "--combine", "vote"]) == 1
    assert "--combine vote: an ensemble needs --ensemble or --member checkpoints" in capsys.readouterr().err


def test_a_regression_network_is_not_combined(tmp_path, capsys):
    path = tmp_path / "reg.cnn"
    path.write_text("network R {\n    input x: [4]\n    x -> linear(1)\n}\ntrain R {\n"
                    "    data = synthetic(n = 32, kind = regression)\n    loss = mse\n    epochs = 1\n}\n")
    for seed in (0, 1):
        assert main(["run", str(path), "--seed", str(seed), "--out", str(tmp_path / f"r{seed}"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(path), str(tmp_path / "r0" / "last.npz"), str(tmp_path / "r1" / "last.npz")]) == 1
    assert "is trained with a mse loss; ensembles combine class probabilities" in capsys.readouterr().err


@pytest.mark.slow
def test_three_lenet5s_score_at_least_their_best_member(tmp_path, capsys):
    """Three seeds of LeNet-5 with the example's own train section (30 epochs) on the embedded digits,
    trained side by side (one thread each); the figures are in the closing note of issue 13."""
    lenet = str(EXAMPLES / "lenet5.cnn")
    outs = [tmp_path / f"l{seed}" for seed in (0, 1, 2)]
    runs = [subprocess.Popen([sys.executable, "-m", "cnnc", "run", lenet, "--seed", str(seed), "--out", str(out),
                              "--quiet", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed, out in enumerate(outs)]
    for p in runs:
        _, err = p.communicate(timeout=1800)
        assert p.returncode == 0, err
    cks = [str(out / "last.npz") for out in outs]
    capsys.readouterr()
    assert main(["evaluate", lenet, *cks]) == 0
    text = capsys.readouterr().out
    accuracy = {line.split()[0]: float(line.split()[-3].rstrip("%")) for line in text.splitlines()[2:]}
    ensemble = accuracy.pop("ensemble")
    assert ensemble >= max(accuracy.values()), text
