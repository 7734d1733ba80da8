"""Stage 3 (runtime): a checked graph run, trained, used and carried out of cnnc.

The runtime's parts, bottom up; each imports only the ones before it (tests/test_layering.py).
At the bottom, `kernels/` (the per-op NumPy kernels), `processes.py` (processes cnnc starts,
which end with their parent) and two contracts of plain data:
`checkpoint.py` (the checkpoint file) and `preprocess.py` (the preprocessing records), which
training writes and prediction and export read. `plan.py`, `fused.py` and `memory_plan.py`
execute a graph with the kernels (the tape interpreter, the fused inference graph, its
preallocated arenas). `data/` turns a train section's data into checked arrays; `export/`
writes a graph as NumPy, PyTorch or ONNX; `train/` is the trainer and its engines, losses,
optimizers and schedules; `predict.py` and `apply.py` use a trained network on inputs;
`select/` chooses among models (search, k-fold, ensembles).
"""
