"""Real-world profile tables on a real Spark session: only the id column is required, absent
KuaiLive columns are listed, declared extra columns become features encoded the same way on
every date, and bad ids, types and rows still fail or are quarantined as before."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gie.errors import EXIT_BAD_INPUT, BadInputError
from gie.layout import dated
from graphbuild import validate
from graphbuild.config import BuildConfig
from graphbuild.dataset import load_graph
from graphbuild.job import run_build
from graphbuild.readers import find_table, find_tables, read_table
from graphbuild.schema import RAW_TABLES
from tests.build_raw import DATE, DIMS, END_MS, base_tables, ts, write_raw

ROOT = Path(__file__).resolve().parents[1]
NEXT = "2025-05-15"
EXTRA = {"user": {"categorical": ["city"], "numeric": ["score"]},
         "streamer": {"numeric": ["followers"]}}
CFG = BuildConfig(modality_dims=DIMS, shuffle_partitions=2, vocab_slots=4, s2s_topk=2,
                  u2u_topk=3, extra_features=EXTRA)
USER_COLUMNS = ["user_id", "age", "gender", "country", "device_brand"]


def _real_world_tables() -> dict[str, pd.DataFrame]:
    """KuaiLive events, but profiles as a real platform might have them: a user table with
    five KuaiLive columns and two of its own, a streamer table with its id and a follower
    count, a room table with only what n_lives needs."""
    t = base_tables()
    users = t["user"][USER_COLUMNS].copy()
    users["city"] = ["paris", "lyon", "paris", None, "nice", "paris", "lyon", "paris"]
    users["score"] = [10.0, -3.5, 0.0, None, 1e6, 2.0, 7.0, 1.0]
    t["user"] = users
    t["streamer"] = pd.DataFrame({"streamer_id": range(10, 15),
                                  "followers": [0, 99, 5, 12, 1_000_000]})
    t["room"] = t["room"][["live_id", "streamer_id", "start_timestamp"]]
    return t


def _write(folder, tables):
    """Profiles as CSV (header = the columns given), events in the KuaiLive Parquet schema."""
    folder.mkdir(parents=True, exist_ok=True)
    events = {k: v for k, v in tables.items() if k not in ("user", "streamer", "room")}
    write_raw(folder, events)
    for name in ("user", "room"):
        tables[name].to_csv(folder / f"{name}.csv", index=False)
    pq.write_table(pa.Table.from_pandas(tables["streamer"], preserve_index=False),
                   folder / "streamer.parquet")
    return folder


@pytest.fixture(scope="module")
def real_world(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profiles")
    tables = _real_world_tables()
    raw = _write(tmp / "raw", tables)
    meta = run_build(raw, tmp / "graph", DATE, CFG, spark=spark)
    return tmp, tables, meta, load_graph(dated(tmp / "graph", DATE))


def _feature(g, meta, ntype: str, name: str) -> np.ndarray:
    return g.features[ntype][:, meta["features"][ntype].index(name)]


@pytest.mark.slow
def test_profile_tables_with_some_columns_build(real_world):
    tmp, tables, meta, g = real_world
    absent = meta["inputs"]["user"]["absent_columns"]
    assert absent == [c for c in RAW_TABLES["user"].names if c not in USER_COLUMNS]
    assert meta["inputs"]["streamer"]["absent_columns"] == RAW_TABLES["streamer"].names[1:]
    assert meta["inputs"]["room"]["absent_columns"] == [
        "p_date", "live_type", "end_timestamp", "live_content_category", "live_name_id"]
    assert meta["inputs"]["gift"]["absent_columns"] == []
    assert meta["environment"]["packages"]["pyspark"]       # what built it (gie/environment.py)
    assert meta["validation"]["rejected"] == 0
    names = meta["features"]["user"]
    # fixed width: 7 KuaiLive one-hot blocks (absent ones all zeros), city, 6 stats, score
    assert len(names) == g.features["user"].shape[1] == 8 * CFG.vocab_slots + 6 + 1
    users = tables["user"].set_index("user_id").loc[g.raw_ids["user"]]
    for value in set(users.gender):                          # a present column is used
        np.testing.assert_array_equal(_feature(g, meta, "user", f"gender={value}"),
                                      (users.gender == value).to_numpy())
    absent_block = [i for i, n in enumerate(names) if n.startswith("device_price=")]
    assert len(absent_block) == CFG.vocab_slots
    assert not g.features["user"][:, absent_block].any()
    # n_lives from a room table with only live_id, streamer_id and start_timestamp
    lives = tables["room"].groupby("streamer_id").live_id.nunique().reindex(
        g.raw_ids["streamer"], fill_value=0)
    np.testing.assert_allclose(_feature(g, meta, "streamer", "log1p(n_lives)"),
                               np.log1p(lives.to_numpy()), rtol=1e-6)
    assert lives.tolist() == [1, 1, 1, 0]


@pytest.mark.slow
def test_declared_extra_columns_are_features(real_world):
    tmp, tables, meta, g = real_world
    users = tables["user"].set_index("user_id").loc[g.raw_ids["user"]]
    score = users.score.fillna(0).to_numpy()
    np.testing.assert_allclose(_feature(g, meta, "user", "signed_log1p(score)"),
                               np.sign(score) * np.log1p(np.abs(score)), rtol=1e-6)
    enc = json.loads((g.path / "encoders.json").read_text())
    assert enc["user"]["city"] == ["paris", "lyon", "nice"]          # most frequent first
    assert enc["extra_features"]["user"] == {"categorical": ["city"], "numeric": ["score"]}
    for city in ("paris", "lyon", "nice"):
        np.testing.assert_array_equal(_feature(g, meta, "user", f"city={city}"),
                                      (users.city == city).to_numpy())
    followers = pd.Series([0, 99, 5, 12], index=range(10, 14)).loc[g.raw_ids["streamer"]]
    np.testing.assert_allclose(_feature(g, meta, "streamer", "signed_log1p(followers)"),
                               np.log1p(followers.to_numpy()), rtol=1e-6)


@pytest.mark.slow
def test_next_day_encodes_extra_columns_like_the_day_before(real_world, spark):
    tmp, tables, meta, g = real_world
    nxt = {k: v.copy() for k, v in tables.items()}
    nxt["gift"] = pd.concat([nxt["gift"], pd.DataFrame(
        [(8, 110, 10, ts(14), 3)], columns=RAW_TABLES["gift"].names)], ignore_index=True)
    # new city values, most frequent "marseille", and lyon disappears: positions never move
    nxt["user"]["city"] = ["marseille", "marseille", "paris", None, "nice", "brest",
                           "marseille", "toulouse"]
    raw = _write(tmp / "raw_next", nxt)
    meta2 = run_build(raw, tmp / "graph", NEXT, CFG, spark=spark)
    g2 = load_graph(dated(tmp / "graph", NEXT))
    assert g2.features["user"].shape[1] == g.features["user"].shape[1]
    assert meta2["features"] == meta["features"]
    enc = json.loads((g2.path / "encoders.json").read_text())
    assert enc["user"]["city"] == ["paris", "lyon", "nice"]          # 3 of 4 slots: full
    marseille = _feature(g2, meta2, "user", "city=<other>")
    assert marseille[list(g2.raw_ids["user"]).index(1)] == 1.0      # user 1 moved to marseille
    assert _feature(g2, meta2, "user", "city=paris")[list(g2.raw_ids["user"]).index(3)] == 1.0


def test_missing_id_column_fails_with_exit_2_naming_file_and_column(tmp_path):
    tables = _real_world_tables()
    tables["user"] = tables["user"].rename(columns={"user_id": "uid"})
    raw = _write(tmp_path / "raw", tables)
    run = subprocess.run([sys.executable, "cli.py", "build-graph", "--raw", str(raw), "--out",
                          str(tmp_path / "g"), "--date", DATE], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == EXIT_BAD_INPUT, run.stderr[-2000:]
    assert f"CSV file {raw / 'user.csv'} (table user) lacks columns ['user_id']" in run.stderr
    assert not (tmp_path / "g").exists()
    pq.write_table(pa.table({"streamer_id": ["a", "b"]}), raw / "streamer.parquet")
    (raw / "user.csv").unlink()
    with pytest.raises(BadInputError, match=r"streamer\.parquet.*'streamer_id' has type string"):
        find_table(raw, "streamer")
    pq.write_table(pa.table({"streamer_id": [1], "followers": ["many"]}),
                   raw / "streamer.parquet")
    with pytest.raises(BadInputError, match=r"streamer\.parquet.*'followers' has type string"):
        find_table(raw, "streamer", CFG.extra_features["streamer"])


def test_csv_part_files_must_share_their_header(tmp_path):
    folder = tmp_path / "raw" / "user"
    folder.mkdir(parents=True)
    pd.DataFrame({"user_id": [1], "age": ["20"]}).to_csv(folder / "a.csv", index=False)
    pd.DataFrame({"age": ["30"], "user_id": [2]}).to_csv(folder / "b.csv", index=False)
    with pytest.raises(BadInputError, match=r"part files of table user differ in columns"):
        find_table(tmp_path / "raw", "user")


def test_unparseable_extra_number_is_quarantined(spark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"user_id": ["1", "2", "3", "4"], "score": ["1.5", "-2e3", "lots", ""]}) \
        .to_csv(raw / "user.csv", index=False)
    src = find_table(raw, "user", CFG.extra_features["user"])
    assert src.absent[-1] == "city" and "score" not in src.absent
    typed = validate.typed_table(read_table(spark, src), src)
    df = validate.collapse(validate.classify(typed, "user", None, CFG))
    counts = validate.status_counts({"user": df}, END_MS - 86_400_000)["user"]
    assert counts == {validate.OK: 3, "unparseable_score": 1}
    rejected = validate.rejected_rows(df, "user").toPandas()
    assert json.loads(rejected.record[0]) == {"user_id": "3", "score": "lots"}
    scores = sorted(validate.valid_rows(df).toPandas().score.fillna(0))
    assert scores == [-2000.0, 0.0, 1.5]


def test_absent_columns_are_logged_once_per_table(tmp_path, caplog):
    tables = _real_world_tables()
    tables["streamer"] = tables["streamer"][["streamer_id"]]      # declared `followers` absent
    raw = _write(tmp_path / "raw", tables)
    with caplog.at_level(logging.INFO, logger="graphbuild.readers"):
        sources = find_tables(raw, CFG.extra_features)
    user = [r for r in caplog.records if "table user " in r.getMessage()]
    assert len(user) == 1 and "device_price" in user[0].getMessage()
    assert "city" not in user[0].getMessage()                      # declared and present
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "['followers'] declared in build.extra_features" in \
        warned[0].getMessage()
    assert sources["streamer"].absent[-1] == "followers"
    assert not [r for r in caplog.records if "table gift " in r.getMessage()]
