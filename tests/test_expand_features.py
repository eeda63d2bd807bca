"""Features of the fused ranking that are computed, not read: content vectors, the users'
content taste, the topic features and ranks within a node's pool, each against a brute-force
reference."""
from __future__ import annotations

import numpy as np
import pytest

from gie.expand.features import (TOPIC_PSEUDO_COUNT, PairIndex, Taste, Topics, _rank_in_pool,
                                 content_scores, streamer_audience, streamer_content,
                                 topic_clusters, topic_vectors)
from graphbuild.dataset import EdgeSet, GraphData, load_graph
from tests.graph_fixtures import make_graph_dataset


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path, _ = make_graph_dataset(tmp_path_factory.mktemp("features") / "graph", n_users=120,
                                 n_streamers=60, seed=3)
    return load_graph(path)


def _unit(v):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1)


def _raw_content(graph) -> np.ndarray:
    blocks = []
    for i, v in enumerate(graph.modalities.values()):
        has = graph.modality_mask[:, i]
        v = np.asarray(v, np.float64)
        blocks.append(_unit(np.where(has[:, None], v - v[has].mean(axis=0), 0)))
    return _unit(np.concatenate(blocks, axis=1))


def test_content_is_the_mean_of_the_nearest_reference_streamers(graph):
    raw = _raw_content(graph)
    k, reference = 5, 20
    with_content = [s for s in range(len(raw)) if np.linalg.norm(raw[s]) > 0]
    gifts = graph.node_columns["streamer"]["n_gifts"]
    ids = graph.raw_ids["streamer"]
    ref = sorted(with_content, key=lambda s: (-gifts[s], ids[s]))[:reference]
    expected = np.zeros_like(raw)
    for s in with_content:
        near = sorted(ref, key=lambda r: -raw[s] @ raw[r])[:k]
        expected[s] = _unit(raw[near].sum(axis=0))
    got = streamer_content(graph, k, reference)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Unsmoothed: every modality weighs the same, and no content stays no content.
    np.testing.assert_allclose(streamer_content(graph, 1, reference), raw, atol=1e-6)


def test_taste_is_the_cosine_with_what_the_user_gifted(graph):
    content = streamer_content(graph, 3, 100)
    gift = graph.edges["gift"]
    tastes = {"gift": Taste(gift, graph.num_nodes("user"), content),
              "none": Taste(None, graph.num_nodes("user"), content)}
    rng = np.random.default_rng(0)
    users = rng.integers(0, graph.num_nodes("user"), 500)
    streamers = rng.integers(0, graph.num_nodes("streamer"), 500)
    expected = []
    for u, s in zip(users, streamers):
        mine = gift.src == u
        t = (gift.data["weight"][mine, None] * content[gift.dst[mine]]).sum(axis=0)
        expected.append(_unit(t) @ content[s])
    scores = content_scores(tastes, users, streamers)
    np.testing.assert_allclose(scores["gift"], expected, atol=1e-5)
    assert not scores["none"].any()


def test_pool_rank_counts_the_better_candidates_of_the_same_node():
    row = np.array([0, 0, 0, 0, 1, 1, 2])
    value = np.array([0.5, 0.9, 0.5, 0.1, 3.0, 4.0, -1.0], np.float32)
    # Ties keep the table order: the first 0.5 ranks before the second.
    assert _rank_in_pool(row, value).tolist() == [2, 1, 3, 4, 2, 1, 1]


def test_topic_clusters_find_planted_kinds_and_repeat():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(3, 16)))
    kind = rng.integers(0, 3, 300)
    content = _unit(centres[kind] + 0.05 * rng.normal(size=(300, 16))).astype(np.float32)
    content[:5] = 0                                   # no content: no membership
    member = topic_clusters(content, 3, temperature=0.05, seed=0)
    assert member.shape == (300, 3) and not member[:5].any()
    np.testing.assert_allclose(member[5:].sum(axis=1), 1, rtol=1e-6)
    # One cluster per planted kind (labels are arbitrary, the partition is not), and sure.
    top = member[5:].argmax(axis=1)
    pairs = set(zip(kind[5:].tolist(), top.tolist()))
    assert len(pairs) == 3 and len({k for k, _ in pairs}) == len({c for _, c in pairs}) == 3
    assert member[5:].max(axis=1).min() > 0.9
    # A higher temperature spreads the same clusters; the same call gives the same bytes.
    assert topic_clusters(content, 3, 1.0, seed=0)[5:].max(axis=1).mean() < 0.9
    assert topic_clusters(content, 3, 0.05, seed=0).tobytes() == member.tobytes()
    assert topic_clusters(content, 0, 0.05, seed=0).shape == (300, 0)


