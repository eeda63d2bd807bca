"""What GIE must beat, computed from the same graph window, independently of gie.expand.

Streamers for a user:
- popularity: streamers by number of gifts received in the window, the same list for all;
- history: the user's own gifted streamers by time-decayed weight (the `U-S` path alone);
- swing: item-to-item co-gifting (Swing, Wang et al. 2020) over the gift edges, computed here
  independently of the build's s2s edges; a user's score for s is sum_s' w(u,s') swing(s', s);
- emb_knn: exact inner product of the user's embedding with every streamer's, no graph hops.
Users for a streamer (who gifts it next):
- active_gifters: users by number of gifts sent in the window, the same list for all;
- history: the streamer's own gifters by time-decayed weight (its most active gifters);
- user_cf: user-to-user co-gifting, score(s, u) = sum over s's gifters v of w(v, s) cos(v, u),
  the cosine over gifted-streamer sets (v != u);
- emb_knn: the streamer's embedding against every user's.
Every ranker is a function from a batch of source node ids to dense scores over all targets
(-inf = not a candidate); `top_k_lists` turns it into ranked lists, optionally without the
source's history (the fair comparison for exploration). The dense ones (emb_knn, user_cf)
also score a block of targets at a time (`score.blocks`), so that a batch of sources reads
each target once whatever the number of targets.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from gie.progress import progress
from graphbuild.dataset import GraphData

ScoreFn = Callable[[np.ndarray], np.ndarray]
Block = Callable[[int, int], np.ndarray]     # (lo, hi) -> a batch's scores of targets [lo, hi)
SOURCE_BATCH = 256         # sources ranked together (a dense scorer's `source_batch` overrides)
# Dense scores per block: SOURCE_BATCH sources x 16,384 targets. A block of 2^24 scores went
# through memory between its product and its selection; this size ran 1.7x faster.
BATCH_CELLS = 1 << 22


def gift_weights(graph: GraphData) -> sp.csr_matrix:
    """Users x streamers matrix of gift edge weights."""
    gift = graph.edges["gift"]
    shape = (graph.num_nodes("user"), graph.num_nodes("streamer"))
    return sp.csr_matrix((gift.data["weight"].astype(np.float64), (gift.src, gift.dst)), shape=shape)


def _keep_top_per_row(m: sp.csr_matrix, cap: int) -> sp.csr_matrix:
    """Keep the `cap` largest entries of each row (ties: lower column first), in a new matrix:
    `m` is left as it was (the result once shared its index arrays and compacted them)."""
    m = sp.csr_matrix(m, copy=True)
    m.sort_indices()
    keep = np.zeros(m.nnz, dtype=bool)
    for r in np.flatnonzero(np.diff(m.indptr) > cap):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        keep[lo + np.argsort(-m.data[lo:hi], kind="stable")[:cap]] = True
    small = np.repeat(np.diff(m.indptr) <= cap, np.diff(m.indptr))
    keep |= small
    out = sp.csr_matrix((m.data * keep, m.indices, m.indptr), shape=m.shape)
    out.eliminate_zeros()
    return out


def swing_similarity(weights: sp.csr_matrix, alpha: float = 1.0, max_items_per_user: int = 50,
                     max_users_per_item: int = 200) -> sp.csr_matrix:
    """Streamer x streamer Swing: sum over user pairs {u, v} gifting both i and j of
    1 / (alpha + |I_u & I_v|). Heavy users and streamers are capped to their top-weighted
    edges so the number of user pairs stays bounded."""
    b = _keep_top_per_row(weights, max_items_per_user)
    b = _keep_top_per_row(b.T.tocsr(), max_users_per_item).T.tocsr()
    b.data[:] = 1.0
    common = sp.triu(b @ b.T, k=1).tocoo()
    pairs = common.data >= 2                     # a pair sharing one item links no item pair
    us, vs, overlap = common.row[pairs], common.col[pairs], common.data[pairs]
    shared = b[us].multiply(b[vs]).tocsr()      # row p = items gifted by both users of pair p
    s = (shared.T @ sp.diags(1.0 / (alpha + overlap)) @ shared).tocsr()
    s.setdiag(0)
    s.eliminate_zeros()
    return s


def _gift_counts(graph: GraphData, end: str) -> ScoreFn:
    """The same list for every source node: targets by gifts received (`dst`) or sent
    (`src`) in the window."""
    gift = graph.edges["gift"]
    ids = getattr(gift, end)
    counts = np.bincount(ids, weights=gift.data["count"], minlength=graph.num_nodes(
        "streamer" if end == "dst" else "user")).astype(np.float64)
    counts[counts == 0] = -np.inf

    def score(sources: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(sources), len(counts))).copy()
    score.same_for_all = counts          # ranked once for every source (top_k_lists_each)
    return score


def popularity_scores(graph: GraphData) -> ScoreFn:
    return _gift_counts(graph, "dst")


def _sparse_scores(m: sp.csr_matrix) -> ScoreFn:
    m = m.tocsr()
    m.sort_indices()

    def score(users: np.ndarray) -> np.ndarray:
        dense = m[users].toarray()
        dense[dense <= 0] = -np.inf
        return dense
    score.sparse_rows = m                # ranked from the stored entries (top_k_lists_each)
    return score


def history_scores(weights: sp.csr_matrix) -> ScoreFn:
    """Rows of `weights` as scores: a user's gifted streamers, or (weights.T) a streamer's
    gifters, by gift weight."""
    return _sparse_scores(weights)


def swing_scores(weights: sp.csr_matrix, similarity: sp.csr_matrix) -> ScoreFn:
    return _sparse_scores((weights @ similarity).tocsr())


def embedding_scores(source_emb: np.ndarray, target_emb: np.ndarray) -> ScoreFn:
    def blocks(sources: np.ndarray) -> Block:
        queries = source_emb[sources]
        return lambda lo, hi: queries @ target_emb[lo:hi].T             # float32, as stored

    def score(sources: np.ndarray) -> np.ndarray:
        return blocks(sources)(0, len(target_emb))
    score.blocks = blocks                # ranked a block of targets at a time (top_k_lists_each)
    return score


def active_gifter_scores(graph: GraphData) -> ScoreFn:
    return _gift_counts(graph, "src")


def user_cf_scores(weights: sp.csr_matrix) -> ScoreFn:
    """score(s, u) = sum_v w(v, s) cos(v, u) over gifted-streamer sets, v != u."""
    binary = weights.copy().tocsr()
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=1)).ravel())
    unit = (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ binary).tocsr()  # users x streamers
    by_streamer = weights.T.tocsr()                                             # streamers x users
    gifters = np.flatnonzero(norms > 0)      # every other user scores 0: not a candidate
    unit_g, by_streamer_g = unit[gifters], by_streamer[:, gifters].tocsr()
    unit_by_streamer = unit_g.T.tocsr()

    def blocks(streamers: np.ndarray) -> Block:
        """Scores over the gifters only (columns `gifters`), a block of gifters at a time."""
        rows = by_streamer_g[streamers]
        # Dense streamer profiles times the sparse unit matrix: a popular streamer's gifters
        # reach most users, and a sparse x sparse product of that many entries is far slower.
        profile = (unit_by_streamer @ rows.T.tocsr()).toarray()           # streamers x batch

        def block(lo: int, hi: int) -> np.ndarray:
            dense = np.ascontiguousarray((unit_g[lo:hi] @ profile).T)
            own = rows[:, lo:hi].tocoo()         # the v = u term, w(u, s) * cos(u, u) = w(u, s)
            dense[own.row, own.col] -= own.data
            dense[dense <= 1e-9] = -np.inf
            return dense
        return block

    def score(streamers: np.ndarray) -> np.ndarray:
        dense = np.full((len(streamers), weights.shape[0]), -np.inf)
        dense[:, gifters] = blocks(streamers)(0, len(gifters))
        return dense
    score.columns = gifters                  # ranked over the gifters only (top_k_lists_each)
    score.blocks = blocks
    # Each entry of the sparse product reads its streamer's row of `profile` (8 bytes a
    # source): fewer sources than the default keep that table small at 10M users.
    score.source_batch = 64
    return score


def top_k_lists(score: ScoreFn, users: np.ndarray, k: int, n_streamers: int,
                exclude: sp.csr_matrix | None = None, batch_cells: int | None = None
                ) -> list[np.ndarray]:
    """Top-k target node ids per source (best first; ties by lower id); sources < 0 (unknown
    to the graph) get an empty list. Written for users and streamers, and vice versa.
    `exclude` (sources x targets, non-zero = excluded) removes e.g. the history before the cut."""
    return top_k_lists_each(score, users, k, n_streamers, [exclude], batch_cells)[0]


def top_positions(rows: np.ndarray, ns: np.ndarray) -> list[np.ndarray]:
    """Per row of a 2-D batch, the positions of its ns[i] best finite scores, best first,
    ties by lower position (a stable sort's order), without sorting the rows."""
    return [p[p >= 0] for p in _top_padded(rows, ns)[0]]


def _top_padded(rows: np.ndarray, ns: np.ndarray, offset: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """`top_positions` (plus `offset`) and their scores as [rows, k] arrays, padded with -1
    and -inf past each row's count.

    One torch top-k over the whole batch (every core), its k entries put in (score desc,
    position asc) order by two small sorts. A row is read again only where a tie straddles
    its cut or a score in its top is not finite; otherwise its top n are exactly the
    scores >= the n-th best."""
    n_rows, width = rows.shape
    ns = np.minimum(np.asarray(ns, np.int64), width)
    k = min(int(ns.max(initial=0)) + 1, width)
    pos = np.full((n_rows, k), -1, np.int64)
    val = np.full((n_rows, k), -np.inf, rows.dtype)
    if k == 0:
        return pos, val
    v, ix = (t.numpy() for t in torch.topk(torch.from_numpy(np.ascontiguousarray(rows)), k))
    by_pos = np.argsort(ix, axis=1)
    ix, v = np.take_along_axis(ix, by_pos, 1), np.take_along_axis(v, by_pos, 1)
    by_score = np.argsort(-v, axis=1, kind="stable")
    ix, v = np.take_along_axis(ix, by_score, 1), np.take_along_axis(v, by_score, 1)
    inside = np.arange(k) < ns[:, None]
    at = np.arange(n_rows)
    last = v[at, np.maximum(ns - 1, 0)]
    scan = (ns > 0) & (((ns < width) & (v[at, np.minimum(ns, k - 1)] == last))
                       | (~np.isfinite(v) & inside).any(axis=1))
    keep = inside & ~scan[:, None]
    pos[keep], val[keep] = ix[keep] + offset, v[keep]
    for i in np.flatnonzero(scan):
        c = _scan_positions(rows[i], ns[i], last[i])
        pos[i, :len(c)], val[i, :len(c)] = c + offset, rows[i, c]
    return pos, val


def _excluded_keys(exclude: sp.csr_matrix | None, sources: np.ndarray,
                   columns: np.ndarray | None) -> np.ndarray | None:
    """A batch's excluded (row, position) pairs as sorted keys row * width + position, where
    width is the number of targets ranked (`columns`' positions when they are narrowed)."""
    if exclude is None:
        return None
    width = exclude.shape[1] if columns is None else len(columns)
    keys = []
    for row, source in enumerate(sources):
        t = _row_entries(exclude, source)
        if columns is not None:
            t = np.searchsorted(columns, t[_in_sorted(t, columns)])
        keys.append(row * width + np.sort(t))
    return np.concatenate(keys).astype(np.int64) if keys else np.empty(0, np.int64)


def _in_sorted(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    at = np.searchsorted(table, keys)
    return (at < len(table)) & (table[np.minimum(at, len(table) - 1)] == keys)


def _running_tops(scores: Block, width: int, block: int, n_rows: int, k: int,
                  excluded: list[np.ndarray | None]) -> list[np.ndarray]:
    """For each exclusion (`_excluded_keys`, None = none), [rows, k] positions of each row's
    k best finite scores not excluded (score desc, position asc; -1 past its candidates).

    A block adds only its entries above a row's running k-th best (an equal score at a later
    position loses the tie): after the first block they are few, so a block costs a comparison
    instead of a top-k (at 1.29M users the streamer side's emb_knn spent about as long in
    each block's top-k as in its product). Rows still short of k candidates, and blocks with
    many entries above the cut, are cut by `_top_padded` first, deep enough to hold the k best
    not excluded of every exclusion."""
    tops: list[tuple[np.ndarray, np.ndarray]] = []
    for lo in range(0, width, block):
        s = scores(lo, min(lo + block, width))
        w = s.shape[1]
        if not tops:
            tops = [(np.full((n_rows, k), -1, np.int64), np.full((n_rows, k), -np.inf, s.dtype))
                    for _ in excluded]
        cuts = [val[:, k - 1] for _, val in tops]
        low = np.minimum.reduce(cuts)

        def block_top(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            extra = [np.zeros(len(rows), np.int64)] + [
                np.searchsorted(ex, rows * width + lo + w) - np.searchsorted(ex, rows * width + lo)
                for ex in excluded if ex is not None]
            pos, val = _top_padded(s[rows], k + np.maximum.reduce(extra), lo)
            r, c = np.divmod(np.flatnonzero(pos >= 0), pos.shape[1])
            return rows[r], pos[r, c], val[r, c]

        short = np.isinf(low)                  # every finite score of such a row is an entry
        parts = [block_top(np.flatnonzero(short))] if short.any() else []
        full = np.flatnonzero(~short)
        if len(full):
            sub = s if len(full) == n_rows else s[full]
            hit = np.flatnonzero(sub > low[full, None])
            if len(hit) > len(full) * (4 * k + 64):
                parts.append(block_top(full))
            else:
                r, c = np.divmod(hit, w)
                parts.append((full[r], c + lo, sub[r, c]))
        for r, c, v in parts:                  # (disjoint rows, each part in row order)
            for (pos, val), cut, ex in zip(tops, cuts, excluded):
                keep = v > cut[r]
                if ex is not None:
                    keep &= ~_in_sorted(r * width + c, ex)
                _merge_into(pos, val, r[keep], c[keep], v[keep])
    return [pos for pos, _ in tops]


def _merge_into(pos: np.ndarray, val: np.ndarray, r: np.ndarray, c: np.ndarray,
                v: np.ndarray) -> None:
    """Merge entries (row r, position c, score v; per row in (score desc, position asc) or
    ascending position order, all after the row's positions so far) into the rows' top lists."""
    if not len(r):
        return
    k = pos.shape[1]
    at, counts = np.unique(r, return_counts=True)
    col = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    new_pos = np.full((len(at), counts.max()), -1, np.int64)
    new_val = np.full((len(at), counts.max()), -np.inf, val.dtype)
    new_pos[np.repeat(np.arange(len(at)), counts), col] = c
    new_val[np.repeat(np.arange(len(at)), counts), col] = v
    both_pos = np.concatenate([pos[at], new_pos], axis=1)
    both_val = np.concatenate([val[at], new_val], axis=1)
    # Stable: of equal scores, the lower positions (earlier blocks' first) come first.
    order = np.argsort(-both_val, axis=1, kind="stable")[:, :k]
    pos[at] = np.take_along_axis(both_pos, order, 1)
    val[at] = np.take_along_axis(both_val, order, 1)


def best_positions(row: np.ndarray, n: int) -> np.ndarray:
    """`top_positions` of one row."""
    return top_positions(row[None, :], np.array([n]))[0]


def _scan_positions(row: np.ndarray, n: int, t: float) -> np.ndarray:
    """The n best finite scores of `row` given its n-th best `t`, by scanning the row."""
    if not np.isfinite(t):
        c = np.flatnonzero(np.isfinite(row))
    else:
        above = np.flatnonzero(row > t)
        c = np.concatenate([above, np.flatnonzero(row == t)[:n - len(above)]])
    return c[np.lexsort((c, -row[c]))].astype(np.int64)


def _whole_rows(score: ScoreFn) -> Callable[[np.ndarray], Block]:
    """`blocks` of a scorer that has none: its whole rows, scored once per batch."""
    def blocks(sources: np.ndarray) -> Block:
        rows = score(sources)
        return lambda lo, hi: rows[:, lo:hi]
    return blocks


def _row_entries(m: sp.csr_matrix, r: int) -> np.ndarray:
    """Columns of row r's non-zero entries."""
    lo, hi = m.indptr[r], m.indptr[r + 1]
    return m.indices[lo:hi][m.data[lo:hi] != 0]


def top_k_lists_each(score: ScoreFn, users: np.ndarray, k: int, n_streamers: int,
                     excludes: list[sp.csr_matrix | None],
                     batch_cells: int | None = None) -> list[list[np.ndarray]]:
    """`top_k_lists` once per entry of `excludes`, scoring each batch of sources once (e.g. a
    ranking with its history and without it: cutting the history from a ranking deep enough
    to hold it would need the longest history's depth for every source).

    Two scorers skip the dense score rows (same lists, far less work at 1M users): one with
    the same scores for every source (`score.same_for_all`) is ranked once; one from a sparse
    matrix (`score.sparse_rows`: entries > 0 are candidates) is ranked from each row's
    stored entries. Dense scores come `batch_cells` at a time (default BATCH_CELLS): a batch
    of `score.source_batch` (else SOURCE_BATCH) sources against a block of targets from
    `score.blocks` (else slices of the whole rows), each row's best kept over the blocks
    (`_running_tops`)."""
    excludes = [None if e is None else sp.csr_matrix(e) for e in excludes]
    out: list[list[np.ndarray]] = [[np.empty(0, np.int64)] * len(users) for _ in excludes]
    known = np.flatnonzero(users >= 0)
    kk = min(k, n_streamers)           # (the dense path below may narrow the targets)
    shared = getattr(score, "same_for_all", None)
    rows = getattr(score, "sparse_rows", None)
    if shared is not None:
        cand = np.flatnonzero(np.isfinite(shared))
        order = cand[np.lexsort((cand, -shared[cand]))]
        for lists, exclude in zip(out, excludes):
            for i in known:
                if exclude is None:
                    lists[i] = order[:kk]
                else:
                    banned = _row_entries(exclude, users[i])
                    head = order[:kk + len(banned)]
                    lists[i] = head[~np.isin(head, banned)][:kk]
        return out
    if rows is not None:
        for i in known:
            lo, hi = rows.indptr[users[i]], rows.indptr[users[i] + 1]
            idx, val = rows.indices[lo:hi], rows.data[lo:hi]
            idx, val = idx[val > 0], val[val > 0]
            for lists, exclude in zip(out, excludes):
                c, v = idx, val
                if exclude is not None:
                    keep = ~np.isin(c, _row_entries(exclude, users[i]))
                    c, v = c[keep], v[keep]
                lists[i] = c[np.lexsort((c, -v))][:kk].astype(np.int64)
        return out
    columns = getattr(score, "columns", None)   # outside `columns`: not candidates
    width = n_streamers if columns is None else len(columns)
    kk = min(kk, width)
    if kk == 0:
        return out
    blocks = getattr(score, "blocks", None) or _whole_rows(score)
    cells = batch_cells or BATCH_CELLS
    batch = min(getattr(score, "source_batch", SOURCE_BATCH), cells)
    block = max(1, cells // batch)
    for start in progress(range(0, len(known), batch), desc="ranking", unit="batch",
                          mininterval=30, leave=False):
        idx = known[start:start + batch]
        keys = [_excluded_keys(e, users[idx], columns) for e in excludes]
        tops = _running_tops(blocks(users[idx]), width, block, len(idx), kk, keys)
        for lists, top in zip(out, tops):
            for i, c in zip(idx, top):
                c = c[c >= 0]
                lists[i] = c if columns is None else columns[c]
    return out
