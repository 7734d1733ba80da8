"""Stage 3 (runtime), export: `cnnc export --to torch` — a network as readable PyTorch source.

`export` reads a checked graph (compiler/graph.py) and the parameter store
(`"{owner}.{param}"`, runtime/plan.py) and writes a module that imports only
torch: one `nn.Module` class per `.cnn` block, the network as a module whose
`forward` follows the graph, and every layer at the module path of its name,
so `state_dict()` keys are the store's keys exactly (batchnorm's running
statistics are buffers of the same names). Instances of one block whose
layers differ only in constructor values (channels, kernel sizes, strides)
share a class; the values that differ become its constructor arguments.
The weights — a `cnnc run` checkpoint's, or the seeded initial weights —
are saved beside the module as a plain state dict (`torch.save`), and the
module carries `load_cnnc_checkpoint(path)`, which reads a cnnc checkpoint
(the layout prefix comes from runtime/checkpoint.py) without cnnc.

Each layer comes from its op's rule (torch_rules.py). Every value that
reaches the generated text goes through export/codegen.py's `py_literal`;
the module is compiled and its top-level statements checked before anything
is written, and both files are written atomically, never over an input.
"""
from __future__ import annotations

import ast
import io
import keyword
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from ...compiler.graph import Network, Node, dependency_order
from ...dsl.source import CnncError
from .. import checkpoint as checkpoints
from ..plan import require_concrete
from .codegen import (NO_PREPARATION, Preparation, copy_functions, module_and_weights, parameter_store, preparation,
                      preparation_constants, preparation_note, preparation_text, py_literal, write_module_and_weights)
from .torch_rules import HELPERS, Arg, Context, Ctor, require_torch, rule_for


# ------------------------------------------------------------ module tree
Value = tuple[str, str]   # (node name, "y" for its output or "idx" for a max pool's indices)


@dataclass
class Scope:
    """The network or one block instance: its own layers and the instances inside it."""
    path: tuple[str, ...]
    block: str
    items: list = field(default_factory=list)          # Node | Scope, in the order forward runs them
    inputs: list[Value] = field(default_factory=list)  # values it reads from outside
    outputs: list[Value] = field(default_factory=list)  # values read outside it (or network outputs)
    cls: str = ""
    args: tuple[Arg, ...] = ()                         # what its parent passes its class

    @property
    def attr(self) -> str:
        return self.path[-1]


def _deps(node: Node) -> list[Value]:
    deps = [(i, "y") for i in node.inputs]
    return deps + [(node.attrs["of"], "idx")] if node.op == "unpool" else deps


def _inside(path: tuple[str, ...], node: Node) -> bool:
    return node.scope[:len(path)] == path


def build_scopes(net: Network) -> Scope:
    """The network's scope tree: a scope per block instance (Node.scope), its inputs and outputs."""
    root = Scope((), net.name)
    scopes: dict[tuple[str, ...], Scope] = {(): root}
    order = net.layers()
    for node in order:
        expected = ".".join(node.scope + (node.name.rsplit(".", 1)[-1],))
        if node.name != expected:
            raise CnncError(f"cannot export layer '{node.name}': its name is not its block path", node.loc)
        for depth in range(1, len(node.scope) + 1):
            path = node.scope[:depth]
            if path not in scopes:
                blocks = node.scope_blocks or node.scope
                scopes[path] = Scope(path, blocks[depth - 1])
                scopes[path[:-1]].items.append(scopes[path])
        scopes[node.scope].items.append(node)
    producers = {n.name: n for n in net.order()}
    reads: dict[tuple[str, ...], dict[Value, None]] = {p: {} for p in scopes}    # ordered sets
    gives: dict[tuple[str, ...], dict[Value, None]] = {p: {} for p in scopes}
    for node in order:
        for v in _deps(node):
            src = producers[v[0]]
            src_scope = () if src.op == "input" else src.scope
            for depth in range(1, len(node.scope) + 1):     # the consumer's instances without the producer
                if src_scope[:depth] != node.scope[:depth]:
                    reads[node.scope[:depth]][v] = None
            for depth in range(1, len(src_scope) + 1):      # the producer's instances without the consumer
                if node.scope[:depth] != src_scope[:depth]:
                    gives[src_scope[:depth]][v] = None
    for name in net.outputs:
        scope = producers[name].scope
        for depth in range(1, len(scope) + 1):
            gives[scope[:depth]][(name, "y")] = None
    rank = {n.name: i for i, n in enumerate(order)}
    for path, scope in scopes.items():
        scope.inputs = list(reads[path])
        scope.outputs = sorted(gives[path], key=lambda v: (rank[v[0]], v[1]))
    for scope in scopes.values():
        scope.items = _item_order(scope, net)
    return root


