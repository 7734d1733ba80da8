"""Stage 3 (runtime), data: mini-batches of a split, in order or shuffled by a given generator."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ...dsl.source import CnncError
from .containers import Targets, take


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def smallest_batch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """The fewest samples any batch of an epoch holds (the last one, unless it is dropped)."""
    if n < batch_size:
        return 0 if drop_last else n
    return batch_size if drop_last or n % batch_size == 0 else n % batch_size


def iterate_batches(x: np.ndarray, y: Targets, batch_size: int, *, shuffle: bool = False,
                    rng: np.random.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[np.ndarray, Targets]]:
    """Yield (x, y) mini-batches; with `shuffle`, one permutation per call drawn from `rng`."""
    if batch_size < 1:
        raise CnncError(f"batch size must be at least 1, got {batch_size}")
    n = len(x)
    stop = n - n % batch_size if drop_last else n
    if not shuffle:
        for start in range(0, stop, batch_size):
            yield x[start:start + batch_size], take(y, slice(start, start + batch_size))
        return
    order = (rng if rng is not None else np.random.default_rng(0)).permutation(n)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], take(y, idx)
