"""Stage 3 (runtime): let freed buffers be reused instead of page-faulted back in.

A training step allocates and frees the same large arrays every time
(im2col matrices, activations, gradient buffers of a few MB). With glibc's
defaults the freed top of the heap is returned to the OS and the next step
faults every page back in: about 2,500 page faults (10 MB of zeroing) per
LeNet-5 step at batch 64, a third of its time on a loaded machine. Raising
glibc's trim threshold (and keeping arrays up to 32 MB on the heap) makes a
training process keep its peak memory and reuse it, which is what a trainer
wants. Called once where a command that trains or predicts starts (app/cli.py); a no-op off
glibc, and disabled with the environment variable CNNC_KEEP_FREED_MEMORY=0.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1      # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 << 20        # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory(trim_bytes: int = 1 << 30, mmap_bytes: int = _MMAP_MAX) -> bool:
    """Ask glibc to keep up to `trim_bytes` of freed heap; True if it agreed."""
    if not sys.platform.startswith("linux") or os.environ.get("CNNC_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) & bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes))
