"""Input layout checks (fail at once, file named) and every row rejection reason."""
from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gie.errors import BadInputError
from graphbuild import validate
from graphbuild.config import BuildConfig
from graphbuild.readers import find_table, find_tables, read_table
from graphbuild.schema import RAW_TABLES
from graphbuild.validate import OK, OUT_OF_WINDOW, TimeWindow
from tests.build_raw import DATE, DIMS, END_MS, START_MS, base_tables, ts, write_raw

WINDOW = TimeWindow(START_MS, END_MS)
CFG = BuildConfig(modality_dims=DIMS, max_gift_price=1000)


def test_window_is_the_days_up_to_the_end_of_date():
    w = TimeWindow.ending(pd.Timestamp(DATE).date(), 14)
    assert (w.start_ms, w.end_ms) == (START_MS, END_MS)
    assert w.last_day_start_ms == END_MS - 86_400_000


def test_layout_errors_name_the_file(tmp_path):
    tables = base_tables()
    raw = write_raw(tmp_path / "raw", {"click": tables["click"]})
    with pytest.raises(BadInputError, match="required table 'gift' is missing"):
        find_tables(raw)

    write_raw(raw, {"gift": tables["gift"].drop(columns=["gift_price"])}, "csv")
    with pytest.raises(BadInputError, match=r"gift\.csv.*lacks columns \['gift_price'\]"):
        find_table(raw, "gift")

    write_raw(raw, {"gift": tables["gift"]})        # now both gift.csv and gift.parquet
    with pytest.raises(BadInputError, match="given twice"):
        find_table(raw, "gift")
    (raw / "gift.csv").unlink()

    bad = pa.Table.from_pandas(tables["gift"].astype({"gift_price": str}), preserve_index=False)
    pq.write_table(bad, raw / "gift.parquet")
    with pytest.raises(BadInputError, match=r"gift\.parquet.*'gift_price' has type string"):
        find_table(raw, "gift")

    write_raw(raw, {"gift": tables["gift"]})
    data = (raw / "gift.parquet").read_bytes()
    (raw / "gift.parquet").write_bytes(data[: len(data) // 2])     # truncated upload
    with pytest.raises(BadInputError, match=r"gift\.parquet.*unreadable"):
        find_table(raw, "gift")


def _statuses(spark, folder, table, known=None, window=WINDOW):
    src = find_table(folder, table)
    df = validate.typed_table(read_table(spark, src), src)
    return validate.classify(df, table, window, CFG, known)


def _counts(df, table):
    return validate.status_counts({"t": validate.collapse(df)},
                                  WINDOW.last_day_start_ms)["t"]


def test_every_gift_rejection_reason(spark, tmp_path):
    ok = {"user_id": "1", "live_id": "100", "streamer_id": "10", "timestamp": str(ts(3)),
          "gift_price": "5"}
    cases = [
        ({}, OK),
        ({"timestamp": str(ts(-1))}, OUT_OF_WINDOW),
        ({"timestamp": str(END_MS)}, OUT_OF_WINDOW),        # day D+1 is never read
        ({"user_id": "x1"}, "unparseable_user_id"),
        ({"gift_price": "5.5"}, "unparseable_gift_price"),
        ({"user_id": ""}, "null_user_id"),
        ({"streamer_id": "-3"}, "negative_streamer_id"),
        ({"timestamp": ""}, "null_timestamp"),
        ({"timestamp": "12"}, "impossible_timestamp"),
        ({"gift_price": ""}, "null_gift_price"),
        ({"gift_price": "0"}, "nonpositive_gift_price"),
        ({"gift_price": "1001"}, "absurd_gift_price"),
        ({"user_id": "99"}, "unknown_user"),
        ({"streamer_id": "98"}, "unknown_streamer"),
    ]
    rows = [{**ok, **change} for change, _ in cases]
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame(rows, columns=RAW_TABLES["gift"].names).to_csv(raw / "gift.csv", index=False)
    known = {"user_id": spark.createDataFrame(pd.DataFrame({"user_id": [1]})),
             "streamer_id": spark.createDataFrame(pd.DataFrame({"streamer_id": [10]}))}
    df = validate.collapse(_statuses(spark, raw, "gift", known))
    counts = validate.status_counts({"gift": df}, WINDOW.last_day_start_ms)["gift"]
    want = Counter(reason for _, reason in cases)
    assert {k: v for k, v in counts.items() if not k.startswith("_")} == dict(want)
    rejected = validate.rejected_rows(df, "gift").toPandas()
    assert len(rejected) == len(cases) - 3
    x1 = rejected[rejected.reason == "unparseable_user_id"].iloc[0]
    assert x1["table"] == "gift" and json.loads(x1["record"])["user_id"] == "x1"


def test_duplicates_and_click_and_profile_reasons(spark, tmp_path):
    t = base_tables()
    gift = pd.concat([t["gift"], t["gift"].iloc[[0, 0, 3]]], ignore_index=True)
    click = t["click"].copy()
    click.loc[0, "watch_live_time"] = -5
    users = pd.concat([t["user"], t["user"].iloc[[2]].assign(gender="other")], ignore_index=True)
    raw = write_raw(tmp_path / "raw", {"gift": gift, "click": click, "user": users})

    collapsed = validate.collapse(_statuses(spark, raw, "gift"))
    dup = validate.rejected_rows(collapsed, "gift").toPandas()
    assert len(dup) == 3 and set(dup.reason) == {"duplicate"}
    assert validate.valid_rows(collapsed).count() == len(t["gift"])
    counts = validate.status_counts({"gift": collapsed}, WINDOW.last_day_start_ms)["gift"]
    assert counts[OK] == len(t["gift"]) and counts["duplicate"] == 3

    assert _counts(_statuses(spark, raw, "click"), "click")["negative_watch_live_time"] == 1

    prof = validate.dedup_profiles(_statuses(spark, raw, "user", window=None), "user")
    counts = _counts(prof, "user")
    assert counts == {OK: 8, "duplicate_id": 1}


def test_segment_vectors_of_wrong_length_or_not_finite_are_rejected(spark, tmp_path):
    good = {"streamer_id": 10, "live_id": 1, "timestamp": ts(2),
            "image_emb": "1 2 3 4", "speech_emb": "1 2", "comment_emb": ""}
    cases = [({}, OK), ({"image_emb": "1 2 3"}, "bad_image_emb"),
             ({"speech_emb": "1 nan"}, "bad_speech_emb"), ({"comment_emb": "inf 0"},
                                                           "bad_comment_emb"),
             ({"image_emb": "1 2 x 4"}, "bad_image_emb"), ({"comment_emb": "0 -inf"},
                                                          "bad_comment_emb")]
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame([{**good, **c} for c, _ in cases]).to_csv(raw / "segments.csv", index=False)
    counts = _counts(_statuses(spark, raw, "segments"), "segments")
    assert counts == dict(Counter(r for _, r in cases))

    vec = pa.list_(pa.float32())
    table = pa.table({"streamer_id": [10, 10], "live_id": [1, 2], "timestamp": [ts(2)] * 2,
                      "image_emb": pa.array([[1, 2, 3, 4], [1, 2, float("nan"), 4]], vec),
                      "speech_emb": pa.array([[1, 2], None], vec),
                      "comment_emb": pa.array([None, None], vec)})
    pq.write_table(table, raw / "segments.parquet")
    (raw / "segments.csv").unlink()
    counts = _counts(_statuses(spark, raw, "segments"), "segments")
    assert counts == {OK: 1, "bad_image_emb": 1}


@pytest.mark.parametrize("broadcast_max_rows", [1000, 0])
def test_duplicate_segments_collapse_to_one_row_and_keep_their_vectors(spark, tmp_path,
                                                                        broadcast_max_rows):
    vec = pa.list_(pa.float32())
    rows = [  # (live_id, image_emb, speech_emb): two exact copies, a vector apart, a null one
        (1, [1, 2, 3, 4], [1, 2]), (1, [1, 2, 3, 4], [1, 2]), (1, [1, 2, 3, 5], [1, 2]),
        (2, [0, 0, 0, 1], None), (2, [0, 0, 0, 1], None), (2, [0, 0, 0, 1], None),
        (3, [9, 9, 9, 9], [3, 3])]
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({
        "streamer_id": [10] * len(rows), "live_id": [r[0] for r in rows],
        "timestamp": [ts(2)] * len(rows), "image_emb": pa.array([r[1] for r in rows], vec),
        "speech_emb": pa.array([r[2] for r in rows], vec),
        "comment_emb": pa.array([None] * len(rows), vec)}), raw / "segments.parquet")
    classified = _statuses(spark, raw, "segments")
    collapsed = validate.collapse(classified)
    counts = validate.status_counts({"s": collapsed}, WINDOW.last_day_start_ms)["s"]
    assert counts == {OK: 4, "duplicate": 3}
    valid = validate.distinct_valid_rows(classified, collapsed, counts["duplicate"],
                                         broadcast_max_rows).toPandas()
    got = sorted((r.live_id, list(r.image_emb),
                  None if r.speech_emb is None else list(r.speech_emb))
                 for r in valid.itertuples())
    distinct = dict.fromkeys((r[0], tuple(r[1]), r[2] and tuple(r[2])) for r in rows)
    assert got == sorted((i, [float(x) for x in im], sp and [float(x) for x in sp])
                         for i, im, sp in distinct)
    dup = validate.rejected_rows(collapsed, "segments").toPandas()
    assert sorted(json.loads(r)["live_id"] for r in dup.record) == [1, 2, 2]
    assert all("_h_image_emb" in json.loads(r) for r in dup.record)
