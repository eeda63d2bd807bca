"""The one place for every table schema this project reads or writes.

Raw input follows the KuaiLive layout (see ../shared/reference/GIE.md); ids are int64 and
timestamps are epoch milliseconds (UTC). Output schemas are the contract between stages: the
Spark build writes them, training / expansion / evaluation read them, tests check them.
Bump the matching *_SCHEMA_VERSION when an output schema changes.
"""
from __future__ import annotations

import pyarrow as pa

# ---------------------------------------------------------------------------------------------
# Raw input (KuaiLive layout plus our `segments` extension)
# ---------------------------------------------------------------------------------------------
MODALITIES = ("image", "speech", "comment")
"""Segment modalities; the segment column for modality m is f"{m}_emb"."""

_INTERACTION = [
    ("user_id", pa.int64()),
    ("live_id", pa.int64()),
    ("streamer_id", pa.int64()),
    ("timestamp", pa.int64()),
]

_PROFILE_COMMON = [
    ("gender", pa.string()),
    ("age", pa.string()),
    ("country", pa.string()),
    ("device_brand", pa.string()),
    ("device_price", pa.string()),
    ("reg_timestamp", pa.int64()),
] + [(f"onehot_feat{i}", pa.int64()) for i in range(7)]

RAW_TABLES: dict[str, pa.Schema] = {
    "gift": pa.schema(_INTERACTION + [("gift_price", pa.int64())]),
    "click": pa.schema(_INTERACTION + [("watch_live_time", pa.int64())]),
    "comment": pa.schema(_INTERACTION),
    "like": pa.schema(_INTERACTION),
    "room": pa.schema([
        ("p_date", pa.int64()),               # yyyymmdd, as in KuaiLive
        ("live_id", pa.int64()),
        ("streamer_id", pa.int64()),
        ("live_type", pa.int64()),
        ("start_timestamp", pa.int64()),
        ("end_timestamp", pa.int64()),
        ("live_content_category", pa.string()),
        ("live_name_id", pa.int64()),
    ]),
    "user": pa.schema([("user_id", pa.int64())] + _PROFILE_COMMON + [
        ("fans_num", pa.string()),            # KuaiLive gives counts as ranges, e.g. "[10,100)"
        ("follow_num", pa.string()),
        ("is_live_streamer", pa.int64()),
    ]),
    "streamer": pa.schema([("streamer_id", pa.int64())] + _PROFILE_COMMON + [
        ("live_operation_tag", pa.string()),
        ("fans_user_num", pa.string()),
        ("first_live_timestamp", pa.int64()),
    ]),
    # Our extension: one row per live segment, one float vector per modality.
    # Parquet: list<float32>. CSV: the vector as one string of space-separated floats.
    "segments": pa.schema([
        ("streamer_id", pa.int64()),
        ("live_id", pa.int64()),
        ("timestamp", pa.int64()),
    ] + [(f"{m}_emb", pa.list_(pa.float32())) for m in MODALITIES]),
}
REQUIRED_TABLES = ("gift",)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user_id",),
    "streamer": ("streamer_id",),
    "room": ("live_id", "streamer_id", "start_timestamp"),    # n_lives counts rooms started in
}                                                            # the window
"""Tables that may lack some of their columns, and the ones they need: real profile tables
rarely carry every KuaiLive column. An absent column reads as nulls (its features are zeros)
and is listed in metadata.json. Every other table needs all of its columns."""


def required_columns(table: str) -> tuple[str, ...]:
    return REQUIRED_COLUMNS.get(table, tuple(RAW_TABLES[table].names))


INTERACTION_TABLES = ("gift", "click", "comment", "like")
PROFILE_CATEGORICAL = {
    "user": ["gender", "age", "country", "device_brand", "device_price", "fans_num", "follow_num"],
    "streamer": ["gender", "age", "country", "device_brand", "device_price",
                 "live_operation_tag", "fans_user_num"],
}
"""Profile columns encoded one-hot with a vocabulary persisted across dates (encoders.json)."""

# ---------------------------------------------------------------------------------------------
# Graph dataset: <graph>/dt=YYYY-MM-DD/ (written by graphbuild, read by gie)
# ---------------------------------------------------------------------------------------------
GRAPH_SCHEMA_VERSION = 1
NODE_TYPES = ("user", "streamer")
RAW_ID_COLUMN = {"user": "user_id", "streamer": "streamer_id"}

