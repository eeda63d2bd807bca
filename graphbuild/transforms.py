"""The graph transforms: pure functions DataFrame -> DataFrame on validated, in-window events.

Each is checked in tests against an independent pandas computation. Time decay is
2 ** (-(end_ms - ts) / half_life): an event at the end of the window weighs 1, one half-life
earlier 0.5. Similarities run on node ids (columns src = user, dst = streamer).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

DAY_MS = 86_400_000


def decay(ts: Column, end_ms: int, half_life_days: float) -> Column:
    return F.pow(F.lit(2.0), -(F.lit(end_ms) - ts) / F.lit(half_life_days * DAY_MS))


def gift_edges(gifts: DataFrame, end_ms: int, half_life_days: float) -> DataFrame:
    """One row per (user, streamer): total price, count, first/last time, decayed weight."""
    return gifts.groupBy("user_id", "streamer_id").agg(
        F.sum(F.col("gift_price").cast("double")).alias("total_price"),
        F.count(F.lit(1)).alias("count"),
        F.min("timestamp").alias("first_ts"),
        F.max("timestamp").alias("last_ts"),
        F.sum(decay(F.col("timestamp"), end_ms, half_life_days)).alias("weight"))


def watch_events(tables: dict[str, DataFrame]) -> DataFrame | None:
    """click/comment/like rows as one (user_id, streamer_id, timestamp, kind, watch_ms) table."""
    parts = [df.select("user_id", "streamer_id", "timestamp", F.lit(kind).alias("kind"),
                       (F.coalesce(F.col("watch_live_time"), F.lit(0)) if kind == "click"
                        else F.lit(0)).cast("long").alias("watch_ms"))
             for kind, df in tables.items() if kind in ("click", "comment", "like")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def watch_edges(events: DataFrame, end_ms: int, half_life_days: float,
                weights: dict[str, float]) -> DataFrame:
    """Weak user->streamer edges: counts per kind, watch time, decayed weighted event count."""
    kind = F.col("kind")
    kind_weight = F.coalesce(*[F.when(kind == k, F.lit(float(w))) for k, w in weights.items()],
                             F.lit(0.0))
    return events.groupBy("user_id", "streamer_id").agg(
        F.sum((kind == "click").cast("long")).alias("n_clicks"),
        F.sum((kind == "comment").cast("long")).alias("n_comments"),
        F.sum((kind == "like").cast("long")).alias("n_likes"),
        F.sum("watch_ms").alias("watch_ms"),
        F.max("timestamp").alias("last_ts"),
        F.sum(kind_weight * decay(F.col("timestamp"), end_ms, half_life_days)).alias("weight"))


def days_active(events: DataFrame) -> DataFrame:
    """Distinct UTC days with any event, per user (events: user_id, timestamp)."""
    return (events.select("user_id", F.floor(F.col("timestamp") / DAY_MS).alias("day"))
            .groupBy("user_id").agg(F.countDistinct("day").alias("days_active")))


USER_STATS = {"n_gifts": "long", "n_clicks": "long", "n_comments": "long", "n_likes": "long",
              "total_spend": "double", "days_active": "long"}
STREAMER_STATS = {"n_gifts": "long", "n_gifters": "long", "total_received": "double",
                  "n_clicks": "long"}


def _zero_filled(df: DataFrame, key: str, types: dict[str, str]) -> DataFrame:
    return df.select(key, *[
        (F.coalesce(F.col(c), F.lit(0)) if c in df.columns else F.lit(0)).cast(t).alias(c)
        for c, t in types.items()])


def user_activity(gifts: DataFrame, watch: DataFrame | None, days: DataFrame) -> DataFrame:
    """Per-user statistics from gift edges, watch edges and active days (0 when absent)."""
    out = gifts.groupBy("user_id").agg(F.sum("count").alias("n_gifts"),
                                       F.sum("total_price").alias("total_spend"))
    if watch is not None:
        out = out.join(watch.groupBy("user_id").agg(
            *[F.sum(c).alias(c) for c in ("n_clicks", "n_comments", "n_likes")]), "user_id", "full")
    return _zero_filled(out.join(days, "user_id", "full"), "user_id", USER_STATS)


def streamer_activity(gifts: DataFrame, watch: DataFrame | None) -> DataFrame:
    """Per-streamer statistics: gifts and spend received, distinct gifters, clicks received."""
    out = gifts.groupBy("streamer_id").agg(F.sum("count").alias("n_gifts"),
                                           F.count(F.lit(1)).alias("n_gifters"),
                                           F.sum("total_price").alias("total_received"))
    if watch is not None:
        out = out.join(watch.groupBy("streamer_id").agg(F.sum("n_clicks").alias("n_clicks")),
                       "streamer_id", "full")
    return _zero_filled(out, "streamer_id", STREAMER_STATS)


def pool_segments(segments: DataFrame, modality: str, end_ms: int,
                  half_life_days: float) -> DataFrame:
    """Recency-weighted mean of one modality's segment vectors per streamer.

    Vectors are summed element by element with posexplode + groupBy (Spark has no array-sum
    aggregate); streamers without any vector of this modality are absent from the result.
    """
    col = f"{modality}_emb"
    w = decay(F.col("timestamp"), end_ms, half_life_days)
    flat = segments.filter(F.col(col).isNotNull()).select(
        "streamer_id", w.alias("w"), F.posexplode(col).alias("pos", "x"))
    per_pos = flat.groupBy("streamer_id", "pos").agg(
        (F.sum(F.col("w") * F.col("x")) / F.sum("w")).alias("x"))
    return per_pos.groupBy("streamer_id").agg(
        F.array_sort(F.collect_list(F.struct("pos", "x"))).alias("v")).select(
        "streamer_id", F.transform("v", lambda e: e["x"]).cast(
            ArrayType(FloatType(), True)).alias(col))


def cap_edges(edges: DataFrame, max_items_per_user: int, max_users_per_item: int) -> DataFrame:
    """Bound pair generation: each user keeps its heaviest `max_items_per_user` streamers and
    each streamer its heaviest `max_users_per_item` users (ties by id), both on the input edges.
    """
    by_user = Window.partitionBy("src").orderBy(F.desc("weight"), F.asc("dst"))
    by_item = Window.partitionBy("dst").orderBy(F.desc("weight"), F.asc("src"))
    return (edges.select("src", "dst", "weight")
            .withColumn("_ru", F.row_number().over(by_user))
            .withColumn("_ri", F.row_number().over(by_item))
            .filter((F.col("_ru") <= max_items_per_user) & (F.col("_ri") <= max_users_per_item))
            .select("src", "dst"))


def _user_pairs(capped: DataFrame) -> DataFrame:
    """(u, v, i) for every unordered user pair u < v who both gifted streamer i."""
    a, b = capped.alias("a"), capped.alias("b")
    return a.join(b, F.col("a.dst") == F.col("b.dst")).filter(F.col("a.src") < F.col("b.src")) \
        .select(F.col("a.src").alias("u"), F.col("b.src").alias("v"), F.col("a.dst").alias("i"))


def swing(capped: DataFrame, alpha: float) -> DataFrame:
    """Swing streamer-streamer scores: for each unordered user pair (u, v) who both gifted i and
    j, add 1 / (alpha + |I_u & I_v|). Returns (src=i, dst=j, score), both directions."""
    pairs = _user_pairs(capped)
    overlap = pairs.groupBy("u", "v").agg(F.count(F.lit(1)).alias("ov")).filter("ov >= 2")
    weighted = pairs.join(overlap, ["u", "v"]).select(
        "u", "v", "i", (1.0 / (F.lit(alpha) + F.col("ov"))).alias("w"))
    x, y = weighted.alias("x"), weighted.alias("y")
    return (x.join(y, (F.col("x.u") == F.col("y.u")) & (F.col("x.v") == F.col("y.v"))
                   & (F.col("x.i") != F.col("y.i")))
            .groupBy(F.col("x.i").alias("src"), F.col("y.i").alias("dst"))
            .agg(F.sum("x.w").alias("score")))


def _cosine(capped: DataFrame, node: str, other: str) -> DataFrame:
    """Cosine similarity of `node`s over their sets of `other`s, both directions."""
    deg = capped.groupBy(node).agg(F.count(F.lit(1)).alias("deg"))
    a, b = capped.alias("a"), capped.alias("b")
    co = (a.join(b, F.col(f"a.{other}") == F.col(f"b.{other}"))
          .filter(F.col(f"a.{node}") < F.col(f"b.{node}"))
          .groupBy(F.col(f"a.{node}").alias("p"), F.col(f"b.{node}").alias("q"))
          .agg(F.count(F.lit(1)).alias("co")))
    dp, dq = deg.alias("dp"), deg.alias("dq")
    scored = (co.join(dp, F.col("p") == F.col(f"dp.{node}"))
              .join(dq, F.col("q") == F.col(f"dq.{node}"))
              .select("p", "q", (F.col("co") / F.sqrt(F.col("dp.deg") * F.col("dq.deg")))
                      .alias("score")))
    return scored.select(F.col("p").alias("src"), F.col("q").alias("dst"), "score").unionByName(
        scored.select(F.col("q").alias("src"), F.col("p").alias("dst"), "score"))


def item_cosine(capped: DataFrame) -> DataFrame:
    """Streamer-streamer cosine over shared gifters: (src, dst, score)."""
    return _cosine(capped, "dst", "src")


def user_cosine(capped: DataFrame) -> DataFrame:
    """User-user cosine over shared gifted streamers: (src, dst, score)."""
    return _cosine(capped, "src", "dst")


def top_k(pairs: DataFrame, k: int) -> DataFrame:
    """The k best dst per src by score (ties by dst id), with rank 1 = best."""
    order = Window.partitionBy("src").orderBy(F.desc("score"), F.asc("dst"))
    return (pairs.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= k)
            .select("src", "dst", "score", F.col("rank").cast("int")))
