"""Stage 3 (runtime), training: `cnnc run --tensorboard DIR` — the metrics records as TensorBoard event files.

A consumer of metrics.jsonl, not a second bookkeeping: `EventWriter.add` is
handed every record the run appends to metrics.jsonl (rundir.py
`MetricsFile`), as it is appended, and writes each of its figures as a scalar
at the record's epoch, under a tag spelled from the record's own keys:

- an epoch record: `train_loss`, `train_accuracy`, `val_loss`, `val_accuracy`, `lr`, `seconds`
  (and `outputs/O/train_loss`, ... for a network with several outputs), and of its `layers`
  (compiler/metrics_format.py) `layers/LAYER/params/P/FIGURE`, `layers/LAYER/activation/FIGURE`,
  `layers/LAYER/drift/FIGURE`;
- the test record: `test/loss`, `test/accuracy` (at the last epoch);
- a step record (`--watch-every K`): its layers' figures as `steps/layers/...`, at the run's step.

A null figure is not written. The `histograms` of each layer record become
TensorBoard histograms at the record's epoch: `layers/LAYER/weights/P` (the
values at the end of the epoch), `layers/LAYER/gradients/P` (the epoch's last
step) and `layers/LAYER/activation` (the probe's outputs), with the record's
bins as TensorBoard's buckets.

Two more things a TensorBoard user looks for, written from the run itself:

- the network graph (Graphs tab), once when the writer opens (`graph`): one
  node per node of the compiled network (`graph_def`), named by its `.cnn`
  name with `/` for the block path (`basic_1/conv_bn_relu/conv`, so TensorBoard
  folds each block call into one box), its op the cnnc op, its inputs the
  node's inputs in argument order; its attributes are the output shape
  (`_output_shapes`, batch dimension -1), where it is written (`at`, the
  source line `line`), the blocks of its enclosing calls (`block`), the
  layer whose weights it shares (`shares`) and its normalised arguments
  (`kernel`, `stride`, ...), each as a string;
- feature maps (Images tab), after each epoch's record (`feature_maps`): the
  probe's first sample through the first FEATURE_MAP_LAYERS (4) watched
  activation layers (diagnostics.py `LayerWatch.activations`: rectifiers,
  sigmoid, tanh, ...) whose output is an image map (C, H, W), each one
  greyscale image `feature_maps/LAYER` at the epoch: its first
  FEATURE_MAP_CHANNELS (16) channels, each min-max normalised on its own,
  tiled into a near-square grid with a 1-pixel white separator (`tile`).

The writer is tensorboardX (the `cnnc[tensorboard]` extra): the smallest
well-kept writer of event files (a pure-Python wheel of under 100 KB that
needs numpy, packaging and protobuf), where TensorBoard's own writer comes
with TensorBoard's server and its dependencies, and torch.utils.tensorboard
needs both PyTorch and TensorBoard.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ...compiler.graph import Network, Node
from ...compiler.metrics_format import BY_PARAMETER, HISTOGRAM_GROUPS, LAYERS, STEP
from ...dsl import files
from ...dsl.source import CnncError, SourceRegistry

EXTRA = "pip install 'cnnc[tensorboard]'"
EPOCH_SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
# Feature maps: the first layers only (a deep network has dozens of activations; the first ones are
# those whose maps still look like the input), and the first channels of each (a 4x4 grid).
FEATURE_MAP_LAYERS = 4
FEATURE_MAP_CHANNELS = 16
SEPARATOR = 255          # the 1-pixel lines between the tiles: white


def writer_class() -> Any:
    """tensorboardX's SummaryWriter, or a one-line error naming the extra."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise CnncError("--tensorboard: the TensorBoard writer (tensorboardX) is not installed",
                        hint=f"run {EXTRA}") from None
    return SummaryWriter


