"""The nightly fit's training sets: a night learned from searches only the kNN rows its label
nodes' walks read, and gets the same training sets as with every node's kNN (up to the last
bits of a similarity)."""
from __future__ import annotations

import numpy as np
import pytest

from gie.expand.config import ExpandConfig, MetapathConfig
from gie.expand.learn import SET_FIELDS, label_groups, training_sets
from gie.expand.run import KNN_STEP, _load_inputs, _neighbours, _view
from gie.expand.sources import Relations, similar_rows_read
from graphbuild.schema import EXPLORE, MERGED, NODE_TYPES
from tests.expand_helpers import make_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("learn"))


def test_training_sets_need_only_the_knn_rows_their_walks_read(inputs):
    graph, emb_dir, _ = inputs
    data, emb = _load_inputs(graph, emb_dir)
    cfg = ExpandConfig(batch_size=16)
    for name in cfg.metapaths:                    # narrow hops: truncation decides the rows
        cfg.metapaths[name] = MetapathConfig(fanout=(3, 4))
    cfg.fusion.learn.max_groups = 25              # sampled label nodes
    rng = np.random.default_rng(4)
    users = rng.integers(0, data.num_nodes("user"), 300)
    streamers = rng.integers(0, data.num_nodes("streamer"), 300)

    read = similar_rows_read(Relations(data, {}, cfg.graph_weight, {}, cfg.fusion.fresh_days),
                             cfg, label_groups(users, streamers, cfg, seed=7))
    assert 0 < len(read["UU"]) < data.num_nodes("user")
    sets = []
    for only in (None, {t: read[KNN_STEP[t]] for t in NODE_TYPES}):
        built, knn = _neighbours(data, emb, cfg, 0, {}, only=only)
        view = _view(data, emb, {t: b.index for t, b in built.items()},
                     {t: b.info for t, b in built.items()}, knn, cfg)
        sets.append(training_sets(view, cfg, users, streamers, seed=7))
    for t in NODE_TYPES:
        for kind in (MERGED, EXPLORE):
            full, part = _kind(sets[0][t], kind), _kind(sets[1][t], kind)
            assert len(full.y) > 0 and full.y.sum() > 0
            # Faiss scores a query batch with BLAS: another batch can move the last bits.
            np.testing.assert_allclose(full.X, part.X, rtol=1e-6, equal_nan=True)
            np.testing.assert_array_equal(full.y, part.y)
            np.testing.assert_array_equal(full.group, part.group)


def _kind(merged, kind: str):
    return merged if kind == MERGED else merged.explore()


def _labels(data, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random label pairs (repeats allowed): 300 users and 300 streamers."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, data.num_nodes("user"), 300),
            rng.integers(0, data.num_nodes("streamer"), 300))


def _assert_same_bytes(a, b, where) -> None:
    assert a.names == b.names
    for f in SET_FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), (*where, f)


def test_saved_sets_load_back_equal(inputs, tmp_path):
    """The file stores the merged rows once: the explore rows (merged rows without a gift
    edge) and both label counts come back the same bytes."""
    from gie.expand.learn import load_sets, save_sets
    graph, emb_dir, _ = inputs
    data, emb = _load_inputs(graph, emb_dir)
    cfg = ExpandConfig(batch_size=16)
    users, streamers = _labels(data, 5)
    built, knn = _neighbours(data, emb, cfg, 0, {})
    view = _view(data, emb, {t: b.index for t, b in built.items()},
                 {t: b.info for t, b in built.items()}, knn, cfg)
    sets = training_sets(view, cfg, users, streamers, seed=3)
    save_sets(sets, tmp_path / "night.npz")
    back = load_sets(tmp_path / "night.npz")
    for t in NODE_TYPES:
        assert sets[t].history.any() and not sets[t].history.all()
        for kind in (MERGED, EXPLORE):
            _assert_same_bytes(_kind(sets[t], kind), _kind(back[t], kind), (t, kind))


def test_both_node_types_built_side_by_side_equal_one_after_the_other(inputs):
    """training_sets builds the two node types in two threads that share the view's caches:
    the same bytes as each alone on a fresh view (streamer side first, the other order)."""
    from gie.expand.learn import _type_sets
    graph, emb_dir, _ = inputs
    data, emb = _load_inputs(graph, emb_dir)
    cfg = ExpandConfig(batch_size=8)
    users, streamers = _labels(data, 6)
    built, knn = _neighbours(data, emb, cfg, 0, {})

    def view():
        return _view(data, emb, {t: b.index for t, b in built.items()},
                     {t: b.info for t, b in built.items()}, knn, cfg)

    side_by_side = training_sets(view(), cfg, users, streamers, seed=3)
    fresh, groups = view(), label_groups(users, streamers, cfg, seed=3)
    for t in reversed(NODE_TYPES):
        alone = _type_sets(fresh, cfg, t, users, streamers, groups[t])
        for kind in (MERGED, EXPLORE):
            assert len(_kind(side_by_side[t], kind).y) > 0
            _assert_same_bytes(_kind(side_by_side[t], kind), _kind(alone, kind), (t, kind))


