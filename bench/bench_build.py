#!/usr/bin/env python
"""Graph build throughput: the Spark job against the same transforms in plain DuckDB SQL.

For each scale: generate a synthetic Parquet dataset (graphbuild.synthetic, the code behind
`cli.py generate`, with lean per-gift ratios: 5 clicks, 1 comment, 1 like), then in separate
child processes (a) the Spark build on local[2] (JVM start timed apart and excluded) and
(b) the DuckDB reference (2 threads) doing the same work: validation, dedup, gift/watch edges,
id maps, node statistics, pooled segment vectors, capped Swing s2s and cosine u2u top-K.
Writes docs/benchmarks/build.md.

    .venv/bin/python bench/bench_build.py [--scales 1M,3M,10M] [--work DIR]
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DAYS = 15
START = "2025-05-01"
DATE = "2025-05-15"                       # the last generated day; window = all 15 days
SCALES = {"1M": (200_000, 20_000, 1_000_000), "3M": (600_000, 40_000, 3_000_000),
          "10M": (2_000_000, 100_000, 10_000_000)}
LEAN = {"click_ratio": 5.0, "comment_ratio": 1.0, "like_ratio": 1.0}

SPARK_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from graphbuild.config import BuildConfig
from graphbuild.job import run_build
from graphbuild.spark import get_spark
spark = get_spark("local[2]", extra_conf={"spark.ui.enabled": "false"})
spark.sparkContext.setLogLevel("ERROR")
jvm = time.perf_counter() - t0
cfg = BuildConfig(window_days=15, shuffle_partitions=int(sys.argv[3]))
t1 = time.perf_counter()
meta = run_build(sys.argv[1], sys.argv[2], "%s", cfg, spark=spark)
print("RESULT " + json.dumps({"jvm_s": jvm, "build_s": time.perf_counter() - t1,
                              "steps": meta["timings_s"], "counts": meta["counts"],
                              "rows_read": meta["validation"]["rows_read"]}))
""" % DATE


