"""Stage 3 (runtime): export — a compiled graph written out as code that runs without cnnc.

`codegen.py` writes `cnnc compile --emit numpy` modules from the plain-NumPy forms of
`standalone.py` (copied into each module); `torch_rules.py` holds each op's PyTorch rule and
`torch_module.py` writes the module of `cnnc export --to torch` from them; `onnx.py` builds
the model of `--to onnx`. It may import the kernels, the execution of a graph (for the
seeded initial weights and folded batchnorm), the checkpoint and the preprocessing records;
never the trainer, the data or model selection.
"""