GRAPH_NODES: dict[str, pa.Schema] = {
    # Every id ever mapped is present (ids are stable across dates); `active` marks ids with
    # events in the current window. `features` is the dense numeric input to the model.
    "user": pa.schema([
        ("node_id", pa.int64()),
        ("user_id", pa.int64()),
        ("active", pa.bool_()),
        ("n_gifts", pa.int64()),
        ("n_clicks", pa.int64()),
        ("n_comments", pa.int64()),
        ("n_likes", pa.int64()),
        ("total_spend", pa.float64()),
        ("days_active", pa.int64()),
        ("features", pa.list_(pa.float32())),
    ]),
    "streamer": pa.schema([
        ("node_id", pa.int64()),
        ("streamer_id", pa.int64()),
        ("active", pa.bool_()),
        ("first_seen_ts", pa.int64()),        # first event ever seen for this streamer (ms)
        ("n_gifts", pa.int64()),              # gifts received in the window
        ("n_gifters", pa.int64()),
        ("total_received", pa.float64()),
        ("n_clicks", pa.int64()),
    ] + [
        col for m in MODALITIES
        for col in ((f"{m}_emb", pa.list_(pa.float32())), (f"has_{m}", pa.bool_()))
    ] + [
        ("features", pa.list_(pa.float32())),
    ]),
}

# Edge types: name -> (source node type, destination node type, schema).
GRAPH_EDGES: dict[str, tuple[str, str, pa.Schema]] = {
    "gift": ("user", "streamer", pa.schema([
        ("src", pa.int64()), ("dst", pa.int64()),
        ("total_price", pa.float64()),
        ("count", pa.int64()),
        ("first_ts", pa.int64()),
        ("last_ts", pa.int64()),
        ("weight", pa.float64()),             # time-decayed, see BuildConfig.half_life_days
    ])),
    "watch": ("user", "streamer", pa.schema([
        ("src", pa.int64()), ("dst", pa.int64()),
        ("n_clicks", pa.int64()),
        ("n_comments", pa.int64()),
        ("n_likes", pa.int64()),
        ("watch_ms", pa.int64()),
        ("last_ts", pa.int64()),
        ("weight", pa.float64()),
    ])),
    "s2s": ("streamer", "streamer", pa.schema([
        ("src", pa.int64()), ("dst", pa.int64()),
        ("score", pa.float64()),
        ("rank", pa.int32()),                 # 1 = most similar to src
    ])),
    "u2u": ("user", "user", pa.schema([
        ("src", pa.int64()), ("dst", pa.int64()),
        ("score", pa.float64()),
        ("rank", pa.int32()),
    ])),
}
REQUIRED_EDGES = ("gift",)

REJECTED = pa.schema([
    ("table", pa.string()),
    ("reason", pa.string()),
    ("record", pa.string()),                  # the raw row as JSON, so nothing is lost
])

# ---------------------------------------------------------------------------------------------
# Embeddings: <model>/embeddings/{user,streamer}.parquet (or a folder of part files)
# ---------------------------------------------------------------------------------------------
EMBEDDINGS_SCHEMA_VERSION = 1


def embedding_schema(node_type: str) -> pa.Schema:
    return pa.schema([
        ("node_id", pa.int64()),
        (RAW_ID_COLUMN[node_type], pa.int64()),
        ("embedding", pa.list_(pa.float32())),
    ])


# ---------------------------------------------------------------------------------------------
# Bundle: <bundle>/dt=YYYY-MM-DD/expansions/{user,streamer}/
# ---------------------------------------------------------------------------------------------
BUNDLE_SCHEMA_VERSION = 2
METAPATHS = {
    "user": ("U-S", "U-U-S", "U-S-S"),
    "streamer": ("S-U", "S-S-U", "S-U-U"),
}
"""The paper's six metapaths (docs/BUNDLE.md "Scoring")."""
SOURCES = {
    "user": METAPATHS["user"] + ("U-W-S", "U-W-S-S", "U-knn-S", "U-s2s-S"),
    "streamer": METAPATHS["streamer"] + ("S-W-U", "S-S-W-U", "S-knn-U", "S-u2u-U"),
}
"""Every candidate source published as a sequence: the six metapaths, the watched-never-gifted
hops (W), the cross-type embedding hop (knn) and the similar hop over the build's edges alone."""
PRIORS = {"user": ("POP", "NEW"), "streamer": ("ACT",)}
"""Candidate sources of the fused ranking only (one list for every node, so not published):
popular streamers, fresh streamers, the most active gifters."""
TOPIC = "TOPIC"
"""Candidate source of the fused ranking only, on both sides: the streamers of a user's likeliest
content clusters by audience share, the likeliest gifters of a streamer's cluster."""
MERGED, EXPLORE = "merged", "explore"
FUSED = (MERGED, EXPLORE)
SEQUENCES = {t: SOURCES[t] + FUSED for t in SOURCES}


def expansion_schema(node_type: str) -> pa.Schema:
    return pa.schema([
        (RAW_ID_COLUMN[node_type], pa.int64()),
        ("metapath", pa.string()),            # a source of SOURCES, or merged / explore
        ("targets", pa.list_(pa.int64())),    # raw ids, best first
        ("scores", pa.list_(pa.float32())),
        ("via", pa.list_(pa.int64())),        # raw id of the node each target came through
        ("source", pa.list_(pa.string())),    # the source that ranked each target best
    ])