def duckdb_reference(raw: Path, out: Path) -> dict:
    """The build's transforms as DuckDB SQL on the same files (2 threads); returns counts."""
    import duckdb

    from graphbuild.validate import MAX_TS, MIN_TS, TimeWindow
    from gie.layout import parse_date

    w = TimeWindow.ending(parse_date(DATE), 15)
    hl = 7.0 * 86_400_000
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET threads = 2; SET preserve_insertion_order = false")
    q = con.execute
    q(f"CREATE TEMP TABLE pu AS SELECT * FROM read_parquet('{raw}/user.parquet') "
      "WHERE user_id >= 0 QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY gender, "
      "age, country) = 1")
    q(f"CREATE TEMP TABLE ps AS SELECT * FROM read_parquet('{raw}/streamer.parquet') "
      "WHERE streamer_id >= 0 QUALIFY row_number() OVER (PARTITION BY streamer_id "
      "ORDER BY gender, age, country) = 1")

    counts = {}
    for table in ("gift", "click", "comment", "like", "segments"):
        user_checks = "" if table == "segments" else (
            "WHEN e.user_id IS NULL OR e.user_id < 0 THEN 'bad_user_id' "
            "WHEN u.user_id IS NULL THEN 'unknown_user' ")
        price = ("WHEN e.gift_price IS NULL OR e.gift_price <= 0 OR e.gift_price > 1000000 "
                 "THEN 'bad_price' ") if table == "gift" else ""
        vec = " ".join(f"WHEN e.{m}_emb IS NOT NULL AND (len(e.{m}_emb) != {d} OR list_bool_or("
                       f"list_transform(e.{m}_emb, x -> isnan(x) OR isinf(x)))) "
                       f"THEN 'bad_{m}_emb' "
                       for m, d in (("image", 32), ("speech", 16), ("comment", 16))
                       ) if table == "segments" else ""
        join_u = "" if table == "segments" else "LEFT JOIN (SELECT user_id FROM pu) u " \
                                                "ON e.user_id = u.user_id"
        q(f"""CREATE TEMP TABLE {table}_c AS SELECT e.*, CASE
              WHEN e.streamer_id IS NULL OR e.streamer_id < 0 OR e.live_id IS NULL
                   OR e.live_id < 0 THEN 'bad_id' {user_checks}
              WHEN s.streamer_id IS NULL THEN 'unknown_streamer'
              WHEN e.timestamp IS NULL OR e.timestamp < {MIN_TS} OR e.timestamp >= {MAX_TS}
                   THEN 'impossible_timestamp' {price} {vec}
              WHEN e.timestamp < {w.start_ms} OR e.timestamp >= {w.end_ms} THEN 'out_of_window'
              ELSE 'ok' END AS status
            FROM read_parquet('{raw}/{table}.parquet') e {join_u}
            LEFT JOIN (SELECT streamer_id FROM ps) s ON e.streamer_id = s.streamer_id""")
        counts[table] = dict(q(f"SELECT status, count(*) FROM {table}_c GROUP BY 1").fetchall())
        cols = ", ".join(c[0] for c in q(f"DESCRIBE {table}_c").fetchall() if c[0] != "status")
        q(f"CREATE TEMP TABLE {table}_v AS SELECT {cols}, count(*) AS copies FROM {table}_c "
          f"WHERE status = 'ok' GROUP BY ALL")
        q(f"COPY (SELECT '{table}' AS \"table\", status AS reason, to_json(COLUMNS(*)) AS record "
          f"FROM (SELECT * EXCLUDE (status), status FROM {table}_c) "
          f"WHERE status NOT IN ('ok', 'out_of_window')) TO '{out}/rejected_{table}.parquet'")

    decay = f"pow(2.0, -({w.end_ms} - timestamp) / {hl})"
    q(f"""CREATE TEMP TABLE gift_e AS SELECT user_id, streamer_id,
          sum(gift_price)::DOUBLE AS total_price, count(*) AS cnt, min(timestamp) AS first_ts,
          max(timestamp) AS last_ts, sum({decay}) AS weight FROM gift_v GROUP BY 1, 2""")
    q(f"""CREATE TEMP TABLE watch_e AS SELECT user_id, streamer_id,
          sum((kind = 'click')::INT) AS n_clicks, sum((kind = 'comment')::INT) AS n_comments,
          sum((kind = 'like')::INT) AS n_likes, sum(watch_ms) AS watch_ms,
          max(timestamp) AS last_ts, sum(kw * {decay}) AS weight FROM (
            SELECT user_id, streamer_id, timestamp, 'click' AS kind,
                   coalesce(watch_live_time, 0) AS watch_ms, 1.0 AS kw FROM click_v
            UNION ALL SELECT user_id, streamer_id, timestamp, 'comment', 0, 2.0 FROM comment_v
            UNION ALL SELECT user_id, streamer_id, timestamp, 'like', 0, 1.0 FROM like_v)
          GROUP BY 1, 2""")
    for t, col in (("u", "user_id"), ("s", "streamer_id")):
        q(f"""CREATE TEMP TABLE {t}map AS SELECT row_number() OVER (ORDER BY {col}) - 1
              AS node_id, {col} FROM (SELECT {col} FROM gift_e UNION SELECT {col} FROM watch_e)""")
    q("""CREATE TEMP TABLE days AS SELECT user_id, count(DISTINCT timestamp // 86400000) AS d
         FROM (SELECT user_id, timestamp FROM gift_v UNION ALL SELECT user_id, timestamp
               FROM click_v UNION ALL SELECT user_id, timestamp FROM comment_v
               UNION ALL SELECT user_id, timestamp FROM like_v) GROUP BY 1""")
    q(f"""COPY (SELECT m.node_id, m.user_id, coalesce(g.n, 0) AS n_gifts,
                coalesce(g.spend, 0) AS total_spend, coalesce(w.c, 0) AS n_clicks,
                coalesce(d.d, 0) AS days_active, p.gender, p.age, p.country,
                [ln(1 + coalesce(g.n, 0)), ln(1 + coalesce(g.spend, 0)),
                 ln(1 + coalesce(w.c, 0)), ln(1 + coalesce(d.d, 0))]::FLOAT[] AS features
          FROM umap m
          LEFT JOIN (SELECT user_id, sum(cnt) n, sum(total_price) spend FROM gift_e GROUP BY 1) g
            USING (user_id)
          LEFT JOIN (SELECT user_id, sum(n_clicks) c FROM watch_e GROUP BY 1) w USING (user_id)
          LEFT JOIN days d USING (user_id) LEFT JOIN pu p USING (user_id))
        TO '{out}/nodes_user.parquet'""")
    pooled = []
    for m in ("image", "speech", "comment"):
        q(f"""CREATE TEMP TABLE pool_{m} AS SELECT streamer_id, list(x ORDER BY i) AS {m}_emb
              FROM (SELECT streamer_id, i, sum(w * x) / sum(w) AS x FROM (
                SELECT streamer_id, {decay} AS w, unnest({m}_emb) AS x,
                       generate_subscripts({m}_emb, 1) AS i
                FROM segments_v WHERE {m}_emb IS NOT NULL) GROUP BY 1, 2) GROUP BY 1""")
        pooled.append(f"LEFT JOIN pool_{m} USING (streamer_id)")
    q(f"""COPY (SELECT m.node_id, m.streamer_id, coalesce(g.n, 0) AS n_gifts,
                coalesce(g.k, 0) AS n_gifters, coalesce(g.r, 0) AS total_received,
                image_emb, speech_emb, comment_emb
          FROM smap m LEFT JOIN (SELECT streamer_id, sum(cnt) n, count(*) k,
                                 sum(total_price) r FROM gift_e GROUP BY 1) g USING (streamer_id)
          {' '.join(pooled)}) TO '{out}/nodes_streamer.parquet'""")
    q("""CREATE TEMP TABLE gid AS SELECT u.node_id AS src, s.node_id AS dst, g.* EXCLUDE
         (user_id, streamer_id) FROM gift_e g JOIN umap u USING (user_id)
         JOIN smap s USING (streamer_id)""")
    q(f"COPY gid TO '{out}/edges_gift.parquet'")
    q(f"""COPY (SELECT u.node_id AS src, s.node_id AS dst, w.* EXCLUDE (user_id, streamer_id)
          FROM watch_e w JOIN umap u USING (user_id) JOIN smap s USING (streamer_id))
          TO '{out}/edges_watch.parquet'""")
    q("""CREATE TEMP TABLE capped AS SELECT src, dst FROM (SELECT src, dst,
           row_number() OVER (PARTITION BY src ORDER BY weight DESC, dst) AS ru,
           row_number() OVER (PARTITION BY dst ORDER BY weight DESC, src) AS ri FROM gid)
         WHERE ru <= 50 AND ri <= 200""")
    q("""CREATE TEMP TABLE up AS SELECT a.src AS u, b.src AS v, a.dst AS i FROM capped a
         JOIN capped b ON a.dst = b.dst AND a.src < b.src""")
    q(f"""COPY (SELECT * FROM (SELECT x.i AS src, y.i AS dst, sum(x.w) AS score FROM
            (SELECT up.*, 1.0 / (1.0 + ov) AS w FROM up JOIN (SELECT u, v, count(*) AS ov
             FROM up GROUP BY 1, 2 HAVING count(*) >= 2) o USING (u, v)) x
            JOIN (SELECT up.* FROM up JOIN (SELECT u, v FROM up GROUP BY 1, 2
                  HAVING count(*) >= 2) o USING (u, v)) y
            ON x.u = y.u AND x.v = y.v AND x.i != y.i GROUP BY 1, 2)
          QUALIFY row_number() OVER (PARTITION BY src ORDER BY score DESC, dst) <= 20)
        TO '{out}/edges_s2s.parquet'""")
    q(f"""COPY (SELECT * FROM (SELECT p AS src, q AS dst, score FROM (
            SELECT o.u AS p, o.v AS q, o.co / sqrt(du.d * dv.d) AS score FROM
              (SELECT u, v, count(*) AS co FROM up GROUP BY 1, 2) o
              JOIN (SELECT src, count(*) AS d FROM capped GROUP BY 1) du ON o.u = du.src
              JOIN (SELECT src, count(*) AS d FROM capped GROUP BY 1) dv ON o.v = dv.src)
            UNION ALL SELECT q, p, score FROM (
            SELECT o.u AS p, o.v AS q, o.co / sqrt(du.d * dv.d) AS score FROM
              (SELECT u, v, count(*) AS co FROM up GROUP BY 1, 2) o
              JOIN (SELECT src, count(*) AS d FROM capped GROUP BY 1) du ON o.u = du.src
              JOIN (SELECT src, count(*) AS d FROM capped GROUP BY 1) dv ON o.v = dv.src))
          QUALIFY row_number() OVER (PARTITION BY src ORDER BY score DESC, dst) <= 20)
        TO '{out}/edges_u2u.parquet'""")
    return {"validation": counts, "gift_edges": q("SELECT count(*) FROM gid").fetchone()[0]}