def _produced(item) -> set[str]:
    if isinstance(item, Scope):
        return {n for i in item.items for n in _produced(i)}
    return {item.name}


def _needed(item) -> list[Value]:
    return item.inputs if isinstance(item, Scope) else _deps(item)


def _item_order(scope: Scope, net: Network) -> list:
    """Its layers and child instances in an order where each runs after what it reads."""
    order = dependency_order(scope.items, _produced, lambda item: [name for name, _ in _needed(item)])
    assert order is not None, "a compiled network has no circle"
    return order


# ------------------------------------------------------------ class text
RESERVED = {"self", "torch", "nn", "F", "math", "super", "model", "path", "preprocess"}
MODULE_NAMES = {"NETWORK", "SOURCE", "ORIGIN", "INPUTS", "OUTPUTS", "WEIGHTS", "CHECKPOINT_PARAM",
                "CLASSES", "PREPROCESS", "INPUT_SCALE", "INPUT_SHIFT"}   # + loader_names()


def _identifier(text: str, taken: set[str], prefix: str = "t_") -> str:
    base = re.sub(r"[^0-9A-Za-z_]", "_", text) or "v"
    if base[0].isdigit() or keyword.iskeyword(base) or base in RESERVED:
        base = prefix + base
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", text) if part) or "Block"


@dataclass
class Body:
    """One instance's class text with its constructor values left open (grouped by `key`)."""
    init: list[tuple[str, Ctor | Scope]]   # (module reference, a layer's constructor or a child instance)
    forward: list[str]
    params: list[str]                       # forward's parameters

    @property
    def key(self) -> tuple:
        return (tuple((ref, c.cls) if isinstance(c, Scope) else
                      (ref, c.callee, tuple((a.keyword, a.role, a.default) for a in c.args), c.suffix)
                      for ref, c in self.init), tuple(self.forward), tuple(self.params))

    def args(self) -> list[Arg]:
        """Every constructor value in order; a child instance's are the arguments its class takes."""
        return [a for _, c in self.init for a in c.args]


