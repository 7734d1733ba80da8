"""Per-layer statistics in metrics.jsonl (runtime/train/diagnostics.py) and the warnings read from them.

References: the update of plain SGD (|dw| = lr |g|), activations recomputed by hand from the
checkpoint's weights, and PyTorch (the torch engine computes its own gradients and steps)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnc.compiler.lints import TRAINING_WARNINGS
from cnnc.compiler.metrics_format import BY_PARAMETER, HIST_BINS, HISTOGRAM_GROUPS, layers_problem
from cnnc.runtime import checkpoint
from cnnc.runtime.train import diagnostics
from cnnc.runtime.train.diagnostics import PROBE
from cnnc.runtime.train.trainer import Trainer

MLP = """
network Mlp {{
    input x: [1, 6, 6]
    x -> flatten -> linear(12) -> {act} -> linear(3)
}}
train Mlp {{
    data      = synthetic(n = {n}, classes = 3, val = 0.25)
    epochs    = {epochs}
    batch     = {batch}
    loss      = cross_entropy
    optimizer = {optimizer}
    seed      = 3
}}
"""


def mlp(compile_src, act="relu", n=64, epochs=2, batch=48, optimizer="sgd(lr = 0.1)", **kw):
    return compile_src(MLP.format(act=act, n=n, epochs=epochs, batch=batch, optimizer=optimizer), **kw)


def run(compiled, out, engine="numpy", prepare=None, **kw):
    lines: list[str] = []
    t = Trainer(compiled, compiled.net.train, out, progress=False, log=lines.append, engine=engine, **kw)
    if prepare is not None:
        prepare(t)
    t.run()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return t, records, lines


def layer_records(records):
    """Every epoch's `layers`, each with its epoch (not those of --watch-every's step records)."""
    return [{**layer, "epoch": r["epoch"]} for r in records if "layers" in r and "step" not in r
            for layer in r["layers"]]


def test_records_follow_the_format_and_name_the_layers_of_the_source(compile_src, tmp_path):
    c = mlp(compile_src)
    _, records, _ = run(c, tmp_path / "r")
    layers = layer_records(records)
    assert [r["layer"] for r in layers] == ["linear_1", "relu", "linear_2"] * 2
    assert [r["epoch"] for r in layers] == [1, 1, 1, 2, 2, 2]
    assert all(layers_problem(r["layers"]) is None for r in records if "split" not in r)
    assert {r["line"] for r in layers} == {c.net.node("linear_1").loc.line}
    # an epoch stays one line: its layers are inside it
    assert [r.get("epoch", r.get("split")) for r in records] == [1, 2, "test"][:len(records)]
    params = checkpoint.load(tmp_path / "r" / "last.npz").history
    assert [set(r) for r in params] == [set(r) - {"layers"} for r in records[:2]]   # checkpoints: without them


def test_update_ratio_is_lr_times_the_gradient_over_the_weight_for_plain_sgd(compile_src, tmp_path):
    """One step per epoch (the batch holds every training sample): |dw| = lr |g| for that step."""
    c = mlp(compile_src, n=64, batch=48)
    t, records, _ = run(c, tmp_path / "r")
    initial = {k: np.array(v, dtype=np.float64) for k, v in Trainer(c, c.net.train, tmp_path / "x",
               progress=False, log=lambda s: None).engine.params().items()}
    before = {k: np.linalg.norm(v) for k, v in initial.items()}
    for epoch in (1, 2):
        for r in (r for r in layer_records(records) if r["epoch"] == epoch and "params" in r):
            for p, f in r["params"].items():
                key = f"{r['layer']}.{p}"
                assert f["grad_growth"] is None   # one step: no step-to-step ratio
                if before[key] == 0:              # biases start at zero: no ratio to a zero weight
                    assert f["update_ratio"] is None
                else:
                    assert f["update_ratio"] == pytest.approx(0.1 * f["grad_norm"] / before[key], rel=1e-4)
                before[key] = f["norm"]
    params = checkpoint.load(tmp_path / "r" / "last.npz").params
    last = {r["layer"]: r for r in layer_records(records) if r["epoch"] == 2}
    assert last["linear_1"]["params"]["weight"]["norm"] == pytest.approx(np.linalg.norm(params["linear_1.weight"]),
                                                                          rel=1e-6)


def test_activation_figures_are_those_of_the_probe_samples(compile_src, tmp_path):
    c = mlp(compile_src)
    t, records, _ = run(c, tmp_path / "r")
    params = checkpoint.load(tmp_path / "r" / "last.npz").params
    from cnnc.runtime.data.pipeline import inputs
    x = inputs(t.ds, t.ds.train.x[:PROBE]).reshape(min(PROBE, len(t.ds.train)), -1).astype(np.float64)
    y = np.maximum(x @ params["linear_1.weight"].T.astype(np.float64) + params["linear_1.bias"], 0)
    a = next(r for r in layer_records(records) if r["epoch"] == 2 and r["layer"] == "relu")["activation"]
    assert a["mean"] == pytest.approx(y.mean(), rel=1e-5)
    assert a["std"] == pytest.approx(y.std(), rel=1e-5)
    assert a["inactive"] == pytest.approx((y <= 0).mean())
    assert a["dead"] == pytest.approx((y.max(axis=0) <= 0).mean())
    assert a["saturated"] is None


@pytest.mark.torch
def test_both_engines_record_the_same_figures(compile_src, tmp_path):
    pytest.importorskip("torch")
    c = mlp(compile_src, n=96, batch=16, epochs=2, optimizer="sgd(lr = 0.05, momentum = 0.9)")
    _, a, _ = run(c, tmp_path / "np")
    _, b, _ = run(c, tmp_path / "pt", engine="torch")
    la, lb = layer_records(a), layer_records(b)
    assert [(r["epoch"], r["layer"]) for r in la] == [(r["epoch"], r["layer"]) for r in lb]

    def figures(r):
        out = {f"activation.{k}": v for k, v in (r.get("activation") or {}).items()}
        for p, f in (r.get("params") or {}).items():
            out.update({f"{p}.{k}": v for k, v in f.items()})
        return out
    for ra, rb in zip(la, lb):
        fa, fb = figures(ra), figures(rb)
        assert fa.keys() == fb.keys()
        for k in fa:
            if fa[k] is None:
                assert fb[k] is None, (ra["layer"], k)
            else:
                assert fb[k] == pytest.approx(fa[k], rel=2e-3, abs=1e-6), (ra["epoch"], ra["layer"], k)
        ha, hb = histogram_list(ra), histogram_list(rb)
        assert ha.keys() == hb.keys()
        for k in ha:    # the bins' edges within float tolerance; a value on an edge may fall either side
            assert (hb[k]["lo"], hb[k]["hi"]) == pytest.approx((ha[k]["lo"], ha[k]["hi"]), rel=2e-3, abs=1e-6), k
            assert sum(hb[k]["counts"]) == sum(ha[k]["counts"])
            assert np.abs(np.subtract(hb[k]["counts"], ha[k]["counts"])).sum() <= 0.02 * sum(ha[k]["counts"]) + 2, k


def histogram_list(r):
    """A layer record's histograms by a flat name: params.P, gradients.P, activation."""
    h = r.get("histograms") or {}     # every group the format declares (a new one reaches each consumer's test)
    out = {f"{g}.{p}": v for g in BY_PARAMETER for p, v in (h.get(g) or {}).items()}
    out.update({g: h[g] for g in HISTOGRAM_GROUPS if g not in BY_PARAMETER and g in h})
    return out


