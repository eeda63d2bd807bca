"""Weighted relations between nodes as CSR arrays, and the vectorised reductions of a walk.

A `Rel` row lists one source node's neighbours sorted best first (weight desc, node id asc),
so "keep the top-f neighbours" is a slice. scipy.sparse products would give the sums over
paths but not the node each target came through (`via`), so the walk expands the (source,
mid, target) triples of one batch explicitly and reduces them with sorts; the fan-out caps
keep a batch at most batch_size * f1 * f2 triples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gie.sorting import sort, stable_argsort, unique_inverse


@dataclass(frozen=True)
class Rel:
    indptr: np.ndarray      # int64 [n_rows + 1]
    indices: np.ndarray     # int64 column node ids, best first within a row
    data: np.ndarray        # float64 weights
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def from_pairs(src: np.ndarray, dst: np.ndarray, w: np.ndarray, n_rows: int, n_cols: int,
               distinct: bool = False) -> Rel:
    """Build a relation, summing duplicate (src, dst) pairs and dropping non-positive weights;
    each row best first (weight descending, then column).

    `distinct`: the caller knows that no pair repeats (a transpose), so the pairs are sorted
    instead of grouped. Pairs already in (src, dst) order and distinct, as a graph's edges
    come, are neither: the 1M graph's relations (16M watch edges) took 13.6 s instead of
    28.3 s, with the same bits (a sum of one weight is that weight)."""
    src, dst, w = np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(w, np.float64)
    key = src * n_cols + dst
    if len(key) > 1 and not (key[1:] > key[:-1]).all():
        if distinct:
            order = stable_argsort(key)
            key, w = key[order], w[order]
        else:
            key, inverse = unique_inverse(key)
            w = np.bincount(inverse, weights=w, minlength=len(key))
    src, dst = key // n_cols, key % n_cols
    keep = w > 0
    src, dst, w = src[keep], dst[keep], w[keep]
    order = _best_first(src, w)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n_rows), out=indptr[1:])
    return Rel(indptr, dst[order], w[order], n_cols)


def _best_first(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The order by (row, weight descending) that keeps ties in their current order: what
    np.lexsort((-w, rows)) gives, as one sort of (row, rank of -w) packed in an int64. The
    weights are positive (from_pairs keeps no others), so their float64 bits order like
    their values and the rank is an integer sort too: both are radix sorts (gie/sorting.py)."""
    bits = max(1, (len(w) - 1).bit_length())
    if not len(w) or int(rows.max()).bit_length() + bits > 62:
        return np.lexsort((-w, rows))
    rank = np.empty(len(w), np.int64)
    rank[stable_argsort(~np.ascontiguousarray(w, np.float64).view(np.int64))] = np.arange(len(w))
    return stable_argsort((rows << bits) | rank)


