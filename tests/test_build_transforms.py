"""Each graph transform on a real local Spark session against an independent pandas/numpy
computation on a small dataset."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from graphbuild import features, idmap, transforms
from tests.build_raw import DAY_MS, DIMS, END_MS, base_tables

HL = 7.0


@pytest.fixture(scope="module")
def tables():
    return base_tables()


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys).reset_index(drop=True)


def test_gift_edges_match_pandas(spark, tables):
    gift = tables["gift"]
    got = _sorted(transforms.gift_edges(spark.createDataFrame(gift), END_MS, HL).toPandas(),
                  ["user_id", "streamer_id"])
    g = gift.assign(w=2.0 ** (-(END_MS - gift.timestamp) / (HL * DAY_MS)))
    want = g.groupby(["user_id", "streamer_id"]).agg(
        total_price=("gift_price", "sum"), count=("gift_price", "size"),
        first_ts=("timestamp", "min"), last_ts=("timestamp", "max"), weight=("w", "sum"),
    ).reset_index()
    assert len(got) == len(want) == 15
    for c in ("total_price", "count", "first_ts", "last_ts"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    np.testing.assert_allclose(got.weight, want.weight, rtol=1e-12)
    # an event at the very end weighs 1, one half-life earlier 0.5
    one = transforms.gift_edges(spark.createDataFrame(pd.DataFrame(
        {"user_id": [1, 1], "streamer_id": [2, 2], "timestamp": [END_MS, END_MS - 7 * DAY_MS],
         "gift_price": [1, 1]})), END_MS, HL).first()
    assert one["weight"] == pytest.approx(1.5)


def test_watch_edges_and_activity_match_pandas(spark, tables):
    parts = {t: spark.createDataFrame(tables[t]) for t in ("click", "comment", "like")}
    events = transforms.watch_events(parts)
    weights = {"click": 1.0, "comment": 2.0, "like": 1.0}
    got = _sorted(transforms.watch_edges(events, END_MS, HL, weights).toPandas(),
                  ["user_id", "streamer_id"])
    frames = [tables[t].assign(kind=t) for t in ("click", "comment", "like")]
    ev = pd.concat(frames, ignore_index=True)
    ev["watch_ms"] = ev["watch_live_time"].fillna(0)
    ev["w"] = ev.kind.map(weights) * 2.0 ** (-(END_MS - ev.timestamp) / (HL * DAY_MS))
    want = ev.groupby(["user_id", "streamer_id"]).agg(
        n_clicks=("kind", lambda k: (k == "click").sum()),
        n_comments=("kind", lambda k: (k == "comment").sum()),
        n_likes=("kind", lambda k: (k == "like").sum()),
        watch_ms=("watch_ms", "sum"), last_ts=("timestamp", "max"), weight=("w", "sum"),
    ).reset_index()
    for c in ("user_id", "streamer_id", "n_clicks", "n_comments", "n_likes", "watch_ms",
              "last_ts"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    np.testing.assert_allclose(got.weight, want.weight, rtol=1e-12)

    gift = transforms.gift_edges(spark.createDataFrame(tables["gift"]), END_MS, HL, 14)
    watch = spark.createDataFrame(got)
    act = _sorted(transforms.user_activity(gift, watch, 14).toPandas(),
                  ["user_id"]).set_index("user_id")
    g = tables["gift"]
    assert act.loc[1, "n_gifts"] == (g.user_id == 1).sum() == 4
    assert act.loc[1, "total_spend"] == g[g.user_id == 1].gift_price.sum()
    assert act.loc[7, "n_gifts"] == 0 and act.loc[7, "n_clicks"] == 1
    all_ev = pd.concat([g[["user_id", "timestamp"]], ev[["user_id", "timestamp"]]])
    want_days = all_ev.assign(d=all_ev.timestamp // DAY_MS).groupby("user_id").d.nunique()
    np.testing.assert_array_equal(act.days_active.to_numpy(), want_days.sort_index().to_numpy())
    assert want_days.max() > 1
    # masks of more than one word (a 100-day window) count the same days
    long = transforms.user_activity(transforms.gift_edges(spark.createDataFrame(g), END_MS, HL,
                                                          100), None, 100).toPandas()
    want_g = g.assign(d=g.timestamp // DAY_MS).groupby("user_id").d.nunique()
    assert dict(zip(long.user_id, long.days_active)) == want_g.to_dict()
    st = transforms.streamer_activity(gift, watch).toPandas().set_index("streamer_id")
    assert st.loc[10, "n_gifters"] == g[g.streamer_id == 10].user_id.nunique()
    assert st.loc[10, "n_clicks"] == (tables["click"].streamer_id == 10).sum()
    first = pd.concat([g, ev]).groupby("streamer_id").timestamp.min()
    assert st.window_first_ts.to_dict() == first.to_dict()


def _swing_reference(edges: list[tuple[int, int]], alpha: float) -> dict[tuple[int, int], float]:
    items = {}
    for u, i in edges:
        items.setdefault(u, set()).add(i)
    score: dict[tuple[int, int], float] = {}
    for u, v in itertools.combinations(sorted(items), 2):
        common = items[u] & items[v]
        for i, j in itertools.permutations(sorted(common), 2):
            score[(i, j)] = score.get((i, j), 0.0) + 1.0 / (alpha + len(common))
    return score


def _random_edges(rng, n_users=30, n_items=12, per_user=4):
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, rng.integers(1, per_user + 1), replace=False):
            rows.append((u, int(i), float(rng.integers(1, 5))))
    return pd.DataFrame(rows, columns=["src", "dst", "weight"])


def test_swing_and_top_k_match_bruteforce(spark):
    edges = _random_edges(np.random.default_rng(1))
    capped = transforms.with_degree(transforms.cap_edges(spark.createDataFrame(edges), 100, 100))
    assert capped.count() == len(edges)              # caps above the degrees keep everything
    want = _swing_reference(list(zip(edges.src, edges.dst)), alpha=1.0)
    pairs = transforms.user_pairs(capped)
    # k=1 keeps the best neighbour of each user, and beyond it the pairs Swing needs
    shared = transforms.shared_pairs(transforms.user_neighbours(capped, 1))
    got = transforms.swing(pairs, shared, 1.0).toPandas()
    broadcast = transforms.swing(pairs, shared, 1.0, broadcast=True).toPandas()
    assert {(r.src, r.dst): r.score for r in broadcast.itertuples()} == pytest.approx(want)
    assert {(r.src, r.dst): r.score for r in got.itertuples()} == pytest.approx(want)

    top = transforms.top_k(spark.createDataFrame(got), 3).toPandas()
    ref = got.assign(tied=got.score.round(9))      # sums in another order tie to 1e-9
    ref = ref.sort_values(["src", "tied", "dst"], ascending=[True, False, True])
    ref = ref.groupby("src").head(3).assign(rank=lambda d: d.groupby("src").cumcount() + 1)
    merged = top.merge(ref, on=["src", "dst"], suffixes=("", "_ref"))
    assert len(merged) == len(top) == len(ref)
    assert (merged["rank"] == merged["rank_ref"]).all()
    assert top["rank"].max() == 3


def test_caps_bound_degrees_deterministically(spark):
    edges = pd.DataFrame({"src": [1, 1, 1, 2, 3, 4], "dst": [10, 11, 12, 10, 10, 10],
                          "weight": [1.0, 3.0, 3.0, 5.0, 1.0, 1.0]})
    got = transforms.cap_edges(spark.createDataFrame(edges), 2, 3).toPandas()
    pairs = set(zip(got.src, got.dst))
    # user 1 keeps its two heaviest (11, 12 tie at 3.0 -> both; 10 dropped)
    # streamer 10 keeps heaviest 3 users: 2 (5.0), then 1 and 3 and 4 tie at 1.0 -> 1, 3
    assert pairs == {(1, 11), (1, 12), (2, 10), (3, 10)}


def test_cosines_match_numpy(spark):
    edges = _random_edges(np.random.default_rng(2), n_users=15, n_items=8)
    df = spark.createDataFrame(edges)
    m = np.zeros((15, 8))
    m[edges.src, edges.dst] = 1.0
    users = transforms.user_neighbours(transforms.with_degree(df), 15).toPandas()  # all pairs
    overlap = m @ m.T
    assert all(r.co == overlap[r.src, r.dst] for r in users.itertuples())
    for got, mat in ((users, m),
                     (transforms.item_cosine(df).toPandas(), m.T)):
        norms = np.sqrt(mat.sum(1))
        sim = (mat @ mat.T) / np.outer(norms, norms)
        np.fill_diagonal(sim, 0)
        want = {(a, b): sim[a, b] for a, b in zip(*np.nonzero(sim))}
        assert {(r.src, r.dst): r.score for r in got.itertuples()} == pytest.approx(want)


def test_user_neighbours_keep_the_top_k_and_the_pairs_swing_needs(spark):
    edges = _random_edges(np.random.default_rng(3), n_users=25, n_items=6)
    capped = transforms.with_degree(spark.createDataFrame(edges))
    every = transforms.user_neighbours(capped, 100).toPandas()
    got = transforms.user_neighbours(capped, 2).toPandas()
    best = transforms.top_k(spark.createDataFrame(every[["src", "dst", "score"]]), 2).toPandas()
    top = got[got["rank"] <= 2]
    assert set(zip(top.src, top.dst, top["rank"])) == set(zip(best.src, best.dst, best["rank"]))
    rest = got[got["rank"] > 2]
    want = every[(every["rank"] > 2) & (every.co >= 2) & (every.src < every.dst)]
    assert len(rest) and set(zip(rest.src, rest.dst)) == set(zip(want.src, want.dst))
    shared = transforms.shared_pairs(spark.createDataFrame(got)).toPandas()
    assert len(shared) == ((every.co >= 2) & (every.src < every.dst)).sum()


def test_pooled_segments_are_recency_weighted_means(spark, tables):
    seg = tables["segments"]
    dims = {m: DIMS[m] for m in ("image", "speech")}
    got = transforms.pool_segments(spark.createDataFrame(seg), dims, END_MS, HL).toPandas()
    got = got.set_index("streamer_id")
    for m in dims:
        for s, grp in seg[seg[f"{m}_emb"].notna()].groupby("streamer_id"):
            w = 2.0 ** (-(END_MS - grp.timestamp.to_numpy()) / (HL * DAY_MS))
            want = (np.stack(grp[f"{m}_emb"].to_numpy()) * w[:, None]).sum(0) / w.sum()
            np.testing.assert_allclose(got.loc[s, f"{m}_emb"], want, rtol=1e-5)
    assert got.loc[11, "speech_emb"] is None            # all its speech vectors are null


def test_ids_are_stable_and_appended_in_raw_id_order(spark):
    day1 = idmap.assign_ids(spark.createDataFrame(pd.DataFrame({"user_id": [30, 10, 20, 10]})),
                            "user_id", None).toPandas()
    assert dict(zip(day1.user_id, day1.node_id)) == {10: 0, 20: 1, 30: 2}
    prev = spark.createDataFrame(day1[["node_id", "user_id"]])
    day2 = idmap.assign_ids(spark.createDataFrame(pd.DataFrame({"user_id": [25, 5, 20]})),
                            "user_id", prev).toPandas().set_index("user_id")
    assert day2.node_id.to_dict() == {10: 0, 20: 1, 30: 2, 5: 3, 25: 4}
    assert day2.active.to_dict() == {10: False, 20: True, 30: False, 5: True, 25: True}


def test_vocabularies_append_and_keep_width(spark):
    p1 = spark.createDataFrame(pd.DataFrame({"g": ["a", "b", "b", None], "h": ["x"] * 4}))
    v1 = features.fit_vocabularies(p1, ["g", "h"], slots=3)
    assert v1 == {"g": ["b", "a"], "h": ["x"]}            # most frequent first
    p2 = spark.createDataFrame(pd.DataFrame({"g": ["c", "a", None], "h": ["y", "z", "z"]}))
    v2 = features.fit_vocabularies(p2, ["g", "h"], slots=3, previous=v1)
    assert v2 == {"g": ["b", "a"], "h": ["x", "z"]}       # full: c goes to 'other'
    p2 = p2.withColumn("n", p2.g.isNull().cast("long") * 3)
    rows = p2.select("*", *features.slot_columns(v2, 3)).select(
        features.feature_vector(v2, 3, ["n"]).alias("f")).toPandas().f
    got = np.stack(rows.to_numpy())
    assert got.shape == (3, 7) == (3, len(features.feature_names(v2, 3, ["n"])))
    np.testing.assert_allclose(got, [[0, 0, 1, 0, 0, 1, 0],        # c -> other, y -> other
                                     [0, 1, 0, 0, 1, 0, 0],        # a, z
                                     [0, 0, 0, 0, 1, 0, math.log1p(3)]], rtol=1e-6)