def reference_histogram(values):
    counts, _ = np.histogram(values, bins=HIST_BINS, range=(values.min(), values.max()))
    return values.min(), values.max(), counts


def assert_histogram(h, values, exact=True):
    """`h` counts `values` as np.histogram does; a value within float32 rounding of an edge may fall on either
    side of it (and values recomputed in float64 from float32 results may move too): at most 2 move."""
    lo, hi, counts = reference_histogram(np.asarray(values, dtype=np.float64).ravel())
    assert (h["lo"], h["hi"]) == pytest.approx((lo, hi), rel=0 if exact else 1e-5, abs=0 if exact else 1e-7)
    assert sum(h["counts"]) == counts.sum()
    assert np.abs(np.subtract(h["counts"], counts)).sum() <= 2


def test_histograms_are_those_of_the_weights_the_last_steps_gradient_and_the_probe(compile_src, tmp_path):
    """One epoch of one step of plain SGD: the gradient is (w0 - w1) / lr; the weights are the checkpoint's;
    the activations are recomputed by hand from them."""
    c = mlp(compile_src, n=64, batch=48, epochs=1)
    t, records, _ = run(c, tmp_path / "r")
    w0 = Trainer(c, c.net.train, tmp_path / "x", progress=False, log=lambda s: None).engine.params()
    w1 = checkpoint.load(tmp_path / "r" / "last.npz").params
    layers = {r["layer"]: r for r in records[0]["layers"]}
    for layer in ("linear_1", "linear_2"):
        for p in ("weight", "bias"):
            key = f"{layer}.{p}"
            assert_histogram(layers[layer]["histograms"]["params"][p], w1[key])
            grad = (w0[key].astype(np.float64) - w1[key].astype(np.float64)) / 0.1
            assert_histogram(layers[layer]["histograms"]["gradients"][p], grad, exact=False)
    assert set(layers["relu"]["histograms"]) == {"activation"}
    from cnnc.runtime.data.pipeline import inputs
    x = inputs(t.ds, t.ds.train.x[:PROBE]).reshape(min(PROBE, len(t.ds.train)), -1).astype(np.float64)
    y = np.maximum(x @ w1["linear_1.weight"].T.astype(np.float64) + w1["linear_1.bias"], 0)
    assert_histogram(layers["relu"]["histograms"]["activation"], y, exact=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 3e4])
def test_a_histogram_counts_as_numpy_does_up_to_values_on_an_edge(dtype, scale):
    values = (np.random.default_rng(int(scale * 7) % 97).standard_normal(20_000) * scale + scale).astype(dtype)
    h = diagnostics.histogram(values.reshape(20, 1000))
    assert_histogram(h, values)


