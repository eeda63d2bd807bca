"""The graph transforms: pure functions DataFrame -> DataFrame on validated, in-window events.

Each is checked in tests against an independent pandas computation. Time decay is
2 ** (-(end_ms - ts) / half_life): an event at the end of the window weighs 1, one half-life
earlier 0.5. Similarities run on node ids (columns src = user, dst = streamer).
"""
from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, GroupedData, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

DAY_MS = 86_400_000
MASK_BITS = 63              # days per active-day bitmask word (a signed 64-bit long)


def decay(ts: Column, end_ms: int, half_life_days: float) -> Column:
    return F.pow(F.lit(2.0), -(F.lit(end_ms) - ts) / F.lit(half_life_days * DAY_MS))


def grouped_after_shuffle(df: DataFrame, keys: list[str]) -> GroupedData:
    """df.groupBy(keys), with the rows first shuffled by those keys, so that Spark aggregates
    once, after the shuffle. Where groups are small (exact-duplicate checks, user-streamer
    edges), Spark's usual partial aggregation before the shuffle hardly reduces the rows and
    costs a spilling hash map per task: skipping it made the 3M-gift benchmark's click
    validation 30% and its watch edges 28% faster."""
    return df.repartition(*keys).groupBy(*keys)


def mask_columns(window_days: int) -> list[str]:
    return [f"_days{w}" for w in range(math.ceil(window_days / MASK_BITS))]


def _day_masks(ts: Column, end_ms: int, window_days: int) -> list[Column]:
    """Aggregates: which days of the window (day 0 = the last) an edge was active on, as
    bitmask words. Users' active days are then a bit_or over their edges, so they need no
    extra pass over the raw events."""
    age = F.floor((F.lit(end_ms - 1) - ts) / F.lit(DAY_MS)).cast("int")
    out = []
    for w, name in enumerate(mask_columns(window_days)):
        lo = w * MASK_BITS
        bit = F.call_function("shiftleft", F.lit(1).cast("long"), age - F.lit(lo))
        inside = (age >= lo) & (age < min(lo + MASK_BITS, window_days))
        out.append(F.bit_or(F.when(inside, bit).otherwise(F.lit(0).cast("long"))).alias(name))
    return out


def gift_edges(gifts: DataFrame, end_ms: int, half_life_days: float,
               window_days: int = 14) -> DataFrame:
    """One row per (user, streamer): total price, count, first/last time, decayed weight,
    and the active-day masks (mask_columns) of the window ending at end_ms."""
    ts = F.col("timestamp")
    return grouped_after_shuffle(gifts, ["user_id", "streamer_id"]).agg(
        F.sum(F.col("gift_price").cast("double")).alias("total_price"),
        F.count(F.lit(1)).alias("count"),
        F.min("timestamp").alias("first_ts"),
        F.max("timestamp").alias("last_ts"),
        F.sum(decay(ts, end_ms, half_life_days)).alias("weight"),
        *_day_masks(ts, end_ms, window_days))


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
                weights: dict[str, float], window_days: int = 14) -> DataFrame:
    """Weak user->streamer edges: counts per kind, watch time, first/last time, decayed
    weighted event count, active-day masks."""
    kind = F.col("kind")
    kind_weight = F.coalesce(*[F.when(kind == k, F.lit(float(w))) for k, w in weights.items()],
                             F.lit(0.0))
    return grouped_after_shuffle(events, ["user_id", "streamer_id"]).agg(
        F.sum((kind == "click").cast("long")).alias("n_clicks"),
        F.sum((kind == "comment").cast("long")).alias("n_comments"),
        F.sum((kind == "like").cast("long")).alias("n_likes"),
        F.sum("watch_ms").alias("watch_ms"),
        F.min("timestamp").alias("first_ts"),
        F.max("timestamp").alias("last_ts"),
        F.sum(kind_weight * decay(F.col("timestamp"), end_ms, half_life_days)).alias("weight"),
        *_day_masks(F.col("timestamp"), end_ms, window_days))


USER_STATS = {"n_gifts": "long", "n_clicks": "long", "n_comments": "long", "n_likes": "long",
              "total_spend": "double", "days_active": "long"}
STREAMER_STATS = {"n_gifts": "long", "n_gifters": "long", "total_received": "double",
                  "n_clicks": "long"}


def _edge_union(gifts: DataFrame, watch: DataFrame | None, key: str,
                columns: dict[str, tuple[Column, Column]]) -> DataFrame:
    """Gift and watch edges as one table of (key, columns...): each column's value from the
    gift edge and from the watch edge, so per-node statistics take one grouping, no joins."""
    out = gifts.select(key, *[g.alias(c) for c, (g, _) in columns.items()])
    if watch is not None:
        out = out.unionByName(watch.select(key, *[w.alias(c) for c, (_, w) in columns.items()]))
    return out