class Exporter:
    def __init__(self, net: Network, torch: Any, prepared: str | None = None):
        self.net = net
        self.prepared = prepared   # the input that `preprocess` maps first in the network's forward
        self.ctx = Context(net)
        probe = torch.nn.Module()
        self.unsafe = lambda name: (not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_")
                                    or hasattr(probe, name))
        self.kept = set(vars(probe))   # what nn.Module sets on itself (`training`, its tables): no child name
        self.groups: dict[tuple, list[tuple[Scope, Body]]] = {}
        self.classes: list[tuple[str, list[tuple[Scope, Body]]]] = []
        self.class_names: set[str] = set(RESERVED) | set(HELPERS) | set(MODULE_NAMES) | loader_names()

    # -- one instance
    def module_ref(self, name: str) -> str:
        """How forward and __init__ name a child module: an attribute, or `_modules` for names that
        an attribute cannot carry (keywords, nn.Module's own attributes)."""
        return f"self._modules[{py_literal(name)}]" if self.unsafe(name) else f"self.{name}"

    def check_name(self, name: str, node: Node) -> None:
        if name in self.kept:
            raise self.ctx.refuse(node, f"nn.Module keeps its own '{name}' attribute, so no child module can "
                                        "have that name (its state_dict key would change)")

    def body(self, scope: Scope) -> Body:
        taken: set[str] = set(HELPERS)
        var: dict[Value, str] = {}
        params = []
        inputs = scope.inputs if scope.path else [(name, "y") for name in self.net.inputs]
        for k, v in enumerate(inputs):
            base = v[0] if not scope.path else ("x" if v[1] == "y" else "idx") + (str(k + 1) if k else "")
            var[v] = _identifier(base, taken)
            params.append(var[v])
        init, forward = [], []
        if not scope.path and self.prepared is not None:
            x = var[(self.prepared, "y")]
            forward.append(f"{x} = preprocess({x})")
        for item in scope.items:
            if isinstance(item, Scope):
                if item.attr in self.kept:
                    self.check_name(item.attr, next(n for n in self.net.layers() if _inside(item.path, n)))
                ref = self.module_ref(item.attr)
                init.append((ref, item))
                outs = []
                for v in item.outputs:
                    rel = v[0][len(".".join(scope.path)) + 1:] if scope.path else v[0]
                    var[v] = _identifier(rel + ("_idx" if v[1] == "idx" else ""), taken)
                    outs.append(var[v])
                forward.append(f"{', '.join(outs)} = {ref}({', '.join(var[v] for v in item.inputs)})")
                continue
            forward.append(self.layer_line(item, var, taken, init))
        outs = scope.outputs if scope.path else [(o, "y") for o in self.net.outputs]
        if scope.path or len(outs) == 1:
            forward.append(f"return {', '.join(var[v] for v in outs)}")
        else:
            forward.append("return {" + ", ".join(f"{py_literal(v[0])}: {var[v]}" for v in outs) + "}")
        return Body(init, forward, params)

    def layer_line(self, node: Node, var: dict[Value, str], taken: set[str], init: list) -> str:
        """`name = call` for one layer, its module (if it has parameters) appended to `init`."""
        rel = node.name.rsplit(".", 1)[-1]
        self.check_name(rel, node)
        rule = rule_for(self.ctx, node)
        if rule is None:
            raise self.ctx.refuse(node, f"no PyTorch rule for '{node.op}'")
        layer = rule(self.ctx, node, [var[v] for v in _deps(node)])
        ref = self.module_ref(rel)
        if layer.module is not None:
            if node.shares:
                owner = self.net.node(node.shares)
                if owner.scope != node.scope:
                    raise self.ctx.refuse(node, f"it shares the weights of '{node.shares}' in another block")
                ref = self.module_ref(node.shares.rsplit(".", 1)[-1])
            else:
                init.append((ref, layer.module))
        target = var[(node.name, "y")] = _identifier(rel, taken)
        if node.name in self.ctx.unpooled:
            var[(node.name, "idx")] = _identifier(rel + "_idx", taken)
            target += ", " + var[(node.name, "idx")]
        return f"{target} = {layer.call.replace('{m}', ref)}"

    # -- classes
    def visit(self, scope: Scope) -> None:
        """Children first; then this instance joins the class of its block with the same body."""
        for item in scope.items:
            if isinstance(item, Scope):
                self.visit(item)
        body = self.body(scope)
        key = (scope.block, len(scope.path) == 0, body.key)
        if key not in self.groups:
            self.groups[key] = []
            name = _identifier(_camel(scope.block), self.class_names, prefix="Net")
            self.classes.append((name, self.groups[key]))
        self.groups[key].append((scope, body))
        scope.cls = next(n for n, g in self.classes if g is self.groups[key])

    def arguments(self, members: list[tuple[Scope, Body]]) -> tuple[list[str | None], list[str]]:
        """Per constructor value: the class argument that carries it (None: the same in every instance).
        Values equal in every instance are written in the class; columns that vary alike share one
        argument, named by what the first of them is (channels, stride, ...)."""
        table = [body.args() for _, body in members]
        names: list[str | None] = []
        by_column: dict[tuple, str] = {}
        taken: set[str] = {"self"}
        order = []
        for j, arg in enumerate(table[0]):
            column = [row[j].value for row in table]
            if all(_same(v, column[0]) for v in column):
                names.append(None)
                continue
            key = tuple(py_literal(v) for v in column)
            if key not in by_column:
                by_column[key] = _identifier(arg.role, taken)
                order.append(key)
            names.append(by_column[key])
        for i, (scope, _) in enumerate(members):   # what each instance's parent passes
            first = {n: table[i][j].value for j, n in reversed(list(enumerate(names))) if n is not None}
            scope.args = tuple(Arg(None, by_column[k], first[by_column[k]]) for k in order)
        return names, [by_column[k] for k in order]

    def class_text(self, name: str, members: list[tuple[Scope, Body]]) -> str:
        names, params = self.arguments(members)
        body = members[0][1]
        lines = [f"class {name}(nn.Module):",
                 f"    def __init__({', '.join(['self'] + params)}):",
                 "        super().__init__()"]
        carried = iter(names)
        for ref, ctor in body.init:
            args = []
            for arg in ctor.args:
                by = next(carried)
                if by is None and arg.keyword is not None and _same(arg.value, arg.default):
                    continue
                text = by if by is not None else py_literal(arg.value)
                args.append(text if arg.keyword is None else f"{arg.keyword}={text}")
            callee, suffix = (ctor.cls, "") if isinstance(ctor, Scope) else (ctor.callee, ctor.suffix)
            lines.append(f"        {ref} = {callee}({', '.join(args)}){suffix}")
        lines += ["", f"    def forward({', '.join(['self'] + body.params)}):"]
        lines += ["        " + line for line in body.forward]
        return "\n".join(lines) + "\n"

    def source(self, root: Scope) -> str:
        """Every class, innermost first: a class's arguments are settled before its parents pass them."""
        self.visit(root)
        return "\n\n".join(self.class_text(name, members) for name, members in self.classes)


