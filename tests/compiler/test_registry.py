"""The op table is the one home of an op: every consumer finds what it needs in each entry.

One coverage test per consumer walks `compiler.ops.OPS` and fails naming the op
that lacks something: its runtime kernel, its diagram label and family colour,
its PyTorch twin (bench/torch_reference.py, checked against the kernel), its
documentation, or consistent declared properties. Adding an op to the table
without the rest makes these tests say what is missing (docs/internals.md,
"Adding an op").
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cnnc.compiler.driver import compile_file
from cnnc.compiler.fusion import ACT, FUSED_OPS
from cnnc.compiler.graph import Node
from cnnc.compiler.ops import FAMILIES, OPS, PROPERTIES, OpSpec, implementation, register, with_property
from cnnc.runtime.fused import activate, activation_grad
from cnnc.runtime.kernels import KERNELS, Kernel
from cnnc.runtime.plan import Plan
from cnnc.viz import style
from kernel_helpers import one_layer_network  # tests/runtime is on pytest's `pythonpath`

ROOT = Path(__file__).resolve().parents[2]
LAYERS = sorted(set(OPS) - {"input"})


# ------------------------------------------------------------------ runtime
@pytest.mark.parametrize("op", LAYERS)
def test_every_op_registers_a_kernel(op):
    kernel = implementation(op, "kernel")
    assert isinstance(kernel, Kernel), f"op '{op}' has no runtime kernel: register one with " \
                                       f"register(\"kernel\", \"{op}\") in runtime/kernels/"
    assert KERNELS[op] is kernel          # the package's view is the entries, not a copy


@pytest.mark.parametrize("op", sorted(FUSED_OPS))
def test_every_fused_op_registers_a_kernel(op):
    assert isinstance(implementation(op, "kernel", FUSED_OPS), Kernel), f"fused op '{op}' has no kernel"


def test_registering_twice_or_for_an_unknown_op_is_refused():
    with pytest.raises(KeyError, match="unknown op 'no_such_op'"):
        register("kernel", "no_such_op")(object())
    with pytest.raises(KeyError, match="op 'relu' already has a kernel implementation"):
        register("kernel", "relu")(object())


# ---------------------------------------------------------------------- viz
_COMPILED: dict = {}


def _compiled(op: str):
    """The op's one-layer network (tests/runtime/kernel_helpers.py), compiled once."""
    if op not in _COMPILED:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "net.cnn"
            path.write_text(one_layer_network(op), encoding="utf-8")
            _COMPILED[op] = compile_file(path, allow={"all"})
    return _COMPILED[op]


def _node(op: str) -> Node:
    """The op's node in its one-layer network (normalised attributes, as viz sees them)."""
    return next(n for n in reversed(_compiled(op).net.order()) if n.op == op)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_a_diagram_label_and_family_colour(op):
    # An op without attributes is written as its name; one with attributes says how it is written.
    assert not OPS[op].attrs or implementation(op, "label") is not None, \
        f"op '{op}' has attributes but no diagram label: register one with register(\"label\", \"{op}\") " \
        "in viz/style.py (`_name_label` if its name is enough)"
    assert OPS[op].family in FAMILIES, f"op '{op}' has family '{OPS[op].family}', not one of {FAMILIES}"
    assert OPS[op].family in style.FAMILY_COLOURS, f"op '{op}': viz has no colour for '{OPS[op].family}'"
    if op != "input":
        text = style.op_label(_node(op))
        assert isinstance(text, str) and text, f"op '{op}': empty label"
        assert style.short_label(_node(op)), f"op '{op}': empty short label"


# ------------------------------------------------------------- torch twin
@pytest.mark.torch
@pytest.mark.parametrize("op", LAYERS)
def test_every_op_has_a_torch_twin_that_matches_its_kernel(op):
    torch = pytest.importorskip("torch")
    import torch_reference  # bench/ is on pytest's `pythonpath`
    assert op in torch_reference.TWINS, f"op '{op}' has no PyTorch twin in bench/torch_reference.py TWINS"
    c = _compiled(op)
    plan = Plan(c.net, c.analysis.params, seed=2, dtype=np.float64)
    rng = np.random.default_rng(0)
    for key in plan.params:      # no zero biases, unit scales or trivial running statistics
        plan.params[key] += rng.uniform(0.1, 0.5, plan.params[key].shape)
    x = rng.standard_normal((2, 4, 9, 7))
    out, tape = plan.forward({"x": x}, training=False, keep_tape=True)
    y = out[plan.outputs[0]]
    weights = rng.standard_normal(y.shape)
    grads = plan.backward(tape, {plan.outputs[0]: weights})
    twin = torch_reference.TorchTwin(c, plan.params).double().eval()
    t_y = twin(torch.tensor(x))
    np.testing.assert_allclose(y, t_y.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=op)
    if not t_y.requires_grad:   # no parameter reaches the output (crop reads only `like`'s shape)
        assert not grads, op
        return
    (t_y * torch.tensor(weights)).sum().backward()
    for key in plan.trainable:
        expected = twin.store[key.replace(".", "__")].grad
        if expected is None:      # e.g. crop's `like` operand: only its shape is read
            assert key not in grads, f"{op}: {key}"
            continue
        np.testing.assert_allclose(grads[key], expected.numpy(), rtol=1e-7, atol=1e-10, err_msg=f"{op}: {key}")


