"""Baselines on toy graphs: hand-computed Swing, a brute-force Swing, rankings and exclusion."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gie.evaluate import baselines as bl
from graphbuild.dataset import EdgeSet, GraphData


def toy_graph(src, dst, weight, count, n_users, n_streamers) -> GraphData:
    gift = EdgeSet(np.array(src), np.array(dst),
                   {"weight": np.array(weight, float), "count": np.array(count)})
    return GraphData(Path("toy"), {}, {"user": np.arange(n_users) + 1000,
                                       "streamer": np.arange(n_streamers) + 10000},
                     {}, {}, {}, np.zeros((n_streamers, 3), bool), {"gift": gift})


def brute_force_swing(b: np.ndarray, alpha: float) -> np.ndarray:
    items = [set(np.flatnonzero(row)) for row in b]
    s = np.zeros((b.shape[1], b.shape[1]))
    for u, v in combinations(range(len(items)), 2):
        common = items[u] & items[v]
        for i in common:
            for j in common - {i}:
                s[i, j] += 1.0 / (alpha + len(common))
    return s


def test_swing_hand_computed():
    # u0 {0,1}, u1 {0,1,2}, u2 {1,2}: pairs (u0,u1) share {0,1}, (u1,u2) share {1,2}.
    g = toy_graph([0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 1, 2], [1] * 7, [1] * 7, 3, 3)
    s = bl.swing_similarity(bl.gift_weights(g), alpha=1.0).toarray()
    expected = np.array([[0, 1 / 3, 0], [1 / 3, 0, 1 / 3], [0, 1 / 3, 0]])
    np.testing.assert_allclose(s, expected)


def test_swing_matches_brute_force_on_random_graph():
    rng = np.random.default_rng(3)
    b = (rng.random((40, 15)) < 0.25).astype(float)
    src, dst = np.nonzero(b)
    g = toy_graph(src, dst, np.ones(len(src)), np.ones(len(src), int), 40, 15)
    s = bl.swing_similarity(bl.gift_weights(g), alpha=0.5).toarray()
    np.testing.assert_allclose(s, brute_force_swing(b, 0.5), rtol=1e-9)


def test_swing_caps_keep_the_heaviest_edges():
    w = sp.csr_matrix(np.array([[3.0, 1.0, 2.0], [3.0, 0.0, 2.0]]))
    capped = bl._keep_top_per_row(w, 2).toarray()
    np.testing.assert_array_equal(capped, [[3.0, 0.0, 2.0], [3.0, 0.0, 2.0]])


def test_swing_leaves_the_gift_weights_as_they_were():
    """The weights go on to the history baseline, Swing's scores and every history
    exclusion: a cap applied in place (the capped copy once shared the weights' index
    arrays and compacted them) cut the heavy users' histories to their top items."""
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((30, 12)) < 0.6, rng.random((30, 12)) + 0.1, 0.0)
    w = sp.csr_matrix(dense)
    bl.swing_similarity(w, max_items_per_user=3, max_users_per_item=5)
    np.testing.assert_array_equal(w.toarray(), dense)
    assert w.nnz == np.count_nonzero(dense)


@pytest.fixture
def graph():
    # user 0 gifted s0 (weight 1) and s1 (weight 3); user 1 gifted s1 and s2; user 2 s2 only.
    return toy_graph([0, 0, 1, 1, 2], [0, 1, 1, 2, 2], [1, 3, 1, 1, 2], [1, 5, 2, 1, 1], 3, 4)


def test_popularity_history_and_exclusion(graph):
    w = bl.gift_weights(graph)
    users = np.array([0, 2, -1])
    pop = bl.top_k_lists(bl.popularity_scores(graph), users, 10, 4)
    assert [p.tolist() for p in pop] == [[1, 2, 0], [1, 2, 0], []]   # s3 never gifted: absent
    pop_new = bl.top_k_lists(bl.popularity_scores(graph), users, 10, 4, exclude=w)
    assert [p.tolist() for p in pop_new] == [[2], [1, 0], []]
    hist = bl.top_k_lists(bl.history_scores(w), users, 1, 4)
    assert [h.tolist() for h in hist] == [[1], [2], []]


def test_swing_scores_rank_co_gifted_streamers(graph):
    w = bl.gift_weights(graph)
    # user pairs sharing >= 2 streamers: none here, so add a user gifting s1 and s2 like user 1.
    g2 = toy_graph([0, 0, 1, 1, 2, 3, 3], [0, 1, 1, 2, 2, 1, 2], [1, 3, 1, 1, 2, 1, 1],
                   [1] * 7, 4, 4)
    w2 = bl.gift_weights(g2)
    sim = bl.swing_similarity(w2)
    lists = bl.top_k_lists(bl.swing_scores(w2, sim), np.array([0, 2]), 10, 4, exclude=w2)
    assert lists[0].tolist() == [2]          # via s1 (weight 3), co-gifted with s2
    assert lists[1].tolist() == [1]
    assert bl.top_k_lists(bl.swing_scores(w, bl.swing_similarity(w)), np.array([0]), 5, 4)[0].size == 0


