"""Stage 3 (runtime): `cnnc compile --emit numpy` — a network as a standalone NumPy module.

`emit` fuses the network for inference (batchnorm folded into the
convolutions, compiler/fusion.py), writes a readable Python module that
imports only NumPy — the plain-NumPy functions of the ops the network uses,
then `forward`, a straight-line function in topological order with one named
variable per layer — and saves the (folded) weights beside it as `.npz`:
from a checkpoint written by `cnnc run` if one is given, else the seeded
initial weights the trainer would start from. Both files are written
atomically (dsl/files.py), and never over the checkpoint or the source.

The generated functions are not restated here: they are the real functions
of export/standalone.py (tested against the runtime kernels), copied with
`inspect.getsource` together with every helper and constant their code
refers to (`copy_functions`). Each op's emitter — node to expression — is
registered into the op's entry (`register("numpy", op)`, compiler/ops.py;
the fused ops' entries live in compiler/fusion.py's `FUSED_OPS`). Every
value that reaches the generated text (paths, names, attributes) goes
through one escaping function, `py_literal`; docstrings hold no user text,
comments only `py_literal` output, and the module is compiled and its
top-level statements checked before anything is written.
"""
from __future__ import annotations

import ast
import inspect
import keyword
import math
import re
import textwrap
import types
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ...compiler.fusion import FUSED_OPS, fuse, parameters
from ...compiler.graph import Network, Node
from ...compiler.ops import OPS, implementation, normalised_name, register
from ...compiler.symbolic import is_symbolic
from ...dsl.files import atomic_output, describe_path, same_file
from ...dsl.source import CnncError
from . import standalone
from .. import checkpoint as checkpoints
from .. import preprocess
from ..fused import fold_parameters
from ..plan import initial_parameters, require_concrete

BACKEND = "numpy"
PACKAGE = __name__.split(".")[0]


# ---------------------------------------------------------------- escaping
def py_literal(value: Any) -> str:
    """Python source that evaluates to `value`: the one way a value enters generated code.

    Numbers round-trip (inf and nan as `float("inf")`/`float("nan")`, never a bare
    name); strings are `repr`s, whose escapes cover quotes, backslashes, newlines,
    control and every non-printable character, so the text is safe in code and
    in a comment (never in a docstring: generated docstrings hold no user text).
    Tuples, lists and dicts are literals of literals; anything else is refused.
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        return repr(None if value is None else bool(value))
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f'float("{v}")' if math.isinf(v) or math.isnan(v) else repr(v)
    if isinstance(value, str):
        text = repr(str(value))
        # Prefer double quotes; only when the value has none, so no escape changes meaning.
        return '"' + text[1:-1] + '"' if text[0] == "'" and '"' not in value else text
    if isinstance(value, tuple):
        items = [py_literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Python literal for a {type(value).__name__} ({value!r:.60})")


# ----------------------------------------------------------- copying code
def _free_names(fn: Callable) -> set[str]:
    """The names a function's code reads that it does not bind itself (globals or builtins)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    loads, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):  # a local import binds its name
            bound.add(node.asname or node.name.split(".")[0])
    return loads - bound


def _references(fn: Callable) -> tuple[list[Callable], dict[str, Any]]:
    """The functions and constants `fn` refers to in its module; refuses what a copy cannot carry."""
    if not isinstance(fn, types.FunctionType) or fn.__code__.co_freevars or fn.__name__ == "<lambda>":
        raise TypeError(f"{fn!r} is not a module-level function, so it cannot be copied")
    if not inspect.getsource(fn).startswith("def "):
        raise TypeError(f"{fn.__module__}.{fn.__name__} is decorated or nested, so it cannot be copied")
    functions, constants = [], {}
    for name in sorted(_free_names(fn)):
        if name not in fn.__globals__:
            continue  # a builtin
        value = fn.__globals__[name]
        where = f"{fn.__module__}.{fn.__name__} uses {name}"
        if isinstance(value, types.ModuleType):
            if value is not np or name != "np":
                raise TypeError(f"{where}: a generated module imports only NumPy, as np")
        elif isinstance(value, types.FunctionType):
            if not value.__module__.startswith(PACKAGE + "."):
                raise TypeError(f"{where}, from {value.__module__}: call it through np. instead")
            functions.append(value)
        else:
            py_literal(value)  # raises for what is no plain literal
            constants[name] = value
    return functions, constants


