"""The nightly fit of the fused ranking: learned when it beats every source on held-out label
nodes, the best source when it does not, fixed weights when there is too little to learn from;
saved and loaded with the bundle; the fused sequences' history rules."""
from __future__ import annotations

import numpy as np
import pytest

from gie.expand import ranker, treecode
from gie.expand.config import FusionConfig
from gie.expand.features import CandidateTable
from gie.expand.ranker import FIXED, LEARNED, SOURCE, TrainingSet, fit_fused, recall_at_k

SOURCES = ["A", "B"]
NAMES = ["A.score", "A.rank", "B.score", "B.rank", "signal"]


def _training_set(n_groups: int, per_group: int = 40, seed: int = 0,
                  signal_noise: float = 0.0, history: bool = False) -> TrainingSet:
    """Source A ranks positives a bit better than chance, B at chance; `signal` is a feature
    that gives the label away (plus noise), so only a learned ranking can use it. With
    `history`, the first 5 candidates of each node are its history."""
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
    hist = (np.arange(len(group)) % per_group < 5) if history else np.zeros(len(group), bool)
    return TrainingSet(X, y, group, n_labels, list(NAMES), hist)


def _with_history(data: TrainingSet, n: int = 5) -> TrainingSet:
    """A merged set whose explore set is `data`: each node's rows after n history rows (the
    node's first n candidates again, not gifted next)."""
    sizes = np.bincount(data.group)
    first = (np.r_[0, np.cumsum(sizes)[:-1]][:, None] + np.arange(n)).ravel()
    order = np.argsort(np.r_[data.group[first], data.group], kind="stable")
    rows = np.r_[first, np.arange(len(data.y))][order]
    history = np.r_[np.ones(len(first), bool), np.zeros(len(data.y), bool)][order]
    return TrainingSet(data.X[rows], np.where(history, 0, data.y[rows]).astype(np.float32),
                       data.group[rows], data.n_labels, data.names, history,
                       explore_labels=data.n_labels)


def _fit(data: TrainingSet, cfg: FusionConfig, seed: int = 0) -> dict:
    """Both fused rankings of a node type, the explore one learned from `data`."""
    return fit_fused(_with_history(data), SOURCES, {"A": 1.0, "B": 1.0}, cfg, 10, seed=seed,
                     what="test")


def _table(data: TrainingSet) -> CandidateTable:
    return CandidateTable(data.group, data.group, data.history, data.X, list(NAMES),
                          data.group, data.group, SOURCES)


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
    fitted = _fit(data, _cfg())
    s = fitted["explore"]
    assert s.kind == LEARNED and fitted["merged"].kind == LEARNED
    held = s.info["held_out"]["recall@10"]
    assert held["fused"] > held["A"] > held["B"] - 0.05 and held["fused"] > 0.5
    assert s.info["best_source"] == "A" and "signal" in s.info["importance_gain"]
    # merged: its own model on the history, the explore model on every other candidate
    merged = fitted["merged"]
    assert merged.companion is s.booster
    table, every = _table(TrainingSet(data.X, data.y, data.group, data.n_labels, data.names,
                                      np.arange(len(data.y)) % 40 < 5)), np.ones(len(data.y), bool)
    scores = merged.score(table, every)
    outside = ~table.history
    np.testing.assert_array_equal(scores[outside], s.booster.predict(data.X[outside],
                                                                    raw_score=True))
    np.testing.assert_array_equal(scores[~outside], merged.booster.predict(data.X[~outside],
                                                                         raw_score=True))
    # saved with the bundle and read back: the same scores; compiled: the same bits
    descs = {k: ranker.save(v, tmp_path, f"user-{k}") for k, v in fitted.items()}
    again = {k: ranker.load(d, tmp_path) for k, d in descs.items()}
    ranker.link(again, descs)
    np.testing.assert_array_equal(again["merged"].score(table, every), scores)
    assert all(ranker.compile_booster(v.booster) for v in again.values())
    compiled = again["merged"].score(table, every)
    assert compiled.tobytes() == scores.tobytes()
    assert descs["explore"]["model_file"] == "ranker/user-explore.txt"
    assert descs["merged"]["outside_history"] == "explore model"


def test_a_ranking_that_learns_nothing_falls_back_to_the_best_source():
    # min_data_in_leaf above the data size: no split, constant scores, chance ranking
    data = _training_set(200, signal_noise=5.0)
    fitted = _fit(data, _cfg(min_data_in_leaf=100_000))
    s = fitted["explore"]
    assert s.kind == SOURCE and s.source == "A" and fitted["merged"].kind == SOURCE
    held = s.info["held_out"]["recall@10"]
    assert held["fused"] < held["A"] and "below A" in s.info["reason"]
    scores = s.score(_table(data), np.ones(len(data.y), bool))
    np.testing.assert_array_equal(scores, -data.X[:, 1])        # A's ranking, as published


def test_too_few_label_nodes_keep_the_fixed_weights():
    fitted = _fit(_training_set(12), _cfg())
    s = fitted["explore"]
    assert s.kind == FIXED and "too few label nodes" in s.info["reason"]
    assert s.weights == {"A": 1.0, "B": 1.0}


def test_the_fit_is_reproducible():
    data = _training_set(120)
    a, b = _fit(data, _cfg(), seed=3), _fit(data, _cfg(), seed=3)
    for kind in ("merged", "explore"):
        assert a[kind].booster.model_to_string() == b[kind].booster.model_to_string()