def test_a_histogram_counts_the_finite_values_and_equal_values_in_one_bin():
    h = diagnostics.histogram(np.array([np.nan, 1.0, np.inf, 3.0, 2.0, -np.inf], dtype=np.float32))
    assert (h["lo"], h["hi"], sum(h["counts"])) == (1.0, 3.0, 3)
    assert h["counts"][0] == 1 and h["counts"][-1] == 1 and h["counts"][HIST_BINS // 2] == 1
    assert diagnostics.histogram(np.full(7, 0.5)) == {"lo": 0.5, "hi": 0.5, "counts": [7] + [0] * (HIST_BINS - 1)}
    assert diagnostics.histogram(np.array([np.nan])) == {"lo": 0.0, "hi": 0.0, "counts": [0] * HIST_BINS}
    assert layers_problem([{"layer": "a", "op": "relu", "line": 1,
                            "histograms": {"activation": diagnostics.histogram(np.arange(5.0))}}]) is None


@pytest.mark.parametrize("histograms, problem", [
    ({"weights": {}}, "'histograms.weights' is not a histogram group"),
    ({"activation": {"lo": 0, "hi": 1}}, "'histograms.activation' must be an object of lo, hi, counts"),
    ({"activation": {"lo": 2, "hi": 1, "counts": [0] * HIST_BINS}}, "needs lo <= hi"),
    ({"activation": {"lo": 0, "hi": 1, "counts": [0] * 3}}, f"'histograms.activation.counts' must be {HIST_BINS}"),
    ({"activation": {"lo": 0, "hi": 1, "counts": [-1] + [0] * (HIST_BINS - 1)}}, "must be 30 counts"),
    ({"params": {"weight": {"lo": 0, "hi": None, "counts": [0] * HIST_BINS}}}, "'histograms.params.weight' needs"),
    ({"gradients": [1]}, "'histograms.gradients' must be an object of parameter names"),
])
def test_a_histogram_other_than_cnnc_writes_is_named(histograms, problem):
    found = layers_problem([{"layer": "a", "op": "relu", "histograms": histograms}])
    assert found is not None and problem in found, found


# ---------------------------------------------------------------- warnings
def warnings_of(lines):
    return [line for line in lines if "warning:" in line]


def test_a_relu_layer_with_a_large_negative_bias_is_dead_at_its_line_after_epoch_1(compile_src, tmp_path, write):
    c = mlp(compile_src)

    def kill(t):
        t.engine.params()["linear_1.bias"][:] = -100.0
    _, _, lines = run(c, tmp_path / "r", prepare=kill)
    dead = [w for w in warnings_of(lines) if "[dead-units]" in w]
    line = c.net.node("relu").loc.line
    assert dead == [f"{c.net.source}:{line}: warning: relu (relu): 100% of units dead after epoch 1 — "
                    "try a lower lr, leaky_relu, or a smaller negative bias [dead-units]"]


def test_a_deep_sigmoid_stack_vanishes_at_its_first_layer(compile_src, tmp_path):
    stack = " -> ".join(["linear(16) -> sigmoid"] * 8)
    src = MLP.replace("linear(12) -> {act}", stack)
    c = compile_src(src.format(n=64, epochs=1, batch=16, optimizer="sgd(lr = 0.1)"), allow={"saturating-activations"})
    _, _, lines = run(c, tmp_path / "r")
    vanishing = [w for w in warnings_of(lines) if "[vanishing-gradients]" in w]
    assert len(vanishing) == 1 and ": warning: linear_1 (linear): gradient norm" in vanishing[0]
    assert "of the last layer's in epoch 1" in vanishing[0]


def test_a_huge_lr_is_named_at_the_layers_it_breaks(compile_src, tmp_path):
    c = mlp(compile_src, act="tanh", n=96, batch=16, epochs=1, optimizer="sgd(lr = 50)")
    _, _, lines = run(c, tmp_path / "r")
    codes = {w.rsplit("[", 1)[1].rstrip("]") for w in warnings_of(lines)}
    assert "update-ratio" in codes
    ratio = next(w for w in warnings_of(lines) if "[update-ratio]" in w)
    assert "linear_1 (linear): update-to-weight ratio" in ratio and "try a lower lr" in ratio


def test_a_huge_lr_on_relus_explodes_their_gradients_in_epoch_1(compile_src, tmp_path):
    c = mlp(compile_src, act="relu", n=96, batch=16, epochs=1, optimizer="sgd(lr = 50)")
    _, _, lines = run(c, tmp_path / "r")
    exploding = [w for w in warnings_of(lines) if "[exploding-gradients]" in w]
    assert exploding and ": warning: linear_1 (linear): gradient norm jumped to" in exploding[0]
    assert "its mean so far in epoch 1" in exploding[0]
    assert not [w for w in warnings_of(lines) if "ratio 0.0e+00" in w]   # a dead layer's zero update is not "too low"


def test_a_late_spike_among_shrunken_gradients_is_no_explosion(compile_src):
    """Late in a healthy run (the README's 30 LeNet-5 epochs fired it at epoch 28) most batches are learnt
    and one hard batch is 10x their mean: without the epoch's norm growing, it is not exploding."""
    from cnnc.runtime.train.diagnostics import Rules
    c = mlp(compile_src)

    def epoch(e: int, norm: float, growth: float) -> list:
        layers = [{"layer": "linear_1", "params": {"weight": {"grad_norm": norm, "grad_growth": growth}}},
                  {"layer": "linear_2", "params": {"weight": {"grad_norm": norm, "grad_growth": 1.0}}}]
        return [w.code for w in rules.check({"epoch": e, "train_loss": 1.0 / e, "val_loss": None, "layers": layers})]
    rules = Rules(c.net)
    assert epoch(1, 1.0, 2.0) == [] and epoch(2, 0.05, 12.0) == []   # a jump while the norms shrink
    assert epoch(3, 0.08, 12.0) == []                                 # growing, but not 2x the last epoch
    assert epoch(4, 0.2, 12.0) == ["exploding-gradients"]             # 2.5x the last epoch's, and a jump
    rules = Rules(c.net)
    assert epoch(1, 1.0, 12.0) == ["exploding-gradients"]             # no earlier scale: the jump alone


def test_a_loss_that_does_not_move_and_overfitting_are_named_with_their_epoch(compile_src, tmp_path):
    from cnnc.runtime.train.diagnostics import Rules
    c = mlp(compile_src)
    rules = Rules(c.net)
    flat = [rules.check({"epoch": e, "train_loss": 1.0, "val_loss": None}) for e in (1, 2, 3)]
    assert [len(w) for w in flat] == [0, 0, 1] and flat[2][0].code == "flat-loss"
    rules = Rules(c.net)
    seen = [rules.check({"epoch": e, "train_loss": 2.0 - e / 10, "val_loss": v})
            for e, v in zip(range(1, 8), (1.0, 0.9, 0.91, 0.92, 0.95, 0.97, 1.0))]
    assert [len(w) for w in seen] == [0, 0, 0, 0, 0, 0, 1]    # 5 rises, the last 11% above the best
    assert seen[6][0].code == "overfitting" and "rising since epoch 2" in seen[6][0].message
    rules = Rules(c.net)                                      # 5 rises within 10% of the best: noise
    assert not any(rules.check({"epoch": e, "train_loss": 2.0 - e / 10, "val_loss": v})
                   for e, v in zip(range(1, 8), (1.0, 0.9, 0.91, 0.92, 0.95, 0.97, 0.98)))
    rules = Rules(c.net)       # the README's LeNet-5 (epochs 12-17): 4 rises to 13% above the best, then a new best
    assert not any(rules.check({"epoch": e, "train_loss": t, "val_loss": v}) for e, t, v in zip(
        range(12, 18), (0.1095, 0.1011, 0.0978, 0.0852, 0.0845, 0.0737), (0.0699, 0.0702, 0.0756, 0.0765, 0.079,
                                                                           0.0657)))


def test_allow_silences_a_training_warning_by_name_and_no_other(compile_src, tmp_path):
    def kill(t):
        t.engine.params()["linear_1.bias"][:] = -100.0
    for allow, dead in (({"dead-units"}, False), ({"saturated-units"}, True), ({"all"}, False)):
        _, _, lines = run(mlp(compile_src, allow=allow), tmp_path / "-".join(sorted(allow)), prepare=kill)
        assert bool([w for w in warnings_of(lines) if "[dead-units]" in w]) == dead, allow


def test_every_training_warning_is_documented_with_its_threshold():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[3] / "docs" / "diagnostics.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")}
    assert set(TRAINING_WARNINGS) <= set(rows)
    d = diagnostics

    def sci(v):   # 1e-3 as the docs write it
        return f"{v:.0e}".replace("e-0", "e-")
    thresholds = {"dead-units": [f"{d.DEAD_FRACTION:.0%}"], "saturated-units": [f"{d.SATURATED_FRACTION:.0%}",
                  f"{d.SATURATION_MARGIN:.0%}"], "vanishing-gradients": [sci(d.VANISHING_RATIO)],
                  "update-ratio": [sci(v) for v in d.UPDATE_RATIO_RANGE],
                  "flat-loss": [sci(d.FLAT_LOSS_CHANGE), f"{d.FLAT_LOSS_EPOCHS} epochs"],
                  "exploding-gradients": [f"{d.EXPLODING_GROWTH:g}x", f"{d.EXPLODING_EPOCH_GROWTH:g}x"],
                  "overfitting": [f"last {d.OVERFIT_EPOCHS} epochs", f"{d.OVERFIT_MARGIN:.0%}"]}
    assert set(thresholds) == set(TRAINING_WARNINGS)
    for name, figures in thresholds.items():
        for figure in figures:
            assert figure in rows[name], (name, figure)