def _run_child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def run_scale(name: str, work: Path, shuffle_partitions: int) -> dict:
    users, streamers, gifts = SCALES[name]
    raw = work / f"raw-{name}"
    if not (raw / "_SUCCESS").is_file():
        from graphbuild.synthetic import GenConfig, generate
        generate(raw, GenConfig(users=users, streamers=streamers, days=DAYS, start=START,
                                gifts_per_day=gifts // DAYS, **LEAN))
    manifest = json.loads((raw / "manifest.json").read_text())
    events = sum(n for t, n in manifest["row_counts"].items()
                 if t in ("gift", "click", "comment", "like"))
    out = work / f"graph-{name}"
    subprocess.run(["rm", "-rf", str(out), str(work / f"duck-{name}")], check=True)
    spark = _run_child(["-c", SPARK_CHILD, str(raw), str(out), str(shuffle_partitions)])
    duck = _run_child(["-c", "import json, sys, time\nfrom pathlib import Path\n"
                       "from bench.bench_build import duckdb_reference\nt = time.perf_counter()\n"
                       "r = duckdb_reference(Path(sys.argv[1]), Path(sys.argv[2]))\n"
                       "print('RESULT ' + json.dumps(dict(r, build_s=time.perf_counter() - t)))",
                       str(raw), str(work / f"duck-{name}")])
    return {"scale": name, "gift_events": manifest["row_counts"]["gift"], "events": events,
            "spark": spark, "duckdb": duck}


def write_doc(results: list[dict], path: Path) -> None:
    lines = [
        "# Graph build (Spark) vs the same transforms in DuckDB",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}; shared with other engineers' "
        "jobs while measured, so absolute times are noisy (both engines ran in the same run, "
        "one after the other). Spark: local[2], JVM start excluded. DuckDB: 2 threads.",
        "Events = gift + click + comment + like rows read (synthetic data, lean ratios: "
        "5 clicks, 1 comment, 1 like per gift; 15 days; segments and profiles besides).",
        "",
        "| scale | gift events | all events | Spark build s | DuckDB s | Spark / DuckDB | "
        "Spark events/s | DuckDB events/s | gift edges | s2s | u2u |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, d = r["spark"], r["duckdb"]
        lines.append(
            f"| {r['scale']} | {r['gift_events']:,} | {r['events']:,} | {s['build_s']:.0f} | "
            f"{d['build_s']:.0f} | {s['build_s'] / d['build_s']:.2f}x | "
            f"{r['events'] / s['build_s']:,.0f} | {r['events'] / d['build_s']:,.0f} | "
            f"{s['counts']['edges']['gift']:,} | {s['counts']['edges']['s2s']:,} | "
            f"{s['counts']['edges']['u2u']:,} |")
    lines += ["", "Spark time per step (s):", ""]
    for r in results:
        lines.append(f"- {r['scale']}: " + ", ".join(
            f"{k} {v:.0f}" for k, v in r["spark"]["steps"].items()))
    lines += ["", "Reproduce: `.venv/bin/python bench/bench_build.py --scales 1M,3M` "
              "(add `10M` for the 10M-gift run)."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@click.command()
@click.option("--scales", default="1M,3M", show_default=True)
@click.option("--work", default="/tmp/gie-bench-build", show_default=True)
@click.option("--shuffle-partitions", default=8, show_default=True)
@click.option("--out", default=str(ROOT / "docs" / "benchmarks" / "build.md"), show_default=True)
def main(scales: str, work: str, shuffle_partitions: int, out: str) -> None:
    from gie.logs import setup_logging

    setup_logging()
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in scales.split(","):
        t = time.perf_counter()
        results.append(run_scale(name, work_dir, shuffle_partitions))
        print(json.dumps(results[-1]), flush=True)
        print(f"scale {name} done in {time.perf_counter() - t:.0f}s", flush=True)
        (work_dir / "results.json").write_text(json.dumps(results, indent=1))
    write_doc(results, Path(out))


if __name__ == "__main__":
    main()
