"""The synthetic generator: KuaiLive schema, determinism, consistency and planted statistics."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cli import main
from gie.errors import EXIT_BAD_INPUT, BadInputError
from graphbuild.schema import MODALITIES, RAW_TABLES
from graphbuild.synthetic import GenConfig, generate

SMALL = dict(users=2_000, streamers=200, days=6, start="2025-05-01", seed=7)


@pytest.fixture(scope="module")
def parquet_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "pq"
    generate(out, GenConfig(**SMALL))
    return out


@pytest.fixture(scope="module")
def csv_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "csv"
    generate(out, GenConfig(**SMALL, format="csv"))
    return out


@pytest.fixture(scope="module")
def db(parquet_ds) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for t in RAW_TABLES:
        con.execute(f"CREATE VIEW \"{t}\" AS SELECT * FROM '{parquet_ds / t}.parquet'")
    for t in ("users", "streamers"):
        con.execute(f"CREATE VIEW truth_{t} AS SELECT * FROM '{parquet_ds}/truth/{t}.parquet'")
    return con


def one(con, sql):
    return con.execute(sql).fetchone()[0]


def read_csv(path: Path, schema: pa.Schema) -> pa.Table:
    """Parse a generated CSV back to the Parquet schema (vectors: space-separated floats)."""
    types = {f.name: pa.string() if pa.types.is_list(f.type) else f.type for f in schema}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    for i, f in enumerate(schema):
        if pa.types.is_list(f.type):
            vec = pc.split_pattern(table.column(i), " ").cast(f.type)
            table = table.set_column(i, f, vec)
    return table


# ---------------------------------------------------------------------------------------------
# Layout, schema, determinism
# ---------------------------------------------------------------------------------------------
def test_layout_and_schema(parquet_ds):
    assert (parquet_ds / "_SUCCESS").is_file()
    manifest = json.loads((parquet_ds / "manifest.json").read_text())
    for name, schema in RAW_TABLES.items():
        table = pq.read_table(parquet_ds / f"{name}.parquet")
        assert table.schema.equals(schema), name
        assert manifest["row_counts"][name] == table.num_rows > 0
        assert sum(c.null_count for c in table.columns) == 0, name
    segs = pq.read_table(parquet_ds / "segments.parquet")
    for m in MODALITIES:
        lengths = pc.list_value_length(segs.column(f"{m}_emb"))
        assert pc.all(pc.equal(lengths, GenConfig().modality_dims[m])).as_py()
    assert manifest["config"]["seed"] == SMALL["seed"]
    assert manifest["version"] and manifest["environment"]["packages"]["numpy"]
    assert {p.name for p in (parquet_ds / "truth").iterdir()} == {"users.parquet",
                                                                  "streamers.parquet"}


def test_default_dims_match_build_config():
    from graphbuild.config import BuildConfig

    assert GenConfig().modality_dims == BuildConfig().modality_dims


def test_csv_and_parquet_hold_the_same_rows(parquet_ds, csv_ds):
    for name, schema in RAW_TABLES.items():
        header = (csv_ds / f"{name}.csv").open().readline().strip()
        assert header.replace('"', "").split(",") == schema.names, name
        from_csv = read_csv(csv_ds / f"{name}.csv", schema)
        from_parquet = pq.read_table(parquet_ds / f"{name}.parquet")
        assert from_csv.equals(from_parquet), name


def test_same_seed_same_bytes_other_seed_other_data(parquet_ds, tmp_path):
    again = tmp_path / "again"
    generate(again, GenConfig(**SMALL))
    for name in [f"{t}.parquet" for t in RAW_TABLES] + ["truth/users.parquet",
                                                        "truth/streamers.parquet"]:
        assert (again / name).read_bytes() == (parquet_ds / name).read_bytes(), name
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (parquet_ds, again))
    m1.pop("timings"), m2.pop("timings")
    assert m1 == m2

    other = tmp_path / "other"
    generate(other, GenConfig(**{**SMALL, "seed": 8}))
    assert (other / "gift.parquet").read_bytes() != (parquet_ds / "gift.parquet").read_bytes()


# ---------------------------------------------------------------------------------------------
# Consistency between tables
# ---------------------------------------------------------------------------------------------
def test_events_belong_to_rooms_of_their_streamer_and_day(db):
    start, end = 1746057600000, 1746057600000 + 6 * 86_400_000  # 2025-05-01 .. +6 days
    for t in ("gift", "click", "comment", "like", "segments"):
        bad = one(db, f"""SELECT count(*) FROM "{t}" e LEFT JOIN room r USING (live_id)
                         WHERE r.live_id IS NULL OR e.streamer_id <> r.streamer_id
                            OR e.timestamp < r.start_timestamp
                            OR e.timestamp >= r.end_timestamp""")
        assert bad == 0, t
        assert one(db, f'SELECT min(timestamp) >= {start} AND max(timestamp) < {end} FROM "{t}"')
    assert one(db, "SELECT count(*) - count(DISTINCT live_id) FROM room") == 0
    assert one(db, """SELECT count(*) FROM room WHERE p_date <> CAST(strftime(
                      make_timestamp(start_timestamp * 1000), '%Y%m%d') AS BIGINT)""") == 0


def test_every_gift_follows_a_click_in_the_same_room(db):
    assert one(db, """SELECT count(*) FROM gift g WHERE NOT EXISTS (
                        SELECT 1 FROM click c WHERE c.user_id = g.user_id
                        AND c.live_id = g.live_id AND c.timestamp < g.timestamp
                        AND c.timestamp >= g.timestamp - 300000
                        AND c.timestamp + c.watch_live_time >= g.timestamp)""") == 0
    assert one(db, "SELECT min(watch_live_time) FROM click") > 0


def test_profiles_cover_every_id_in_events(db):
    for t in ("gift", "click", "comment", "like"):
        assert one(db, f'SELECT count(*) FROM "{t}" ANTI JOIN "user" USING (user_id)') == 0
        assert one(db, f'SELECT count(*) FROM "{t}" ANTI JOIN streamer USING (streamer_id)') == 0
    assert one(db, 'SELECT count(*) FROM room ANTI JOIN streamer USING (streamer_id)') == 0


# ---------------------------------------------------------------------------------------------
# Planted statistics
# ---------------------------------------------------------------------------------------------
def test_sparsity_and_volumes(db):
    n_users = SMALL["users"]
    gifters = one(db, "SELECT count(DISTINCT user_id) FROM gift")
    assert 0.03 * n_users < gifters < 0.2 * n_users          # most users never gift
    # Gifters gift to few streamers, with repeats.
    assert one(db, """SELECT median(k) FROM (SELECT count(DISTINCT streamer_id) k
                      FROM gift GROUP BY user_id)""") <= 3
    assert one(db, """SELECT sum(n - 1) / sum(n) FROM (SELECT count(*) n FROM gift
                      GROUP BY user_id, streamer_id)""") > 0.3
    gifts = one(db, "SELECT count(*) FROM gift")
    expected = SMALL["users"] * 0.05 * SMALL["days"]
    assert 0.8 * expected < gifts < 1.2 * expected
    assert 15 * gifts < one(db, "SELECT count(*) FROM click") < 25 * gifts
    assert 2 * gifts < one(db, "SELECT count(*) FROM comment") < 4 * gifts
    assert 4 * gifts < one(db, 'SELECT count(*) FROM "like"') < 6 * gifts


def test_heavy_tails(db):
    p50, p99 = db.execute("SELECT quantile_cont(gift_price, [0.5, 0.99]) FROM gift").fetchone()[0]
    assert p99 > 15 * p50
    # The busiest 10% of users make well over 10% of clicks; same for streamers and gifts.
    top_share = """SELECT sum(n) FILTER (WHERE r <= 0.1) / sum(n) FROM (
                     SELECT count(*) n, percent_rank() OVER (ORDER BY count(*) DESC) r
                     FROM {t} GROUP BY {k})"""
    assert one(db, top_share.format(t="click", k="user_id")) > 0.35
    assert one(db, top_share.format(t="gift", k="streamer_id")) > 0.4


def test_debut_days(db):
    # New streamers keep appearing: debuts spread over the period, no room before the debut.
    debut_days = one(db, "SELECT count(DISTINCT debut_day) FROM truth_streamers "
                         "WHERE debut_day > 0")
    assert debut_days == SMALL["days"] - 1
    assert one(db, """SELECT count(*) FROM room r JOIN truth_streamers s USING (streamer_id)
                      WHERE r.p_date < CAST(strftime(CAST(s.debut_date AS DATE), '%Y%m%d')
                      AS BIGINT)""") == 0
    # Their profile's first live is their first room; veterans went live before the period.
    assert one(db, """SELECT count(*) FROM streamer p JOIN truth_streamers s USING (streamer_id)
                      JOIN (SELECT streamer_id, min(start_timestamp) f FROM room GROUP BY 1)
                      USING (streamer_id)
                      WHERE (s.debut_day > 0 AND p.first_live_timestamp <> f)
                         OR (s.debut_day = 0 AND p.first_live_timestamp >= 1746057600000)""") == 0
    # New streamers get gifts, including on their first days.
    assert one(db, """SELECT count(*) FROM gift g JOIN truth_streamers s USING (streamer_id)
                      WHERE s.debut_day > 0 AND g.timestamp < 1746057600000
                            + (s.debut_day + 3) * 86400000""") > 10


def test_topic_affinity_is_strong_but_noisy(db):
    in_topics = """SELECT avg(CAST(s.topic IN (u.topic, u.second_topic) AS DOUBLE))
                   FROM {t} e JOIN truth_users u USING (user_id)
                   JOIN truth_streamers s USING (streamer_id)"""
    for t in ("gift", "click", "comment"):
        share = one(db, in_topics.format(t=t))
        assert 0.75 < share < 0.95, (t, share)  # chance would be 2/8


def test_later_gifts_reach_new_streamers_in_the_users_topics(db):
    # The signal GIE expansion must find: a gifter's later gifts go partly to streamers they
    # never gifted before, mostly in their topics.
    row = db.execute("""
        WITH g AS (SELECT user_id, streamer_id, timestamp // 86400000 AS d FROM gift),
             first_pair AS (SELECT user_id, streamer_id, min(d) AS fd FROM g GROUP BY ALL),
             first_user AS (SELECT user_id, min(d) AS ud FROM g GROUP BY ALL),
             later AS (SELECT g.*, p.fd = g.d AS novel FROM g JOIN first_user u USING (user_id)
                       JOIN first_pair p USING (user_id, streamer_id) WHERE g.d > u.ud)
        SELECT avg(CAST(novel AS DOUBLE)),
               avg(CAST(s.topic IN (t.topic, t.second_topic) AS DOUBLE)) FILTER (WHERE novel)
        FROM later JOIN truth_users t USING (user_id) JOIN truth_streamers s USING (streamer_id)
        """).fetchone()
    novel_share, novel_in_topic = row
    assert 0.25 < novel_share < 0.8
    assert novel_in_topic > 0.7


def test_segments_carry_real_but_imperfect_topic_signal(parquet_ds):
    segs = pq.read_table(parquet_ds / "segments.parquet")
    truth = pq.read_table(parquet_ds / "truth" / "streamers.parquet").to_pandas()
    topic_of = dict(zip(truth.streamer_id, truth.topic))
    topics = np.array([topic_of[s] for s in segs.column("streamer_id").to_numpy()])
    accuracy = {}
    for m in MODALITIES:
        vec = np.stack(segs.column(f"{m}_emb").to_numpy(zero_copy_only=False))
        centroids = np.stack([vec[topics == t].mean(0) for t in range(8)])
        guess = ((vec[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        accuracy[m] = (guess == topics).mean()
    # Chance is 1/8; no modality gives the topic away.
    assert 0.25 < accuracy["comment"] < accuracy["speech"] < accuracy["image"] < 0.95, accuracy


def test_profiles_carry_weak_topic_signal(db):
    share = one(db, """SELECT avg(CAST(p.live_operation_tag = printf('tag_%02d', s.topic)
                       AS DOUBLE)) FROM streamer p JOIN truth_streamers s USING (streamer_id)""")
    assert 0.2 < share < 0.6  # chance is 1/10, never the full answer
    share = one(db, """SELECT avg(CAST(r.live_content_category = 'category_' || s.topic
                       AS DOUBLE)) FROM room r JOIN truth_streamers s USING (streamer_id)""")
    assert 0.25 < share < 0.6


# ---------------------------------------------------------------------------------------------
# Profiles: other shapes of data
# ---------------------------------------------------------------------------------------------
def _profile_db(tmp_path: Path, profile: str, **over) -> duckdb.DuckDBPyConnection:
    out = tmp_path / profile
    generate(out, GenConfig(profile=profile, days=8, seed=1, **over))
    con = duckdb.connect()
    for t in ("gift", "click"):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{out / t}.parquet')")
    for t in ("users", "streamers"):
        con.execute(f"CREATE VIEW truth_{t} AS SELECT * FROM "
                    f"read_parquet('{out / 'truth' / t}.parquet')")
    return con


def test_long_history_profile_has_long_histories_and_first_gift_days(tmp_path):
    db = _profile_db(tmp_path, "long_history", users=3_000, streamers=6_000)
    last = 1746057600000 + 7 * 86_400_000
    median = one(db, f"""SELECT median(n) FROM (SELECT user_id, count(DISTINCT streamer_id) n
                         FROM gift WHERE timestamp < {last} GROUP BY ALL)""")
    assert median >= 10            # 7 days here; 30 in the default 14-day window
    first = one(db, f"""WITH h AS (SELECT DISTINCT user_id, streamer_id FROM gift
                                   WHERE timestamp < {last})
                        SELECT avg(CAST(h.user_id IS NULL AS DOUBLE)) FROM
                        (SELECT DISTINCT user_id, streamer_id FROM gift
                         WHERE timestamp >= {last}) n LEFT JOIN h USING (user_id, streamer_id)""")
    assert first > 0.8


def test_weak_clicks_profile_clicks_carry_no_topic_signal(tmp_path):
    db = _profile_db(tmp_path, "weak_clicks", users=3_000, streamers=300)
    in_topics = """SELECT avg(CAST(s.topic IN (u.topic, u.second_topic) AS DOUBLE))
                   FROM {t} e JOIN truth_users u USING (user_id)
                   JOIN truth_streamers s USING (streamer_id)"""
    assert one(db, in_topics.format(t="gift")) > 0.75
    # Browsing clicks (most clicks) follow popularity only: near the chance share 2/8.
    assert one(db, in_topics.format(t="click")) < 0.4


def test_no_content_profile_is_long_history_without_segments(tmp_path):
    small = dict(users=300, streamers=400, days=3, seed=2)
    with_content, without = tmp_path / "long_history", tmp_path / "no_content"
    generate(with_content, GenConfig(profile="long_history", **small))
    generate(without, GenConfig(profile="no_content", **small))
    assert not (without / "segments.parquet").exists()
    assert "segments" not in json.loads((without / "manifest.json").read_text())["files"]
    for table in ("gift", "click", "room", "user", "truth/streamers"):
        assert pq.read_table(without / f"{table}.parquet").equals(
            pq.read_table(with_content / f"{table}.parquet")), table


def test_few_users_profile_is_no_content_at_the_public_datasets_size():
    few, no_content = GenConfig(profile="few_users"), GenConfig(profile="no_content")
    assert (few.users, few.streamers, few.content) == (2_000, 17_000, False)
    assert few.model_dump(exclude={"profile", "users", "streamers"}) == \
        no_content.model_dump(exclude={"profile", "users", "streamers"})
    from graphbuild.commands import generate as command
    from graphbuild.synthetic import PROFILES
    choice = next(p for p in command.params if p.name == "profile")
    assert list(choice.type.choices) == list(PROFILES)


def test_profiles_change_only_what_they_name():
    assert GenConfig(profile="weak_clicks").gift_rate == GenConfig().gift_rate
    assert GenConfig(profile="long_history", users=50).users == 50
    assert GenConfig(profile="long_history").repeat_avoidance > 0
    with pytest.raises(ValueError):
        GenConfig(profile="nope")


# ---------------------------------------------------------------------------------------------
# Command line and failure modes
# ---------------------------------------------------------------------------------------------
def test_cli_writes_and_reruns_idempotently(tmp_path):
    out = tmp_path / "raw"
    args = ["generate", "--out", str(out), "--users", "300", "--streamers", "40", "--days", "3",
            "--seed", "3", "--format", "csv"]
    assert main(args) == 0
    first = (out / "gift.csv").read_bytes()
    assert main(args) == 0                      # a rerun replaces the dataset, same bytes
    assert (out / "gift.csv").read_bytes() == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_arguments_exit_2(tmp_path):
    assert main(["generate", "--out", str(tmp_path / "x"), "--start", "2025-02-30"]) \
        == EXIT_BAD_INPUT
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["generate", "--out", str(precious), "--users", "10"]) == EXIT_BAD_INPUT
    assert (precious / "notes.txt").read_text() == "keep me"
    assert main(["generate", "--out", str(tmp_path / "y"), "--users", "200000000"]) \
        == EXIT_BAD_INPUT
    with pytest.raises(BadInputError, match="not YYYY-MM-DD"):
        GenConfig(start="May 1")


def test_tiny_worlds_stay_consistent(tmp_path):
    # One streamer rarely live: days without anyone live must give days without events.
    for seed in range(3):
        out = tmp_path / f"tiny{seed}"
        manifest = generate(out, GenConfig(users=20, streamers=1, days=5, seed=seed,
                                           live_prob=0.2))
        rooms = pq.read_table(out / "room.parquet").column("live_id").to_pylist()
        for t in ("gift", "click", "comment", "like", "segments"):
            assert set(pq.read_table(out / f"{t}.parquet").column("live_id").to_pylist()) \
                <= set(rooms), t
        assert manifest["row_counts"]["user"] == 20


def test_config_rejects_unknown_modalities():
    with pytest.raises(ValueError, match="modality_dims"):
        GenConfig(modality_dims={"image": 8})