def _same(a: Any, b: Any) -> bool:
    """The same value written the same way (1 and True differ; `...`, no default, equals nothing)."""
    if b is ...:
        return False
    return type(a) is type(b) and py_literal(a) == py_literal(b)


# ------------------------------------------------------------------ module
LOADER = '''
def load_cnnc_checkpoint(path, model=None):
    """Load a cnnc checkpoint's parameters (the .npz `cnnc run` writes) into `model` (default: a new
    {cls}) and return it. Reads the archive's .npy members itself: no pickle, no NumPy, no cnnc.
    Each member's header is checked against the model's own tensor before its data is read, so a
    file that lies about its sizes is refused from its headers (ValueError)."""
    import zipfile
    dtypes = {{"<f4": torch.float32, "<f8": torch.float64, "<f2": torch.float16, "<i8": torch.int64,
              "<i4": torch.int32, "|u1": torch.uint8, "|b1": torch.bool}}
    model = {cls}() if model is None else model
    expected = model.state_dict()
    state = {{}}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            member = info.filename
            if not (member.startswith(CHECKPOINT_PARAM) and member.endswith(".npy")):
                continue
            key = member[len(CHECKPOINT_PARAM):-len(".npy")]
            if key not in expected:
                raise ValueError(f"{{member}}: {cls} has no tensor {{key!r}}")
            with archive.open(info) as stream:
                descr, fortran, shape, offset = npy_header(stream, member)
                if descr not in dtypes or fortran:
                    raise ValueError(f"{{member}}: unsupported array type {{descr}}")
                if shape != tuple(expected[key].shape):
                    raise ValueError(f"{{member}} has shape {{list(shape)}}, {cls} needs {{list(expected[key].shape)}}")
                dtype = dtypes[descr]
                check_npy_size(member, shape, dtype.itemsize, offset, info.file_size)
                raw = stream.read(info.file_size - offset)
            if len(raw) != info.file_size - offset:
                raise ValueError(f"{{member}} ends early")
            tensor = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.zeros(0, dtype=dtype)
            state[key] = tensor.reshape(shape).float()
    model.load_state_dict(state)
    return model
'''
LOADER_HELPERS = (checkpoints.npy_header, checkpoints.check_npy_size)  # shared with cnnc's own loader


@cache
def loader_names() -> frozenset[str]:
    """The top-level names the loader and its copied helpers define (no class may take one)."""
    tree = ast.parse(loader_source("Network"))
    return frozenset(getattr(stmt, "name", None) or stmt.targets[0].id for stmt in tree.body)


def loader_source(cls: str) -> str:
    """`load_cnnc_checkpoint` for the class `cls`, after the header checks it shares with
    runtime/checkpoint.py (copied, as `--emit numpy` copies its functions)."""
    helpers, _ = copy_functions(LOADER_HELPERS)
    return helpers + "\n" + LOADER.format(cls=cls)


PREPROCESS_FUNCTION = '''

def preprocess(x):
    """The training's preprocessing (PREPROCESS) as one per-channel map: x * INPUT_SCALE + INPUT_SHIFT."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = torch.tensor(INPUT_SCALE, dtype=x.dtype, device=x.device).reshape(shape)
    shift = torch.tensor(INPUT_SHIFT, dtype=x.dtype, device=x.device).reshape(shape)
    return x * scale + shift
'''


