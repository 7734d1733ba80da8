"""Stage 3 (runtime): a network run on photographs, every tensor it asks for returned as arrays.

`Applier` runs one network of a `.cnn` file on images read by
`runtime/images.py` (grey or RGB, any size the network accepts). The
network's input must be an image `[C, H, W]`: a fixed channel count converts
the image (grey to RGB repeats the channel, RGB to grey takes the luma), a
symbolic one (`[C, H, W]` with `C` a name) takes the image's own; symbolic
sizes are bound from the image by compiling the network again with that input
size (what `--input NAME=CxHxW` does), so every image size the network's
constraints allow runs as it is. A fixed size needs `resize=(H, W)`, which
resizes with Pillow's bilinear filter first.

Weights come from a checkpoint written by `cnnc run` (loaded through
`checkpoint.load`, its preprocessing records replayed with
`preprocess.apply`, as `predict` does), or, without one, from the file itself:
every weight must then be fixed there (`weights = ...`), since random initial
weights would make a meaningless picture. The tensors returned are the
network's outputs, or any named layers (the plan is asked to keep them as
extra outputs). The command line (app/cmd_apply.py) and the feature-map
pictures (viz/images.py through app/cmd_viz.py) turn the arrays into images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..compiler.driver import Compiled
from ..compiler.symbolic import is_symbolic
from ..dsl.files import describe_path
from ..dsl.source import CnncError, did_you_mean
from . import checkpoint, preprocess
from .images import convert_channels, read_image, resize as resize_image

IMAGES = Path(__file__).resolve().parent / "datasets" / "images"
GREY_PHOTO, COLOUR_PHOTO = IMAGES / "camera.png", IMAGES / "chelsea.png"

# compile(inputs) -> the network with those input sizes bound (None: as declared)
Compiler = Callable[[dict[str, tuple[int, ...]] | None], Compiled]


def default_image(channels) -> Path:
    """The shipped photograph for an input with `channels` channels: the cat (RGB) for 3, the camera
    (grey) for 1 or a symbolic count; no photograph has another number of channels."""
    if is_symbolic(channels) or channels == 1:
        return GREY_PHOTO
    if channels == 3:
        return COLOUR_PHOTO
    raise CnncError(f"no image given, and the shipped photographs are grey or RGB: the input takes "
                    f"{channels} channels", hint="name an image file (or an array network input is not an image)")


def require_fixed_weights(compiled: Compiled) -> None:
    """Without a checkpoint every weight must be fixed in the file: random initial weights
    would make a meaningless picture."""
    for owner, specs in compiled.analysis.params.items():
        for pname, spec in specs.items():
            if spec.init in ("he_normal", "xavier_uniform"):
                raise CnncError(f"'{owner}' has no fixed {pname}: without --checkpoint every weight must "
                                "be given in the file (weights = ...)",
                                hint="train it with cnnc run and pass --checkpoint runs/NAME/best.npz")


@dataclass(frozen=True)
class Applied:
    """One image through the network: the input as fed (after conversion and resizing, before
    preprocessing) and the requested tensors, each [C, H, W] (or the layer's own shape)."""

    image: str
    input: np.ndarray
    tensors: dict[str, np.ndarray]


@dataclass
class Applier:
    """One network ready for images: `compile(None)` is the network as declared (checked here: one
    input, an image [C, H, W]); the checkpoint (or the file's fixed weights) is read once."""

    compile: Compiler
    checkpoint_path: str | None = None
    resize: tuple[int, int] | None = None
    declared: Compiled = field(init=False)
    _records: list = field(init=False, default_factory=list)
    _params: dict | None = field(init=False, default=None)
    _cache: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.declared = self.compile(None)
        net = self.declared.net
        if len(net.inputs) != 1:
            raise CnncError(f"{net.name} has {len(net.inputs)} inputs ({', '.join(net.inputs)}); "
                            "cnnc apply feeds one image to a network with one input")
        (self.input_name, shape), = net.inputs.items()
        if len(shape) != 3:
            raise CnncError(f"{net.name}'s input '{self.input_name}' has shape [{', '.join(map(str, shape))}]; "
                            "an image is [C, H, W]")
        self.input_shape = tuple(shape)
        if self.checkpoint_path is not None:
            ck = checkpoint.load(self.checkpoint_path)
            self._records = preprocess.check_records(
                ck.preprocess, f"checkpoint '{describe_path(self.checkpoint_path)}'")
            self._params = ck.params
        else:
            require_fixed_weights(self.declared)

    # ---------------------------------------------------------------- checks
    @property
    def channels(self):
        return self.input_shape[0]

    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) when the network takes one size only, else None."""
        h, w = self.input_shape[1:]
        return None if is_symbolic(h) or is_symbolic(w) else (int(h), int(w))

    def tensor_names(self) -> list[str]:
        """Every tensor a caller may ask for: the input and the layers, in order."""
        return [self.input_name] + [n.name for n in self.declared.net.layers()]

    def check_layers(self, names: Sequence[str], flag: str = "--layer") -> None:
        known = set(self.tensor_names())
        for name in names:
            if name not in known:
                raise CnncError(f"{flag} {name}: {self.declared.net.name} has no layer '{name}'",
                                hint=did_you_mean(name, known, f"its layers: {_listing(self.tensor_names())}"))

    # ------------------------------------------------------------- running
    def prepare(self, path: str | Path) -> np.ndarray:
        """The image as the network takes it: [C, H, W] float32 in [0, 1]."""
        image = read_image(path)
        if not is_symbolic(self.channels):
            image = convert_channels(image, int(self.channels))
        if self.resize is not None:
            image = resize_image(image, self.resize)
        shown = describe_path(path)
        for declared, have in zip(self.input_shape[1:], image.shape[1:]):
            if not is_symbolic(declared) and int(declared) != have:
                want = "x".join(str(d) for d in self.input_shape[1:])
                raise CnncError(f"image '{shown}' is {image.shape[1]}x{image.shape[2]} (HxW), "
                                f"{self.declared.net.name} takes {want}",
                                hint=f"add --resize {want}" if self.resize is None else
                                "--resize must give the size the network takes")
        return image

    def compiled_for(self, shape: tuple[int, ...], shown: str) -> Compiled:
        """The network with its input bound to `shape` (compiled once per size)."""
        if shape not in self._cache:
            if not any(is_symbolic(d) for d in self.input_shape):
                self._cache[shape] = self.declared
            else:
                try:
                    self._cache[shape] = self.compile({self.input_name: shape})
                except CnncError as err:
                    size = "x".join(map(str, shape))
                    raise CnncError(f"image '{shown}' ({size}) does not fit {self.declared.net.name}: "
                                    f"{err.message}", hint=_join((err.hint or "").replace("--input gives", "the image gives"),
                                                                 "resize it with --resize HxW")) from None
        return self._cache[shape]

    def run(self, path: str | Path, names: Sequence[str] | None = None) -> Applied:
        """The tensors `names` (default: the network's outputs) for one image file."""
        image = self.prepare(path)
        compiled = self.compiled_for(tuple(image.shape), describe_path(path))
        wanted = tuple(names) if names else tuple(compiled.net.outputs)
        self.check_layers(wanted)
        values = forward(compiled, image, wanted, self._params, self._records, self.checkpoint_path)
        return Applied(str(path), image, values)


def forward(compiled: Compiled, image: np.ndarray, names: Sequence[str], params: dict | None = None,
            records: Sequence = (), source: str | None = None) -> dict[str, np.ndarray]:
    """One image [C, H, W] through the network in eval mode; the tensors `names` for that sample.

    The plan frees each activation after its last reader unless it is an output, so
    the requested layers are made its outputs for this run."""
    from .plan import Plan
    plan = Plan(compiled.net, compiled.analysis.params)
    if params is not None:
        plan.load_state(params, f"checkpoint '{describe_path(source)}'" if source else "checkpoint")
    x = preprocess.apply(records, image[None].astype(np.float32))
    inputs = {plan.inputs[0]: x}
    layers = tuple(n for n in names if n not in plan.inputs)
    plan.outputs = tuple(dict.fromkeys(plan.outputs + layers))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite results are refused
        values, _ = plan.forward(inputs)                                 # by name where they are shown
    values.update(inputs)
    return {n: np.asarray(values[n][0], np.float32) for n in names}


def _listing(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _join(*hints: str | None) -> str:
    return "; ".join(h for h in hints if h)


# ------------------------------------------------------------------ kernels
@dataclass(frozen=True)
class Kernels:
    """The convolution weights [O, I, kh, kw] of a network by owning layer, in order, and which
    layer reads the image itself (its kernels are pictures of what it looks for)."""

    weights: list[tuple[str, np.ndarray]]
    first: str | None


def kernel_weights(compiled: Compiled, checkpoint_path: str | None = None) -> Kernels:
    """Every 4-D `weight` of the network: from the checkpoint, or the file's fixed weights."""
    from .plan import initial_parameters
    net = compiled.net
    store = initial_parameters(net, compiled.analysis.params, seed=0)
    if checkpoint_path is not None:
        ck = checkpoint.load(checkpoint_path)
        store = checkpoint.fit(ck, store, f"checkpoint '{describe_path(checkpoint_path)}'", net.name)
    else:
        require_fixed_weights(compiled)
    weights, first = [], None
    for node in net.layers():
        if node.shares:
            continue  # drawn once, under the layer that owns the weights
        w = store.get(f"{node.name}.weight")
        if w is None or w.ndim != 4:
            continue
        weights.append((node.name, np.asarray(w, np.float32)))
        if first is None and any(i in net.inputs for i in node.inputs):
            first = node.name
    return Kernels(weights, first)
