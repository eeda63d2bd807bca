"""A small planted-topic graph dataset written directly in the published contract.

Used by stage tests that need a graph without running Spark (training, expansion). It follows
graphbuild.schema exactly and is checked by graphbuild.dataset.load_graph like any build.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graphbuild.schema import GRAPH_EDGES, GRAPH_NODES, GRAPH_SCHEMA_VERSION, MODALITIES

DAY_MS = 86_400_000


def _vectors(mat: np.ndarray) -> pa.Array:
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1]).cast(
        pa.list_(pa.float32()))


def _write(folder: Path, schema: pa.Schema, columns: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [columns[f.name] if isinstance(columns[f.name], pa.Array)
              else pa.array(columns[f.name], f.type) for f in schema]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), folder / "part-00000.parquet")


def _topk_similar(members: list[set[int]], k: int) -> tuple[list, list, list, list]:
    """Cosine over shared neighbours, top-k per node (plain and slow: fixtures are tiny)."""
    src, dst, score, rank = [], [], [], []
    for a, sa in enumerate(members):
        sims = []
        for b, sb in enumerate(members):
            if a != b and sa and sb:
                inter = len(sa & sb)
                if inter:
                    sims.append((inter / np.sqrt(len(sa) * len(sb)), b))
        sims.sort(key=lambda t: (-t[0], t[1]))
        for r, (s, b) in enumerate(sims[:k], start=1):
            src.append(a), dst.append(b), score.append(s), rank.append(r)
    return src, dst, score, rank


def make_graph_dataset(out: str | Path, n_users: int = 400, n_streamers: int = 60,
                       n_topics: int = 4, days: int = 7, seed: int = 0,
                       dims: dict[str, int] | None = None, end_ms: int = 1_747_008_000_000,
                       raw_offset: int = 1000) -> tuple[Path, dict]:
    """Write a published dataset to `out`; return (path, truth) with truth = topics per node."""
    rng = np.random.default_rng(seed)
    dims = dims or {"image": 8, "speech": 4, "comment": 4}
    out = Path(out)
    start_ms = end_ms - days * DAY_MS
    u_topic = rng.integers(0, n_topics, n_users)
    s_topic = np.arange(n_streamers) % n_topics
    popularity = 1.0 / np.arange(1, n_streamers + 1) ** 0.8
    rng.shuffle(popularity)

    gifts: dict[tuple[int, int], list[int]] = {}
    for u in range(n_users):
        if rng.random() > 0.6:
            continue
        for _ in range(rng.integers(1, 6)):
            same = rng.random() < 0.85
            pool = np.flatnonzero((s_topic == u_topic[u]) == same)
            p = popularity[pool] / popularity[pool].sum()
            s = int(rng.choice(pool, p=p))
            gifts.setdefault((u, s), []).append(int(rng.integers(start_ms, end_ms)))
    pairs = sorted(gifts)
    g_src = np.array([p[0] for p in pairs]); g_dst = np.array([p[1] for p in pairs])
    g_cnt = np.array([len(gifts[p]) for p in pairs])
    g_first = np.array([min(gifts[p]) for p in pairs]); g_last = np.array([max(gifts[p]) for p in pairs])
    g_price = g_cnt * rng.lognormal(2.0, 1.0, len(pairs)).round(0).clip(1)
    g_weight = np.array([np.exp2(-(end_ms - np.array(gifts[p])) / (7 * DAY_MS)).sum()
                         for p in pairs])

    w_pairs = set()
    for u in range(n_users):
        for s in rng.choice(np.flatnonzero(s_topic == u_topic[u]), 3):
            w_pairs.add((u, int(s)))
    w_pairs |= set(pairs)
    w_pairs = sorted(w_pairs)
    nw = len(w_pairs)

    s_members = [set(g_src[g_dst == s].tolist()) for s in range(n_streamers)]
    u_members = [set(g_dst[g_src == u].tolist()) for u in range(n_users)]
    s2s = _topk_similar(s_members, 5)
    u2u = _topk_similar(u_members, 5)

    n_gifts = np.bincount(g_src, weights=g_cnt, minlength=n_users).astype(np.int64)
    user_feat = np.concatenate([np.eye(3)[rng.integers(0, 3, n_users)],
                                np.log1p(n_gifts)[:, None]], axis=1)
    s_gifts = np.bincount(g_dst, weights=g_cnt, minlength=n_streamers).astype(np.int64)
    centroids = {m: rng.normal(size=(n_topics, d)) for m, d in dims.items()}
    has = {m: rng.random(n_streamers) < 0.9 for m in MODALITIES}
    mod = {m: np.where(has[m][:, None], centroids[m][s_topic] + rng.normal(
        scale=0.8, size=(n_streamers, dims[m])), 0.0) for m in MODALITIES}

    _write(out / "nodes" / "user", GRAPH_NODES["user"], {
        "node_id": np.arange(n_users), "user_id": np.arange(n_users) + raw_offset,
        "active": np.ones(n_users, bool), "n_gifts": n_gifts,
        "n_clicks": np.zeros(n_users, np.int64), "n_comments": np.zeros(n_users, np.int64),
        "n_likes": np.zeros(n_users, np.int64),
        "total_spend": np.bincount(g_src, weights=g_price, minlength=n_users),
        "days_active": np.ones(n_users, np.int64), "features": _vectors(user_feat)})
    s_cols = {
        "node_id": np.arange(n_streamers), "streamer_id": np.arange(n_streamers) + 10 * raw_offset,
        "active": np.ones(n_streamers, bool), "first_seen_ts": np.full(n_streamers, start_ms),
        "n_gifts": s_gifts, "n_gifters": np.array([len(m) for m in s_members]),
        "total_received": np.bincount(g_dst, weights=g_price, minlength=n_streamers),
        "n_clicks": np.zeros(n_streamers, np.int64),
        "features": _vectors(np.log1p(s_gifts)[:, None])}
    for m in MODALITIES:
        s_cols[f"{m}_emb"], s_cols[f"has_{m}"] = _vectors(mod[m]), has[m]
    _write(out / "nodes" / "streamer", GRAPH_NODES["streamer"], s_cols)

    _write(out / "edges" / "gift", GRAPH_EDGES["gift"][2], {
        "src": g_src, "dst": g_dst, "total_price": g_price, "count": g_cnt,
        "first_ts": g_first, "last_ts": g_last, "weight": g_weight})
    _write(out / "edges" / "watch", GRAPH_EDGES["watch"][2], {
        "src": [p[0] for p in w_pairs], "dst": [p[1] for p in w_pairs],
        "n_clicks": np.ones(nw, np.int64), "n_comments": np.zeros(nw, np.int64),
        "n_likes": np.zeros(nw, np.int64), "watch_ms": np.full(nw, 60_000),
        "last_ts": np.full(nw, end_ms - 1), "weight": np.ones(nw)})
    for name, (src, dst, score, rank) in (("s2s", s2s), ("u2u", u2u)):
        _write(out / "edges" / name, GRAPH_EDGES[name][2],
               {"src": src, "dst": dst, "score": score, "rank": rank})

    meta = {"schema_version": GRAPH_SCHEMA_VERSION, "date": "fixture",
            "window": {"start_ms": start_ms, "end_ms": end_ms},
            "counts": {"nodes": {"user": n_users, "streamer": n_streamers},
                       "edges": {"gift": len(pairs), "watch": nw, "s2s": len(s2s[0]),
                                 "u2u": len(u2u[0])}},
            "features": {"user": ["profile_a", "profile_b", "profile_c", "log_n_gifts"],
                         "streamer": ["log_n_gifts"], "modality_dims": dims}}
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    (out / "_SUCCESS").write_text("")
    return out, {"user_topic": u_topic, "streamer_topic": s_topic}