# -------------------------------------------------------------------- docs
def _mentions(text: str, op: str) -> bool:
    return re.search(rf"(?<![a-z0-9_]){re.escape(op)}(?![a-z0-9_])", text) is not None


@pytest.mark.parametrize("doc", ["language.md", "analysis.md"])
@pytest.mark.parametrize("op", LAYERS)
def test_every_op_is_documented(doc, op):
    assert _mentions((ROOT / "docs" / doc).read_text(encoding="utf-8"), op), f"docs/{doc} never mentions '{op}'"


def test_internals_explains_adding_an_op_and_every_property():
    text = (ROOT / "docs" / "internals.md").read_text(encoding="utf-8")
    assert "## Adding an op" in text
    for prop in PROPERTIES:
        assert f"`{prop}`" in text, f"docs/internals.md does not explain the property '{prop}'"


# -------------------------------------------------------------- properties
def test_an_unknown_property_is_refused():
    with pytest.raises(ValueError, match=r"op 'x' declares unknown properties \['rectifer'\]"):
        OpSpec("x", "activation", (), shape=lambda a, ins: ins[0], properties={"rectifer"})
    with pytest.raises(KeyError, match="unknown op property 'rectifer'"):
        OPS["relu"].has("rectifer")


@pytest.mark.parametrize("op", sorted(OPS))
def test_properties_are_consistent(op):
    spec = OPS[op]
    family = spec.family
    for prop in ("rectifier", "saturating", "fusable_activation"):
        assert not spec.has(prop) or family == "activation", f"op '{op}' is {prop} but a {family} op"
    assert not (spec.has("rectifier") and spec.has("saturating")), f"op '{op}' both rectifies and saturates"
    assert not spec.has("gate") or spec.has("saturating"), f"op '{op}' is a gate but not saturating"
    assert not spec.has("fusable_activation") or spec.has("rectifier"), \
        f"op '{op}' is fused into a conv, whose He init assumes a rectifier"
    assert not spec.has("random_drop") or family == "regularisation", f"op '{op}' drops but is a {family} op"
    assert not spec.has("batch_statistics") or family == "normalisation", f"op '{op}': batch statistics"
    if spec.has("sliding_window"):
        assert spec.attr("k") is not None and spec.attr("stride") is not None, \
            f"op '{op}' slides a window but has no k/stride attributes"
    # The He/Xavier look-ahead passes through every op that moves, pools, normalises or drops
    # values without learned weights mixing them, and through nothing else.
    transparent = family in ("pooling", "normalisation", "regularisation") or op in (
        "flatten", "concat", "add", "identity", "pad", "crop", "slice", "channel_shuffle", "affine", "layer_scale")
    assert spec.has("init_transparent") == transparent, \
        f"op '{op}' ({family}) {'lacks' if transparent else 'must not declare'} init_transparent"


@pytest.mark.parametrize("op", sorted(with_property("fusable_activation")))
def test_every_fusable_activation_has_the_fused_epilogue(op):
    assert op in ACT
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 3, 4, 4)) * 4
    attrs = dict(_node(op).attrs)
    expected, cache = KERNELS[op].forward((z.copy(),), {}, attrs, None)
    np.testing.assert_array_equal(activate(z.copy(), {"activation": op, **attrs}), expected,
                                  err_msg=f"runtime/fused.py `activate` does not implement '{op}'")
    dy = rng.standard_normal(z.shape)
    (dx,), _ = KERNELS[op].backward(dy, cache)
    np.testing.assert_allclose(activation_grad(dy, z, {"activation": op, **attrs}), dx,
                               err_msg=f"runtime/fused.py `activation_grad` does not implement '{op}'")