def test_audience_vectors_are_the_scaled_singular_vectors_after_the_first(graph):
    nu, ns = graph.num_nodes("user"), graph.num_nodes("streamer")
    a = np.zeros((nu, ns))
    for e in (graph.edges["gift"], graph.edges["watch"]):
        a[e.src, e.dst] = 1
    cu, cs = a.sum(axis=1), a.sum(axis=0)
    a = a / np.sqrt(np.maximum(cu, 1))[:, None] / np.sqrt(np.maximum(cs, 1))[None, :]
    _, sv, vt = np.linalg.svd(a)
    # dim >= ns: the iteration spans every direction, so it is exact.
    expected = _unit(vt[1:].T * sv[1:])
    expected[cs == 0] = 0
    got = streamer_audience(graph, dim=ns)
    assert got.dtype == np.float32 and got.shape == (ns, ns - 1)
    # Gram matrices: blind to each direction's sign, as cosines are.
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=1e-5)
    assert streamer_audience(graph, dim=8).tobytes() == streamer_audience(graph, dim=8).tobytes()


def test_audience_products_through_the_transposed_view_keep_the_bits():
    """streamer_audience multiplies by a.T, a CSC view, rather than a CSR copy of it: the
    same terms added in the same order, so the same bits (what made the switch free)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    a = sp.random(3000, 400, density=0.02, format="csr", random_state=4)
    a.data = rng.random(len(a.data)) / 7
    y = rng.standard_normal((3000, 9))
    assert np.array_equal(a.T @ y, a.T.tocsr() @ y)


def _planted_audience(kinds: int, n_users: int, n_streamers: int, seed: int
                      ) -> tuple[GraphData, np.ndarray]:
    """Users of a kind gift and watch streamers of their kind, one in five anywhere; no
    content at all."""
    rng = np.random.default_rng(seed)
    u_kind, s_kind = rng.integers(0, kinds, n_users), rng.integers(0, kinds, n_streamers)
    pairs = {(u, rng.choice(np.flatnonzero(s_kind == u_kind[u])) if rng.random() < 0.8
              else rng.integers(n_streamers)) for u in range(n_users) for _ in range(6)}
    src, dst = np.array(sorted(pairs)).T
    edges = {t: EdgeSet(src[i::2], dst[i::2], {}) for i, t in enumerate(("gift", "watch"))}
    return GraphData(None, {}, {"user": np.arange(n_users), "streamer": np.arange(n_streamers)},
                     {}, {}, {}, np.zeros((n_streamers, 0), bool), edges), s_kind


def test_audience_clusters_find_planted_kinds_without_content():
    graph, kind = _planted_audience(3, 600, 90, seed=1)
    basis = topic_vectors(graph, np.zeros((90, 0), np.float32), "both", 4)
    member = topic_clusters(basis, 3, temperature=0.05, seed=0)
    pairs = set(zip(kind.tolist(), member.argmax(axis=1).tolist()))
    assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    # Both bases side by side: each a unit block, the whole of unit length.
    content = _unit(np.random.default_rng(2).normal(size=(90, 4))).astype(np.float32)
    both = topic_vectors(graph, content, "both", 8)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(both[:, :4] * np.sqrt(2), content, atol=1e-5)
    assert topic_vectors(graph, content, "content", 8).tobytes() == content.tobytes()


def test_topic_features_sum_history_share_times_audience_share_over_clusters():
    member = np.array([[1, 0], [0.75, 0.25], [0.5, 0.5], [0, 1], [0, 0]], np.float32)
    gift = EdgeSet(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 4]))
    watch = EdgeSet(np.array([1, 1]), np.array([2, 3]))
    audience = np.array([3.0, 1.0, 2.0, 6.0, 5.0])
    topics = Topics(member, gift, watch, n_users=3, audience=audience)
    users = np.array([0, 0, 1, 2, 0])
    streamers = np.array([3, 1, 0, 2, 4])
    a = TOPIC_PSEUDO_COUNT
    mass = member.T @ audience                      # [4.75, 7.25]

    def share(history: list[int], c: int) -> float:  # soft count of the user's streamers
        return (sum(member[s, c] for s in history) + a / 2) / (len([s for s in history
                                                                    if member[s].any()]) + a)
    gifted = {0: [0, 1, 2], 1: [4], 2: []}
    watched = {0: [], 1: [2, 3], 2: []}
    want = {k: [] for k in ("topic_gift_share", "topic_watch_share", "topic_pop_share",
                            "topic_score")}
    for u, s in zip(users, streamers):
        if not member[s].any():                      # no content: every topic feature unknown
            for v in want.values():
                v.append(np.nan)
            continue
        aud = [member[s, c] * audience[s] / mass[c] for c in range(2)]
        want["topic_gift_share"].append(sum(share(gifted[u], c) * member[s, c] for c in range(2)))
        want["topic_watch_share"].append(sum(share(watched[u], c) * member[s, c]
                                             for c in range(2)))
        want["topic_pop_share"].append(sum(aud))
        want["topic_score"].append(sum(share(gifted[u], c) * aud[c] for c in range(2)))
    got = topics.features(users, streamers)
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(topics.score(users[:4], streamers[:4]),
                               want["topic_score"][:4], rtol=1e-5)
    # Without watch edges the watch share is unknown, not zero.
    assert np.isnan(Topics(member, gift, None, 3, audience).features(users, streamers)
                    ["topic_watch_share"]).all()


def test_topic_shares_are_the_same_bits_whatever_the_order_of_the_pairs():
    rng = np.random.default_rng(4)
    member = rng.dirichlet(np.ones(5), 30).astype(np.float32)
    gift = EdgeSet(rng.integers(0, 50, 400), rng.integers(0, 30, 400))
    topics = Topics(member, gift, None, n_users=50, audience=rng.random(30))
    grouped = np.repeat(rng.integers(0, 50, 40), rng.integers(1, 9, 40))   # runs of one user
    counts, total = topics.per_user["gift"]
    direct = (counts[grouped].astype(np.float64) + TOPIC_PSEUDO_COUNT / 5) \
        / (total[grouped, None].astype(np.float64) + TOPIC_PSEUDO_COUNT)
    assert topics.shares(grouped).tobytes() == direct.tobytes()
    perm = rng.permutation(len(grouped))
    assert topics.shares(grouped[perm]).tobytes() == direct[perm].tobytes()
    assert topics.shares(grouped[:0]).shape == (0, 5)


def test_pool_rank_equals_a_sort_of_each_row():
    rng = np.random.default_rng(1)
    row = np.sort(rng.integers(0, 50, 5000))
    value = rng.choice([-2.5, -0.0, 0.0, 0.1, 1e-30, 7.0, np.inf, -np.inf, np.nan], 5000)
    value = np.where(rng.random(5000) < 0.5, rng.normal(size=5000), value).astype(np.float32)
    expected = np.empty(len(row))
    for r in np.unique(row):
        idx = np.flatnonzero(row == r)
        # highest first, NaN last, ties (-0.0 == 0.0 too) in table order
        key = sorted(idx, key=lambda i: (np.isnan(value[i]), -np.nan_to_num(value[i], nan=0), i))
        expected[key] = np.arange(1, len(idx) + 1)
    np.testing.assert_array_equal(_rank_in_pool(row, value), expected)


def test_pair_index_finds_each_edge_row_in_any_query_order(graph):
    for kind in ("gift", "watch"):
        edges = graph.edges[kind]
        index = PairIndex(edges, graph.num_nodes("streamer"))
        rows = {(int(u), int(s)): i for i, (u, s) in enumerate(zip(edges.src, edges.dst))}
        rng = np.random.default_rng(8)
        pick = rng.integers(0, len(edges.src), 200)
        users = np.concatenate([edges.src[pick], rng.integers(0, graph.num_nodes("user"), 200)])
        streamers = np.concatenate([edges.dst[pick],
                                    rng.integers(0, graph.num_nodes("streamer"), 200)])
        order = rng.permutation(len(users))                 # unsorted, with repeats
        users, streamers = users[order], streamers[order]
        want = [rows.get((int(u), int(s)), -1) for u, s in zip(users, streamers)]
        assert index.find(users, streamers).tolist() == want
        assert (np.array(want) >= 0).sum() >= 200
        # A batch's pairs: a narrow range of users (the search runs in their slice of the
        # keys), including the first and last users' edges and pairs outside every edge.
        for first in (0, graph.num_nodes("user") // 2, graph.num_nodes("user") - 3):
            near = np.flatnonzero((edges.src >= first) & (edges.src < first + 3))
            users = np.concatenate([edges.src[near], np.full(5, first), [first + 2]])
            streamers = np.concatenate([edges.dst[near], rng.integers(0, 3, 5),
                                        [graph.num_nodes("streamer") - 1]])
            want = [rows.get((int(u), int(s)), -1) for u, s in zip(users, streamers)]
            assert index.find(users, streamers).tolist() == want
        assert index.find(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
