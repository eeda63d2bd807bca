"""Features of the fused ranking that are computed, not read: content vectors, the users'
content taste, the topic features and ranks within a node's pool, each against a brute-force
reference."""
from __future__ import annotations

import numpy as np
import pytest

from gie.expand.features import (TOPIC_PSEUDO_COUNT, Taste, Topics, _rank_in_pool,
                                 content_clusters, content_scores, streamer_content)
from graphbuild.dataset import EdgeSet, load_graph
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


def test_content_clusters_find_planted_kinds_and_repeat():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(3, 16)))
    kind = rng.integers(0, 3, 300)
    content = _unit(centres[kind] + 0.05 * rng.normal(size=(300, 16))).astype(np.float32)
    content[:5] = 0                                   # no content: no cluster
    got = content_clusters(content, 3, seed=0)
    assert (got[:5] == -1).all()
    # One cluster per planted kind (labels are arbitrary, the partition is not).
    pairs = set(zip(kind[5:].tolist(), got[5:].tolist()))
    assert len(pairs) == 3 and len({k for k, _ in pairs}) == len({c for _, c in pairs}) == 3
    np.testing.assert_array_equal(content_clusters(content, 3, seed=0), got)
    assert (content_clusters(content, 0, seed=0) == -1).all()


def test_topic_features_are_history_share_times_audience_share():
    cluster = np.array([0, 0, 1, 1, -1])
    gift = EdgeSet(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 4]))
    watch = EdgeSet(np.array([1, 1]), np.array([2, 3]))
    clicks = np.array([3.0, 1.0, 2.0, 6.0, 5.0])
    topics = Topics(cluster, gift, watch, n_users=3, audience=clicks)
    users = np.array([0, 0, 1, 2, 0])
    streamers = np.array([3, 1, 0, 2, 4])
    f = topics.features(users, streamers)
    a, n = TOPIC_PSEUDO_COUNT, 2
    gift_share = [(1 + a / n) / (3 + a), (2 + a / n) / (3 + a), (0 + a / n) / (0 + a),
                  (a / n) / a, np.nan]   # user 1's gift to a streamer without content: none
    watch_share = [(a / n) / a, (a / n) / a, (a / n) / (2 + a), (a / n) / a, np.nan]
    pop_share = [6 / 8, 1 / 4, 3 / 4, 2 / 8, np.nan]
    np.testing.assert_allclose(f["topic_gift_share"], gift_share, rtol=1e-6)
    np.testing.assert_allclose(f["topic_watch_share"], watch_share, rtol=1e-6)
    np.testing.assert_allclose(f["topic_pop_share"], pop_share, rtol=1e-6)
    np.testing.assert_allclose(f["topic_score"], np.multiply(gift_share, pop_share), rtol=1e-6)
    # Without watch edges the watch share is unknown, not zero.
    assert np.isnan(Topics(cluster, gift, None, 3, clicks).features(users, streamers)
                    ["topic_watch_share"]).all()


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
