"""Tiny hand-written KuaiLive-layout raw tables for the graph build tests (exact expectations).

Day D = 2025-05-14, window 14 days: [2025-05-01, 2025-05-15) UTC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from graphbuild.schema import MODALITIES, RAW_TABLES

DATE = "2025-05-14"
DAY_MS = 86_400_000
END_MS = 1_747_267_200_000            # 2025-05-15T00:00Z
START_MS = END_MS - 14 * DAY_MS
DIMS = {"image": 4, "speech": 2, "comment": 2}


def ts(day: int, hour: int = 12) -> int:
    """Epoch ms of hour `hour` on day `day` of the window (day 13 = D)."""
    return START_MS + day * DAY_MS + hour * 3_600_000


def base_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Gifts of 6 users to 4 streamers, plus clicks, comments, likes, profiles and segments."""
    rng = np.random.default_rng(seed)
    gifts = [  # user, streamer, day, price
        (1, 10, 0, 5), (1, 10, 13, 7), (1, 11, 3, 2), (1, 12, 5, 1),
        (2, 10, 1, 3), (2, 11, 2, 4), (2, 12, 13, 9),
        (3, 10, 4, 1), (3, 11, 6, 6),
        (4, 11, 7, 2), (4, 12, 8, 3), (4, 13, 9, 4),
        (5, 13, 10, 8), (5, 12, 11, 1), (6, 13, 12, 2), (6, 10, 13, 3),
    ]
    gift = pd.DataFrame([(u, 100 + s, s, ts(d, 1 + i % 20), p) for i, (u, s, d, p)
                         in enumerate(gifts)], columns=RAW_TABLES["gift"].names)
    click = pd.DataFrame([(u, 100 + s, s, ts(d, 3), w) for u, s, d, w in
                          [(1, 10, 2, 1000), (1, 13, 4, 500), (7, 11, 13, 60), (2, 10, 5, 10)]],
                         columns=RAW_TABLES["click"].names)
    comment = pd.DataFrame([(1, 110, 10, ts(6, 4)), (3, 112, 12, ts(9, 5))],
                           columns=RAW_TABLES["comment"].names)
    like = pd.DataFrame([(2, 111, 11, ts(12, 6))], columns=RAW_TABLES["like"].names)
    users = pd.DataFrame({"user_id": range(1, 9)})
    for c in RAW_TABLES["user"].names[1:]:
        if RAW_TABLES["user"].field(c).type == pa.int64():
            users[c] = rng.integers(0, 3, len(users))
        else:
            users[c] = [f"{c}_{v}" for v in rng.integers(0, 3, len(users))]
    streamers = pd.DataFrame({"streamer_id": range(10, 15)})
    for c in RAW_TABLES["streamer"].names[1:]:
        if RAW_TABLES["streamer"].field(c).type == pa.int64():
            streamers[c] = rng.integers(0, 3, len(streamers))
        else:
            streamers[c] = [f"{c}_{v}" for v in rng.integers(0, 3, len(streamers))]
    room = pd.DataFrame([(20250501 + d, 100 + s, s, 1, ts(d, 0), ts(d, 5), "music", 1)
                         for s, d in [(10, 0), (10, 13), (11, 2), (12, 3)]],
                        columns=RAW_TABLES["room"].names)
    seg_rows = []
    for s, d in [(10, 0), (10, 13), (11, 2), (12, 3), (12, 4)]:
        row = {"streamer_id": s, "live_id": 100 + s, "timestamp": ts(d, 2)}
        for m in MODALITIES:
            row[f"{m}_emb"] = (None if (s == 11 and m == "speech")
                               else rng.normal(size=DIMS[m]).astype(np.float32).tolist())
        seg_rows.append(row)
    segments = pd.DataFrame(seg_rows, columns=RAW_TABLES["segments"].names)
    return {"gift": gift, "click": click, "comment": comment, "like": like, "user": users,
            "streamer": streamers, "room": room, "segments": segments}


def write_raw(folder: Path, tables: dict[str, pd.DataFrame], fmt: str = "parquet") -> Path:
    """Write tables as <folder>/<t>.csv or <folder>/<t>.parquet (schema types for Parquet)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if fmt == "csv":
            df = df.copy()
            for c in df.columns:
                if c.endswith("_emb"):
                    df[c] = [None if v is None else " ".join(repr(float(x)) for x in v)
                             for v in df[c]]
            df.to_csv(folder / f"{name}.csv", index=False)
        else:
            schema = RAW_TABLES[name]
            table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
            pq.write_table(table, folder / f"{name}.parquet")
    return folder