def test_embedding_knn_is_exact_inner_product():
    rng = np.random.default_rng(0)
    u, s = rng.normal(size=(5, 8)), rng.normal(size=(30, 8))
    lists = bl.top_k_lists(bl.embedding_scores(u, s), np.arange(5), 7, 30, batch_cells=60)
    for i, got in enumerate(lists):
        assert got.tolist() == np.argsort(-(s @ u[i]))[:7].tolist()


def test_ranking_without_history_equals_a_deep_ranking_with_history_cut():
    """The explore lists (history excluded while ranking) are what cutting the history out of
    a ranking `k + longest history` deep gives, ties (integer scores) included."""
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(9, 40)).astype(float)
    scores[scores == 0] = -np.inf
    history = sp.csr_matrix(rng.random((9, 40)) < 0.4)
    score = lambda sources: scores[sources].copy()          # noqa: E731
    sources = np.array([0, 3, -1, 8, 5, 1])
    k, depth = 6, 6 + int(np.diff(history.indptr).max())
    full, explore = bl.top_k_lists_each(score, sources, k, 40, [None, history], batch_cells=80)
    deep = bl.top_k_lists(score, sources, depth, 40)
    for i, src in enumerate(sources):
        hist = set(history[src].indices.tolist()) if src >= 0 else set()
        assert full[i].tolist() == deep[i][:k].tolist()
        assert explore[i].tolist() == [t for t in deep[i].tolist() if t not in hist][:k]
    assert explore[2].size == 0                              # unknown source


@pytest.mark.parametrize("kind", ["sparse", "same_for_all", "columns"])
def test_shortcut_rankings_equal_the_dense_ranking(kind):
    """Sparse, shared and column-restricted scorers skip (part of) the dense rows; their lists
    are the dense path's, ties (integer scores) and exclusions included."""
    rng = np.random.default_rng(11)
    dense_m = rng.integers(0, 4, size=(30, 25)) * (rng.random((30, 25)) < 0.5)
    dense_m[[2, 9]] = 0                            # users without gifts: no user_cf column
    m = sp.csr_matrix(dense_m, dtype=float)
    if kind == "sparse":
        fast = bl.history_scores(m)
    elif kind == "columns":                        # streamers (25) x users (30)
        fast = bl.user_cf_scores(m)
        m = sp.csr_matrix(m.T)
    else:
        src, dst = np.nonzero(m.toarray())
        fast = bl.popularity_scores(toy_graph(src, dst, np.ones(len(src)),
                                              rng.integers(1, 3, len(src)), 30, 25))
    dense = lambda sources: fast(sources)            # noqa: E731  (no shortcut attribute)
    n_sources, n_targets = m.shape
    history = sp.csr_matrix(rng.random((n_sources, n_targets)) < 0.3)
    sources = np.array([4, -1, 0, n_sources - 1, 7, 7])
    for k in (3, 10, 25):
        assert [[a.tolist() for a in lists] for lists in
                bl.top_k_lists_each(fast, sources, k, n_targets, [None, history])] == \
            [[a.tolist() for a in lists] for lists in
             bl.top_k_lists_each(dense, sources, k, n_targets, [None, history], batch_cells=50)]


# ------------------------------------------------------------------------------------------
# Streamer side: who gifts a streamer next
# ------------------------------------------------------------------------------------------
def test_user_cf_matches_brute_force():
    rng = np.random.default_rng(5)
    b = (rng.random((25, 12)) < 0.3)
    src, dst = np.nonzero(b)
    weight = rng.random(len(src)) + 0.1
    g = toy_graph(src, dst, weight, np.ones(len(src), int), 25, 12)
    w = bl.gift_weights(g)
    sets = [set(np.flatnonzero(row)) for row in b]
    want = np.zeros((12, 25))
    for s in range(12):
        for v, ws in zip(src[dst == s], weight[dst == s]):
            for u in range(25):
                if u != v and sets[u] and sets[v]:
                    want[s, u] += ws * len(sets[u] & sets[v]) / np.sqrt(len(sets[u]) * len(sets[v]))
    got = bl.user_cf_scores(w)(np.arange(12))
    np.testing.assert_allclose(np.where(np.isfinite(got), got, 0.0), want, atol=1e-9)


def test_active_gifters_and_streamer_history(graph):
    w = bl.gift_weights(graph)
    streamers = np.array([2, 3])
    act = bl.top_k_lists(bl.active_gifter_scores(graph), streamers, 10, 3)
    assert [a.tolist() for a in act] == [[0, 1, 2], [0, 1, 2]]     # 6, 3, 1 gifts sent
    gifters = bl.top_k_lists(bl.history_scores(w.T.tocsr()), streamers, 10, 3)
    assert [g.tolist() for g in gifters] == [[2, 1], []]            # by weight 2, 1