@pytest.mark.parametrize("mirrored", [True, False])
def test_compiled_models_score_the_same_bits_with_missing_values(monkeypatch, mirrored):
    """Compiled code sums the trees in LightGBM's order: the raw scores are the same bits, NaN
    (no source proposed) included, over many trees: in blocks of 34 trees with the lleaves
    whose code generator gie/expand/treecode mirrors (lleaves' own blocks round otherwise),
    in one block with any other."""
    if not mirrored:
        monkeypatch.setattr(treecode, "LLEAVES", "another version")
    data = _training_set(300, signal_noise=1.0, seed=3)
    rng = np.random.default_rng(1)
    data.X[rng.random(data.X.shape) < 0.3] = np.nan
    fitted = _fit(data, _cfg(rounds=300, early_stopping=300, num_leaves=15))
    booster = fitted["explore"].booster
    assert booster.num_trees() > 100
    X = np.where(rng.random(data.X.shape) < 0.1, np.nan, data.X * 1.1)   # unseen values too
    want = booster.predict(X, raw_score=True)
    assert ranker.compile_booster(booster)
    everything = np.ones(len(X), bool)
    got = ranker._predict(booster, None, X, np.zeros(len(X), bool), everything, threads=2)
    assert got.tobytes() == want.tobytes()


def test_held_out_rows_are_judged_by_the_first_rounds_compiled_with_the_same_bits(monkeypatch):
    """_choose judges a fit by its best iteration's trees: compiled for many held-out rows,
    LightGBM's scores with num_iteration, bit for bit."""
    data = _training_set(300, signal_noise=1.0, seed=3)
    booster = _fit(data, _cfg(rounds=120, early_stopping=120, num_leaves=15))["explore"].booster
    assert booster.num_trees() > 80
    want = booster.predict(data.X, num_iteration=70, raw_score=True)
    monkeypatch.setattr(ranker, "JUDGE_COMPILED_ROWS", len(data.X))
    monkeypatch.setattr(ranker, "PREDICT_CHUNK", 1000)         # several chunks
    judge, rounds = ranker._judging(booster, 70, len(data.X))
    assert rounds is None and getattr(judge, ranker.COMPILED, None) is not None
    every = np.ones(len(data.X), bool)
    got = ranker._predict(judge, None, data.X, np.zeros(len(data.X), bool), every, 2,
                          (rounds, None))
    assert got.tobytes() == want.tobytes()
    assert ranker._judging(booster, 70, len(data.X) - 1) == (booster, 70)   # few rows


def _recall_by_sorting(data: TrainingSet, groups: np.ndarray, scores: np.ndarray,
                       k: int) -> float:
    """recall_at_k the obvious way: every group's rows sorted by score, ties by row order."""
    hits = []
    for g in groups:
        rows = np.flatnonzero(data.group == g)
        order = rows[np.lexsort((rows, -scores[rows]))][:k]
        hits.append(((data.y[order] > 0) & np.isfinite(scores[order])).sum() / data.n_labels[g])
    return float(np.mean(hits)) if len(groups) else 0.0


@pytest.mark.parametrize("chunk", [1, 50, 1 << 24])
def test_recall_at_k_equals_sorting_every_group(monkeypatch, chunk):
    """Ties (many equal scores, each broken by row order) and unranked rows (-inf), groups
    of different sizes, any number of pairs compared at a time."""
    monkeypatch.setattr(ranker, "RECALL_CHUNK", chunk)
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 60, 80)
    group = np.repeat(np.arange(80), sizes)
    y = (rng.random(len(group)) < 0.2).astype(np.float32)
    scores = rng.integers(0, 6, len(group)).astype(np.float64)
    scores[rng.random(len(group)) < 0.2] = -np.inf
    n_labels = np.bincount(group, weights=y, minlength=80) + 1
    data = TrainingSet(np.zeros((len(group), 1), np.float32), y, group, n_labels, ["x"],
                       np.zeros(len(group), bool))
    for groups in (np.arange(80), np.sort(rng.choice(80, 30, replace=False)), np.arange(0)):
        for k in (1, 3, 10):
            assert recall_at_k(data, groups, scores, k) == \
                pytest.approx(_recall_by_sorting(data, groups, scores, k), abs=1e-15)


def test_the_merged_judgement_reads_the_explore_models_judged_scores():
    """Outside the history, the merged ranking is judged with the explore model's scores of
    those rows (its own judgement's): the same bits as predicting them again."""
    data = _training_set(150, signal_noise=0.5)
    merged = _with_history(data)
    explore, cfg = merged.explore(), _cfg()
    assert explore.X.tobytes() == data.X.tobytes()
    held_out = np.random.default_rng(2).random(150) < 0.3
    first = ranker._fit(explore, held_out, cfg.learn, 10, 0)
    ranker._choose(explore, first, None, held_out, SOURCES, {"A": 1.0}, cfg, 10, 0, "e")
    second = ranker._fit(merged, held_out, cfg.learn, 10, 0)
    ranker._choose(merged, second, first, held_out, SOURCES, {"A": 1.0}, cfg, 10, 0, "m")
    judged = np.isin(merged.group, np.flatnonzero(held_out))
    want = np.full(len(merged.y), -np.inf)
    want[judged] = ranker._predict(second.booster, first.booster, merged.X, merged.history,
                                   judged, 2, (second.rounds, first.rounds))
    assert np.isfinite(second.judged).sum() == judged.sum() > 0
    assert second.judged.tobytes() == want.tobytes()