def _closure(roots: Iterable[Callable]) -> tuple[list[Callable], dict[str, Any]]:
    """The roots, every function they reach and every constant those read; names must not clash."""
    functions: dict[str, Callable] = {}
    constants: dict[str, Any] = {}
    stack = list(roots)
    while stack:
        fn = stack.pop()
        if fn.__name__ in functions:
            if functions[fn.__name__] is not fn:
                raise TypeError(f"two functions named {fn.__name__} would be copied "
                                f"({functions[fn.__name__].__module__} and {fn.__module__})")
            continue
        functions[fn.__name__] = fn
        called, read = _references(fn)
        stack.extend(called)
        for name, value in read.items():
            if name in constants and constants[name] is not value:
                raise TypeError(f"two constants named {name} would be copied")
            constants[name] = value
    clash = set(functions) & set(constants)
    if clash:
        raise TypeError(f"{sorted(clash)} name both a function and a constant")
    # Imported helpers first, then this stage's functions in file order.
    order = sorted(functions.values(), key=lambda f: (f.__module__ == standalone.__name__, f.__module__,
                                                      f.__code__.co_firstlineno))
    return order, constants


def copy_functions(roots: Iterable[Callable]) -> tuple[str, list[Callable]]:
    """Source text defining `roots`, their helpers and constants; and the functions in text order."""
    functions, constants = _closure(roots)
    parts = [f"{name} = {py_literal(value)}\n" for name, value in sorted(constants.items())]
    parts += [textwrap.dedent(inspect.getsource(fn)).strip("\n") + "\n" for fn in functions]
    return "".join("\n\n" + part for part in parts), functions


def standalone_functions() -> list[Callable]:
    """Every function export/standalone.py defines (what a generated module may contain)."""
    return [f for _, f in inspect.getmembers(standalone, inspect.isfunction) if f.__module__ == standalone.__name__]


HEADER_NAMES = {"np", "os", "p", "params", "load", "forward", "NETWORK", "SOURCE", "ORIGIN", "INPUTS",
                "OUTPUTS", "WEIGHTS", "_PARAMS", "CLASSES", "PREPROCESS", "INPUT_SCALE", "INPUT_SHIFT"}


@cache
def reserved_names() -> frozenset[str]:
    """Every top-level name a generated module can define (a layer variable must not shadow one)."""
    functions, constants = _closure(standalone_functions())
    return frozenset({f.__name__ for f in functions} | set(constants) | HEADER_NAMES)


# ---------------------------------------------------------------- emitters
Rule = Callable[["_Emitter", Node, list[str]], str]


def register_fused(*ops: str) -> Callable[[Rule], Rule]:
    """`register(BACKEND, ...)` for the fused ops, whose entries live in compiler/fusion.py's FUSED_OPS."""
    return register(BACKEND, *ops, table=FUSED_OPS)


def emitter(op: str) -> Rule | None:
    """The registered NumPy emitter of an op of the compiler's table or a fused op, or None."""
    return implementation(op, BACKEND, FUSED_OPS if op in FUSED_OPS else None)


