"""Stable raw id -> node id maps across dates, so yesterday's model can be warm-started today.

Known raw ids keep their node id; new raw ids are appended after the previous maximum in raw
id order (deterministic). Ids of the previous map without events in the window stay, inactive.
New ids are numbered with one global row_number (a single-partition sort of the *new* ids
only, a small set each night).
"""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from gie.errors import BadInputError
from gie.layout import dates_under, dated
from gie.publish import is_published


def find_previous(out: Path, date: str, prev: str | Path | None) -> Path | None:
    """The dataset whose ids are kept: `prev` if given, else the latest published date < `date`."""
    if prev is not None:
        prev = Path(prev)
        if not is_published(prev):
            raise BadInputError(f"--prev {prev} is not a published graph dataset (no _SUCCESS)")
        return prev
    earlier = [d for d in dates_under(out) if d < date and is_published(dated(out, d))]
    return dated(out, earlier[-1]) if earlier else None


def read_previous_map(spark: SparkSession, prev: Path, node_type: str, raw_col: str,
                      extra: tuple[str, ...] = ()) -> DataFrame:
    folder = prev / "nodes" / node_type
    try:
        return spark.read.parquet(str(folder)).select("node_id", raw_col, *extra)
    except Exception as e:  # noqa: BLE001 - Spark raises AnalysisException and friends
        raise BadInputError(f"cannot read the previous id map {folder}: {e}") from e


def assign_ids(active: DataFrame, raw_col: str, previous: DataFrame | None) -> DataFrame:
    """(node_id, raw id, active) for every previous id and every id in `active` (one column)."""
    active = active.select(raw_col).distinct().withColumn("active", F.lit(True))
    if previous is None:
        offset = 0
        new = active
        known = None
    else:
        offset = (previous.agg(F.max("node_id")).first()[0])
        offset = 0 if offset is None else offset + 1
        new = active.join(previous.select(raw_col), raw_col, "left_anti")
        known = previous.select("node_id", raw_col).join(active, raw_col, "left").select(
            "node_id", raw_col, F.coalesce(F.col("active"), F.lit(False)).alias("active"))
    numbered = new.select(
        (F.row_number().over(Window.orderBy(raw_col)) - 1 + F.lit(offset)).cast("long")
        .alias("node_id"), raw_col, "active")
    return numbered if known is None else known.unionByName(numbered)


def to_node_ids(edges: DataFrame, users: DataFrame, streamers: DataFrame) -> DataFrame:
    """Replace raw user_id / streamer_id of user->streamer edges by src / dst node ids."""
    u = users.select(F.col("node_id").alias("src"), "user_id")
    s = streamers.select(F.col("node_id").alias("dst"), "streamer_id")
    out = edges.join(u, "user_id").join(s, "streamer_id")
    rest = [c for c in edges.columns if c not in ("user_id", "streamer_id")]
    return out.select("src", "dst", *rest)