# ---------------------------------------------------------------- TensorBoard
def read_events(folder):
    """Every scalar of the event files in `folder`, read by TensorBoard's own reader: tag -> [(step, value)]."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(folder), size_guidance={accumulator.SCALARS: 0,
                                                                 accumulator.HISTOGRAMS: 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    histograms = {tag: [(e.step, e.histogram_value) for e in acc.Histograms(tag)] for tag in acc.Tags()["histograms"]}
    return scalars, histograms


def test_the_event_files_hold_the_figures_of_metrics_jsonl(compile_src, tmp_path):
    pytest.importorskip("tensorboardX")
    c = mlp(compile_src, act="sigmoid")
    _, records, _ = run(c, tmp_path / "r", tensorboard=tmp_path / "tb")
    scalars, histograms = read_events(tmp_path / "tb")
    expected: dict[str, list] = {}
    epoch = 0
    for r in records:
        epoch = r.get("epoch", epoch)
        for layer in r.get("layers", []):
            for p, f in layer.get("params", {}).items():
                for k, v in f.items():
                    expected.setdefault(f"layers/{layer['layer']}/params/{p}/{k}", []).append((epoch, v))
            for k, v in layer.get("activation", {}).items():
                expected.setdefault(f"layers/{layer['layer']}/activation/{k}", []).append((epoch, v))
        if "split" in r:
            for k in ("loss", "accuracy"):
                expected.setdefault(f"{r['split']}/{k}", []).append((epoch, r[k]))
        else:
            for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
                expected.setdefault(k, []).append((epoch, r[k]))
    expected = {t: [(s, v) for s, v in pairs if v is not None] for t, pairs in expected.items()}
    expected = {t: pairs for t, pairs in expected.items() if pairs}
    assert set(scalars) == set(expected)
    for tag, pairs in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in pairs], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in pairs], rel=1e-6, abs=1e-30), tag
    expected_h: dict[str, list] = {}
    for r in records:
        for layer in r.get("layers", []):
            for name, h in histogram_list(layer).items():
                group, _, p = name.partition(".")
                tag = f"layers/{layer['layer']}/" + {"params": f"weights/{p}", "gradients": f"gradients/{p}",
                                                      "activation": "activation"}[group]
                expected_h.setdefault(tag, []).append((r["epoch"], h))
    assert set(histograms) == set(expected_h)
    assert "layers/linear_1/gradients/weight" in histograms and "layers/sigmoid/activation" in histograms
    for tag, pairs in expected_h.items():
        assert [s for s, _ in histograms[tag]] == [s for s, _ in pairs], tag
        for (_, got), (_, h) in zip(histograms[tag], pairs):
            assert (got.min, got.max, got.num) == (pytest.approx(h["lo"]), pytest.approx(h["hi"]), sum(h["counts"]))
            if h["hi"] > h["lo"]:
                assert list(got.bucket) == h["counts"], tag
                assert list(got.bucket_limit) == pytest.approx(np.linspace(h["lo"], h["hi"], HIST_BINS + 1)[1:])


def test_step_records_are_scalars_at_the_runs_step(compile_src, tmp_path):
    pytest.importorskip("tensorboardX")
    c = mlp(compile_src, n=128, batch=16)
    _, records, _ = run(c, tmp_path / "r", tensorboard=tmp_path / "tb", watch_every=4)
    scalars, _ = read_events(tmp_path / "tb")
    steps = [r for r in records if "step" in r]
    for tag, pick in (("steps/layers/linear_1/params/weight/grad_norm",
                       lambda r: r["layers"][0]["params"]["weight"]["grad_norm"]),
                      ("steps/layers/relu/activation/mean", lambda r: r["layers"][1]["activation"]["mean"])):
        assert [s for s, _ in scalars[tag]] == [4, 8, 12]
        assert [v for _, v in scalars[tag]] == pytest.approx([pick(r) for r in steps], rel=1e-6)
    assert [s for s, _ in scalars["train_loss"]] == [1, 2]      # the epochs' figures stay at their epochs


@pytest.mark.slow
def test_each_fold_of_a_kfold_run_writes_its_own_run_folder(write, tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    from cnnc.cli import main
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)").replace(
        "seed      = 3", "seed      = 3\n    kfold     = 2")
    assert main(["run", str(write(src)), "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "tb"),
                 "--quiet"]) == 0
    for fold in ("fold-1", "fold-2"):
        scalars, _ = read_events(tmp_path / "tb" / fold)
        first = json.loads((tmp_path / "r" / fold / "metrics.jsonl").read_text().splitlines()[0])
        assert scalars["train_loss"] == [(1, pytest.approx(first["train_loss"], rel=1e-6))]


def test_a_tensorboard_folder_that_is_a_file_is_a_one_line_error(write, tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    from cnnc.cli import main
    (tmp_path / "taken").write_text("")
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)")
    assert main(["run", str(write(src)), "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "taken"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"cnnc: error: --tensorboard '{tmp_path / 'taken'}' is not a directory" in err
    assert "Traceback" not in err and not (tmp_path / "r" / "metrics.jsonl").exists()


def test_tensorboard_without_its_extra_names_the_extra(write, tmp_path, capsys, monkeypatch):
    import sys
    from cnnc.cli import main
    monkeypatch.setitem(sys.modules, "tensorboardX", None)    # as if not installed
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)")
    assert main(["run", str(write(src)), "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "tb"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cnnc: error: --tensorboard: the TensorBoard writer (tensorboardX) is not installed" in err
    assert "pip install 'cnnc[tensorboard]'" in err and "Traceback" not in err


CONV = """
network Conv {
    input x: [1, 6, 6]
    x -> conv(5, 3, pad = 1) -> relu -> maxpool(2) -> conv(3, 3, pad = 1) -> tanh -> flatten -> linear(3)
}
train Conv {
    data      = synthetic(n = 40, classes = 3, val = 0.25)
    epochs    = 2
    batch     = 16
    loss      = cross_entropy
    optimizer = sgd(lr = 0.1)
    seed      = 3
}
"""

RESIDUAL = """
block res(c) {
    main = conv(c, 3, pad = 1) -> relu -> conv(c, 3, pad = 1)
    (main + in) -> relu
}
network Res {
    input x: [1, 6, 6]
    x -> conv(4, 3, pad = 1) -> res(4) -> res(4) -> flatten -> linear(3)
}
"""


def read_accumulator(folder):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(folder), size_guidance={accumulator.IMAGES: 0})
    acc.Reload()
    return acc


def graph_of(acc):
    """TensorBoard's graph: name -> (op, inputs, string attributes, output shape)."""
    out = {}
    for n in acc.Graph().node:
        shapes = n.attr["_output_shapes"].list.shape
        out[n.name] = (n.op, list(n.input), {k: v.s.decode() for k, v in n.attr.items() if v.s},
                       [[d.size for d in s.dim] for s in shapes])
    return out


