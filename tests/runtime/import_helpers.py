"""Round trips for the import tests: a model to ONNX, `cnnc import`, and every check of the result.

`round_trip(onnx_path, tmp, inputs)` imports a model, compiles the written file,
runs ONNX Runtime on the original and cnnc's runtime (float64) on the imported
network and checkpoint, exports the imported file with `cnnc export --to onnx`
and runs that too; it returns the figures and outputs for the tests to check.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnc.compiler.driver import compile_file
from cnnc.runtime import checkpoint as checkpoints
from cnnc.runtime.export.onnx import export_onnx
from cnnc.runtime.importer.importer import import_onnx
from cnnc.runtime.plan import Plan, initial_parameters


def trained_like(params: dict[str, np.ndarray], seed: int, scale: tuple = (0.5, 1.5)) -> dict[str, np.ndarray]:
    """Weights as training leaves them: no unit scales, zero biases or trivial running statistics (the
    values an exporter would otherwise merge as equal constants). Norms' scales are drawn from `scale`
    (a network of a thousand layers needs small ones, or its values overflow float32)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, v in params.items():
        name = key.rsplit(".", 1)[1]
        if name == "running_var":
            out[key] = rng.uniform(0.5, 2.0, v.shape)
        elif name in ("running_mean", "bias"):
            out[key] = rng.normal(0, 0.2, v.shape)
        elif v.ndim <= 1 or name == "weight" and np.all(v == v.reshape(-1)[0]):
            out[key] = rng.uniform(*scale, v.shape)
        else:
            out[key] = v * rng.uniform(0.8, 1.2, v.shape)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def example_onnx(path: Path, tmp: Path, seed: int = 0, scale: tuple = (0.5, 1.5)) -> Path:
    """The example exported by cnnc's own ONNX exporter, with trained-like weights (sizes left symbolic)."""
    c = compile_file(path)
    ckpt = tmp / f"{path.stem}.weights.npz"
    weights = trained_like(initial_parameters(c.net, c.analysis.params, seed), seed, scale)
    checkpoints.save_training_state(ckpt, weights, {}, {"network": c.net.name, "epoch": 1})
    out = tmp / f"{path.stem}.onnx"
    export_onnx(c, str(out), str(ckpt))
    return out


@dataclass
class RoundTrip:
    imported: object            # the compiled imported network
    info: dict                  # what import_onnx returned
    lines: int
    reference: list             # ONNX Runtime on the original model: its outputs, in order
    runtime: list               # cnnc's runtime on the imported network and checkpoint (float32, as ONNX's)
    exported: list              # ONNX Runtime on `cnnc export --to onnx` of the imported file


def round_trip(model: Path, tmp: Path, inputs: dict[str, tuple] | None = None, seed: int = 0) -> RoundTrip:
    import onnxruntime
    cnn = tmp / f"{model.stem}_imported.cnn"
    info = import_onnx(str(model), str(cnn))
    imported = compile_file(cnn)
    bound = compile_file(cnn, inputs=inputs) if inputs else imported
    name, shape = next(iter(bound.net.inputs.items()))
    x = np.random.default_rng(seed).standard_normal((2, *shape)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(model))
    reference = session.run(None, {session.get_inputs()[0].name: x})
    plan = Plan(bound.net, bound.analysis.params, params=checkpoints.load(info["checkpoint"]).params)
    outputs = plan.forward({name: x})[0]
    runtime = [outputs[o] for o in bound.net.outputs]
    again = tmp / f"{model.stem}_again.onnx"
    export_onnx(imported, str(again), info["checkpoint"])
    session = onnxruntime.InferenceSession(str(again))
    exported = session.run(None, {session.get_inputs()[0].name: x})
    return RoundTrip(imported, info, len(cnn.read_text().splitlines()), reference, runtime, exported)


def relative(a, b) -> float:
    """max |a - b| relative to the largest |b|, over every output (a and b: an array or a list of them)."""
    a, b = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (a, b))
    assert len(a) == len(b) and all(np.shape(x) == np.shape(y) for x, y in zip(a, b)), "different outputs"
    return max(float(np.abs(np.asarray(x, np.float64) - y).max() / max(np.abs(y).max(), 1e-30)) for x, y in zip(a, b))