class _Emitter:
    """Turns one node into an expression over named variables, remembering the functions it calls."""

    def __init__(self, net: Network, names: dict[str, str]):
        self.net, self.names, self.used = net, names, []
        self.unpooled = {n.attrs["of"] for n in net.layers() if n.op == "unpool"}
        self.on_signal = False   # emitting a layer on a [C, L] signal as a unit-height image
        # Parameters of rank 3 (a 1-D conv's [O, C/g, k]) get a unit-height axis on a signal, as the
        # runtime's lift gives every 3-D parameter (kernels/signal.py).
        self.rank3 = {f"{owner}.{p}" for owner, ps in parameters(net).items()
                      for p, spec in ps.items() if len(spec.shape) == 3}

    def target(self, node: Node) -> str:
        """The variable(s) a node's line assigns: a pool an unpool reads also yields its argmax."""
        name = self.names[node.name]
        return f"{name}, {name}_idx" if node.name in self.unpooled else name

    def call(self, fn: Callable, *args: str, **kwargs: Any) -> str:
        """`fn(args..., key=literal...)`: args are generated expressions, keyword values are data."""
        if fn not in self.used:
            self.used.append(fn)
        parts = list(args) + [f"{k}={py_literal(v)}" for k, v in kwargs.items()]
        return f"{fn.__name__}({', '.join(parts)})"

    def param(self, node: Node, name: str) -> str:
        key = f"{node.shares or node.name}.{name}"
        ref = f"p[{py_literal(key)}]"
        # a 1-D conv's [O, C/g, k] weight, viewed as the 2-D function's [O, C/g, 1, k]
        return f"{ref}[:, :, None]" if self.on_signal and key in self.rank3 else ref

    def activation(self, expr: str, attrs: dict) -> str:
        """A fused node's trailing activation (attrs["activation"]), emitted by that op's own emitter."""
        op = attrs.get("activation")
        return expr if op is None else emitter(op).apply(self, expr, attrs, op)

    def expression(self, node: Node) -> str:
        rule = emitter(node.op)
        if rule is None:
            raise CnncError(f"--emit numpy does not support '{node.op}' yet (layer '{node.name}')", node.loc,
                            hint="the runtime runs it: use `cnnc run`/`cnnc predict`")
        names = [self.names[i] for i in node.inputs]
        if not any(len(self.net.shapes[i]) == 2 for i in node.inputs):
            return rule(self, node, names)
        # A [C, L] signal: the 2-D function on a unit-height view (compiler/ops.py, "1-D signals"),
        # its result shaped back.
        lifted = [f"{n}[:, :, None]" if len(self.net.shapes[i]) == 2 else n for n, i in zip(names, node.inputs)]
        self.on_signal = True
        try:
            expr = rule(self, node, lifted)
        finally:
            self.on_signal = False
        shape = py_literal(tuple(int(d) for d in self.net.shapes[node.name]))
        return f"({expr}).reshape((len({names[0]}),) + {shape})"