def test_the_graph_tab_shows_the_layers_and_edges_of_the_network(compile_src, tmp_path):
    pytest.importorskip("tensorboardX")
    c = compile_src(CONV)
    run(c, tmp_path / "r", tensorboard=tmp_path / "tb")
    graph = graph_of(read_accumulator(tmp_path / "tb"))
    net = c.net
    assert list(graph) == ["x", "conv_1", "relu", "maxpool", "conv_2", "tanh", "flatten", "linear"]
    assert {n: g[0] for n, g in graph.items()} == {n.name: n.op for n in net.order()}
    assert {(i, n) for n, g in graph.items() for i in g[1]} == set(net.graph.edges)
    assert {n: g[3] for n, g in graph.items()} == {n: [[-1, *net.shapes[n]]] for n in graph}
    op, inputs, attrs, _ = graph["conv_1"]
    assert inputs == ["x"]
    assert attrs["at"] == str(net.node("conv_1").loc) and attrs["at"].endswith(":3:10")
    assert attrs["line"] == "x -> conv(5, 3, pad = 1) -> relu -> maxpool(2) -> conv(3, 3, pad = 1) -> tanh " \
                            "-> flatten -> linear(3)"
    assert attrs["out_channels"] == "5" and attrs["kernel"] == "(3, 3)" and attrs["padding"] == "((1, 1), (1, 1))"
    assert "weights" not in attrs     # an argument left unset (None) is not shown


