"""Stage 3 (runtime): data — a train section's data set, read, divided, preprocessed, checked, batched.

`pipeline.py` is the one call a run makes, and its steps are this package's modules in order:
a source (`sources.py` picks the reader: `array_files.py` for IDX, .npy and .npz, `image_folders.py`,
`segmentation.py`, `synthetic.py`, `standard.py` for the embedded and downloaded sets; all
return the `Dataset` of `containers.py`, pixels read by `images.py`), held-out splits and
resampling (`splits.py`), the preprocessing records (runtime/preprocess.py), and the checks
against the network (`targets.py`: the target kinds the losses name, and the checks of inputs
and labels). Per epoch the trainer augments (`augment.py`) and batches (`batching.py`).
`inputs.py` reads the files given to `cnnc predict`; `shapes.py` makes the shapes data set
of `cnnc make-shapes`. It may import the preprocessing records, never the trainer, the
execution of a graph, the exporters or model selection.
"""