class Elementwise:
    """The emitter of an element-wise op: its standalone function, the op's attributes as keywords."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, e: _Emitter, node: Node, x: list[str]) -> str:
        return self.apply(e, x[0], node.attrs, node.op)

    def apply(self, e: _Emitter, expr: str, attrs: dict, op: str) -> str:
        keys = [normalised_name(op, a.name) for a in OPS[op].attrs]
        return e.call(self.fn, expr, **{k: attrs[k] for k in keys if k in attrs})


# An element-wise activation is emitted as a call of its same-named function in
# export/standalone.py: adding one needs that function only (the coverage test names a missing one).
for _name, _spec in OPS.items():
    if _spec.family == "activation" and hasattr(standalone, _name):
        register(BACKEND, _name)(Elementwise(getattr(standalone, _name)))


def _tuples(v: Any) -> Any:
    """Attribute values with every list or tuple a tuple (how the standalone functions take them)."""
    return tuple(_tuples(i) for i in v) if isinstance(v, (list, tuple)) else v


def _conv_kwargs(a: dict) -> dict[str, Any]:
    """The convolution's keywords that differ from the function's defaults."""
    defaults = {"stride": (1, 1), "padding": ((0, 0), (0, 0)), "dilation": (1, 1), "groups": 1}
    return {k: _tuples(a[k]) for k, default in defaults.items() if k in a and _tuples(a[k]) != default}


def _bias(e: _Emitter, node: Node) -> str:
    return e.param(node, "bias") if node.attrs["bias"] else "None"


@register_fused("fused_conv")
@register(BACKEND, "conv")
def _conv(e: _Emitter, node: Node, x: list[str]) -> str:
    a = node.attrs
    expr = e.call(standalone.conv2d, x[0], e.param(node, "weight"), _bias(e, node), **_conv_kwargs(a))
    if a.get("residual"):
        expr = f"{expr} + {x[1]}"
    return e.activation(expr, a)


@register(BACKEND, "deconv")
def _deconv(e: _Emitter, node: Node, x: list[str]) -> str:
    kw = {**_conv_kwargs(node.attrs), "output_padding": _tuples(node.attrs["output_padding"])}
    return e.call(standalone.conv_transpose2d, x[0], e.param(node, "weight"), _bias(e, node), **kw)


@register(BACKEND, "local")
def _local(e: _Emitter, node: Node, x: list[str]) -> str:
    return e.call(standalone.local2d, x[0], e.param(node, "weight"), _bias(e, node), **_conv_kwargs(node.attrs))


@register_fused("fused_linear")
@register(BACKEND, "linear")
def _linear(e: _Emitter, node: Node, x: list[str]) -> str:
    fn = standalone.linear_channels if node.attrs.get("over") == "channels" else standalone.linear
    return e.activation(e.call(fn, x[0], e.param(node, "weight"), _bias(e, node)), node.attrs)


@register_fused("fused_bn")
@register(BACKEND, "batchnorm")
def _batchnorm(e: _Emitter, node: Node, x: list[str]) -> str:
    stats = [e.param(node, n) for n in ("running_mean", "running_var", "weight", "bias")]
    return e.activation(e.call(standalone.batchnorm, x[0], *stats, eps=node.attrs["eps"]), node.attrs)


def _group_norm(groups: Callable[[Network, Node], int]) -> Rule:
    def rule(e: _Emitter, node: Node, x: list[str]) -> str:
        return e.call(standalone.group_norm, x[0], py_literal(int(groups(e.net, node))), e.param(node, "weight"),
                      e.param(node, "bias"), eps=node.attrs["eps"])
    return rule


@register(BACKEND, "layernorm")
def _layernorm(e: _Emitter, node: Node, x: list[str]) -> str:
    if node.attrs.get("over") == "channels":
        return e.call(standalone.channel_norm, x[0], e.param(node, "weight"), e.param(node, "bias"),
                      eps=node.attrs["eps"])
    return _group_norm(lambda net, n: 1)(e, node, x)



register(BACKEND, "instancenorm")(_group_norm(lambda net, n: net.shapes[n.inputs[0]][0]))
register(BACKEND, "groupnorm")(_group_norm(lambda net, n: n.attrs["groups"]))


@register(BACKEND, "lrn")
def _lrn(e: _Emitter, node: Node, x: list[str]) -> str:
    a = node.attrs
    return e.call(standalone.lrn, x[0], size=a["size"], alpha=a["alpha"], beta=a["beta"], k=a["k"])


@register(BACKEND, "dropout", "spatial_dropout", "stochastic_depth")
def _dropout(e: _Emitter, node: Node, x: list[str]) -> str:
    if node.op == "dropout" and node.attrs.get("mode") == "downgrade_in_infer":
        return f"{x[0]} * {py_literal(1.0 - node.attrs['p'])}"
    return x[0]  # inverted dropout is the identity in inference


def _window_kwargs(a: dict, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: _tuples(a[k]) for k in keys if k in a}


MAXPOOL_KEYS = ("kernel", "stride", "padding", "dilation", "ceil_mode")


@register(BACKEND, "maxpool")
def _maxpool(e: _Emitter, node: Node, x: list[str]) -> str:
    unpooled = node.name in e.unpooled   # an unpool needs the argmax too
    fn = standalone.max_pool2d_with_indices if unpooled else standalone.max_pool2d
    return e.call(fn, x[0], **_window_kwargs(node.attrs, MAXPOOL_KEYS))


@register(BACKEND, "avgpool")
def _avgpool(e: _Emitter, node: Node, x: list[str]) -> str:
    keys = ("kernel", "stride", "padding", "ceil_mode", "count_include_pad")
    return e.call(standalone.avg_pool2d, x[0], **_window_kwargs(node.attrs, keys))


@register(BACKEND, "lppool")
def _lppool(e: _Emitter, node: Node, x: list[str]) -> str:
    keys = ("kernel", "stride", "p", "ceil_mode")
    return e.call(standalone.lp_pool2d, x[0], **_window_kwargs({**node.attrs, "p": float(node.attrs["p"])}, keys))


@register(BACKEND, "unpool")
def _unpool(e: _Emitter, node: Node, x: list[str]) -> str:
    pool = e.net.node(node.attrs["of"])
    shape = py_literal(tuple(int(d) for d in e.net.shapes[pool.inputs[0]]))
    kw = _window_kwargs(pool.attrs, ("kernel", "stride", "padding", "dilation"))
    return e.call(standalone.max_unpool2d, x[0], e.names[pool.name] + "_idx", shape, **kw)


register(BACKEND, "global_avgpool")(lambda e, n, x: e.call(standalone.global_avg_pool, x[0]))
register(BACKEND, "global_maxpool")(lambda e, n, x: e.call(standalone.global_max_pool, x[0]))
register(BACKEND, "adaptive_avgpool")(
    lambda e, n, x: e.call(standalone.adaptive_avg_pool, x[0], output=_tuples(n.attrs["output"])))
register(BACKEND, "adaptive_maxpool")(
    lambda e, n, x: e.call(standalone.adaptive_max_pool, x[0], output=_tuples(n.attrs["output"])))
@register(BACKEND, "upsample")
def _upsample(e: _Emitter, node: Node, x: list[str]) -> str:
    a = node.attrs
    if a.get("scale") is not None and not a.get("align_corners"):
        return e.call(standalone.upsample, x[0], scale=_tuples(a["scale"]), mode=str(a["mode"]))
    size = e.net.shapes[node.name][1:]          # known: --emit numpy needs every size bound
    size = (1, *size) if e.on_signal else size  # a [C, L] signal runs as a unit-height image
    return e.call(standalone.resize, x[0], size=tuple(int(d) for d in size), mode=str(a["mode"]),
                  align_corners=bool(a.get("align_corners")))
register(BACKEND, "flatten")(lambda e, n, x: e.call(standalone.flatten, x[0]))
register(BACKEND, "add")(lambda e, n, x: " + ".join(x))
register(BACKEND, "mul")(lambda e, n, x: " * ".join(x))
register(BACKEND, "concat")(lambda e, n, x: f"np.concatenate([{', '.join(x)}], axis=1)")
register(BACKEND, "identity")(lambda e, n, x: x[0])
register(BACKEND, "pad")(lambda e, n, x: e.call(standalone.pad2d, x[0], padding=_tuples(n.attrs["padding"]),
                                                 value=float(n.attrs["value"])))
register(BACKEND, "crop")(lambda e, n, x: e.call(standalone.crop, x[0], x[1], offset=_tuples(n.attrs.get("offset"))))
register(BACKEND, "slice")(
    lambda e, n, x: e.call(standalone.channel_slice, x[0], start=n.attrs["start"], stop=n.attrs["stop"]))
register(BACKEND, "channel_shuffle")(
    lambda e, n, x: e.call(standalone.channel_shuffle, x[0], groups=n.attrs["groups"]))
register(BACKEND, "affine")(lambda e, n, x: e.call(standalone.affine, x[0], scale=float(n.attrs["scale"]),
                                                   shift=float(n.attrs["shift"])))


def _pairwise(fn: str, x: list[str]) -> str:
    """`fn(fn(a, b), c)`: a variadic op from the left, as the runtime computes it."""
    acc = x[0]
    for other in x[1:]:
        acc = f"{fn}({acc}, {other})"
    return acc


register(BACKEND, "maximum")(lambda e, n, x: _pairwise("np.maximum", x))
register(BACKEND, "minimum")(lambda e, n, x: _pairwise("np.minimum", x))
register(BACKEND, "layer_scale")(lambda e, n, x: e.call(standalone.layer_scale, x[0], e.param(n, "weight")))


# ------------------------------------------------------------ preparation
@dataclass(frozen=True)
class Preparation:
    """What a checkpoint tells an exported model besides its weights: the preprocessing the trainer
    applied (its records, and as one per-channel map `x * scale + shift` of the first input, or None
    when the model takes its inputs as they are: no records, or `--raw`) and the class names."""

    input: str
    records: list[dict]
    scale: tuple[float, ...] | None
    shift: tuple[float, ...] | None
    classes: list[str] | None

    @property
    def in_model(self) -> bool:
        return self.scale is not None


NO_PREPARATION = Preparation("", [], None, None, None)   # a model that takes its inputs as they are


def preparation(net: Network, checkpoint: str | None, raw: bool = False) -> Preparation:
    """The checkpoint's preprocessing of the network's first input (as `cnnc predict` applies it) and its
    class names; without a checkpoint, neither."""
    first = next(iter(net.inputs))
    if checkpoint is None:
        return Preparation(first, [], None, None, None)
    ck = checkpoints.load(checkpoint, arrays_too=False)
    shown = f"checkpoint '{describe_path(checkpoint)}'"
    records = preprocess.check_records(ck.preprocess, shown)
    classes = ck.classes
    outputs = net.shapes[net.outputs[0]][0] if net.shapes[net.outputs[0]] else None
    if classes is not None and outputs is not None and len(classes) != outputs:
        raise CnncError(f"{shown} names {len(classes)} classes, {net.name} has {outputs} outputs",
                        hint="was it written for another network or another version of this file?")
    if raw or not records:
        return Preparation(first, records, None, None, classes)
    channels = net.inputs[first][0]
    try:
        if is_symbolic(channels):
            raise CnncError(f"the preprocessing is per channel, and the input's channels are {channels}")
        scale, shift = preprocess.affine(records, int(channels))
    except CnncError as err:
        raise CnncError(f"{shown} does not fit {net.name}: {err.message}",
                        hint="bind the channels with --input, or export with --raw to leave the preprocessing "
                             "out") from None
    return Preparation(first, records, tuple(float(v) for v in scale), tuple(float(v) for v in shift), classes)


def preparation_note(prep: Preparation) -> str | None:
    """What `cnnc` prints about the preprocessing of an exported model, or None when there was none."""
    if prep.in_model:
        return f"applies the training's preprocessing ({', '.join(r['op'] for r in prep.records)}) to its input"
    if prep.records:
        return "takes preprocessed inputs (--raw): PREPROCESS lists what training did"
    return None


def preparation_text(prep: Preparation) -> str:
    """The sentence a generated module's docstring says about its input (static text, no user data)."""
    if prep.in_model:
        return ("The model takes an input as `cnnc predict` reads it (an image: float32 in [0, 1]) and\n"
                "applies the training's preprocessing (PREPROCESS) to it first, as one per-channel map\n"
                "x * INPUT_SCALE + INPUT_SHIFT; CLASSES names the outputs.\n")
    if prep.records:
        return ("The model takes inputs already preprocessed: it was exported with --raw, and PREPROCESS\n"
                "lists what training did to its inputs; CLASSES names the outputs.\n")
    return "No preprocessing was recorded (PREPROCESS is empty); CLASSES names the outputs when known.\n"


