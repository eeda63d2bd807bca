"""The intra-op thread count of a training run: always set, and given back afterwards.

Float results of the model depend on the thread count (torch splits reductions and matrix
products by thread), so identical outputs need the same `train.num_threads` everywhere; at a
given count they do not depend on machine load (static work split, measured in
docs/TRAINING.md). A run therefore sets the count itself instead of inheriting whatever the
process had (torch's default is every core of the host; an earlier caller in the same
process may have changed it), and restores the caller's count when it ends. torch and DGL
share one OpenMP runtime in our install, so this also sets DGL's threads.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


def resolve(num_threads: int) -> int:
    """`num_threads`, or every core this process may use when it is 0."""
    if num_threads:
        return num_threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:               # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def pinned_threads(num_threads: int) -> Iterator[int]:
    """Run the block with `resolve(num_threads)` intra-op threads; yield that count."""
    previous = torch.get_num_threads()
    n = resolve(num_threads)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
