"""A tiny work folder for evaluation tests: graph (planted topics), bundle, raw next-day data.

The bundle is hand-made: `U-S` is the user's gift history, `U-S-S` (and `explore`) the most
popular streamers of the user's topic it has not gifted, `U-U-S` the next ones, `merged`
history and `U-S-S`. Embeddings are topic one-hots. Raw gifts
and clicks of D+1 (and of the days before, for the downstream model) follow the topics, so a
good expansion must beat the baselines on them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gie.embeddings import write_embeddings
from gie.evaluate.rawdata import DAY_MS, day_start_ms
from gie.layout import WorkLayout
from graphbuild.dataset import load_graph
from graphbuild.schema import RAW_TABLES, expansion_schema
from tests.graph_fixtures import make_graph_dataset

DATE = "2025-05-11"


def write_raw(raw: Path, table: str, rows: pd.DataFrame) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    schema = RAW_TABLES[table]
    pq.write_table(pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False),
                   raw / f"{table}.parquet")


def write_bundle(bundle: Path, rows: list[tuple[int, str, list[int]]], user_raw: np.ndarray,
                 user_emb: np.ndarray, streamer_raw: np.ndarray, streamer_emb: np.ndarray) -> None:
    folder = bundle / "expansions" / "user"
    folder.mkdir(parents=True, exist_ok=True)
    cols = {"user_id": [r[0] for r in rows], "metapath": [r[1] for r in rows],
            "targets": [r[2] for r in rows],
            "scores": [list(np.linspace(1, 0, len(r[2]), dtype=np.float32)) for r in rows],
            "via": [list(r[2]) for r in rows],
            "source": [[r[1]] * len(r[2]) for r in rows]}
    pq.write_table(pa.Table.from_pydict(cols, schema=expansion_schema("user")),
                   folder / "part-00000.parquet")
    write_embeddings(bundle / "embeddings" / "user.parquet", "user", np.arange(len(user_raw)),
                     user_raw, user_emb)
    write_embeddings(bundle / "embeddings" / "streamer.parquet", "streamer",
                     np.arange(len(streamer_raw)), streamer_raw, streamer_emb)
    (bundle / "_SUCCESS").write_text("")


def make_work(tmp: Path, n_users: int = 300, n_streamers: int = 40, seed: int = 0,
              train_days: int = 3) -> tuple[Path, Path]:
    """Return (raw, work) with graph/bundle of DATE and raw gifts/clicks up to DATE+1."""
    rng = np.random.default_rng(seed)
    layout = WorkLayout(tmp / "work")
    end_ms = day_start_ms(DATE) + DAY_MS
    _, truth = make_graph_dataset(layout.graph(DATE), n_users=n_users, n_streamers=n_streamers,
                                  seed=seed, end_ms=end_ms)
    graph = load_graph(layout.graph(DATE), edge_types=("gift",))
    u_raw, s_raw = graph.raw_ids["user"], graph.raw_ids["streamer"]
    u_topic, s_topic = truth["user_topic"], truth["streamer_topic"]
    n_topics = int(s_topic.max()) + 1
    gift = graph.edges["gift"]
    popularity = np.bincount(gift.dst, minlength=n_streamers)

    rows = []
    for u in range(n_users):
        mine = gift.dst[gift.src == u]
        hist = mine[np.argsort(-gift.data["weight"][gift.src == u], kind="stable")].tolist()
        same = [s for s in np.argsort(-popularity, kind="stable") if s_topic[s] == u_topic[u]
                and s not in hist]
        uss, uus = same[:8], same[4:12]
        for mp, seq in (("U-S", hist), ("U-U-S", uus), ("U-S-S", uss), ("merged", hist + uss),
                        ("explore", uss)):
            if seq:
                rows.append((int(u_raw[u]), mp, [int(s_raw[s]) for s in seq]))
    user_emb = np.eye(n_topics)[u_topic] + rng.normal(0, 0.1, (n_users, n_topics))
    streamer_emb = np.eye(n_topics)[s_topic]
    write_bundle(layout.bundle(DATE), rows, u_raw, user_emb, s_raw, streamer_emb)

    # Clicks of the train days and of D+1; a same-topic click turns into a gift half the time.
    raw = tmp / "raw"
    clicks, gifts = [], []
    day0 = end_ms - train_days * DAY_MS
    for day in range(train_days + 1):
        for u in rng.choice(n_users, n_users // 2, replace=False):
            for _ in range(rng.integers(1, 4)):
                same = rng.random() < 0.6
                s = int(rng.choice(np.flatnonzero((s_topic == u_topic[u]) == same)))
                t = day0 + day * DAY_MS + int(rng.integers(0, DAY_MS - 7_200_000))
                live = s * 1000 + day
                clicks.append((u_raw[u], live, s_raw[s], t, 60_000))
                if same and rng.random() < 0.5:
                    gifts.append((u_raw[u], live, s_raw[s], t + int(rng.integers(0, 1_800_000)), 5))
    cols = ["user_id", "live_id", "streamer_id", "timestamp"]
    write_raw(raw, "click", pd.DataFrame(clicks, columns=cols + ["watch_live_time"]))
    write_raw(raw, "gift", pd.DataFrame(gifts, columns=cols + ["gift_price"]))
    return raw, layout.work