def preparation_constants(prep: Preparation) -> str:
    """CLASSES, PREPROCESS, and the map's INPUT_SCALE and INPUT_SHIFT, each through `py_literal`."""
    lines = [f"CLASSES = {py_literal(prep.classes)}", f"PREPROCESS = {py_literal(prep.records)}"]
    if prep.in_model:
        lines += [f"INPUT_SCALE = {py_literal(prep.scale)}", f"INPUT_SHIFT = {py_literal(prep.shift)}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ module
def variable_names(net: Network) -> dict[str, str]:
    """A distinct ASCII Python identifier per node ("basic_1.conv" -> "basic_1_conv")."""
    taken = set(reserved_names())
    out = {}
    for node in net.order():
        base = re.sub(r"[^0-9A-Za-z_]", "_", node.name)
        if not base or base[0].isdigit() or keyword.iskeyword(base) or base in taken:
            base = "t_" + base
        name, k = base, 2
        while name in taken or name + "_idx" in taken:   # `<pool>_idx` holds a pool's argmax
            name, k = f"{base}_{k}", k + 1
        taken.update((name, name + "_idx"))
        out[node.name] = name
    return out


def _header(net: Network, weights_name: str, origin: str, prep: Preparation) -> str:
    """The module docstring (no user text in it), imports, constants and `load`."""
    returns = "the output" if len(net.outputs) == 1 else "a dict of the outputs"
    inputs = {k: tuple(int(d) for d in v) for k, v in net.inputs.items()}
    return textwrap.dedent(f'''\
        """A network as a standalone NumPy module, generated by `cnnc compile --emit numpy`.

        Inference only: batchnorm is folded into the convolutions. NETWORK names the
        network, SOURCE the file it was compiled from, WEIGHTS the weights file beside
        this module and ORIGIN where its values came from; forward reads them once
        with load(WEIGHTS), or takes them as `params`.

            y = forward(x)    # x: float32 [N, *INPUTS[name]]

        `forward` returns {returns} (OUTPUTS names them).
        ''') + preparation_text(prep) + textwrap.dedent(f'''\
        """
        import os

        import numpy as np

        NETWORK = {py_literal(net.name)}
        SOURCE = {py_literal(str(net.source))}
        ORIGIN = {py_literal(origin)}
        INPUTS = {py_literal(inputs)}
        OUTPUTS = {py_literal(tuple(net.outputs))}
        WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), {py_literal(weights_name)})
        _PARAMS = None
        ''') + preparation_constants(prep)


def _forward(net: Network, names: dict[str, str], prepare: list[str], body: list[str]) -> str:
    """`forward`: the inputs as float32, their preprocessing, then one line per layer, then the output(s)."""
    args = [names[i] for i in net.inputs]
    outs = [names[o] for o in net.outputs]
    ret = outs[0] if len(outs) == 1 else "{" + ", ".join(f"{py_literal(o)}: {names[o]}" for o in net.outputs) + "}"
    lines = [f"def forward({', '.join(args)}, params=None):",
             '    """The network in topological order, one line per (fused) layer."""',
             "    global _PARAMS",
             "    if params is None:",
             "        params = _PARAMS = _PARAMS if _PARAMS is not None else load(WEIGHTS)",
             "    p = params"]
    lines += [f"    {a} = np.asarray({a}, dtype=np.float32)" for a in args]
    return "\n".join(lines + prepare + body + [f"    return {ret}"]) + "\n"


def _layer_comment(node: Node) -> str:
    """`# name: layer, file:line:col`, every user-given part escaped by `py_literal`."""
    where = f", {py_literal(str(node.loc))}" if node.loc else ""
    return f"    # {py_literal(node.name)}: {py_literal(node.layer or node.op)}{where}"


def module_source(net: Network, weights_name: str, origin: str,
                  prep: Preparation = NO_PREPARATION) -> tuple[str, list[str]]:
    """The module's text and the op functions it defines."""
    names = variable_names(net)
    e = _Emitter(net, names)
    prepare = []
    if prep.in_model:
        x = names[prep.input]
        prepare = ["    # the training's preprocessing (PREPROCESS) as one per-channel map",
                   f"    {x} = {e.call(standalone.channel_affine, x, scale=prep.scale, shift=prep.shift)}"]
    body = []
    for node in net.layers():
        body.append(_layer_comment(node))
        body.append(f"    {e.target(node)} = {e.expression(node)}")
    funcs, _ = copy_functions([standalone.load, *e.used])
    source = _header(net, weights_name, origin, prep) + funcs + "\n\n" + _forward(net, names, prepare, body)
    ops, _ = _closure(e.used)
    own = [f.__name__ for f in ops if f.__module__ == standalone.__name__ and not f.__name__.startswith("_")]
    return source, own


ALLOWED_TOP_LEVEL = (ast.Import, ast.Assign, ast.FunctionDef)
WEIGHTS_PATH = "os.path.join(os.path.dirname(os.path.abspath(__file__)), "


def _is_literal(node: ast.expr) -> bool:
    """What `py_literal` produces: constants, containers of them, `float("inf")`-style calls."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(map(_is_literal, node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return isinstance(node.operand, ast.Constant)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
            and not node.keywords and len(node.args) == 1 and isinstance(node.args[0], ast.Constant))


def _is_plain_assignment(stmt: ast.Assign) -> bool:
    """NAME = literal, or WEIGHTS = the weights file's path beside the module."""
    if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
        return False
    value = stmt.value
    if isinstance(value, ast.Call) and ast.unparse(value).startswith(WEIGHTS_PATH):
        return len(value.args) == 2 and _is_literal(value.args[1])
    return _is_literal(value)


def check_module(source: str) -> None:
    """Compile the generated text and check its shape: a docstring, imports of os and NumPy,
    literal assignments and function definitions only (nothing runs at import but those)."""
    tree = ast.parse(source)          # a SyntaxError here is a generator bug: an internal error
    compile(tree, "<generated module>", "exec")
    body = tree.body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        raise AssertionError("the generated module does not start with its docstring")
    for stmt in body[1:]:
        if not isinstance(stmt, ALLOWED_TOP_LEVEL) or (isinstance(stmt, ast.Assign) and not _is_plain_assignment(stmt)):
            raise AssertionError(f"unexpected top-level {type(stmt).__name__} in the generated module "
                                 f"(line {stmt.lineno})")
        if isinstance(stmt, ast.Import) and {a.name for a in stmt.names} - {"os", "numpy"}:
            raise AssertionError(f"the generated module imports {[a.name for a in stmt.names]}")


# -------------------------------------------------------------------- emit
def parameter_store(net: Network, specs: dict, checkpoint: str | None) -> tuple[dict[str, np.ndarray], str]:
    """The unfused store: a `cnnc run` checkpoint's parameters, or the seeded initial weights."""
    if checkpoint is None:
        seed = net.train.seed if net.train is not None else 0
        init = net.train.init if net.train is not None else None
        return initial_parameters(net, specs, seed, init=init), f"initial weights, seed {seed}"
    expected = {f"{owner}.{p}": np.broadcast_to(np.float32(0), tuple(int(d) for d in spec.shape))
                for owner, ps in specs.items() for p, spec in ps.items()}  # shapes only, no memory
    store = checkpoints.fit(checkpoints.load(checkpoint), expected,
                            f"checkpoint '{describe_path(checkpoint)}'", net.name)
    return store, f"checkpoint {checkpoint}"


def module_and_weights(output: str, weights_suffix: str, command: str, source: str | None,
                       checkpoint: str | None) -> tuple[Path, Path, list[str]]:
    """The `-o` module (a .py file) and its weights beside it (`weights_suffix`), and the command's
    inputs; a one-line error, before anything is written, when either output would replace an input."""
    module = Path(output)
    if module.suffix != ".py":
        raise CnncError(f"-o {describe_path(output)}: the module must be a .py file")
    weights = module.with_suffix(weights_suffix)
    named = [("the checkpoint it reads", checkpoint), ("the source file it compiles", source)]
    for what_out, out in (("weights", weights), ("module", module)):
        for what_in, given in named:
            if given and same_file(out, given):
                beside = f" (from -o '{describe_path(module)}')" if out is weights else ""
                raise CnncError(f"{command} would write its {what_out} to '{describe_path(out)}'{beside}, "
                                f"which is {what_in}: '{describe_path(given)}'",
                                hint=f"choose another -o name; the weights go beside the module as "
                                     f"NAME{weights_suffix}")
    return module, weights, [p for p in (source, checkpoint) if p]


def write_module_and_weights(module: Path, weights: Path, inputs: list[str], text: str,
                             write_weights: Callable[[Any], None]) -> None:
    """Both files through temporary files: the weights are renamed into place, then the module."""
    with atomic_output(module, "module", inputs, "w") as py, atomic_output(weights, "weights", inputs) as w:
        write_weights(w)
        py.write(text)


def emit(compiled, output: str, checkpoint: str | None = None, raw: bool = False) -> dict[str, Any]:
    """Write OUTPUT (.py) and its weights (.npz beside it), both atomically; returns what was written.
    The module applies the checkpoint's preprocessing first unless `raw`."""
    net = compiled.net
    require_concrete(net, "--emit numpy")
    module, weights, inputs = module_and_weights(output, ".npz", "--emit numpy", net.source, checkpoint)
    fused = fuse(net, "eval").net
    store, origin = parameter_store(net, compiled.analysis.params, checkpoint)
    prep = preparation(net, checkpoint, raw)
    folded = {k: np.ascontiguousarray(v, np.float32) for k, v in fold_parameters(fused, store).items()}
    source, functions = module_source(fused, weights.name, origin, prep)
    check_module(source)
    write_module_and_weights(module, weights, inputs, source, lambda f: np.savez(f, **folded))
    return {"module": str(module), "weights": str(weights), "lines": source.count("\n"),
            "functions": functions, "arrays": len(folded), "bytes": sum(v.nbytes for v in folded.values()),
            "source": origin, "preprocess": preparation_note(prep)}

