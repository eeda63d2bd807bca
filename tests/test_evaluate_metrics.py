"""Metrics and raw-data reading against hand-computed values on tiny cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gie.errors import BadInputError
from gie.evaluate.metrics import RankingMetrics, auc, gauc, link_prediction, ranking_at_k
from gie.evaluate.rawdata import (day_start_ms, next_day_available, read_days, read_events,
                                  to_node_ids)
from tests.evaluate_fixtures import write_raw


def test_ranking_at_k_hand_computed():
    ranked, rel = [3, 1, 7, 5], {1, 5, 9}
    hit, recall, ndcg = ranking_at_k(ranked, rel, 2)
    assert (hit, recall) == (1.0, pytest.approx(1 / 3))
    assert ndcg == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    hit, recall, ndcg = ranking_at_k(ranked, rel, 4)
    assert recall == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3) + 0.5))
    assert ranking_at_k([2, 4], {1}, 10) == (0.0, 0.0, 0.0)
    assert ranking_at_k([], {1}, 10) == (0.0, 0.0, 0.0)


def test_ranking_metrics_average_over_users_and_skip_empty_targets():
    acc = RankingMetrics([1, 2])
    acc.update([1, 2], {1})          # hit at 1
    acc.update([2, 1], {1, 3})       # miss at 1, half at 2
    acc.update([5], set())           # no targets: not a user of this segment
    out = acc.compute()
    assert out["users"] == 2
    assert out["hit_rate@1"] == pytest.approx(0.5)
    assert out["recall@2"] == pytest.approx((1 + 0.5) / 2)
    ndcg2_second = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert out["ndcg@2"] == pytest.approx((1 + ndcg2_second) / 2)


def test_ranking_metrics_are_the_means_of_the_per_list_metrics():
    """The accumulator's means are those of `ranking_at_k` list by list: lists shorter than
    K, longer than K, without a hit, and more relevant targets than K."""
    rng = np.random.default_rng(7)
    ks = [1, 5, 20]
    acc, per_list = RankingMetrics(ks), {k: [] for k in ks}
    for _ in range(300):
        ranked = rng.permutation(60)[:rng.integers(0, 40)].tolist()
        relevant = set(rng.choice(60, rng.integers(0, 30), replace=False).tolist())
        acc.update(ranked, relevant)
        if relevant:
            for k in ks:
                per_list[k].append(ranking_at_k(ranked, relevant, k))
    out = acc.compute()
    assert out["users"] == len(per_list[1])
    for k in ks:
        mean = np.mean(per_list[k], axis=0)
        assert [out[f"hit_rate@{k}"], out[f"recall@{k}"], out[f"ndcg@{k}"]] == \
            pytest.approx(mean.tolist(), rel=1e-12)


def test_link_prediction_counts_ties_against_the_model():
    pos = np.array([0.5, 0.1])
    neg = np.array([[0.1, 0.5, 0.9], [0.0, 0.05, 0.2]])
    out = link_prediction(pos, neg)
    assert out["auc"] == pytest.approx((1.5 / 3 + 2 / 3) / 2)
    assert out["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert out["edges"] == 2


def test_auc_and_gauc_hand_computed():
    users = np.array([1, 1, 1, 2, 2, 3, 3])
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.95, 0.2, 0.4, 0.1, 0.3])
    # user 1: AUC 0.5 over 3 impressions; user 2: AUC 0 over 2; user 3 has one class only.
    assert gauc(users, labels, scores) == pytest.approx((3 * 0.5 + 2 * 0.0) / 5)
    assert auc(labels, scores) == pytest.approx(5 / 10)  # 0.9 beats 4 negatives, 0.2 one
    assert np.isnan(auc(np.zeros(3), np.arange(3)))


def test_read_events_filters_days_and_accepts_csv_parquet_and_parts(tmp_path):
    t0 = day_start_ms("2025-05-02")
    rows = pd.DataFrame({"user_id": [1, 2, 3], "live_id": [7, 7, 7], "streamer_id": [10, 11, 12],
                         "timestamp": [t0 - 1, t0, t0 + 86_399_999], "gift_price": [1, 2, 3]})
    write_raw(tmp_path / "pq", "gift", rows)
    (tmp_path / "csv").mkdir()
    rows.to_csv(tmp_path / "csv" / "gift.csv", index=False)
    (tmp_path / "parts" / "gift").mkdir(parents=True)
    rows.iloc[:2].to_csv(tmp_path / "parts" / "gift" / "part-0.csv", index=False)
    rows.iloc[2:].to_csv(tmp_path / "parts" / "gift" / "part-1.csv", index=False)
    for raw in ("pq", "csv", "parts"):
        got = read_days(tmp_path / raw, "gift", "2025-05-02", 1)
        assert sorted(got["user_id"]) == [2, 3], raw
        assert next_day_available(tmp_path / raw, "2025-05-01")
        assert not next_day_available(tmp_path / raw, "2025-05-02")


def test_read_events_names_file_column_and_row_of_bad_values(tmp_path):
    (tmp_path / "gift.csv").write_text(
        "user_id,live_id,streamer_id,timestamp,gift_price\n1,7,10,5,1\n,7,11,6,2\n")
    with pytest.raises(BadInputError, match=r"gift.csv: column 'user_id'.*1 rows.*'streamer_id': 11"):
        read_events(tmp_path, "gift", 0, 100)
    (tmp_path / "gift.csv").write_text("user_id,live_id,streamer_id,timestamp\n1,7,10,5\n")
    with pytest.raises(BadInputError, match=r"missing columns \['gift_price'\]"):
        read_events(tmp_path, "gift", 0, 100)
    with pytest.raises(BadInputError, match="raw table 'click' not found"):
        read_events(tmp_path, "click", 0, 100)


def test_to_node_ids_maps_through_the_id_map():
    raw_ids = np.array([1005, 1001, 1003])
    assert to_node_ids(raw_ids, np.array([1003, 1001, 9, 1005])).tolist() == [2, 1, -1, 0]
    assert to_node_ids(np.array([], np.int64), np.array([1])).tolist() == [-1]


def test_best_positions_is_a_stable_sort_cut():
    """The top-n selection of the dense baselines and the oracle."""
    from gie.evaluate.baselines import best_positions
    rng = np.random.default_rng(0)
    for _ in range(200):
        score = rng.integers(0, 5, rng.integers(1, 40)).astype(float)   # many ties
        n = int(rng.integers(0, 45))
        assert best_positions(score, n).tolist() == np.argsort(-score, kind="stable")[:n].tolist()
        score[score == 0] = -np.inf                                       # not candidates
        want = [i for i in np.argsort(-score, kind="stable") if np.isfinite(score[i])][:n]
        assert best_positions(score, n).tolist() == want


def test_top_positions_of_a_batch_equal_a_stable_sort_per_row():
    """Rows whose top is strict take the top-k alone; rows with a tie at their cut or a
    non-finite score in their top are scanned: both give a stable sort's order."""
    from gie.evaluate.baselines import top_positions
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((60, 50)).astype(np.float32)
    rows[::3, 10:30] = rows[::3, 5:6]                  # ties across many cuts
    rows[1::4, ::2] = -np.inf                          # half the row not candidates
    ns = rng.integers(0, 52, len(rows))
    for row, n, got in zip(rows, ns, top_positions(rows, ns)):
        want = [i for i in np.argsort(-row, kind="stable") if np.isfinite(row[i])][:n]
        assert got.tolist() == want