def test_a_block_call_is_a_name_scope_of_the_graph(compile_src, tmp_path):
    pytest.importorskip("tensorboardX")
    from cnnc.runtime.train.events import EventWriter
    c = compile_src(RESIDUAL, with_train=False)
    events = EventWriter(tmp_path / "tb")
    events.graph(c.net)
    events.close()
    graph = graph_of(read_accumulator(tmp_path / "tb"))
    assert list(graph) == ["x", "conv", "res_1/conv_1", "res_1/relu_1", "res_1/conv_2", "res_1/add", "res_1/relu_2",
                           "res_2/conv_1", "res_2/relu_1", "res_2/conv_2", "res_2/add", "res_2/relu_2",
                           "flatten", "linear"]
    assert graph["res_1/add"][1] == ["res_1/conv_2", "conv"]            # the skip edge, in argument order
    assert graph["res_2/add"][1] == ["res_2/conv_2", "res_1/relu_2"]
    assert {(i, n) for n, g in graph.items() for i in g[1]} == {
        (a.replace(".", "/"), b.replace(".", "/")) for a, b in c.net.graph.edges}
    assert graph["res_1/relu_1"][2]["block"] == "res" and "block" not in graph["conv"][2]


def test_tile_lays_the_first_channels_out_in_a_near_square_grid():
    from cnnc.runtime.train.events import SEPARATOR, tile
    maps = np.stack([np.full((2, 3), c, dtype=np.float32) for c in range(20)])
    maps[:, 0, 0] = -1.0                          # each channel: -1 at one corner, c elsewhere
    grid = tile(maps)
    assert grid.dtype == np.uint8 and grid.shape == (4 * 3 - 1, 4 * 4 - 1)   # 16 channels, 4 x 4, 1-px lines
    assert (grid[2::3, :] == SEPARATOR).all() and (grid[:, 3::4] == SEPARATOR).all()
    assert grid[0, 0] == 0 and grid[0, 1] == 255   # channel 0, its own min-max: -1 -> 0, 0 -> 255
    assert (grid[3:5, 4:7] == np.array([[0, 255, 255], [255, 255, 255]])).all()   # channel 5: row 1, column 1
    assert tile(maps[:5]).shape == (2 * 3 - 1, 3 * 4 - 1)   # 5 channels: 3 columns, 2 rows, one tile left blank
    assert tile(maps[:1]).shape == (2, 3)
    flat = tile(np.zeros((1, 2, 2)))
    assert (flat == 0).all()                       # a constant map is black, not a division by zero
    assert tile(np.array([[[np.nan, 1.0], [3.0, np.inf]]])).tolist() == [[0, 0], [255, 0]]
    ramp = tile(np.arange(6.0).reshape(1, 2, 3))
    assert ramp.tolist() == [[0, 51, 102], [153, 204, 255]]


