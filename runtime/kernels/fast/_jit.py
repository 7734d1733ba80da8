"""Stage 3 (runtime): how the fast kernels are compiled, and where Numba keeps what it compiled.

Every fast kernel is a Numba function compiled on its first call for the
dtypes it meets (float32 for training, float64 for gradient checks), with

- `nogil`: the trainer's shards (kernels/shards.py) run the same plan on
  their own threads, and a compiled loop must not hold the others back. The
  kernels start no threads of their own (no `parallel=True`): the shards
  are the batch's parallelism, so a run's thread count is the user's
  `--threads`, and every sum is taken in one fixed order (no reduction in
  the order threads arrive): a seed and a thread count give the same result.
- `fastmath` limited to reassociation and contraction: sums over a channel
  vectorise and a·b + c becomes one FMA, while infinities and NaNs keep
  their meaning (the trainer stops on a non-finite loss).
- `error_model="numpy"`: a division by zero gives inf as NumPy does.
- `cache`: the machine code is written to the user's cache folder, beside
  the data sets (`cache_dir`), so only the first run compiles; NUMBA_CACHE_DIR
  chooses another folder. Where no folder is writable the kernels still run,
  compiled again by every process.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numba

from ....dsl.files import describe_path, user_cache

FASTMATH = frozenset({"reassoc", "contract"})


def cache_dir() -> Path:
    """Where Numba's cache goes: $NUMBA_CACHE_DIR, else `kernels` in cnnc's user cache folder (beside `data`)."""
    given = os.environ.get("NUMBA_CACHE_DIR")
    return Path(given).expanduser() if given else user_cache("kernels")


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


# Numba asks for its cache folder when a function is decorated: set it before any kernel module loads.
CACHE = _writable(cache_dir())
if CACHE:
    numba.config.CACHE_DIR = str(cache_dir())


def jit(fn=None, *, exact: bool = False):
    """A fast kernel's loop: compiled on first use per dtype, cached on disk (see the module doc).
    `exact=True` compiles without fastmath: every operation rounds as NumPy's does (the optimizers,
    whose updates then equal the NumPy ones bit for bit)."""
    def compile_(f):
        return numba.njit(nogil=True, cache=CACHE, fastmath=False if exact else set(FASTMATH),
                          error_model="numpy", boundscheck=False)(f)
    return compile_ if fn is None else compile_(fn)


def version() -> str:
    """What `cnnc run`'s first line says of the fast set: Numba's version, and whether this run
    compiles the kernels (an empty cache: the first run after installing takes seconds longer)."""
    if not CACHE:
        return f"Numba {numba.__version__}, compiled in each run: {describe_path(cache_dir())} is not writable"
    if not any(cache_dir().rglob("*.nbi")):
        return f"Numba {numba.__version__}, compiling once into {describe_path(cache_dir())}"
    return f"Numba {numba.__version__}"
