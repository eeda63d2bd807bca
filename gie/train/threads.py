"""The intra-op thread count of a training run and torch's deterministic kernels: always set,
and given back afterwards.

Float results of the model depend on the thread count (torch splits reductions and matrix
products by thread), so identical outputs need the same `train.num_threads` everywhere; at a
given count they do not depend on machine load (static work split, measured in
docs/TRAINING.md). A run therefore sets the count itself instead of inheriting whatever the
process had (torch's default is every core of the host; an earlier caller in the same
process may have changed it), and restores the caller's count when it ends. torch and DGL
share one OpenMP runtime in our install, so this also sets DGL's threads.

A static work split is not enough on its own: on CPU, `index_put_(accumulate=True)`, which is
also the backward of indexing rows out of a tensor (`h[ids]`), adds rows with atomic float
additions on more than one thread once a step is large enough (a 1024-edge batch of 64-d
vectors is), so two 2-thread runs differed from the first optimizer step. torch's
deterministic implementation (a sort, then ordered sums) removes that, at about 10% of a
2-thread step, and gives the same bytes as before at 1 thread (measured, docs/TRAINING.md).
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
    """Run the block with `resolve(num_threads)` intra-op threads and torch's deterministic
    kernels; yield the thread count. (warn_only: on CUDA, an op without a deterministic
    kernel warns instead of stopping the run.)"""
    previous = torch.get_num_threads()
    was = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    n = resolve(num_threads)
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
