"""Weight initialisation by name: PyTorch's torch.nn.init formulas, fans and bounds, as a train default
and as a layer attribute; the default (He before rectifiers, Xavier otherwise) is unchanged."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from cnnc.compiler.graph import ParamSpec
from cnnc.compiler.train_vocab import INIT
from cnnc.runtime import plan as plan_mod
from cnnc.runtime.plan import INITIALISERS, Plan, draw_init, fans

torch_fans = torch.nn.init._calculate_fan_in_and_fan_out

# (shape, what): a conv, a grouped conv, a linear layer, a transposed conv's [in, out/groups, kh, kw],
# a grouped conv on a [C, L] signal ([out, in/groups, k], PyTorch's Conv1d)
SHAPES = [((64, 32, 5, 5), "conv"), ((64, 8, 3, 3), "grouped conv"), ((300, 500), "linear"),
          ((32, 16, 4, 4), "deconv"), ((64, 8, 25), "grouped 1-D conv")]


@pytest.mark.parametrize("shape, what", SHAPES)
def test_fans_are_torchs(shape, what):
    assert fans(ParamSpec(shape)) == torch_fans(torch.empty(shape)), what


def test_a_local_layer_uses_its_specs_fans():
    spec = ParamSpec((8, 2, 2, 3, 5, 5), fan_in=3 * 25, fan_out=8 * 25)
    assert fans(spec) == (75, 200)


def torch_std_or_bound(name: str, shape, **opts) -> tuple[str, float]:
    """What torch.nn.init's formula gives: ("std", s) or ("bound", b), from torch's own helpers."""
    fan_in, fan_out = torch_fans(torch.empty(shape))
    if name.startswith("kaiming"):
        fan = fan_in if opts.get("mode", "fan_in") == "fan_in" else fan_out
        gain = torch.nn.init.calculate_gain("leaky_relu", opts.get("a", 0.0))
        return ("std", gain / math.sqrt(fan)) if name.endswith("normal") else ("bound", gain * math.sqrt(3 / fan))
    if name.startswith("xavier"):
        gain = opts.get("gain", 1.0)
        return (("std", gain * math.sqrt(2 / (fan_in + fan_out))) if name.endswith("normal")
                else ("bound", gain * math.sqrt(6 / (fan_in + fan_out))))
    if name == "normal":
        return "std", opts["std"]
    return "bound", opts["a"]


CASES = [("kaiming_normal", {}), ("kaiming_normal", {"a": 0.2, "mode": "fan_out"}),
         ("kaiming_uniform", {}), ("kaiming_uniform", {"a": 1.0, "mode": "fan_out"}),
         ("xavier_normal", {}), ("xavier_normal", {"gain": 2.0}), ("xavier_uniform", {}),
         ("xavier_uniform", {"gain": 0.5}), ("normal", {"std": 0.02}), ("uniform", {"a": 0.05})]


def torch_draw(name: str, t: torch.Tensor, opts: dict) -> None:
    fn = {"kaiming_normal": torch.nn.init.kaiming_normal_, "kaiming_uniform": torch.nn.init.kaiming_uniform_,
          "xavier_normal": torch.nn.init.xavier_normal_, "xavier_uniform": torch.nn.init.xavier_uniform_,
          "normal": torch.nn.init.normal_}.get(name)
    if name == "uniform":
        torch.nn.init.uniform_(t, -opts["a"], opts["a"])
    else:
        fn(t, **opts)


@pytest.mark.parametrize("shape, what", SHAPES)
@pytest.mark.parametrize("name, opts", CASES)
def test_each_initialiser_matches_torch_nn_init(name, opts, shape, what):
    ours = draw_init((name, tuple(opts.items())), ParamSpec(shape), np.random.default_rng(0))
    theirs = torch.empty(shape, dtype=torch.float64)
    torch.manual_seed(0)
    torch_draw(name, theirs, opts)
    theirs = theirs.numpy()
    kind, value = torch_std_or_bound(name, shape, **opts)
    assert ours.shape == shape
    if kind == "std":
        assert abs(ours.mean()) < 5 * value / math.sqrt(ours.size)
        assert ours.std() == pytest.approx(value, rel=0.04) and theirs.std() == pytest.approx(value, rel=0.04)
    else:
        assert np.abs(ours).max() <= value and np.abs(ours).max() > 0.98 * value
        assert np.abs(theirs).max() <= value and np.abs(theirs).max() > 0.98 * value
        assert ours.std() == pytest.approx(value / math.sqrt(3), rel=0.04)


def test_normal_has_its_mean_and_zeros_is_zero():
    spec = ParamSpec((200, 300))
    w = draw_init(("normal", (("std", 0.1), ("mean", 0.5))), spec, np.random.default_rng(1))
    assert w.mean() == pytest.approx(0.5, abs=0.002) and w.std() == pytest.approx(0.1, rel=0.02)
    assert not draw_init(("zeros", ()), spec, np.random.default_rng(1)).any()


def test_the_initialisers_take_exactly_the_declared_options():
    assert set(INITIALISERS) == set(INIT.entries)
    for name, fn in INITIALISERS.items():
        params = inspect.signature(fn).parameters
        taken = {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
        declared = {o.name: o for o in INIT.entries[name].options}
        assert taken == set(declared), name
        for option in declared.values():
            if not option.required:
                assert params[option.name].default == option.default, (name, option.name)


NET = """
network N {{
    input x: [3, 16, 16]
    x -> conv(32, 3, pad = 1{conv}) -> batchnorm -> relu -> flatten -> linear(10{linear})
}}
train N {{
    seed = 3
    {train}
}}
"""


def params_of(compile_src, conv="", linear="", train=""):
    c = compile_src(NET.format(conv=conv, linear=linear, train=train), allow={"all"})
    return Plan(c.net, c.analysis.params, seed=3, init=c.net.train.init).params


def test_without_init_the_default_is_he_before_relu_and_xavier_before_logits(compile_src):
    p = params_of(compile_src)
    assert p["conv.weight"].std() == pytest.approx(math.sqrt(2 / 27), rel=0.05)   # He: relu follows (via bn)
    bound = math.sqrt(6 / (32 * 256 + 10))                                        # Xavier: logits
    assert np.abs(p["linear.weight"]).max() <= bound and np.abs(p["linear.weight"]).max() > 0.98 * bound
    assert (p["batchnorm.weight"] == 1).all() and not p["conv.bias"].any()


def test_the_train_default_applies_to_weights_only(compile_src):
    p = params_of(compile_src, train="init = uniform(0.01)")
    for key in ("conv.weight", "linear.weight"):
        assert np.abs(p[key]).max() <= 0.01 and np.abs(p[key]).max() > 0.0098, key
    assert (p["batchnorm.weight"] == 1).all() and not p["conv.bias"].any() and not p["linear.bias"].any()


def test_a_layers_init_wins_over_the_train_default(compile_src):
    p = params_of(compile_src, conv=", init = zeros", linear=", init = (normal, 0.5)", train="init = uniform(0.01)")
    assert not p["conv.weight"].any()
    assert p["linear.weight"].std() == pytest.approx(0.5, rel=0.05)


def test_a_layer_init_word_uses_torchs_fans(compile_src):
    p = params_of(compile_src, conv=", init = xavier_uniform")
    bound = math.sqrt(6 / (3 * 9 + 32 * 9))
    assert np.abs(p["conv.weight"]).max() <= bound and np.abs(p["conv.weight"]).max() > 0.98 * bound


@pytest.mark.parametrize("attr, message, col", [
    ("init = normal", "init = normal needs its std", 37),
    ("init = (normal, -1)", "init = normal: std must be a positive number, got the integer -1", 37),
    ("init = kaiming", "init must be one of kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform, "
                       "normal, uniform, zeros; got", 37),
    ("init = (zeros, 1)", "init = zeros takes no numbers, got 1", 37),
])
def test_bad_layer_inits_are_located(error_of, attr, message, col):
    err = error_of(f"network N {{\n    input x: [1, 8, 8]\n    x -> conv(2, 3, pad = 1, {attr})\n}}\n")
    assert err.message.startswith(message)
    assert (err.loc.line, err.loc.col) == (3, col)


def test_a_bad_train_init_is_located(error_of):
    err = error_of("network N {\n    input x: [4]\n    x -> linear(2)\n}\ntrain N {\n    init = normal\n}\n")
    assert err.message == "initialisation 'normal' needs option 'std'"
    assert (err.loc.line, err.loc.col) == (6, 12)


def test_fixed_weights_and_init_together_are_refused(compile_src):
    c = compile_src("network N {\n    input x: [1, 4, 4]\n"
                    "    x -> conv(1, 1, bias = false, weights = [[[[2]]]], init = zeros)\n}\n")
    with pytest.raises(plan_mod.CnncError) as err:
        Plan(c.net, c.analysis.params)
    assert err.value.message == "'conv' gives both fixed weights and init = zeros"
    assert err.value.diagnostic.loc.line == 3
