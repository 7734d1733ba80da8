"""Stage 3 (runtime): training — the trainer's epoch loop and what it asks for every batch.

`trainer.py` runs a `cnnc run` (the run directory of `rundir.py`, checkpoints, metrics, resume);
`engines.py` lists the engines that compute a batch (`numpy_engine.py`, `torch_engine.py`);
`losses.py`, `optim.py` and `schedules.py` are the train vocabulary's losses, optimizers and
learning-rate schedules; `evaluation.py` scores a split class by class. It may import the data
(`data/`), the execution of a graph (`kernels/`, `plan.py`, ...), the checkpoint, the
preprocessing records and the exporters (the torch engine builds its module with the PyTorch
exporter); never model selection or prediction.
"""
