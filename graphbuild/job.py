"""The graph build job: raw KuaiLive-layout tables for a window ending at D -> <out>/dt=D/.

Steps: validate (reject / skip / count) -> aggregate edges -> stable id maps -> node stats,
pooled segment vectors and encoded features -> co-gifting similarities -> write in the
contract (graphbuild.schema), with metadata.json and encoders.json, published atomically.
The same function runs under spark-submit (spark_jobs/build_graph.py) and in the CLI.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import gie
from gie import environment
from gie.config import dump_config
from gie.errors import BadInputError
from gie.layout import dated, parse_date
from gie.publish import staged_output, write_json_atomic
from graphbuild import features, idmap, transforms, validate
from graphbuild.config import BuildConfig
from graphbuild.output import count_rows, materialize, write_table
from graphbuild.readers import TableSource, find_tables, read_table
from graphbuild.schema import (GRAPH_EDGES, GRAPH_NODES, GRAPH_SCHEMA_VERSION, MODALITIES,
                               PROFILE_CATEGORICAL, REJECTED)
from graphbuild.spark import get_spark

log = logging.getLogger(__name__)

EVENT_TABLES = ("gift", "click", "comment", "like", "room", "segments")
USER_NUMERIC = list(transforms.USER_STATS)
STREAMER_NUMERIC = list(transforms.STREAMER_STATS) + ["n_lives"]


class Timer:
    """Wall time per named step, for metadata.json and the log."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("step %s done in %.1fs", name, self.seconds[name])


def run_build(raw, out, date: str, cfg: BuildConfig, prev=None, master: str | None = None,
              spark: SparkSession | None = None) -> dict:
    """Build and publish <out>/dt=<date>/; return its metadata."""
    window = validate.TimeWindow.ending(parse_date(date), cfg.window_days)
    if set(cfg.modality_dims) != set(MODALITIES) or min(cfg.modality_dims.values()) < 1:
        raise BadInputError(f"build.modality_dims {cfg.modality_dims} needs a positive size "
                            f"for each of {list(MODALITIES)}")
    raw, out = Path(raw), Path(out)
    sources = find_tables(raw, cfg.extra_features)
    prev_path = idmap.find_previous(out, date, prev)
    spark = spark or get_spark(master)
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    # which code and which cluster ran: on a cluster the code comes from --py-files or a wheel
    log.info("gie %s from %s on Spark %s, master %s", gie.__version__,
             Path(gie.__file__).parent, spark.version, spark.sparkContext.master)
    log.info("building graph for %s: window [%d, %d) ms, tables %s, previous ids from %s",
             date, window.start_ms, window.end_ms, sorted(sources), prev_path)
    timer = Timer()
    t0 = time.perf_counter()
    with staged_output(dated(out, date)) as stage:
        meta = _build(spark, sources, window, date, cfg, prev_path, stage, timer)
        meta.update(timings_s=dict(timer.seconds, total=round(time.perf_counter() - t0, 3)))
        write_json_atomic(stage / "metadata.json", meta)
    log.info("published %s: %s nodes, %s edges", dated(out, date), meta["counts"]["nodes"],
             meta["counts"]["edges"])
    return meta


