"""Process-wide settings of our processes: children that never outlive the process that
started them, and a heap that keeps freed memory for the next batch."""
from __future__ import annotations

import ctypes
import os
import signal
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc mallopt parameters (malloc.h)
HEAP_KEPT = 1 << 30
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
              "GLIBC_TUNABLES")


def die_with_parent() -> None:
    """Linux: the child gets SIGKILL if its parent dies (even by kill -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


PREEXEC = die_with_parent if sys.platform == "linux" else None


def keep_freed_heap(size: int = HEAP_KEPT) -> bool:
    """glibc: serve allocations below `size` bytes from the heap, and keep up to `size` bytes
    of freed heap for the next ones. True when set.

    Why: our stages work batch by batch, each batch allocating arrays of megabytes to tens of
    megabytes and freeing them. By default glibc maps every array above its mmap threshold
    afresh and unmaps it on free, so the kernel faults in and zeroes each page again, batch
    after batch: at 100k users (night 3, two workers) the expand spent 27 of its 153 CPU
    seconds in the kernel, 14 of 137 with the heap kept, the same bundle bytes out
    (docs/OPERATIONS.md, "Using the cores of one host").
    An explicit `malloc_trim` (gie.expand.workers.release_memory) still hands the freed heap
    back. Left as it is where the environment tunes malloc already (MALLOC_*_ variables,
    GLIBC_TUNABLES), or off glibc."""
    if sys.platform != "linux" or any(v in os.environ for v in MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, size)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, size))
    except (OSError, AttributeError):
        return False


def trim_heap() -> None:
    """glibc: hand the heap's free pages back to the OS now (what keep_freed_heap keeps)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