def test_feature_maps_are_the_probes_first_sample_tiled_per_epoch(compile_src, tmp_path):
    """The relu's maps recomputed by hand (a 3x3 convolution of the first probe sample with the last
    epoch's weights) are the tiles of the image TensorBoard reads back."""
    pytest.importorskip("tensorboardX")
    import io
    from PIL import Image
    from cnnc.runtime.data.pipeline import inputs
    c = compile_src(CONV)
    t, _, _ = run(c, tmp_path / "r", tensorboard=tmp_path / "tb")
    acc = read_accumulator(tmp_path / "tb")
    assert acc.Tags()["images"] == ["feature_maps/relu", "feature_maps/tanh"]   # the 2-D activations: none
    relu, tanh = acc.Images("feature_maps/relu"), acc.Images("feature_maps/tanh")
    assert [e.step for e in relu] == [1, 2] and [e.step for e in tanh] == [1, 2]
    assert {(e.width, e.height) for e in relu} == {(3 * 7 - 1, 2 * 7 - 1)}   # 5 maps of 6x6: 3 columns, 2 rows
    assert {(e.width, e.height) for e in tanh} == {(2 * 4 - 1, 2 * 4 - 1)}   # 3 maps of 3x3: 2 x 2
    image = np.asarray(Image.open(io.BytesIO(relu[-1].encoded_image_string)))
    assert image.shape == (13, 20)                                          # greyscale
    params = checkpoint.load(tmp_path / "r" / "last.npz").params
    w, b = params["conv_1.weight"].astype(np.float64), params["conv_1.bias"].astype(np.float64)
    x = np.pad(inputs(t.ds, t.ds.train.x[:1])[0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    y = np.array([[[b[o] + (w[o] * x[:, i:i + 3, j:j + 3]).sum() for j in range(6)] for i in range(6)]
                  for o in range(5)])
    y = np.maximum(y, 0)
    assert sum(len(np.unique(m)) > 2 for m in y) >= 3     # maps with something to show
    for ch in range(5):
        r, q = divmod(ch, 3)
        m = y[ch]
        expected = (m - m.min()) / (m.max() - m.min()) * 255 if m.max() > m.min() else np.zeros_like(m)
        got = image[r * 7:r * 7 + 6, q * 7:q * 7 + 6].astype(np.float64)
        assert np.abs(got - expected).max() <= 1, ch
    assert (image[6, :] == 255).all() and (image[:, 6] == 255).all()


def test_feature_maps_are_drawn_for_the_first_four_image_layers_only(tmp_path):
    pytest.importorskip("tensorboardX")
    from cnnc.runtime.train.events import FEATURE_MAP_LAYERS, EventWriter
    assert FEATURE_MAP_LAYERS == 4
    acts = {"flat": np.ones((2, 8))}
    acts.update({f"relu_{i}": np.random.default_rng(i).normal(size=(2, 3, 4, 4)) for i in range(1, 7)})
    events = EventWriter(tmp_path / "tb")
    events.feature_maps(1, acts)
    events.feature_maps(2, {})                    # Unwatched: nothing
    events.close()
    acc = read_accumulator(tmp_path / "tb")
    assert acc.Tags()["images"] == [f"feature_maps/relu_{i}" for i in range(1, 5)]
    assert [e.step for e in acc.Images("feature_maps/relu_1")] == [1]


def test_watch_every_below_one_is_refused(write, tmp_path, capsys):
    from cnnc.cli import main
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)")
    assert main(["run", str(write(src)), "--out", str(tmp_path / "r"), "--watch-every", "0", "--quiet"]) == 1
    assert "cnnc: error: --watch-every 0: must be at least 1" in capsys.readouterr().err


def test_watch_every_measures_the_update_ratio_on_more_steps(compile_src, tmp_path):
    """Six steps an epoch: the last step alone, or steps 2, 4 and 6 (a mean of three ratios)."""
    c = mlp(compile_src, n=128, batch=16)
    _, plain, _ = run(c, tmp_path / "a")
    t, every, _ = run(c, tmp_path / "b", watch_every=2)
    assert t.layers.every == 2
    a = next(r for r in layer_records(plain) if r["layer"] == "linear_1")["params"]["weight"]
    b = next(r for r in layer_records(every) if r["layer"] == "linear_1")["params"]["weight"]
    assert a["grad_norm"] == b["grad_norm"] and a["update_ratio"] != b["update_ratio"]


def test_watch_every_writes_a_step_record_every_k_steps_of_the_run(compile_src, tmp_path):
    """Six steps an epoch, two epochs, K = 4: steps 4 (epoch 1), 8 and 12 (epoch 2). Plain SGD, so each step's
    gradient is (w_before - w_after) / lr, read around the engine's own steps."""
    c = mlp(compile_src, n=128, batch=16)
    steps: list[tuple[dict, dict]] = []

    def spy(t):
        step = t.engine.step

        def recorded(lr):
            before = {k: np.array(v, dtype=np.float64) for k, v in t.engine.params().items()}
            step(lr)
            steps.append((before, {k: np.array(v, dtype=np.float64) for k, v in t.engine.params().items()}))
        t.engine.step = recorded
    t, records, _ = run(c, tmp_path / "r", prepare=spy, watch_every=4)
    assert len(steps) == 12
    assert [(r.get("step"), r["epoch"]) for r in records if "split" not in r] == \
        [(4, 1), (None, 1), (8, 2), (12, 2), (None, 2)]
    from cnnc.runtime.data.pipeline import inputs
    x = inputs(t.ds, t.ds.train.x[:PROBE]).reshape(min(PROBE, len(t.ds.train)), -1).astype(np.float64)
    for r in (r for r in records if "step" in r):
        before, after = steps[r["step"] - 1]
        layers = {layer["layer"]: layer for layer in r["layers"]}
        assert list(layers) == ["linear_1", "relu", "linear_2"]
        for layer in ("linear_1", "linear_2"):
            for p in ("weight", "bias"):
                key, f = f"{layer}.{p}", layers[layer]["params"][p]
                moved = np.linalg.norm(before[key] - after[key])
                assert f["grad_norm"] == pytest.approx(moved / 0.1, rel=1e-4)
                assert f["norm"] == pytest.approx(np.linalg.norm(after[key]), rel=1e-6)
                assert f["update_ratio"] == pytest.approx(moved / np.linalg.norm(before[key]), rel=1e-4)
                assert f["grad_growth"] is None
        y = np.maximum(x @ after["linear_1.weight"].T + after["linear_1.bias"], 0)
        assert layers["relu"]["activation"]["mean"] == pytest.approx(y.mean(), rel=1e-5)
        assert "histograms" not in layers["linear_1"]
    # the epoch's update ratio: the mean over its watched steps and its last (epoch 1: steps 4 and 6)
    first = next(r for r in layer_records(records) if r["layer"] == "linear_1")["params"]["weight"]
    ratios = [np.linalg.norm(b["linear_1.weight"] - a["linear_1.weight"]) / np.linalg.norm(b["linear_1.weight"])
              for b, a in (steps[3], steps[5])]
    assert first["update_ratio"] == pytest.approx(np.mean(ratios), rel=1e-4)
    # the readers of metrics.jsonl take them (the curves by epoch, the step records apart)
    from cnnc.viz.curves import read_metrics
    metrics = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [e["epoch"] for e in metrics.epochs] == [1, 2] and [s["step"] for s in metrics.steps] == [4, 8, 12]


def test_a_resumed_run_keeps_the_step_records_of_the_epochs_it_keeps(compile_src, tmp_path):
    c = mlp(compile_src, n=128, batch=16, epochs=1)
    run(c, tmp_path / "r", watch_every=4)
    c2 = mlp(compile_src, n=128, batch=16, epochs=2)
    t = Trainer(c2, c2.net.train, tmp_path / "r", progress=False, log=lambda s: None, watch_every=4)
    t.run(resume=True)
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [(r.get("step"), r["epoch"]) for r in records if "split" not in r] == \
        [(4, 1), (None, 1), (8, 2), (12, 2), (None, 2)]


@pytest.mark.parametrize("record, problem", [
    ({"step": 0, "epoch": 1, "layers": []}, "a step record's 'step' must be a count from 1, got 0"),
    ({"step": 3, "epoch": "1", "layers": []}, "a step record's 'epoch' must be a count from 1"),
    ({"step": 3, "epoch": 1, "layers": [], "loss": 1}, "unknown field 'loss' in a step record"),
    ({"step": 3, "epoch": 1, "layers": [{"layer": "a"}]}, "layers[0]: a layer record needs"),
])
def test_a_malformed_step_record_is_named_at_its_line(tmp_path, record, problem):
    from cnnc.dsl.source import CnncError
    from cnnc.viz.curves import read_metrics
    path = tmp_path / "metrics.jsonl"
    epoch = {"epoch": 1, "train_loss": 1.0, "train_accuracy": None, "val_loss": None, "val_accuracy": None,
             "lr": 0.1, "seconds": 1.0}
    path.write_text(json.dumps(epoch) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(CnncError) as err:
        read_metrics(path)
    assert problem in str(err.value) and err.value.loc.line == 2


@pytest.mark.slow
def test_a_healthy_lenet5_run_gives_no_warning(tmp_path, capsys):
    from pathlib import Path
    from cnnc.cli import main
    lenet = Path(__file__).resolve().parents[3] / "examples" / "lenet5.cnn"
    assert main(["run", str(lenet), "--limit", "600", "--epochs", "3", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "epoch 3/3" in out.out + out.err
    assert "warning" not in out.out + out.err
    layers = layer_records([json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()])
    assert len(layers) == 3 * 9    # 5 layers with weights, 4 sigmoids, each epoch


@pytest.mark.slow
def test_each_search_trial_writes_its_own_run_folder(write, tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    from cnnc.cli import main
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)")
    assert main(["search", str(write(src)), "--grid", "lr=0.1,0.01", "--out", str(tmp_path / "s"),
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    trials = sorted(p for p in (tmp_path / "s").iterdir() if (p / "metrics.jsonl").exists())
    assert len(trials) == 2 and sorted(p.name for p in (tmp_path / "tb").iterdir()) == [p.name for p in trials]
    for trial in trials:
        scalars, _ = read_events(tmp_path / "tb" / trial.name)
        first = json.loads((trial / "metrics.jsonl").read_text().splitlines()[0])
        assert scalars["lr"] == [(1, pytest.approx(first["lr"]))]
        assert scalars["train_loss"] == [(1, pytest.approx(first["train_loss"], rel=1e-6))]


def test_search_without_the_tensorboard_extra_is_refused_before_any_trial(write, tmp_path, capsys, monkeypatch):
    import sys
    from cnnc.cli import main
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)")
    assert main(["search", str(write(src)), "--grid", "lr=0.1,0.01", "--out", str(tmp_path / "s"),
                 "--tensorboard", str(tmp_path / "tb")]) == 1
    err = capsys.readouterr().err
    assert "cnnc: error: --tensorboard: the TensorBoard writer (tensorboardX) is not installed" in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "tb").exists()


def test_a_warning_clears_the_progress_bar_before_its_line(compile_src, tmp_path):
    """The bar is the trainer's to advance; every line, a warning too, comes after the bar is cleared."""
    events: list[str] = []

    class Bar:   # a caller's bar (runtime/progress.py Progress), recording what is asked of it
        def start_run(self, total, done):
            events.append("start")

        def set_label(self, label):
            pass

        def update(self, n, fields):
            events.append("update")

        def clear(self):
            events.append("clear")

    c = mlp(compile_src)

    def kill(t):
        t.engine.params()["linear_1.bias"][:] = -100.0
    t = Trainer(c, c.net.train, tmp_path / "r", progress=Bar(), log=lambda line: events.append(line))
    kill(t)
    t.run()
    warning = next(i for i, e in enumerate(events) if "[dead-units]" in e)
    assert events[warning - 1] == "clear" and "update" in events[:warning]


def test_batchnorm_drift_is_the_relative_change_of_its_running_statistics(compile_src, tmp_path):
    src = MLP.replace("x -> flatten -> linear(12) -> {act}", "x -> conv(4, 3) -> batchnorm -> {act} -> flatten")
    c = compile_src(src.format(act="relu", n=64, epochs=2, batch=16, optimizer="sgd(lr = 0.1)"))
    saved = []

    def snapshot(t):
        save = t._save

        def keep(path):
            if path.name == "last.npz":
                saved.append({k: np.array(v, dtype=np.float64) for k, v in t.engine.params().items()})
            save(path)
        t._save = keep
    _, records, _ = run(c, tmp_path / "r", prepare=snapshot)
    bn = [r for r in layer_records(records) if r["layer"] == "batchnorm"]
    assert "drift" not in bn[0]     # nothing to compare the first epoch with
    for stat in ("running_mean", "running_var"):
        before, after = saved[0][f"batchnorm.{stat}"], saved[1][f"batchnorm.{stat}"]
        assert bn[1]["drift"][stat] == pytest.approx(np.linalg.norm(after - before) / np.linalg.norm(before),
                                                     rel=1e-6)


def test_the_python_api_takes_tensorboard_and_hands_the_layers_to_the_callback(write, tmp_path):
    pytest.importorskip("tensorboardX")
    import cnnc
    seen = []
    src = MLP.format(act="relu", n=60, epochs=1, batch=16, optimizer="sgd(lr = 0.1)")
    cnnc.train(str(write(src)), out=tmp_path / "r", tensorboard=tmp_path / "tb", callback=seen.append,
               log=lambda line: None, progress=False)
    assert [r["layer"] for r in seen[0]["layers"]] == ["linear_1", "relu", "linear_2"]
    scalars, _ = read_events(tmp_path / "tb")
    assert scalars["layers/linear_1/params/weight/grad_norm"] == [
        (1, pytest.approx(seen[0]["layers"][0]["params"]["weight"]["grad_norm"], rel=1e-6))]