def _validated(spark, sources: dict[str, TableSource], window, date: str, cfg: BuildConfig,
               stage: Path, work: Path, timer: Timer) -> tuple[dict[str, DataFrame], dict]:
    """Valid rows of every table (profiles deduplicated, events in-window and deduplicated);
    rejected rows written to stage/rejected; fails on too many rejects or an empty day D.

    Each table is read and classified once, into its collapsed table (validate.collapse) in
    `work`; counts, valid rows and rejected rows are then read from those (the valid vectors
    of a table with vector columns from a second pass over its input)."""
    collapsed: dict[str, DataFrame] = {}
    classified: dict[str, DataFrame] = {}
    with timer.step("validate_profiles"):
        for table in validate.PROFILE_TABLES:
            if table in sources:
                classified[table], collapsed[table] = _collapsed(spark, sources[table], window,
                                                                 cfg, {}, work)
    known = {}
    for t in validate.PROFILE_TABLES:
        if t in collapsed:
            ids = validate.valid_rows(collapsed[t]).select(f"{t}_id")
            known[f"{t}_id"] = _small(ids, ids.count(), cfg)
    with timer.step("validate_events"):
        for table in EVENT_TABLES:
            if table in sources:
                classified[table], collapsed[table] = _collapsed(spark, sources[table], window,
                                                                 cfg, known, work)
        report = validate.status_counts(collapsed, window.last_day_start_ms)
    valid = {t: validate.distinct_valid_rows(classified[t], df, report[t].get("duplicate", 0),
                                             cfg.broadcast_max_rows)
             for t, df in collapsed.items()}
    # scan only tables with quarantined rows: the counts already say which
    rejected = [validate.rejected_rows(df, t) for t, df in collapsed.items()
                if set(report[t]) - {validate.OK, validate.OUT_OF_WINDOW, "_ok_on_last_day"}]

    summary = _summarise(report)
    log.info("validated input: %s", summary)
    if summary["rejected_share"] > cfg.max_rejected_share:
        raise BadInputError(
            f"{summary['rejected']} of {summary['rows_read']} input rows rejected "
            f"({summary['rejected_share']:.2%} > max_rejected_share {cfg.max_rejected_share:.2%}); "
            f"by table and reason: {summary['rejected_by_reason']}; files: "
            + ", ".join(str(sources[t].path) for t in summary["rejected_by_reason"]))
    on_day = report["gift"].get("_ok_on_last_day", 0)
    if on_day < cfg.min_last_day_gifts:
        raise BadInputError(f"no gift events on {date} in {sources['gift'].path} "
                            f"({on_day} valid, at least {cfg.min_last_day_gifts} expected): "
                            "upstream log loss?")
    with timer.step("write_rejected"):
        if not rejected:     # an empty table made in the JVM: createDataFrame([]) would
            # start Python workers on the executors, which run no Python otherwise
            rejected = [spark.range(0).select(*[F.lit(None).cast("string").alias(c)
                                                for c in REJECTED.names])]
        write_table(reduce(DataFrame.unionByName, rejected).coalesce(1), stage / "rejected",
                    REJECTED)
    return valid, summary


def _collapsed(spark, source: TableSource, window, cfg: BuildConfig,
               known: dict[str, DataFrame], work: Path) -> tuple[DataFrame, DataFrame]:
    """Read, type and classify one table (lazily: the classified rows) and materialize its
    collapsed table (validate.collapse). Only tables with vector columns are read again, for
    their valid vectors."""
    df = validate.typed_table(read_table(spark, source), source)
    df = validate.classify(df, source.name, window, cfg, known)
    if source.name in validate.PROFILE_TABLES:
        df = validate.dedup_profiles(df, source.name)
    return df, materialize(spark, validate.collapse(df), work / f"validated_{source.name}")


def _summarise(report: dict[str, dict]) -> dict:
    by_reason = {t: {r: n for r, n in c.items() if r not in (validate.OK, validate.OUT_OF_WINDOW)
                     and not r.startswith("_")} for t, c in report.items()}
    by_reason = {t: r for t, r in by_reason.items() if r}
    rows_read = sum(n for c in report.values() for r, n in c.items() if not r.startswith("_"))
    rejected = sum(sum(r.values()) for r in by_reason.values())
    return {
        "rows_read": rows_read,
        "rows_used": {t: c.get(validate.OK, 0) for t, c in report.items()},
        "skipped_out_of_window": {t: c.get(validate.OUT_OF_WINDOW, 0) for t, c in report.items()
                                  if t not in validate.PROFILE_TABLES},
        "rejected": rejected,
        "rejected_share": rejected / rows_read if rows_read else 0.0,
        "rejected_by_reason": by_reason,
    }


def _previous_encoders(prev: Path | None, cfg: BuildConfig) -> dict:
    """Yesterday's vocabularies. A different slot count would move every one-hot position
    (refused); a changed extra_features declaration only adds or drops blocks, which the
    operator asked for, so it is a warning: the width changes and warm start will not fit."""
    if prev is None or not (prev / "encoders.json").is_file():
        return {}
    path = prev / "encoders.json"
    try:
        enc = json.loads(path.read_text())
    except ValueError as e:
        raise BadInputError(f"cannot parse {path}: {e}") from e
    if enc.get("vocab_slots") != cfg.vocab_slots:
        raise BadInputError(f"{path} has vocab_slots {enc.get('vocab_slots')} but "
                            f"build.vocab_slots is {cfg.vocab_slots}: the feature width would "
                            "change (start a new graph folder to change it)")
    if enc.get("extra_features", {}) != _extra_declared(cfg):
        log.warning("build.extra_features changed since %s (%s -> %s): the feature width "
                    "changes, so yesterday's model cannot warm-start today's training "
                    "(train once with nightly.warm_start=false)", prev,
                    enc.get("extra_features", {}), _extra_declared(cfg))
    return enc


def _extra_declared(cfg: BuildConfig) -> dict:
    return {t: e.model_dump() for t, e in sorted(cfg.extra_features.items())}


def _profile_columns(cfg: BuildConfig, ntype: str) -> tuple[list[str], list[str]]:
    """(categorical, numeric extra) profile columns of a node type's features."""
    extra = cfg.extra_features.get(ntype)
    return (PROFILE_CATEGORICAL[ntype] + (extra.categorical if extra else []),
            extra.numeric if extra else [])


