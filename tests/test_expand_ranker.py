"""The nightly fit of the fused ranking: learned when it beats every source on held-out label
nodes, the best source when it does not, fixed weights when there is too little to learn from;
saved and loaded with the bundle; the fused sequences' history rules."""
from __future__ import annotations

import numpy as np
import pytest

from gie.expand import ranker
from gie.expand.config import FusionConfig
from gie.expand.features import CandidateTable
from gie.expand.ranker import FIXED, LEARNED, SOURCE, TrainingSet, fit_scorer, recall_at_k

SOURCES = ["A", "B"]
NAMES = ["A.score", "A.rank", "B.score", "B.rank", "signal"]


def _training_set(n_groups: int, per_group: int = 40, seed: int = 0,
                  signal_noise: float = 0.0) -> TrainingSet:
    """Source A ranks positives a bit better than chance, B at chance; `signal` is a feature
    that gives the label away (plus noise), so only a learned ranking can use it."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(n_groups), per_group)
    y = np.zeros(len(group), np.float32)
    y[rng.choice(len(group), n_groups * 2, replace=False)] = 1
    a_score = rng.random(len(group)) + 0.4 * y
    b_score = rng.random(len(group))
    X = np.empty((len(group), len(NAMES)), np.float32)
    for j, score in ((0, a_score), (2, b_score)):
        X[:, j] = score
        for g in range(n_groups):
            rows = np.flatnonzero(group == g)
            X[rows[np.argsort(-score[rows], kind="stable")], j + 1] = np.arange(1, len(rows) + 1)
    X[:, 4] = y + signal_noise * rng.normal(size=len(y))
    n_labels = np.bincount(group, weights=y, minlength=n_groups) + 1   # one label unproposed
    return TrainingSet(X, y, group, n_labels, list(NAMES))


def _cfg(**learn) -> FusionConfig:
    return FusionConfig(learn={"min_data_in_leaf": 5, "rounds": 60, "early_stopping": 10,
                               **learn})


def test_recall_at_k_counts_labels_no_source_proposed():
    data = _training_set(4, per_group=5)
    perfect = data.y.astype(np.float64)
    got = recall_at_k(data, np.arange(4), perfect, k=5)
    assert got == pytest.approx(np.mean((data.n_labels - 1) / data.n_labels))
    nothing = np.full(len(data.y), -np.inf)
    assert recall_at_k(data, np.arange(4), nothing, k=5) == 0.0


def test_an_informative_feature_is_learned_and_beats_every_source(tmp_path):
    data = _training_set(200)
    s = fit_scorer(data, SOURCES, {"A": 1.0, "B": 1.0}, _cfg(), 10, seed=0, what="test")
    assert s.kind == LEARNED
    held = s.info["held_out"]["recall@10"]
    assert held["fused"] > held["A"] > held["B"] - 0.05 and held["fused"] > 0.5
    assert s.info["best_source"] == "A" and "signal" in s.info["importance_gain"]
    # saved with the bundle and read back: the same scores
    table = CandidateTable(data.group, data.group, np.zeros(len(data.y), bool), data.X,
                           list(NAMES), data.group, data.group, SOURCES)
    mask = np.ones(len(data.y), bool)
    desc = ranker.save(s, tmp_path, "user-explore")
    again = ranker.load(desc, tmp_path)
    np.testing.assert_array_equal(s.score(table, mask), again.score(table, mask))
    assert desc["model_file"] == "ranker/user-explore.txt"


def test_a_ranking_that_learns_nothing_falls_back_to_the_best_source():
    # min_data_in_leaf above the data size: no split, constant scores, chance ranking
    data = _training_set(200, signal_noise=5.0)
    s = fit_scorer(data, SOURCES, {"A": 1.0, "B": 1.0}, _cfg(min_data_in_leaf=100_000), 10,
                   seed=0, what="test")
    assert s.kind == SOURCE and s.source == "A"
    held = s.info["held_out"]["recall@10"]
    assert held["fused"] < held["A"] and "below A" in s.info["reason"]
    table = CandidateTable(data.group, data.group, np.zeros(len(data.y), bool), data.X,
                           list(NAMES), data.group, data.group, SOURCES)
    scores = s.score(table, np.ones(len(data.y), bool))
    np.testing.assert_array_equal(scores, -data.X[:, 1])        # A's ranking, as published


def test_too_few_label_nodes_keep_the_fixed_weights():
    s = fit_scorer(_training_set(12), SOURCES, {"A": 1.0}, _cfg(), 10, seed=0, what="test")
    assert s.kind == FIXED and "too few label nodes" in s.info["reason"]
    assert s.weights == {"A": 1.0}


def test_the_fit_is_reproducible():
    data = _training_set(120)
    a = fit_scorer(data, SOURCES, {"A": 1.0}, _cfg(), 10, seed=3, what="a")
    b = fit_scorer(data, SOURCES, {"A": 1.0}, _cfg(), 10, seed=3, what="b")
    assert a.booster.model_to_string() == b.booster.model_to_string()