def test_the_set_cache_key_follows_the_inputs_and_the_code(inputs, tmp_path, monkeypatch):
    from gie.expand import learn
    from gie.expand.learn import SetCache
    graph, emb_dir, _ = inputs
    cache = SetCache(tmp_path, ExpandConfig(), seed=0)
    key = cache.key(graph, emb_dir, graph, 1.0)
    assert cache.key(graph, emb_dir, graph, 1.0) == key
    assert cache.key(graph, emb_dir, graph, 2.0) != key
    monkeypatch.setattr(learn, "source_code", lambda: "other source")   # e.g. a feature changed
    assert cache.key(graph, emb_dir, graph, 1.0) != key


def test_a_kept_view_gives_the_same_training_sets(inputs, tmp_path, monkeypatch, caplog):
    """What the next night's learning reads from `_views/` is what it would build: the same
    training sets, bit for bit. The key follows the inputs, the settings and the code; an
    unreadable part is a miss; keeping a night removes older nights' files."""
    import logging

    from gie.expand import viewcache
    from gie.expand.features import streamer_vectors_of
    from gie.expand.run import night_sets
    from gie.expand.sources import base_relations
    from gie.expand.viewcache import ViewCache
    from graphbuild.dataset import load_graph

    graph, emb_dir, _ = inputs
    data, emb = _load_inputs(graph, emb_dir)
    cfg = ExpandConfig(batch_size=16)
    date = data.metadata["date"]
    cache = ViewCache(tmp_path / "views", cfg)
    assert cache.get(date, graph, emb_dir) == (None, None)
    fu = cfg.fusion
    rels = base_relations(data)
    vecs = streamer_vectors_of(data, fu.content_smooth_k, fu.content_reference,
                               fu.topic_clusters, fu.topic_temperature, fu.topic_basis,
                               fu.topic_audience_dim)

    def share() -> tuple:
        return cache.shared(date, data, graph, emb_dir, cfg, tmp_path / "claims", 0, 1, 60)

    for base, vectors in (share(), cache.get(date, graph, emb_dir)):   # built, then read
        for step, rel in rels.items():
            for f in ("indptr", "indices", "data"):
                np.testing.assert_array_equal(getattr(base[step], f), getattr(rel, f))
                assert getattr(base[step], f).dtype == getattr(rel, f).dtype
        for built, kept in zip(vecs, vectors):
            np.testing.assert_array_equal(built, kept)
            assert built.dtype == kept.dtype

    later = load_graph(graph, edge_types=("gift",), node_features=False)
    fresh = night_sets(graph, emb_dir, later, 1.0, cfg, 0)[0]
    with caplog.at_level(logging.INFO, logger="gie.expand.viewcache"):
        read = night_sets(graph, emb_dir, later, 1.0, cfg, 0, cache)[0]
    assert "relations and vectors read from" in caplog.text
    for t in NODE_TYPES:
        _assert_same_bytes(fresh[t], read[t], t)

    other = cfg.model_copy(deep=True)
    other.fusion.topic_clusters += 1
    assert ViewCache(tmp_path / "views", other).get(date, graph, emb_dir) == (None, None)
    monkeypatch.setattr(viewcache, "source_code", lambda: "other source")
    assert cache.get(date, graph, emb_dir) == (None, None)
    monkeypatch.undo()
    (part,) = (tmp_path / "views").glob("*.vectors.npz")
    part.write_bytes(part.read_bytes()[:1000])
    base, vectors = cache.get(date, graph, emb_dir)        # unreadable: built again
    assert base is not None and vectors is None

    for p in (tmp_path / "views").glob("*.npz"):
        p.unlink()
    for d in ("2025-05-08", "2025-05-09", "2025-05-10", "2025-05-11"):
        (tmp_path / "views" / f"dt={d}_0123.relations.npz").write_bytes(b"")
    date = "2025-05-10"
    share()
    # This night (its other key removed), the night before it (a rerun reads it), and newer.
    assert sorted(p.name[3:].partition("_")[0] for p in (tmp_path / "views").glob("*.npz")) \
        == ["2025-05-09", "2025-05-10", "2025-05-10", "2025-05-11"]
    assert all(x is not None for x in cache.get("2025-05-10", graph, emb_dir))
