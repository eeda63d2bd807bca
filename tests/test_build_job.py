"""The whole build on a real local Spark session: contract, exact values, CSV = Parquet,
stable ids across two dates, atomic publish on failure, bad input named."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

import cli
from gie.errors import EXIT_BAD_INPUT, BadInputError
from gie.layout import dated
from gie.publish import is_published
from graphbuild.config import BuildConfig
from graphbuild.dataset import load_graph
from graphbuild.job import run_build
from graphbuild.schema import GRAPH_NODES, MODALITIES
from tests.build_raw import DATE, DAY_MS, DIMS, END_MS, base_tables, ts, write_raw

ROOT = Path(__file__).resolve().parents[1]
CFG = BuildConfig(modality_dims=DIMS, shuffle_partitions=2, vocab_slots=4, s2s_topk=2,
                  u2u_topk=3)
NEXT = "2025-05-15"


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    tables = base_tables()
    raw = write_raw(tmp / "raw", tables)
    meta = run_build(raw, tmp / "graph", DATE, CFG, spark=spark)
    return tmp, tables, meta, load_graph(dated(tmp / "graph", DATE))


def _gift_frame(g) -> pd.DataFrame:
    e = g.edges["gift"]
    return pd.DataFrame({"user_id": g.raw_ids["user"][e.src],
                         "streamer_id": g.raw_ids["streamer"][e.dst], **e.data}) \
        .sort_values(["user_id", "streamer_id"]).reset_index(drop=True)


def test_graph_matches_contract_and_pandas(built):
    tmp, tables, meta, g = built
    gift = tables["gift"]
    # node ids in raw id order; every user/streamer with events is a node
    assert g.raw_ids["user"].tolist() == [1, 2, 3, 4, 5, 6, 7]          # 7 only clicked
    assert g.raw_ids["streamer"].tolist() == [10, 11, 12, 13]
    got = _gift_frame(g)
    want = gift.assign(w=2.0 ** (-(END_MS - gift.timestamp) / (7 * DAY_MS))).groupby(
        ["user_id", "streamer_id"]).agg(total_price=("gift_price", "sum"),
                                        count=("gift_price", "size"), weight=("w", "sum"),
                                        last_ts=("timestamp", "max")).reset_index()
    for c in ("user_id", "streamer_id", "total_price", "count", "last_ts"):
        np.testing.assert_array_equal(got[c], want[c], err_msg=c)
    np.testing.assert_allclose(got.weight, want.weight)

    users = g.node_columns["user"]
    assert users["n_gifts"].tolist() == gift.groupby("user_id").size().reindex(
        range(1, 8), fill_value=0).tolist()
    assert users["n_clicks"][6] == 1 and users["days_active"][0] == 7
    s = g.node_columns["streamer"]
    assert s["n_gifters"].tolist() == gift.groupby("streamer_id").user_id.nunique().tolist()
    assert s["first_seen_ts"][0] == gift[gift.streamer_id == 10].timestamp.min()
    # streamer 11 has segments but no speech vector; streamer 13 has no segments at all
    assert g.modality_mask.tolist() == [[True, True, True], [True, False, True],
                                        [True, True, True], [False, False, False]]
    assert g.modalities["image"].shape == (4, DIMS["image"])
    assert not g.modalities["speech"][3].any()
    names = meta["features"]
    assert g.features["user"].shape == (7, len(names["user"]))
    assert g.features["streamer"].shape == (4, len(names["streamer"]))
    assert len(names["user"]) == 7 * CFG.vocab_slots + 6             # fixed width

    assert set(g.edges) == {"gift", "watch", "s2s", "u2u"}
    s2s = g.edges["s2s"]
    assert np.bincount(s2s.src).max() <= 2 and (s2s.src != s2s.dst).all()
    assert meta["counts"]["edges"] == {k: len(v) for k, v in g.edges.items()}
    assert meta["validation"]["rejected"] == 0 and meta["counts"]["rejected"] == 0
    assert meta["schema_version"] == 1 and "similarity" in meta["timings_s"]
    enc = json.loads((g.path / "encoders.json").read_text())
    assert enc["vocab_slots"] == 4 and set(enc["user"]) >= {"gender", "age"}


@pytest.mark.slow
def test_csv_part_files_give_the_same_graph(built, spark):
    """CSV part files, and sort-merge joins instead of broadcasts, give the same graph."""
    tmp, tables, _, g = built
    raw = write_raw(tmp / "raw_csv", tables, "csv")
    gift = pd.read_csv(raw / "gift.csv")
    (raw / "gift.csv").unlink()
    (raw / "gift").mkdir()
    gift.iloc[:7].to_csv(raw / "gift" / "part-0.csv", index=False)
    gift.iloc[7:].to_csv(raw / "gift" / "part-1.csv", index=False)
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        run_build(raw, tmp / "graph_csv", DATE,
                  CFG.model_copy(update={"broadcast_max_rows": 0}), spark=spark)
    finally:
        spark.conf.unset("spark.sql.autoBroadcastJoinThreshold")
    c = load_graph(dated(tmp / "graph_csv", DATE))
    for t in GRAPH_NODES:
        np.testing.assert_array_equal(c.raw_ids[t], g.raw_ids[t])
        np.testing.assert_allclose(c.features[t], g.features[t], rtol=1e-6)
    for m in MODALITIES:
        np.testing.assert_allclose(c.modalities[m], g.modalities[m], rtol=1e-5)
    for e in g.edges:
        np.testing.assert_array_equal(c.edges[e].src, g.edges[e].src)
        np.testing.assert_array_equal(c.edges[e].dst, g.edges[e].dst)
        for k, v in g.edges[e].data.items():
            np.testing.assert_allclose(c.edges[e].data[k], v, err_msg=f"{e}.{k}")


@pytest.mark.slow
def test_next_day_keeps_ids_and_feature_width(built, spark):
    tmp, tables, meta, g = built
    nxt = {k: v.copy() for k, v in tables.items()}
    gift = nxt["gift"]
    gift = gift[gift.user_id != 6]                                    # user 6 goes quiet
    new = pd.DataFrame([(0, 115, 15, ts(14), 3), (2, 115, 15, ts(14, 2), 1), (1, 110, 10,
                                                                           ts(14, 3), 2)],
                       columns=gift.columns)
    nxt["gift"] = pd.concat([gift, new], ignore_index=True)
    nxt["user"] = pd.concat([nxt["user"], nxt["user"].iloc[[0]].assign(user_id=0,
                                                                       gender="brand_new")])
    nxt["streamer"] = pd.concat([nxt["streamer"], nxt["streamer"].iloc[[0]].assign(
        streamer_id=15)])
    raw = write_raw(tmp / "raw_next", nxt)
    meta2 = run_build(raw, tmp / "graph", NEXT, CFG, spark=spark)   # previous found by date
    assert meta2["previous"] == str(dated(tmp / "graph", DATE))
    g2 = load_graph(dated(tmp / "graph", NEXT))
    # known ids keep their node ids; new ones are appended (0 after 7 although it is smaller)
    assert g2.raw_ids["user"].tolist() == [1, 2, 3, 4, 5, 6, 7, 0]
    assert g2.raw_ids["streamer"].tolist() == [10, 11, 12, 13, 15]
    active = g2.node_columns["user"]["active"]
    assert active.tolist() == [True, True, True, True, True, False, True, True]
    assert g2.node_columns["streamer"]["first_seen_ts"][0] == \
        g.node_columns["streamer"]["first_seen_ts"][0]                 # day 0 left the window
    assert g2.features["user"].shape[1] == g.features["user"].shape[1]
    assert g2.features["streamer"].shape[1] == g.features["streamer"].shape[1]
    enc1 = json.loads((g.path / "encoders.json").read_text())
    enc2 = json.loads((g2.path / "encoders.json").read_text())
    for col, vocab in enc1["user"].items():
        assert enc2["user"][col][:len(vocab)] == vocab                # positions never move
    assert meta2["counts"]["active_nodes"] == {"user": 7, "streamer": 5}


@pytest.mark.slow
def test_bad_input_fails_without_touching_the_published_date(built, spark):
    tmp, tables, _, _ = built
    out = tmp / "graph"
    before = (dated(out, DATE) / "metadata.json").read_text()

    bad = {**tables, "gift": tables["gift"].assign(
        gift_price=lambda d: np.where(d.index % 4 == 0, -1, d.gift_price))}
    raw = write_raw(tmp / "raw_bad", bad)
    with pytest.raises(BadInputError, match=r"rejected.*nonpositive_gift_price"):
        run_build(raw, out, DATE, CFG, spark=spark)

    quiet = {**tables, "gift": tables["gift"][tables["gift"].timestamp < ts(13, 0)]}
    raw = write_raw(tmp / "raw_quiet", quiet)
    with pytest.raises(BadInputError, match=f"no gift events on {DATE} in .*gift.parquet"):
        run_build(raw, out, DATE, CFG, spark=spark)

    assert is_published(dated(out, DATE))
    assert (dated(out, DATE) / "metadata.json").read_text() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no staging left

    # a lenient threshold accepts the same bad rows and records them by reason
    lenient = CFG.model_copy(update={"max_rejected_share": 0.5})
    meta = run_build(tmp / "raw_bad", tmp / "graph_lenient", DATE, lenient, spark=spark)
    assert meta["validation"]["rejected_by_reason"] == {"gift": {"nonpositive_gift_price": 4}}
    rej = pads.dataset(dated(tmp / "graph_lenient", DATE) / "rejected").to_table().to_pandas()
    assert len(rej) == 4 and set(rej.reason) == {"nonpositive_gift_price"}
    assert json.loads(rej.record[0])["gift_price"] == -1


def test_cli_reports_bad_input_with_exit_code_2(built):
    tmp, tables, _, _ = built
    raw = write_raw(tmp / "raw_cli", {"gift": tables["gift"].drop(columns=["timestamp"])}, "csv")
    code = cli.main(["build-graph", "--raw", str(raw), "--out", str(tmp / "graph_cli"),
                     "--date", DATE])
    assert code == EXIT_BAD_INPUT
    assert not (tmp / "graph_cli" / f"dt={DATE}").exists()


def test_spark_submit_entry_point_fails_on_missing_table(tmp_path):
    """spark_jobs/build_graph.py is the CLI command: bad input exits 2 before Spark starts."""
    (tmp_path / "raw").mkdir()
    proc = subprocess.run([sys.executable, "spark_jobs/build_graph.py", "--raw",
                           str(tmp_path / "raw"), "--out", str(tmp_path / "g"), "--date", DATE],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "required table 'gift' is missing" in proc.stderr


def collectors(spark) -> list[str]:
    """The garbage collectors of the session's JVM."""
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory \
        .getGarbageCollectorMXBeans()
    return sorted(b.getName() for b in beans)