def _build(spark, sources, window, date, cfg: BuildConfig, prev: Path | None, stage: Path,
           timer: Timer) -> dict:
    work = stage / "_work"           # intermediate tables, removed before publishing
    valid, summary = _validated(spark, sources, window, date, cfg, stage, work, timer)
    end, hl, days = window.end_ms, cfg.half_life_days, cfg.window_days

    with timer.step("edges"):
        gift = materialize(spark, transforms.gift_edges(valid["gift"], end, hl, days),
                           work / "gift_edges")
        events = transforms.watch_events({t: valid[t] for t in ("click", "comment", "like")
                                          if t in valid})
        watch = None if events is None else materialize(spark, transforms.watch_edges(
            events, end, hl, cfg.watch_weights, days), work / "watch_edges")

    with timer.step("id_maps"):
        maps = {}
        for ntype, raw_col, extra in (("user", "user_id", ()),
                                      ("streamer", "streamer_id", ("first_seen_ts",))):
            active = gift.select(raw_col)
            if watch is not None:
                active = active.unionByName(watch.select(raw_col))
            previous = None if prev is None else idmap.read_previous_map(
                spark, prev, ntype, raw_col, extra)
            ids = idmap.assign_ids(active, raw_col, previous)
            if previous is not None and extra:
                ids = ids.join(previous.select(raw_col, *extra), raw_col, "left")
            maps[ntype] = materialize(spark, ids, work / f"ids_{ntype}")
        active = {t: int(m.agg(F.sum(F.col("active").cast("long"))).first()[0] or 0)
                  for t, m in maps.items()}
        log.info("id maps: active nodes %s (previous ids from %s)", active, prev)

    with timer.step("node_attributes"):
        encoders = _previous_encoders(prev, cfg)
        vocab = {t: features.fit_vocabularies(valid.get(t), _profile_columns(cfg, t)[0],
                                              cfg.vocab_slots, encoders.get(t))
                 for t in ("user", "streamer")}
        users = _user_nodes(maps["user"], valid, gift, watch, vocab["user"], cfg)
        streamers = _streamer_nodes(maps["streamer"], valid, gift, watch, vocab["streamer"],
                                    window, cfg)
        write_table(users, stage / "nodes" / "user", GRAPH_NODES["user"])
        write_table(streamers, stage / "nodes" / "streamer", GRAPH_NODES["streamer"])
        enc = {"vocab_slots": cfg.vocab_slots, **vocab,
               "extra_features": _extra_declared(cfg)}
        write_json_atomic(stage / "encoders.json", enc)

    with timer.step("write_edges"):
        small = {t: _small(m, m.count(), cfg) for t, m in maps.items()}
        for name, edges in (("gift", gift), ("watch", watch)):
            if edges is not None:
                write_table(idmap.to_node_ids(edges, small["user"], small["streamer"]),
                            stage / "edges" / name, GRAPH_EDGES[name][2])

    with timer.step("similarity"):
        gift_ids = spark.read.parquet(str(stage / "edges" / "gift"))
        capped = materialize(spark, transforms.with_degree(transforms.cap_edges(
            gift_ids, cfg.max_items_per_user, cfg.max_users_per_item)), work / "capped")
        neighbours = materialize(spark, transforms.user_neighbours(capped, cfg.u2u_topk),
                                 work / "user_neighbours")
        if cfg.similarity == "swing":
            shared = transforms.shared_pairs(neighbours)
            s2s = transforms.swing(transforms.user_pairs(capped), shared, cfg.swing_alpha,
                                   broadcast=shared.count() <= cfg.broadcast_max_rows)
        else:
            s2s = transforms.item_cosine(capped)
        write_table(transforms.top_k(s2s, cfg.s2s_topk), stage / "edges" / "s2s",
                    GRAPH_EDGES["s2s"][2])
        write_table(neighbours.filter(F.col("rank") <= cfg.u2u_topk)
                    .select("src", "dst", "score", "rank"),
                    stage / "edges" / "u2u", GRAPH_EDGES["u2u"][2])

    with timer.step("count_outputs"):
        counts = {
            "nodes": {t: count_rows(stage / "nodes" / t) for t in GRAPH_NODES},
            "active_nodes": active,
            "edges": {e: count_rows(stage / "edges" / e) for e in GRAPH_EDGES
                      if (stage / "edges" / e).is_dir()},
            "rejected": count_rows(stage / "rejected"),
        }
    shutil.rmtree(work)
    return {
        "schema_version": GRAPH_SCHEMA_VERSION,
        "code_version": gie.__version__,
        "environment": environment.describe(),
        "date": date,
        "window": {"start_ms": window.start_ms, "end_ms": window.end_ms,
                   "days": cfg.window_days},
        "inputs": {t: {"path": str(s.path), "format": s.fmt, "absent_columns": list(s.absent)}
                   for t, s in sources.items()},
        "previous": None if prev is None else str(prev),
        "validation": summary,
        "counts": counts,
        "features": {
            "user": features.feature_names(vocab["user"], cfg.vocab_slots, USER_NUMERIC,
                                           _profile_columns(cfg, "user")[1]),
            "streamer": features.feature_names(vocab["streamer"], cfg.vocab_slots,
                                               STREAMER_NUMERIC,
                                               _profile_columns(cfg, "streamer")[1]),
            "modality_dims": {m: cfg.modality_dims[m] for m in MODALITIES},
        },
        "config": dump_config(cfg),
    }