def user_activity(gifts: DataFrame, watch: DataFrame | None, window_days: int) -> DataFrame:
    """Per-user statistics from gift and watch edges; days_active counts the distinct UTC days
    with any event, from the edges' day masks."""
    zero = F.lit(0).cast("long")
    masks = mask_columns(window_days)
    union = _edge_union(gifts, watch, "user_id", {
        "n_gifts": (F.col("count"), zero), "total_spend": (F.col("total_price"), F.lit(0.0)),
        **{c: (zero, F.col(c)) for c in ("n_clicks", "n_comments", "n_likes")},
        **{m: (F.col(m), F.col(m)) for m in masks}})
    per_user = union.groupBy("user_id").agg(
        *[F.sum(c).alias(c) for c in USER_STATS if c != "days_active"],
        *[F.bit_or(m).alias(m) for m in masks])
    days = sum((F.bit_count(m) for m in masks), F.lit(0))
    return per_user.select("user_id", *[(days if c == "days_active" else F.col(c)).cast(t)
                                        .alias(c) for c, t in USER_STATS.items()])


def streamer_activity(gifts: DataFrame, watch: DataFrame | None) -> DataFrame:
    """Per-streamer statistics: gifts and spend received, distinct gifters, clicks received,
    and the first event time in the window (`window_first_ts`)."""
    zero = F.lit(0).cast("long")
    union = _edge_union(gifts, watch, "streamer_id", {
        "n_gifts": (F.col("count"), zero), "n_gifters": (F.lit(1).cast("long"), zero),
        "total_received": (F.col("total_price"), F.lit(0.0)),
        "n_clicks": (zero, F.col("n_clicks")), "first_ts": (F.col("first_ts"), F.col("first_ts"))})
    return union.groupBy("streamer_id").agg(
        *[F.sum(c).cast(t).alias(c) for c, t in STREAMER_STATS.items()],
        F.min("first_ts").alias("window_first_ts"))


def pool_segments(segments: DataFrame, dims: dict[str, int], end_ms: int,
                  half_life_days: float) -> DataFrame:
    """Recency-weighted mean of each modality's segment vectors per streamer: one column
    `<modality>_emb` per entry of `dims`, null when the streamer has no vector of it.

    Every vector element is its own sum aggregate: one grouping for all modalities, in
    generated code (higher-order array functions are interpreted, and were 4x slower)."""
    w = decay(F.col("timestamp"), end_ms, half_life_days)
    aggs = []
    for m, dim in dims.items():
        v = F.col(f"{m}_emb")
        aggs.append(F.sum(F.when(v.isNotNull(), w)).alias(f"_w_{m}"))
        aggs += [F.sum(w * v.getItem(k)).alias(f"_{m}{k}") for k in range(dim)]
    sums = segments.groupBy("streamer_id").agg(*aggs)
    return sums.select("streamer_id", *[
        F.when(F.col(f"_w_{m}") > 0, F.array(*[F.col(f"_{m}{k}") / F.col(f"_w_{m}")
                                               for k in range(dim)]))
        .cast(ArrayType(FloatType(), True)).alias(f"{m}_emb") for m, dim in dims.items()])


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


def with_degree(capped: DataFrame) -> DataFrame:
    """Capped edges with the user's capped degree `deg` (for the cosine's norms)."""
    return capped.select("src", "dst", F.count(F.lit(1)).over(Window.partitionBy("src"))
                         .alias("deg"))


def _co_gifting(capped: DataFrame, both_ways: bool) -> DataFrame:
    """Capped edges `a` and `b` of two different users to the same streamer: every user pair
    once (a.src < b.src), or in both directions."""
    a, b = capped.alias("a"), capped.alias("b")
    other = F.col("a.src") != F.col("b.src") if both_ways else F.col("a.src") < F.col("b.src")
    return a.join(b, F.col("a.dst") == F.col("b.dst")).filter(other)


def user_pairs(capped: DataFrame) -> DataFrame:
    """(u, v, i) for every unordered user pair u < v who both gifted streamer i."""
    return _co_gifting(capped, both_ways=False).select(
        F.col("a.src").alias("u"), F.col("b.src").alias("v"), F.col("a.dst").alias("i"))