def to_pairs(rel: Rel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.repeat(np.arange(rel.n_rows), rel.row_lengths()), rel.indices, rel.data


def transpose(rel: Rel) -> Rel:
    src, dst, w = to_pairs(rel)
    return from_pairs(dst, src, w, rel.n_cols, rel.n_rows, distinct=True)


def normalise_rows(rel: Rel) -> Rel:
    """Each row becomes a probability distribution (a step of a weighted random walk)."""
    lengths = rel.row_lengths()
    sums = np.bincount(np.repeat(np.arange(rel.n_rows), lengths), weights=rel.data,
                       minlength=rel.n_rows)
    sums[sums == 0] = 1.0
    return Rel(rel.indptr, rel.indices, rel.data / np.repeat(sums, lengths), rel.n_cols)


def truncate(rel: Rel, k: int) -> Rel:
    """Keep the first (best) k entries of each row."""
    lengths = rel.row_lengths()
    if len(lengths) == 0 or lengths.max(initial=0) <= k:
        return rel
    rank = np.arange(len(rel.indices)) - np.repeat(rel.indptr[:-1], lengths)
    keep = rank < k
    indptr = np.zeros_like(rel.indptr)
    np.cumsum(np.minimum(lengths, k), out=indptr[1:])
    return Rel(indptr, rel.indices[keep], rel.data[keep], rel.n_cols)


def mix(a: Rel, b: Rel, share_a: float) -> Rel:
    """share_a * a + (1 - share_a) * b, rows renormalised (a row present in one side only
    becomes that side's row)."""
    sa, da, wa = to_pairs(a)
    sb, db, wb = to_pairs(b)
    both = from_pairs(np.concatenate([sa, sb]), np.concatenate([da, db]),
                      np.concatenate([wa * share_a, wb * (1 - share_a)]), a.n_rows, a.n_cols)
    return normalise_rows(both)


def sub_rows(rel: Rel, rows: np.ndarray) -> Rel:
    """The relation of `rows` alone (row i = rows[i]), entries in the same order."""
    _, cols, w = gather(rel, rows)
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(rel.indptr[rows + 1] - rel.indptr[rows], out=indptr[1:])
    return Rel(indptr, cols, w, rel.n_cols)


def gather(rel: Rel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries of `rows`: (position of the row in `rows`, column, weight), rows in order."""
    starts = rel.indptr[rows]
    counts = rel.indptr[rows + 1] - starts
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(starts, counts)
    return owner, rel.indices[offsets], rel.data[offsets]


@dataclass(frozen=True)
class RawOrder:
    """Node ids sorted by raw id: output ties are broken by raw id, cheaply."""

    rank: np.ndarray         # node id -> position in raw id order
    node: np.ndarray         # position -> node id

    @classmethod
    def of(cls, raw_ids: np.ndarray) -> "RawOrder":
        node = stable_argsort(raw_ids)
        rank = np.empty_like(node)
        rank[node] = np.arange(len(node))
        return cls(rank, node)


@dataclass
class Candidates:
    """Aggregated (source, target) pairs of one batch, sorted by row then target raw id."""

    row: np.ndarray          # position of the source in the batch
    target: np.ndarray       # node id
    score: np.ndarray
    via: np.ndarray          # node id of the best-contributing intermediate (or source for 1 hop)
    source: np.ndarray | None = None   # fused sequences: name of the source behind each entry


def one_hop(rel: Rel, rows: np.ndarray, order: RawOrder) -> Candidates:
    owner, tgt, w = gather(rel, rows)
    return aggregate(owner, tgt, w, rows[owner], order)


def aggregate(row: np.ndarray, target: np.ndarray, contrib: np.ndarray, via: np.ndarray,
              order: RawOrder) -> Candidates:
    """Sum contributions per (row, target); keep the via of the largest one (first on ties)."""
    if len(row) == 0:
        return empty()
    n = len(order.rank)
    key = row * n + order.rank[target]
    perm = stable_argsort(key)
    key, contrib, via = key[perm], contrib[perm], via[perm]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    score = np.add.reduceat(contrib, starts)
    best = np.maximum.reduceat(contrib, starts)
    sizes = np.diff(np.r_[starts, len(key)])
    is_best = np.flatnonzero(contrib == np.repeat(best, sizes))
    group = np.repeat(np.arange(len(starts)), sizes)[is_best]
    first_best = is_best[np.r_[True, group[1:] != group[:-1]]]
    k = key[starts]
    return Candidates(k // n, order.node[k % n], score, via[first_best])


@dataclass(frozen=True)
class RowPairs:
    """The entries of a relation in a batch's rows, as sorted (row position, column) keys.

    Built once per batch and looked up by each of its candidate sets (a dozen sources drop
    the same history): a binary search into presorted keys instead of `np.isin` sorting the
    history with every set again."""

    keys: np.ndarray
    n_cols: int

    @classmethod
    def of(cls, rel: Rel, rows: np.ndarray) -> "RowPairs":
        owner, col, _ = gather(rel, rows)
        return cls(sort(owner * rel.n_cols + col), rel.n_cols)

    def contains(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(row), bool)
        q = row * self.n_cols + col
        return self.keys[np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)] == q


def drop_pairs(c: Candidates, pairs: RowPairs) -> Candidates:
    """Remove candidates (row, target) that are among `pairs` (e.g. the rows' history)."""
    return select(c, ~pairs.contains(c.row, c.target))


def select(c: Candidates, mask: np.ndarray) -> Candidates:
    return Candidates(c.row[mask], c.target[mask], c.score[mask], c.via[mask],
                      None if c.source is None else c.source[mask])


def top_per_row(c: Candidates, k: int, min_score: float = 0.0) -> Candidates:
    """Best first (float32 score desc, raw id asc), at most k per row, scores >= min_score.

    One stable sort on (row, score) packed in an int64: the bits of a float32 made monotone
    (negative values flipped) order like its value, and candidates arrive in raw id order
    within a row.
    """
    c = select(c, c.score >= min_score) if min_score > 0 else c
    c = select(c, stable_argsort((c.row << 32) | (0xFFFFFFFF - float_key(c.score))))
    return select(c, rank_in_row(c.row) < k)


def float_key(values: np.ndarray) -> np.ndarray:
    """int64 in 0 .. 2^32 - 1 that orders like the float32 value (the bits made monotone,
    negative values flipped; -0.0 just below 0.0)."""
    bits = np.asarray(values, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + (1 << 31)


def rank_in_row(row: np.ndarray) -> np.ndarray:
    """0-based position of each entry within its row (the entries of a row are contiguous)."""
    if not len(row):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    sizes = np.diff(np.r_[starts, len(row)])
    return np.arange(len(row)) - np.repeat(starts, sizes)


def empty() -> Candidates:
    none = np.zeros(0, np.int64)
    return Candidates(none, none, np.zeros(0), none)