def check_folder(folder: Path) -> Path:
    """The folder for the event files, made if missing; a one-line error when it cannot be."""
    shown = files.describe_path(folder)
    if folder.exists() and not folder.is_dir():
        raise CnncError(f"--tensorboard '{shown}' is not a directory", hint="give a folder for the event files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CnncError(f"--tensorboard '{shown}' cannot be used: {(err.strerror or str(err)).lower()}") from None
    return folder


def check_events(folder: Path) -> Path:
    """Before a run: the writer is installed and `folder` can hold the event files."""
    writer_class()
    return check_folder(folder)


class EventWriter:
    """TensorBoard event files in `folder`, fed the run's metrics records."""

    def __init__(self, folder: Path):
        writer = writer_class()
        self.folder = check_folder(Path(folder))
        self.writer = writer(logdir=str(self.folder), flush_secs=5)
        self.epoch = 0

    def add(self, record: Mapping[str, Any]) -> None:
        """One metrics.jsonl record, as it is appended."""
        if STEP in record:      # --watch-every's step record: its layers' figures at the run's step
            for tag, value in layer_scalars(record.get(LAYERS) or ()):
                self.writer.add_scalar(f"steps/{tag}", value, record[STEP])
            return
        if "epoch" in record:
            self.epoch = record["epoch"]
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, self.epoch)
        for tag, h in histograms(record):
            self.writer.add_histogram_raw(tag, global_step=self.epoch, **buckets(h))

    def close(self) -> None:
        self.writer.close()

    def graph(self, net: Network) -> None:
        """The network's graph, for the Graphs tab (once, when the writer opens). The GraphDef goes
        to the file writer as tensorboardX's own `add_onnx_graph` hands it: its `add_graph` wants a
        traced PyTorch module."""
        self.writer._get_file_writer().add_onnx_graph(graph_def(net))

    def feature_maps(self, epoch: int, activations: Mapping[str, np.ndarray]) -> None:
        """The probe's first sample through the first image-shaped watched activations (a layer
        name -> (N, C, H, W) mapping in the network's order), one greyscale image per layer."""
        from tensorboardX.proto.summary_pb2 import Summary
        maps = [(name, y) for name, y in activations.items() if np.ndim(y) == 4 and np.size(y)]
        for name, y in maps[:FEATURE_MAP_LAYERS]:
            grid = tile(y[0])
            image = Summary.Image(height=grid.shape[0], width=grid.shape[1], colorspace=1,
                                  encoded_image_string=png(grid))
            self.writer._get_file_writer().add_summary(
                Summary(value=[Summary.Value(tag=f"feature_maps/{name}", image=image)]), epoch)


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(tag, value) of each figure of a metrics record that is a finite number."""
    if record.get("split") is not None:
        yield from _finite(str(record["split"]), {k: record.get(k) for k in ("loss", "accuracy")})
        return
    yield from _finite("", {k: record.get(k) for k in EPOCH_SCALARS})
    for o, figures in (record.get("outputs") or {}).items():
        yield from _finite(f"outputs/{o}", figures)
    yield from layer_scalars(record.get(LAYERS) or ())


def layer_scalars(layers) -> Iterator[tuple[str, float]]:
    """(tag, value) of each finite figure of a record's layer records."""
    for layer in layers:
        base = f"layers/{layer['layer']}"
        for p, figures in (layer.get("params") or {}).items():
            yield from _finite(f"{base}/params/{p}", figures)
        for group in ("activation", "drift"):
            yield from _finite(f"{base}/{group}", layer.get(group) or {})


TAG_WORDS = {"params": "weights"}   # a histogram group whose tag says it otherwise (the others: their name)


def histograms(record: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(tag, histogram) of each histogram of an epoch record's layers that counts any value: every group of
    compiler/metrics_format.py's HISTOGRAM_GROUPS, by parameter where it is a group of parameters."""
    for layer in record.get(LAYERS) or ():
        base = f"layers/{layer['layer']}"
        groups = layer.get("histograms") or {}
        for group in HISTOGRAM_GROUPS:
            entry = groups.get(group)
            if entry is None:
                continue
            word = TAG_WORDS.get(group, group)
            pairs = [(f"{word}/{p}", h) for p, h in entry.items()] if group in BY_PARAMETER else [(word, entry)]
            yield from ((f"{base}/{tag}", h) for tag, h in pairs if sum(h["counts"]))


def buckets(h: Mapping[str, Any]) -> dict[str, Any]:
    """add_histogram_raw's arguments for a record's histogram: its bins as buckets (each by its upper edge;
    one bucket when all values are equal). The record keeps no sums, so TensorBoard's `sum` and
    `sum_squares` are taken at the bins' centres (its histogram and distribution views draw only buckets)."""
    lo, hi, counts = float(h["lo"]), float(h["hi"]), np.asarray(h["counts"], dtype=np.float64)
    if hi > lo:
        edges = np.linspace(lo, hi, len(counts) + 1)
        limits, centres = edges[1:], (edges[:-1] + edges[1:]) / 2
    else:
        counts = np.array([counts.sum()])
        limits = centres = np.array([hi])
    return {"min": lo, "max": hi, "num": int(counts.sum()), "sum": float(counts @ centres),
            "sum_squares": float(counts @ centres ** 2), "bucket_limits": limits, "bucket_counts": counts}


def _finite(prefix: str, figures: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    for name, value in figures.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield (f"{prefix}/{name}" if prefix else name), float(value)


# ---------------------------------------------------------------- the graph
def graph_def(net: Network) -> Any:
    """The compiled network as a TensorBoard GraphDef (tensorboardX's bundled protobufs)."""
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.versions_pb2 import VersionDef
    nodes = [NodeDef(name=graph_name(n.name), op=n.op, input=[graph_name(i) for i in n.inputs],
                     attr=_node_attrs(n, net.shapes.get(n.name)))
             for n in net.order()]
    return GraphDef(node=nodes, versions=VersionDef(producer=22))


def graph_name(name: str) -> str:
    """A node's name in the graph: its block path joined by `/`, TensorBoard's name scopes."""
    return name.replace(".", "/")


def _node_attrs(node: Node, shape) -> dict[str, Any]:
    from tensorboardX.proto.attr_value_pb2 import AttrValue
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
    attrs = {key: AttrValue(s=_text(value).encode()) for key, value in node.attrs.items() if value is not None}
    if shape is not None:
        dims = [-1] + [d if isinstance(d, int) else -1 for d in shape]   # the batch and symbolic sizes: unknown
        attrs["_output_shapes"] = AttrValue(list=AttrValue.ListValue(
            shape=[TensorShapeProto(dim=[TensorShapeProto.Dim(size=d) for d in dims])]))
    if node.loc is not None:
        attrs["at"] = AttrValue(s=str(node.loc).encode())
        line = SourceRegistry.line(node.loc.file, node.loc.line)
        if line is not None:
            attrs["line"] = AttrValue(s=line.strip().encode())
    if node.scope:
        attrs["block"] = AttrValue(s="/".join(node.scope_blocks).encode())
    if node.shares:
        attrs["shares"] = AttrValue(s=graph_name(node.shares).encode())
    return attrs


def _text(value: Any) -> str:
    """An argument as a short string: tuples in parentheses, an array by its shape."""
    if isinstance(value, np.ndarray):
        return f"array{tuple(value.shape)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(_text(v) for v in value) + ")"
    return str(value)


# ---------------------------------------------------------------- feature maps
def tile(maps: np.ndarray, channels: int = FEATURE_MAP_CHANNELS) -> np.ndarray:
    """One sample's (C, H, W) maps as one uint8 greyscale grid: the first `channels` channels, each
    min-max normalised to 0..255 on its own (a constant channel is black; non-finite values count as
    its minimum), row by row in a grid of ceil(sqrt(k)) columns, with a 1-pixel SEPARATOR line
    between neighbouring tiles (none around the edge)."""
    maps = np.asarray(maps, dtype=np.float64)[:channels]
    k, h, w = maps.shape
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), SEPARATOR, dtype=np.uint8)
    for c, m in enumerate(maps):
        r, q = divmod(c, cols)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = normalised(m)
    return grid


def normalised(m: np.ndarray) -> np.ndarray:
    """A map's values scaled to 0..255 (uint8) from its own minimum to its maximum."""
    m = np.asarray(m, dtype=np.float64)
    finite = np.isfinite(m)
    if not finite.any():
        return np.zeros(m.shape, dtype=np.uint8)
    lo, hi = m[finite].min(), m[finite].max()
    m = np.where(finite, m, lo)
    if hi <= lo:
        return np.zeros(m.shape, dtype=np.uint8)
    return np.rint((m - lo) / (hi - lo) * 255).astype(np.uint8)


def png(grid: np.ndarray) -> bytes:
    """A 2-D uint8 array as greyscale PNG bytes."""
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(grid).save(out, format="PNG")
    return out.getvalue()