def _header(net: Network, cls: str, weights_name: str, origin: str, prep: Preparation) -> str:
    """The module docstring (no user text in it), imports and constants."""
    inputs = {k: tuple(int(d) for d in v) for k, v in net.inputs.items()}
    returns = "the output" if len(net.outputs) == 1 else "a dict of the outputs"
    return (f'"""A network as PyTorch modules, generated by `cnnc export --to torch`.\n\n'
            f"One class per block of the .cnn file, the network as `{cls}`; every layer sits at the\n"
            "module path of its cnnc name, so state_dict() keys are cnnc's parameter names. NETWORK\n"
            "names the network, SOURCE the file it was exported from, WEIGHTS the state dict saved\n"
            "beside this module and ORIGIN where its values came from.\n\n"
            f"    model = {cls}()\n"
            "    model.load_state_dict(torch.load(os.path.join(os.path.dirname(__file__), WEIGHTS),\n"
            "                                     weights_only=True))   # tensors only: no pickled code runs\n"
            "    model = load_cnnc_checkpoint(\"last.npz\")    # or: a cnnc checkpoint\n\n"
            f"`forward` takes float32 [N, *INPUTS[name]] tensors and returns {returns} (OUTPUTS).\n"
            + preparation_text(prep) + '"""\n'
            "import torch\n"
            "from torch import nn\n"
            "from torch.nn import functional as F\n\n"
            f"NETWORK = {py_literal(net.name)}\n"
            f"SOURCE = {py_literal(str(net.source))}\n"
            f"ORIGIN = {py_literal(origin)}\n"
            f"INPUTS = {py_literal(inputs)}\n"
            f"OUTPUTS = {py_literal(tuple(net.outputs))}\n"
            f"WEIGHTS = {py_literal(weights_name)}\n"
            f"CHECKPOINT_PARAM = {py_literal(checkpoints.PARAM)}\n"
            + preparation_constants(prep) + (PREPROCESS_FUNCTION if prep.in_model else ""))


def module_source(net: Network, weights_name: str, origin: str, torch: Any,
                  prep: Preparation = NO_PREPARATION) -> tuple[str, str]:
    """The module's text and the network class's name."""
    root = build_scopes(net)
    exporter = Exporter(net, torch, prep.input if prep.in_model else None)
    classes = exporter.source(root)
    cls = root.cls
    helpers = "".join("\n\n" + HELPERS[h].strip("\n") + "\n" for h in exporter.ctx.helpers)
    text = (_header(net, cls, weights_name, origin, prep) + helpers + "\n\n" + classes
            + "\n" + loader_source(cls))
    return text, cls


ALLOWED_IMPORTS = {"torch"}


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except ValueError:
        return False


def check_module(source: str) -> None:
    """Compile the generated text; at import it may only import torch, bind literals and define
    functions and classes whose bodies hold only methods (nothing else runs)."""
    tree = ast.parse(source)
    compile(tree, "<generated module>", "exec")
    body = tree.body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)):
        raise AssertionError("the generated module does not start with its docstring")
    for stmt in body[1:]:
        if isinstance(stmt, ast.Import) and {a.name for a in stmt.names} <= ALLOWED_IMPORTS:
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module in ("torch", "torch.nn") and stmt.level == 0:
            continue
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                and _is_literal(stmt.value):
            continue
        if isinstance(stmt, ast.FunctionDef) and not stmt.decorator_list and not _runs_at_definition(stmt):
            continue
        if isinstance(stmt, ast.ClassDef) and not stmt.decorator_list and not stmt.keywords and all(
                isinstance(s, ast.FunctionDef) and not s.decorator_list and not _runs_at_definition(s)
                or isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in stmt.body):
            continue
        raise AssertionError(f"unexpected top-level {type(stmt).__name__} in the generated module "
                             f"(line {stmt.lineno})")


def _runs_at_definition(fn: ast.FunctionDef) -> bool:
    """Default values and annotations run when a function is defined: only literals are allowed."""
    defaults = fn.args.defaults + [d for d in fn.args.kw_defaults if d is not None]
    return not all(_is_literal(d) for d in defaults) or fn.returns is not None or any(
        a.annotation is not None for a in fn.args.args)


# -------------------------------------------------------------------- export
def export(compiled, output: str, checkpoint: str | None = None, raw: bool = False) -> dict[str, Any]:
    """Write OUTPUT (.py) and its weights (.pt beside it), both atomically; returns what was written.
    The network's forward applies the checkpoint's preprocessing first unless `raw`."""
    torch = require_torch()
    net = compiled.net
    require_concrete(net, "--to torch")
    module, weights, inputs = module_and_weights(output, ".pt", "--to torch", net.source, checkpoint)
    store, origin = parameter_store(net, compiled.analysis.params, checkpoint)
    prep = preparation(net, checkpoint, raw)
    source, cls = module_source(net, weights.name, origin, torch, prep)
    check_module(source)
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in store.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_module_and_weights(module, weights, inputs, source, lambda f: f.write(buffer.getvalue()))
    return {"module": str(module), "weights": str(weights), "lines": source.count("\n"), "class": cls,
            "arrays": len(state), "bytes": sum(v.nbytes for v in state.values()), "source": origin,
            "initial": checkpoint is None, "preprocess": preparation_note(prep)}