def user_neighbours(capped: DataFrame, k: int) -> DataFrame:
    """(src, dst, co, score, rank) for ordered user pairs who co-gifted: co = |I_u & I_v|,
    score = cosine co / sqrt(|I_u| |I_v|) (`capped` from with_degree), rank per src as top_k.
    Keeps each user's k best (the u2u edges) and, once with src < dst, every pair sharing two
    or more streamers (what Swing needs, see shared_pairs).

    The pairs, the largest table of the build (128M at 10M gifts), are shuffled once, by src
    alone (not by every grouping key, as in grouped_after_shuffle): the count per pair and the
    ranking per src then need no further shuffle."""
    pairs = _co_gifting(capped, both_ways=True).select(
        F.col("a.src").alias("src"), F.col("b.src").alias("dst"),
        F.col("a.deg").alias("du"), F.col("b.deg").alias("dv"))
    co = pairs.repartition("src").groupBy("src", "dst", "du", "dv").agg(
        F.count(F.lit(1)).alias("co"))
    scored = co.select("src", "dst", "co",
                       (F.col("co") / F.sqrt(F.col("du") * F.col("dv"))).alias("score"))
    return _ranked(scored).filter((F.col("rank") <= k) | _shared())


def _shared() -> Column:
    return (F.col("co") >= 2) & (F.col("src") < F.col("dst"))


def shared_pairs(neighbours: DataFrame) -> DataFrame:
    """(u, v, co) for the unordered user pairs sharing two or more streamers, from
    user_neighbours: about 1.3% of all co-gifting pairs at 10M gifts."""
    return neighbours.filter(_shared()).select(
        F.col("src").alias("u"), F.col("dst").alias("v"), "co")


def swing(pairs: DataFrame, shared: DataFrame, alpha: float, broadcast: bool = False) -> DataFrame:
    """Swing streamer-streamer scores: for each unordered user pair (u, v) who both gifted i and
    j, add 1 / (alpha + |I_u & I_v|). Returns (src=i, dst=j, score), both directions.

    Only pairs sharing two or more streamers contribute (`shared`, from shared_pairs); they may
    be broadcast so that the (user pair, streamer) rows themselves are never shuffled."""
    weights = shared.select("u", "v", (1.0 / (F.lit(alpha) + F.col("co"))).alias("w"))
    weighted = pairs.join(F.broadcast(weights) if broadcast else weights, ["u", "v"])
    x, y = weighted.alias("x"), weighted.alias("y")
    return (x.join(y, (F.col("x.u") == F.col("y.u")) & (F.col("x.v") == F.col("y.v"))
                   & (F.col("x.i") != F.col("y.i")))
            .groupBy(F.col("x.i").alias("src"), F.col("y.i").alias("dst"))
            .agg(F.sum("x.w").alias("score")))


def _both_ways(scored: DataFrame) -> DataFrame:
    """(p, q, score) with p < q -> (src, dst, score) in both directions."""
    return scored.select(F.col("p").alias("src"), F.col("q").alias("dst"), "score").unionByName(
        scored.select(F.col("q").alias("src"), F.col("p").alias("dst"), "score"))


def item_cosine(capped: DataFrame) -> DataFrame:
    """Streamer-streamer cosine over shared gifters: (src, dst, score)."""
    deg = capped.groupBy("dst").agg(F.count(F.lit(1)).alias("deg"))
    a, b = capped.alias("a"), capped.alias("b")
    co = (a.join(b, F.col("a.src") == F.col("b.src"))
          .filter(F.col("a.dst") < F.col("b.dst"))
          .groupBy(F.col("a.dst").alias("p"), F.col("b.dst").alias("q"))
          .agg(F.count(F.lit(1)).alias("co")))
    dp, dq = deg.alias("dp"), deg.alias("dq")
    return _both_ways(co.join(dp, F.col("p") == F.col("dp.dst"))
                      .join(dq, F.col("q") == F.col("dq.dst"))
                      .select("p", "q", (F.col("co") / F.sqrt(F.col("dp.deg") * F.col("dq.deg")))
                              .alias("score")))


def _ranked(pairs: DataFrame) -> DataFrame:
    """`rank` per src, 1 = best score, ties by the smaller dst.

    Scores are compared to 1e-9: sums of the same terms in another order (another join
    strategy, another shuffle) differ in the last bits, and must not reorder the ranks."""
    order = Window.partitionBy("src").orderBy(F.round("score", 9).desc(), F.asc("dst"))
    return pairs.withColumn("rank", F.row_number().over(order))


def top_k(pairs: DataFrame, k: int) -> DataFrame:
    """The k best dst per src by score (ties by dst id), with rank 1 = best."""
    return _ranked(pairs).filter(F.col("rank") <= k).select("src", "dst", "score", "rank")
