"""Stage 3 (runtime): shards of one batch run in lockstep on several threads.

A network with batchnorm couples the samples of a batch only through the
per-channel sums batchnorm takes over it. `batch_loss_and_grads` still cuts
such a batch into fixed shards, each run through the whole plan on its own
thread (BLAS at one thread, NumPy releasing the GIL), and the shards meet
only inside batchnorm: each contributes its partial sums to
`ShardGroup.allreduce`, which returns the whole batch's sums to all of them.
The totals are added in shard order by every shard alike, so all shards see
bit-identical statistics and the result depends on the shard count, never on
the thread count or the timing. A kernel finds its group through
`current()` (thread-local; None outside a sharded step).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

T = TypeVar("T")
_local = threading.local()
_controller: ThreadpoolController | None = None


class ShardGroup:
    """`n` shards exchanging partial sums; one barrier per exchange."""

    def __init__(self, n: int):
        self.n = n
        self._barrier = threading.Barrier(n)
        # Two slot sets used alternately: set k is written again at exchange k+2,
        # which no shard reaches before every shard has read exchange k.
        self._slots = [[None] * n, [None] * n]
        self._round = [0] * n

    def allreduce(self, index: int, part: np.ndarray) -> np.ndarray:
        """Σ over shards of `part` (same shape everywhere), summed in shard order."""
        r = self._round[index]
        self._round[index] = r + 1
        slots = self._slots[r & 1]
        slots[index] = part
        self._barrier.wait()
        total = slots[0].copy()
        for p in slots[1:]:
            total += p
        return total

    def abort(self) -> None:
        """Release shards waiting in an exchange (they raise BrokenBarrierError)."""
        self._barrier.abort()


def total(member: tuple[ShardGroup, int] | None, part: np.ndarray) -> np.ndarray:
    """Σ of `part` over the shards of a lockstep batch (`member` as `current()` gave it), or `part`
    itself outside one."""
    return part if member is None else member[0].allreduce(member[1], part)


def current() -> tuple[ShardGroup, int] | None:
    """(group, this shard's index) when the calling thread runs a shard of a batch."""
    return getattr(_local, "member", None)


@contextmanager
def member(group: ShardGroup, index: int) -> Iterator[None]:
    """Run the body as shard `index` of `group`; on an error, release the other shards."""
    _local.member = (group, index)
    try:
        yield
    except BaseException:
        group.abort()
        raise
    finally:
        _local.member = None


def blas_threads(n: int):
    """Context manager holding the BLAS/OpenMP thread pools to `n` threads.

    `threadpoolctl.threadpool_limits` rescans every loaded library on entry
    (~0.5 ms, a tenth of a LeNet-5 step); one controller, made on first use
    (NumPy's BLAS is loaded by then), is reused for every batch.
    """
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=n)


def in_parallel(pool: ThreadPoolExecutor, jobs: list[Callable[[], T]]) -> list[T]:
    """The jobs' results, in order: the first on this thread, the others on the pool, all with BLAS
    held to one thread. For independent jobs (shards that never meet); on an error or Ctrl-C, the
    running jobs end before BLAS gets its threads back (changing OpenBLAS's thread count while
    another thread is inside it can deadlock the exit)."""
    with blas_threads(1):
        futures = [pool.submit(job) for job in jobs[1:]]
        try:
            return [jobs[0](), *(f.result() for f in futures)]
        except BaseException:
            for f in futures:
                f.cancel()
            wait(futures)
            raise


def bounds(n: int, k: int) -> list[tuple[int, int]]:
    """[start, stop) of k consecutive shards of n items, as equal as can be (k <= n)."""
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))