@pytest.mark.parametrize("cells", [7, 64, 300, 1 << 20])
def test_ranking_by_blocks_of_targets_equals_a_stable_sort_of_whole_rows(cells):
    """Rows come a block of targets at a time (so a batch of sources need not shrink as the
    targets grow): ties that straddle blocks, rows with fewer candidates than asked and
    exclusions give a stable sort's lists, whatever the block width."""
    rng = np.random.default_rng(8)
    scores = rng.integers(0, 4, size=(40, 90)).astype(np.float32)
    scores[scores == 0] = -np.inf
    scores[5, 3:] = -np.inf                                  # two candidates only
    history = sp.csr_matrix(rng.random((40, 90)) < 0.2)
    score = lambda sources: scores[sources].copy()          # noqa: E731
    sources = np.array([5, 0, 39, -1, 17, 17, 22])
    for k in (1, 4, 30):
        full, explore = bl.top_k_lists_each(score, sources, k, 90, [None, history], cells)
        for i, src in enumerate(sources):
            row = scores[src] if src >= 0 else np.full(90, -np.inf)
            ranked = [t for t in np.argsort(-row, kind="stable") if np.isfinite(row[t])]
            hist = set(history[src].indices.tolist()) if src >= 0 else set()
            assert full[i].tolist() == ranked[:k]
            assert explore[i].tolist() == [t for t in ranked if t not in hist][:k]


def test_blocks_that_beat_the_running_cut_everywhere_keep_the_exact_lists():
    """Scores that rise along the row: every block beats every row's running k-th best at
    every target (the path that cuts such a block by top-k first), rows short of candidates
    until late, and ties at the cut, against a stable sort."""
    rng = np.random.default_rng(4)
    n, width = 6, 2000
    scores = np.tile(np.arange(width, dtype=np.float64) // 3, (n, 1))      # ties of three
    scores[1, :1500] = -np.inf                            # short of candidates for 1500 targets
    scores[2] = rng.integers(0, 5, width)                 # flat: few beat the cut
    history = sp.csr_matrix(rng.random((n, width)) < 0.3)
    score = lambda sources: scores[sources].copy()          # noqa: E731
    sources = np.arange(n)
    for k in (1, 5, 40):
        full, explore = bl.top_k_lists_each(score, sources, k, width, [None, history],
                                            batch_cells=bl.SOURCE_BATCH * 500)
        for i in sources:
            ranked = [t for t in np.argsort(-scores[i], kind="stable") if np.isfinite(scores[i, t])]
            hist = set(history[i].indices.tolist())
            assert full[i].tolist() == ranked[:k]
            assert explore[i].tolist() == [t for t in ranked if t not in hist][:k]


def _float32_close(a: np.ndarray, b: np.ndarray) -> bool:
    return np.allclose(a, b, rtol=1e-6, atol=1e-6)


def test_blocks_of_the_dense_scorers_are_their_scores():
    """The block scorers give the whole rows' scores (one product per block): user_cf's
    sparse product the same bits, emb_knn's BLAS product the same up to its rounding (OpenBLAS'
    AVX2 kernels round some columns of a block otherwise than of a whole row)."""
    rng = np.random.default_rng(2)
    u, s = rng.normal(size=(9, 16)).astype(np.float32), rng.normal(size=(70, 16)).astype(np.float32)
    emb = bl.embedding_scores(u, s)
    w = sp.csr_matrix((rng.random((70, 12)) < 0.3) * rng.random((70, 12)))
    cf = bl.user_cf_scores(w)
    sources = np.array([3, 0, 8, 8])
    for scorer, width, same in ((emb, 70, _float32_close), (cf, len(cf.columns), np.array_equal)):
        whole = scorer.blocks(sources)(0, width)
        block = scorer.blocks(sources)
        assert same(np.concatenate([block(lo, min(lo + 9, width))
                                    for lo in range(0, width, 9)], axis=1), whole)
    assert np.array_equal(cf(sources)[:, cf.columns], cf.blocks(sources)(0, len(cf.columns)))


def test_user_cf_scores_keep_the_bits_of_the_streamer_major_product():
    """The profile is built streamer-major (no transposed copy of a batch x streamers table):
    each score adds the same terms in the same order as rows @ unit, so the bits are equal."""
    rng = np.random.default_rng(4)
    w = sp.csr_matrix((rng.random((300, 40)) < 0.1) * rng.random((300, 40)))
    binary = (w != 0).astype(float)
    norms = np.sqrt(np.asarray(binary.sum(axis=1)).ravel())
    gifters = np.flatnonzero(norms > 0)
    unit = (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ binary).tocsr()[gifters]
    rows = w.T.tocsr()[:, gifters].tocsr()[np.arange(40)]
    want = np.ascontiguousarray((unit @ (rows @ unit).toarray().T).T) - rows.toarray()
    want[want <= 1e-9] = -np.inf
    assert np.array_equal(bl.user_cf_scores(w)(np.arange(40))[:, gifters], want)