def _small(df: DataFrame, rows: int, cfg: BuildConfig) -> DataFrame:
    """`df` marked for broadcast when its `rows` are few enough (the other side of the join
    then is not shuffled)."""
    return F.broadcast(df) if rows <= cfg.broadcast_max_rows else df


def _user_nodes(ids, valid, gift, watch, vocab, cfg: BuildConfig) -> DataFrame:
    stats = transforms.user_activity(gift, watch, cfg.window_days)
    out = ids.join(stats, "user_id", "left").select("node_id", "user_id", "active", *[
        F.coalesce(F.col(c), F.lit(0)).cast(t).alias(c)
        for c, t in transforms.USER_STATS.items()])
    numeric = _profile_columns(cfg, "user")[1]
    out = _with_profiles(out, valid.get("user"), "user_id", vocab, numeric, cfg)
    return out.withColumn("features", features.feature_vector(vocab, cfg.vocab_slots,
                                                              USER_NUMERIC, numeric))


def _with_profiles(nodes: DataFrame, profiles: DataFrame | None, key: str,
                   vocab: dict[str, list[str]], numeric: list[str],
                   cfg: BuildConfig) -> DataFrame:
    """Nodes with their profile columns, one-hot slots (features.slot_columns) and `numeric`
    profile columns; nulls without a profile."""
    if profiles is None:
        return nodes.select("*", *[F.lit(None).cast("string").alias(c) for c in vocab],
                            *[F.lit(None).cast("int").alias(f"_slot_{c}") for c in vocab],
                            *[F.lit(None).cast("double").alias(c) for c in numeric])
    profiles = profiles.select(key, *vocab, *numeric,
                               *features.slot_columns(vocab, cfg.vocab_slots))
    return nodes.join(profiles, key, "left")


def _streamer_nodes(ids, valid, gift, watch, vocab, window, cfg: BuildConfig):
    out = ids.join(transforms.streamer_activity(gift, watch), "streamer_id", "left")
    if "first_seen_ts" not in ids.columns:
        out = out.withColumn("first_seen_ts", F.lit(None).cast("long"))
    out = out.withColumn("first_seen_ts",
                         F.least(F.col("first_seen_ts"), F.col("window_first_ts")))
    lives = (valid["room"].groupBy("streamer_id").agg(F.countDistinct("live_id").alias("n_lives"))
             if "room" in valid else None)
    out = out.join(lives, "streamer_id", "left") if lives is not None else out.withColumn(
        "n_lives", F.lit(0))
    dims = {m: cfg.modality_dims[m] for m in MODALITIES}
    if "segments" in valid:
        out = out.join(transforms.pool_segments(valid["segments"], dims, window.end_ms,
                                                cfg.half_life_days), "streamer_id", "left")
    for m, dim in dims.items():
        col = f"{m}_emb"
        if "segments" not in valid:
            out = out.withColumn(col, F.lit(None).cast("array<float>"))
        out = out.withColumn(f"has_{m}", F.col(col).isNotNull()).withColumn(
            col, F.coalesce(F.col(col), F.array_repeat(F.lit(0.0).cast("float"), dim)))
    stats = list(transforms.STREAMER_STATS) + ["n_lives"]
    out = out.select("node_id", "streamer_id", "active", "first_seen_ts",
                     *[F.coalesce(F.col(c), F.lit(0)).alias(c) for c in stats],
                     *[c for m in MODALITIES for c in (f"{m}_emb", f"has_{m}")])
    numeric = _profile_columns(cfg, "streamer")[1]
    out = _with_profiles(out, valid.get("streamer"), "streamer_id", vocab, numeric, cfg)
    return out.withColumn("features", features.feature_vector(vocab, cfg.vocab_slots,
                                                              STREAMER_NUMERIC, numeric))