def test_oracle_ranks_by_planted_mixture_and_history_oracle_by_the_users_gifts(tmp_path):
    """Two topics, equal chances within each: the planted mixture (mostly topic 0) puts a
    topic-0 streamer first; the history oracle, which sees only the user's gift to a topic-1
    streamer, puts the other topic-1 streamer first."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from gie.evaluate.oracle import explore_ceiling
    (tmp_path / "truth").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {
        "topics": 2, "start": "2025-05-01", "new_boost_days": 3, "new_boost": 4.0,
        "live_prob": 0.6, "cross_topic_share": 0.0}}))
    pq.write_table(pa.table({"user_id": [1], "topic": [0], "second_topic": [1],
                             "main_weight": [0.85]}), tmp_path / "truth" / "users.parquet")
    pq.write_table(pa.table({"streamer_id": [10, 11, 20, 21], "topic": [0, 0, 1, 1],
                             "popularity": [1.0] * 4, "debut_day": [0] * 4}),
                   tmp_path / "truth" / "streamers.parquet")
    out = explore_ceiling(tmp_path, "2025-05-01", {1: {21}}, {1: {20}}, k=1)
    assert out["users"] == 1
    assert out["recall@1"] == 0.0            # the planted mixture ranks 10 first
    assert out["history_recall@1"] == 1.0    # one gift to topic 1: 21 first
    out = explore_ceiling(tmp_path, "2025-05-01", {1: {10}}, {1: {20}}, k=1)
    assert (out["recall@1"], out["history_recall@1"]) == (1.0, 0.0)