def test_session_jvm_runs_the_throughput_collector_unless_told_otherwise(spark, tmp_path):
    """get_spark starts its JVM with -XX:+UseParallelGC (docs/OPERATIONS.md, "The build's JVM");
    GIE_SPARK_DRIVER_JAVA_OPTIONS replaces the options; under spark-submit the user's stay."""
    assert collectors(spark) == ["PS MarkSweep", "PS Scavenge"]
    code = ("from graphbuild.spark import get_spark; from tests.test_build_job import collectors; "
            "print(collectors(get_spark('local[1]')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=180, env={**os.environ,
                                           "GIE_SPARK_DRIVER_JAVA_OPTIONS": "-XX:+UseSerialGC"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "['Copy', 'MarkSweepCompact']"
    job = tmp_path / "job.py"
    job.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}\n"
                   "from pyspark.sql import SparkSession\n"
                   "print(SparkSession.getActiveSession().conf"
                   ".get('spark.driver.extraJavaOptions'))\n")
    run = subprocess.run(["bin/spark-submit", "--master", "local[1]", "--conf",
                          "spark.driver.extraJavaOptions=-XX:+UseSerialGC", str(job)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    jvm, options = run.stdout.strip().splitlines()[-2:]   # Spark adds its own options first
    assert jvm == "['Copy', 'MarkSweepCompact']"
    assert options.endswith(" -XX:+UseSerialGC") and "UseParallelGC" not in options
