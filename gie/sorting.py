"""Sorts of int64 keys through torch's stable sort, which is a radix sort for integers.

Each function returns what its numpy counterpart returns, bit for bit: a stable sort has one
permutation, whatever the thread count. They are 3-5x numpy's (whose stable sort of int64 is
a timsort) on one core: 200k keys in 3.0 ms against 14.3 ms, 800k in 16 ms against 68 ms,
and the 47M watch edges of a 3.9M-user graph in 1.4-1.9 s against 8.4 s. The expand builds
its relations (the kNN tables, their transposes) with sorts of tens of millions of entries
and sorts each batch's candidates a dozen times: with these, a shard of it takes 15% less
time at 1.3M and 3.9M users, the same bytes (docs/BUNDLE.md). The price is memory: a sort
holds 32 bytes a key at its peak where numpy's held 12 (the 3.9M-user expand's peak rose
from 18.8 to 20.2 GB).

torch parallelises the sort over its intra-op threads: a process that shares the cores with
others (local expand workers) sets them to its share (gie/expand/index.py:omp_threads), or a
second thread competing for a busy core makes the sort several times slower.
"""
from __future__ import annotations

import numpy as np
import torch


def _tensor(keys: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(keys, np.int64, ["C", "W"]))


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """np.argsort(keys, kind="stable") of int64 keys."""
    return torch.sort(_tensor(keys), stable=True).indices.numpy()


def sort(keys: np.ndarray) -> np.ndarray:
    """np.sort(keys) of int64 keys."""
    return torch.sort(_tensor(keys)).values.numpy()


def unique(keys: np.ndarray) -> np.ndarray:
    """np.unique(keys) of int64 keys."""
    return torch.unique(_tensor(keys), sorted=True).numpy()


def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True) of int64 keys, the inverse flat."""
    keys = np.asarray(keys, np.int64).reshape(-1)
    order = stable_argsort(keys)
    ordered = keys[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]] if len(keys) else np.zeros(0, bool)
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse
