"""Fusion passes: which chains fuse, the guards that stop them, the lint, the fused op specs, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from cnnc.cli import main as cli
from cnnc.compiler.analysis import analyse
from cnnc.compiler.fusion import (FUSED_OPS, GraphLintError, analyse_fused, check, fusable_groups, fuse,
                                  fuse_conv_bn, fuse_conv_bn_add_relu, fuse_conv_bn_relu, group_of, savings)
from cnnc.compiler.graph import Network, build_graph
from cnnc.compiler.ops import OPS
from cnnc.dsl.source import Loc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CHAIN = """
network T {
    input x: [3, 8, 8]
    x -> conv(4, 3, pad = 1, bias = false) -> batchnorm -> relu
      -> flatten -> linear(5) -> relu -> linear(2)
}
"""

RESIDUAL = """
network R {
    input x: [4, 8, 8]
    main = x -> conv(4, 3, pad = 1, bias = false) -> batchnorm -> relu
             -> conv(4, 3, pad = 1, bias = false) -> batchnorm
    (main + x) -> relu -> global_avgpool -> flatten -> linear(3)
}
"""


def ops_of(net: Network) -> list[str]:
    return [n.op for n in net.layers()]


# ---------------------------------------------------------------- patterns
def test_conv_bn_relu_and_linear_relu_fuse_and_the_last_linear_stays(compile_src):
    c = compile_src(CHAIN)
    f = fuse(c.net)
    assert ops_of(f.net) == ["fused_conv", "flatten", "fused_linear", "linear"]
    assert [g.pattern for g in f.groups] == ["conv+bn+relu", "linear+relu"]
    conv = f.net.node("conv")
    assert conv.attrs["bn"] and conv.attrs["folded"] and conv.attrs["activation"] == "relu"
    assert conv.attrs["bias"] is True          # the folded batchnorm becomes the conv's bias
    assert f.net.node("flatten").inputs == ("conv",)
    assert f.net.outputs == c.net.outputs and f.skipped == []


def test_fused_node_keeps_the_conv_loc_and_records_every_member(compile_src):
    c = compile_src(CHAIN)
    node = fuse(c.net).net.node("conv")
    assert node.loc == c.net.node("conv").loc
    names = [m[0] for m in node.attrs["fused_from"]]
    assert names == ["conv", "batchnorm", "relu_1"]
    locs = [m[2] for m in node.attrs["fused_from"]]
    assert [(loc.line, loc.col) for loc in locs] == [(3, 10), (3, 47), (3, 60)]
    assert all(isinstance(loc, Loc) and loc.file.endswith("net.cnn") for loc in locs)
    g = group_of(node)
    assert g.members == ("conv", "batchnorm", "relu_1") and g.tail == "relu_1" and g.folded


def test_residual_tail_takes_the_add_and_the_skip_becomes_an_input(compile_src):
    c = compile_src(RESIDUAL)
    f = fuse(c.net)
    patterns = {g.name: g.pattern for g in f.groups}
    assert patterns == {"conv_1": "conv+bn+relu", "conv_2": "conv+bn+add+relu"}
    tail = f.net.node("conv_2")
    assert tail.inputs == ("conv_1", "x") and tail.attrs["residual"]
    assert group_of(tail).skip == "x"
    assert ops_of(f.net) == ["fused_conv", "fused_conv", "global_avgpool", "flatten", "linear"]


def test_each_pass_alone_and_longest_pattern_first(compile_src):
    c = compile_src(RESIDUAL)
    only_pairs = fuse_conv_bn(c.net)   # conv→bn only: the activations and the add stay
    assert ops_of(only_pairs).count("fused_conv") == 2 and "add" in ops_of(only_pairs)
    assert ops_of(fuse_conv_bn_relu(c.net)).count("fused_conv") == 1
    assert ops_of(fuse_conv_bn_add_relu(c.net)).count("fused_conv") == 1
    assert "add" not in ops_of(fuse_conv_bn_add_relu(c.net))


def test_conv_relu_bn_relu_and_other_activations(compile_src):
    c = compile_src("""
    network A {
        input x: [2, 6, 6]
        x -> conv(3, 3, pad = 1) -> relu6 -> batchnorm -> leaky_relu(0.2) -> conv(2, 1) -> sigmoid
    }
    """)
    f = fuse(c.net)
    assert [g.pattern for g in f.groups] == ["conv+relu6", "bn+leaky_relu"]
    assert f.net.node("batchnorm").attrs["slope"] == 0.2
    assert ops_of(f.net) == ["fused_conv", "fused_bn", "conv", "sigmoid"]   # sigmoid is not fused


def test_the_original_graph_is_not_touched(compile_src):
    c = compile_src(RESIDUAL)
    before = [(n.name, n.op, n.inputs) for n in c.net.order()]
    shapes = dict(c.net.shapes)
    fuse(c.net)
    assert [(n.name, n.op, n.inputs) for n in c.net.order()] == before and c.net.shapes == shapes


# ------------------------------------------------------------------ guards
def test_a_batchnorm_whose_conv_output_is_read_elsewhere_does_not_fuse(compile_src):
    c = compile_src("""
    network G {
        input x: [3, 8, 8]
        c = x -> conv(4, 3, pad = 1)
        b = c -> batchnorm -> relu
        b + c
    }
    """)
    f = fuse(c.net)
    assert "conv" in ops_of(f.net) and f.net.node("conv").op == "conv"
    assert [g.pattern for g in f.groups] == ["bn+relu"]          # batchnorm→relu alone is fine
    assert f.net.node("add").inputs == ("batchnorm", "conv")
    skip = {s.start: s.reason for s in f.skipped}
    assert skip["conv"] == "'conv' is also read by 'add'"


def test_a_graph_output_is_never_fused_away(compile_src):
    c = compile_src("""
    network O {
        input x: [3, 8, 8]
        a = x -> conv(4, 3, pad = 1) -> batchnorm
        b = a -> relu
        output a, b
    }
    """)
    f = fuse(c.net)
    assert f.groups == [] and f.net.outputs == ("batchnorm", "relu")
    assert ops_of(f.net) == ["conv", "batchnorm", "relu"]
    reasons = {s.start: s.reason for s in f.skipped}
    assert "graph output" in reasons["conv"] and "graph output" in reasons["batchnorm"]


def test_shared_weights_keep_their_batchnorm_unfolded(compile_src):
    c = compile_src("""
    network S {
        input x: [3, 8, 8]
        a = x -> enc: conv(4, 3, pad = 1) -> batchnorm -> relu
        b = x -> enc -> batchnorm -> relu
        a + b
    }
    """)
    f = fuse(c.net)
    assert [n.op for n in f.net.layers() if n.name.startswith("enc")] == ["conv", "conv"]
    assert [g.pattern for g in f.groups] == ["bn+relu", "bn+relu"]
    reasons = sorted(s.reason for s in f.skipped)
    assert any("shares the weights of 'enc'" in r for r in reasons)
    assert any("uses the weights of 'enc'" in r for r in reasons)


def test_conv_relu_fusion_keeps_shared_weights(compile_src):
    c = compile_src("""
    network S2 {
        input x: [3, 8, 8]
        a = x -> enc: conv(4, 3, pad = 1) -> relu
        b = x -> enc -> relu
        a + b
    }
    """)
    f = fuse(c.net)
    fused = [n for n in f.net.layers() if n.op == "fused_conv"]
    assert len(fused) == 2 and sorted(str(n.shares) for n in fused) == ["None", "enc"]
    assert analyse_fused(f.net, c.analysis).totals()["params"] == c.analysis.totals()["params"]


def test_an_unpool_reading_the_conv_keeps_it(compile_src):
    c = compile_src("""
    network U {
        input x: [2, 8, 8]
        x -> p: maxpool(2) -> conv(2, 3, pad = 1) -> batchnorm -> relu -> unpool(p)
    }
    """)
    assert [g.pattern for g in fuse(c.net).groups] == ["conv+bn+relu"]
    # Point the unpool at the conv (as if its indices came from there): now it must stay.
    net = c.net
    nodes = [n.replace(attrs={**n.attrs, "of": "conv"}) if n.op == "unpool" else n for n in net.order()]
    odd = Network(net.name, build_graph(nodes), net.inputs, net.outputs, dict(net.shapes))
    f = fuse(odd)
    assert "conv" in ops_of(f.net)
    assert any("unpool 'unpool' reads the indices of 'conv'" in s.reason for s in f.skipped)


def test_residual_guards_x_plus_x_broadcasting_and_three_way_adds(compile_src):
    c = compile_src("""
    network X {
        input x: [2, 6, 6]
        c = x -> conv(2, 3, pad = 1) -> batchnorm
        d = x -> conv(2, 3, pad = 1) -> batchnorm
        g = x -> global_avgpool
        e = (c + c) -> relu
        f = (d + g) -> relu
        e + f
    }
    """)
    f = fuse(c.net)
    assert sorted(g.pattern for g in f.groups) == ["conv+bn", "conv+bn"]   # both adds stay
    assert ops_of(f.net).count("add") == 3
    skipped: list = []
    fuse_conv_bn_add_relu(c.net, "eval", skipped)
    reasons = " / ".join(s.reason for s in skipped)
    assert "'add_1' reads 'batchnorm_1' twice" in reasons
    assert "'add_2' broadcasts 'global_avgpool' [2, 1, 1]" in reasons
    # A three-operand add (not writable in the language, but legal in the graph) stays too.
    r = compile_src(RESIDUAL).net
    nodes = [n.replace(inputs=("batchnorm_2", "x", "x")) if n.name == "add" else n for n in r.order()]
    three = Network(r.name, build_graph(nodes), r.inputs, r.outputs, dict(r.shapes))
    skipped = []
    assert "add" in ops_of(fuse_conv_bn_add_relu(three, "eval", skipped))
    assert any("'add' adds 3 tensors" in s.reason for s in skipped)


def test_train_mode_keeps_batchnorm_as_its_own_tensors(compile_src):
    c = compile_src(CHAIN)
    f = fuse(c.net, "train")
    conv = f.net.node("conv")
    assert conv.op == "fused_conv" and conv.attrs["bn"] and not conv.attrs["folded"]
    assert conv.attrs["bias"] is False
    assert set(f.net.params["conv"]) == {"weight", "bn_weight", "bn_bias", "bn_running_mean", "bn_running_var"}
    a = analyse_fused(f.net, c.analysis).totals()
    b = c.analysis.totals()
    assert (a["params"], a["buffers"], a["macs"], a["flops"]) == (b["params"], b["buffers"], b["macs"], b["flops"])
    with pytest.raises(ValueError):
        fuse(c.net, "inference")


# -------------------------------------------------------------------- lint
def _broken(net: Network, nodes=None, shapes=None, edges=()) -> Network:
    g = build_graph(nodes if nodes is not None else net.order())
    g.add_edges_from(edges)
    return Network(net.name, g, net.inputs, net.outputs, shapes if shapes is not None else dict(net.shapes))


def test_the_lint_accepts_every_pass_result_and_rejects_broken_graphs(compile_src):
    c = compile_src(RESIDUAL)
    check(c.net)
    check(fuse(c.net).net)
    net = c.net
    with pytest.raises(GraphLintError, match="shape"):
        check(_broken(net, shapes={**net.shapes, "relu_2": (4, 7, 8)}))
    with pytest.raises(GraphLintError, match="differ from its inputs"):
        check(_broken(net, edges=[("x", "global_avgpool")]))
    dangling = [n.replace(inputs=("nowhere",)) if n.name == "flatten" else n for n in net.order()]
    with pytest.raises(GraphLintError, match="does not exist"):
        check(_broken(net, nodes=dangling))
    cyclic = [n.replace(inputs=("relu_1",)) if n.name == "conv_1" else n for n in net.order()]
    with pytest.raises(GraphLintError, match="cycle|shape"):
        check(_broken(net, nodes=cyclic))
    g = build_graph(net.order())
    g.add_edge("linear", "conv_1")
    with pytest.raises(GraphLintError):
        check(Network(net.name, g, net.inputs, net.outputs, dict(net.shapes)))
    assert not nx.is_directed_acyclic_graph(g)


# --------------------------------------------------------------- op specs
def test_fused_ops_extend_the_table_without_changing_it():
    assert set(FUSED_OPS).isdisjoint(OPS)
    assert "fused_conv" not in OPS   # users cannot write fused ops


def test_fused_analysis_on_resnet18_params_macs_flops():
    from cnnc.compiler.driver import compile_file
    c = compile_file(EXAMPLES / "resnet18.cnn")
    f = fuse(c.net)
    a = analyse_fused(f.net, c.analysis)
    before, after = c.analysis.totals(), a.totals()
    bn_channels = sum(c.net.shapes[n.name][0] for n in c.net.layers() if n.op == "batchnorm")
    # Each folded batchnorm trades γ, β (2C parameters, 2C buffers) for a conv bias (C).
    assert after["params"] == before["params"] - bn_channels == 11_684_712
    assert after["buffers"] == 0 and before["buffers"] == 2 * bn_channels
    assert after["macs"] == before["macs"] == 1_814_073_344
    # The convs had no bias: BN's one FLOP per element becomes the folded bias add.
    assert after["flops"] == before["flops"]
    assert after["activation_bytes"] < before["activation_bytes"] / 2
    assert len(f.net.layers()) == 24 and len(f.groups) == 20
    stem = next(g for g in f.groups if g.name == "stem.conv")
    s = savings(c.net, c.analysis, f.net, a, stem)
    assert s == {"steps": 2, "activation_bytes": 2 * 64 * 112 * 112 * 4, "macs": 0, "flops": 0,
                 "macs_after": 118_013_952, "flops_after": 2 * 118_013_952 + 2 * 64 * 112 * 112}
    assert a.rf["basic_1.conv"] == c.analysis.rf["basic_1.relu"]


def test_folding_into_a_biased_conv_saves_the_batchnorm_flops(compile_src):
    c = compile_src("network B {\n input x: [2, 5, 5]\n x -> conv(3, 3) -> batchnorm -> flatten\n}\n")
    f = fuse(c.net)
    a = analyse_fused(f.net, c.analysis)
    assert c.analysis.totals()["flops"] - a.totals()["flops"] == 3 * 3 * 3     # one per BN output element


def test_symbolic_networks_fuse_too():
    from cnnc.compiler.driver import compile_file
    c = compile_file(EXAMPLES / "unet.cnn")
    f = fuse(c.net)
    assert len(f.groups) == 18 and all(g.pattern == "conv+relu" for g in f.groups)
    assert analyse_fused(f.net, c.analysis).totals()["macs"] == c.analysis.totals()["macs"]


def test_fusable_groups_for_viz(compile_src):
    c = compile_src(RESIDUAL)
    groups = fusable_groups(c.net)
    assert [g.members for g in groups] == [("conv_1", "batchnorm_1", "relu_1"),
                                           ("conv_2", "batchnorm_2", "add", "relu_2")]
    assert analyse(c.net).totals() == c.analysis.totals()   # viz reads, never mutates


# --------------------------------------------------------------------- CLI
def test_cli_fuse_prints_groups_with_locations_savings_memory_and_the_table(write, capsys):
    path = write(RESIDUAL)
    assert cli(["compile", str(path), "--fuse"]) == 0
    out = capsys.readouterr().out
    assert "R: 2 fused groups for inference" in out
    lines = out.splitlines()
    row = next(line for line in lines if line.lstrip().startswith("conv_2 "))
    assert "conv+bn+add+relu" in row and "-3" in row and "-3.00 KiB" in row
    where = " ".join(lines[lines.index(row) + 1:lines.index(row) + 6])
    for member in (f"conv {path}:4:17", f"batchnorm {path}:4:54", f"add {path}:5:11", f"relu {path}:5:19",
                   "(residual: x)"):
        assert member in where
    assert "steps        10 -> 5" in out
    assert "activations  7.04 KiB -> 2.04 KiB per sample" in out
    assert "memory plan  naive 7.04 KiB unfused, 2.04 KiB fused; planned arena 2.00 KiB (lower bound 2.00 KiB)" \
        in out.replace("\n             ", " ")
    assert "conv+bn+relu" in out.split("layer ")[1]      # the table of the fused graph follows


def test_cli_fuse_json_adds_a_fused_object(write, capsys):
    path = write(RESIDUAL)
    assert cli(["compile", str(path), "--fuse", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in data["layers"]][:2] == ["conv_1", "batchnorm_1"]   # unchanged contract
    fused = data["fused"]
    assert fused["mode"] == "eval" and [g["pattern"] for g in fused["groups"]] == ["conv+bn+relu",
                                                                                    "conv+bn+add+relu"]
    g = fused["groups"][1]
    assert [m["loc"] for m in g["members"]] == [f"{path}:4:17", f"{path}:4:54", f"{path}:5:11", f"{path}:5:19"]
    assert g["residual"] == "x" and g["saves"]["steps"] == 3 and g["saves"]["macs"] == 0
    assert [layer["op"] for layer in fused["graph"]["layers"]] == ["fused_conv", "fused_conv", "global_avgpool",
                                                                   "flatten", "linear"]
    mem = fused["memory"]
    assert mem["planned_bytes"] <= mem["naive_bytes"] < mem["naive_unfused_bytes"]
    assert mem["planned_bytes"] >= mem["lower_bound_bytes"]


def test_cli_emit_needs_an_output_file(write, capsys):
    assert cli(["compile", str(write(CHAIN)), "--emit", "numpy"]) == 1
    assert "--emit numpy needs -o FILE.py" in capsys.readouterr().err


def test_the_fusion_modules_never_import_the_runtime():
    import subprocess
    import sys
    code = ("import sys, cnnc.compiler.fusion, cnnc.compiler.report; "
            "print(sorted(m for m in sys.modules if m.startswith('cnnc.runtime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
