"""The fused sequences of one batch: history rules, order, source and via of each entry."""
from __future__ import annotations

import numpy as np

from gie.expand.config import ExpandConfig
from gie.expand.features import CandidateTable
from gie.expand.fusion import fuse
from gie.expand.ranker import FIXED, Scorer


def _table() -> CandidateTable:
    """One node with 40 candidates; the first 30 are its history, ranked best by source A;
    source B proposes only the other 10."""
    n = 40
    hist = np.arange(n) < 30
    X = np.stack([np.arange(n) + 1.0, np.where(hist, np.nan, 1.0)], axis=1).astype(np.float32)
    return CandidateTable(np.zeros(n, np.int64), np.arange(n), hist, X, ["A.rank", "B.rank"],
                          np.where(hist, 0, 1), np.arange(n) + 1000, ["A", "B"])


def _fuse(table, scorer, kind, cfg):
    return fuse(table, {"merged": scorer, "explore": scorer}, cfg)[kind]


def test_merged_of_a_long_history_node_is_not_all_history():
    cfg = ExpandConfig(topk=12, fusion={"max_history": 5})
    scorer = Scorer(FIXED, ["A.rank", "B.rank"], weights={"A": 1.0, "B": 0.01}, rrf_k=1.0)
    uncapped = _fuse(_table(), scorer, "merged",
                     ExpandConfig(topk=12, fusion={"max_history": 100}))
    assert (uncapped.target < 30).all()                      # history would fill every slot
    merged = _fuse(_table(), scorer, "merged", cfg)
    hist = merged.target < 30
    assert len(merged.target) == 12 and hist.sum() == 5     # 25 more history entries left out
    assert sorted(merged.target[hist]) == [0, 1, 2, 3, 4]    # the best-scored ones
    assert set(merged.source[hist]) == {"A"} and set(merged.source[~hist]) == {"B"}
    assert np.all(np.diff(merged.score) <= 0) and merged.via[merged.target == 0][0] == 1000
    explore = _fuse(_table(), scorer, "explore", cfg)
    assert len(explore.target) == 10 and (explore.target >= 30).all()
    assert np.all(np.diff(explore.score) <= 0) and list(explore.target) == list(range(30, 40))
