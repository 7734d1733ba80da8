"""Stage 3 (runtime): model selection — choosing among trained networks.

`search.py` runs hyper-parameter searches (`cnnc search`) on the supervised worker
processes of `pool.py` (or a Dask cluster), `kfold.py` k-fold
cross-validation (`cnnc run --kfold`), `ensemble.py` scores and combines several
checkpoints (`cnnc evaluate`, `cnnc predict --ensemble`). It sits on top of the runtime
and may import any other part of it.
"""
