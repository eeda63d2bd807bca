"""The DIN-style ablation: labels, leak-free sequences, and a small train/test run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gie.evaluate.config import DownstreamConfig
from gie.evaluate.downstream import (Samples, _sequences, hits, label_clicks,
                                      run_downstream, target_in_sequence)
from gie.evaluate.run import read_expansions
from gie.layout import WorkLayout
from tests.evaluate_fixtures import DATE, make_work, write_raw

COLS = ["user_id", "streamer_id", "live_id", "timestamp"]


def test_label_clicks_same_live_within_window_inclusive():
    clicks = pd.DataFrame([(1, 10, 100, 1000), (1, 10, 101, 1000), (2, 10, 100, 5000),
                           (3, 11, 102, 1000)], columns=COLS)
    gifts = pd.DataFrame([(1, 10, 100, 1000 + 60_000),    # click 0: exactly at the window end
                          (1, 10, 102, 1500),              # other live: does not label click 1
                          (2, 10, 100, 4000),              # before click 2
                          (3, 11, 102, 1000 + 60_001)],    # click 3: one ms too late
                         columns=COLS)
    assert label_clicks(clicks, gifts, 60_000).tolist() == [1, 0, 0, 0]


def test_gie_sequence_drops_gifts_between_click_and_bundle_horizon():
    gifts = pd.DataFrame([(1, 1, 0, 100), (1, 2, 0, 300), (1, 3, 0, 600)], columns=COLS)
    clicks = pd.DataFrame([(1, 9, 0, 200), (1, 9, 0, 400), (2, 9, 0, 400)], columns=COLS)
    merged, other = {1: [2, 5, 1, 3], 2: [7]}, {2: [8, 9]}
    hist, gie = _sequences(clicks, gifts, [merged, other], horizon_ms=500, max_len=3)
    assert hist == [[1], [2, 1], []]
    # click at 200: s2 is first gifted at 300 < horizon (leak) -> dropped; s3 (600) is the
    # bundle's genuine prediction -> kept; cut at max_len. Each GIE sequence on its own.
    assert gie == [[[5, 1, 3], [2, 5, 1], [7]], [[], [], [8, 9]]]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_work(tmp_path_factory.mktemp("ds"), n_users=200)


def test_run_downstream_trains_and_evaluates_both_variants(work):
    raw, w = work
    expansions = read_expansions(WorkLayout(w).bundle(DATE))
    asked = []

    def gie(users):
        asked.append(users)
        return [expansions["merged"], expansions["U-S-S"]]

    cfg = DownstreamConfig(seeds=2, epochs=1, max_train_samples=300, max_test_samples=200,
                           sequences=["merged", "U-S-S"])
    out = run_downstream(str(raw), DATE, gie, cfg, seed=0)
    assert out["samples"]["train"] == 300 and out["samples"]["test"] <= 200
    assert 0 < len(asked[0]) <= 500                  # the sampled clicks' users only
    assert 0 < out["samples"]["test_positive"] < out["samples"]["test"]
    for v in ("history_only", "with_gie"):
        assert [r["seed"] for r in out[v]["runs"]] == [0, 1]
        assert 0.0 < out[v]["auc"] < 1.0 and np.isfinite(out[v]["gauc"])
    assert out["auc_margin"] == pytest.approx(out["with_gie"]["auc"] - out["history_only"]["auc"])
    assert list(out["target_in_sequence"]["sequences"]) == ["history", "merged", "U-S-S"]
    # deterministic under a seed
    again = run_downstream(str(raw), DATE, gie, cfg.model_copy(update={"seeds": 1}), seed=0)
    assert again["with_gie"]["runs"][0] == out["with_gie"]["runs"][0]


def test_target_in_sequence_splits_the_clicks_of_users_with_a_history():
    # Clicks 0-3 have a history; click 4 has none and is left out of every split.
    history = np.array([[5, 0], [6, 7], [7, 0], [8, 0], [0, 0]])
    gie = np.array([[2, 3], [3, 0], [4, 9], [0, 0], [2, 0]])
    s = Samples(users=np.arange(5), target=np.array([5, 3, 2, 4, 2]), history=history,
                gie=[gie], label=np.array([0, 1, 1, 0, 1], np.float32))
    out = target_in_sequence(s, ["merged"])
    assert out["clicks"] == 4 and out["positive_rate"] == 0.5
    assert out["positive_rate_without_history"] == 1.0
    assert out["sequences"]["history"] == {"clicks_in": 1, "positive_rate_in": 0.0,
                                           "positive_rate_out": pytest.approx(2 / 3)}
    # click 1 (target 3) is in its sequence; click 4's target 2 is too, but it has no history
    assert out["sequences"]["merged"] == {"clicks_in": 1, "positive_rate_in": 1.0,
                                          "positive_rate_out": pytest.approx(1 / 3)}


def test_hits_say_whether_and_where_the_target_is_in_the_sequence():
    seq = torch.tensor([[4, 7, 9, 0], [7, 0, 0, 0], [0, 0, 0, 0], [3, 5, 6, 8]])
    target = torch.tensor([9, 7, 0, 2])        # third row: padding never matches
    want = [[1, 1 / 3], [1, 1], [0, 0], [0, 0]]
    assert hits(target, seq).numpy() == pytest.approx(np.array(want))


def test_run_downstream_skips_when_a_class_is_missing(work, tmp_path):
    raw, w = work
    gifts = pd.read_parquet(raw / "gift.parquet")
    write_raw(tmp_path, "gift", gifts.assign(live_id=-1))    # no gift matches a clicked live
    write_raw(tmp_path, "click", pd.read_parquet(raw / "click.parquet"))
    out = run_downstream(str(tmp_path), DATE, lambda users: [{}], DownstreamConfig(seeds=1, epochs=1), seed=0)
    assert "skipped" in out and out["samples"]["train_positive"] == 0
