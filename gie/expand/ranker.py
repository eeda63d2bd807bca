"""How the fused sequences score a candidate: learned (LightGBM), one source, or fixed weights;
and the nightly fit that chooses between them on held-out label nodes.

A fit sees the candidates and features of previous nights' graphs against the gifts that
followed each (gie/expand/learn.py builds them). Per node type two models are learned: the
`explore` model on the candidates the node never gifted (labels: first gifts), the `merged`
model on every candidate (labels: every gift). With the default `binary` objective both
estimate the chance of a gift, so `merged` scores the history candidates with its own model
and the others with the `explore` model (the specialist there): one prediction per
candidate. The newest night is held out: the older ones fit the models, the held-out night
stops the boosting and compares each fused ranking with every single source by Recall@K
(with a single previous night, a share of its label nodes is held out instead). A fused
ranking below the best single source there is replaced by that source's ranking, and the
bundle says so. The models kept are refitted on all nights with the chosen rounds.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from gie.expand import treecode
from gie.expand.config import FusionConfig, LearnConfig
from gie.expand.features import CandidateTable

log = logging.getLogger(__name__)
LEARNED, SOURCE, FIXED = "learned", "source", "fixed"
MIN_TRAIN_GROUPS, MIN_VALID_GROUPS = 20, 5


@dataclass
class Scorer:
    """Scores the candidates of a CandidateTable; higher is better, -inf = not ranked.

    A learned `merged` scorer may have a `companion` (the learned `explore` model) that
    scores the candidates outside the node's history."""

    kind: str
    names: list[str]
    booster: lgb.Booster | None = None
    source: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    rrf_k: float = 60.0
    threads: int = 1
    companion: lgb.Booster | None = None
    info: dict = field(default_factory=dict)

    def score(self, table: CandidateTable, mask: np.ndarray) -> np.ndarray:
        if self.kind == LEARNED:
            if table.names != self.names:
                raise ValueError(f"the ranker was fitted on features {self.names}, "
                                 f"the candidates have {table.names}")
            return _predict(self.booster, self.companion, table.X, table.history, mask,
                            self.threads)
        if self.kind == SOURCE:
            rank = table.column(f"{self.source}.rank")[mask].astype(np.float64)
            return np.where(np.isnan(rank), -np.inf, -rank)
        return fixed_scores(table, mask, self.weights, self.rrf_k)

    def describe(self) -> dict:
        out = {"kind": self.kind, **self.info}
        if self.kind == SOURCE:
            out["source"] = self.source
        if self.kind == FIXED:
            out.update(weights=self.weights, rrf_k=self.rrf_k)
        if self.companion is not None:
            out["outside_history"] = "explore model"
        return out


def _predict(booster: lgb.Booster, companion: lgb.Booster | None, X: np.ndarray,
             history: np.ndarray, mask: np.ndarray, threads: int,
             num_iteration: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """The model's raw scores (log-odds for `binary`: the same order as its probabilities,
    without an exp whose last bits depend on the maths library) of the rows in `mask`, the
    companion's outside the history. A booster that `compile_booster` compiled predicts
    through its compiled code: the same bits, several times faster."""
    out = np.zeros(int(mask.sum()))
    own = history[mask] if companion is not None else np.ones(len(out), bool)
    rows = np.flatnonzero(mask)
    for model, part, it in ((booster, own, num_iteration[0]),
                            (companion, ~own, num_iteration[1])):
        if part.any():
            compiled = getattr(model, COMPILED, None)
            if compiled is not None and it is None:    # float64 copies, a chunk at a time
                idx = rows[part]
                got = np.empty(len(idx))
                for lo in range(0, len(idx), PREDICT_CHUNK):
                    got[lo:lo + PREDICT_CHUNK] = compiled.predict(
                        X[idx[lo:lo + PREDICT_CHUNK]].astype(np.float64), n_jobs=threads)
                out[part] = got
            else:
                out[part] = model.predict(X[rows[part]], num_iteration=it, num_threads=threads,
                                          raw_score=True)
    return out


COMPILED = "gie_compiled"     # attribute of a booster that compile_booster compiled
PREDICT_CHUNK = 1 << 18      # rows the compiled code gets at a time (64 features: 128 MB)


def compile_target() -> str | None:
    """The CPU that lleaves compiles for on this host (name and features), or None when
    lleaves is not installed: compiled code is only shared between hosts of one target."""
    try:
        import lleaves  # noqa: F401
        from llvmlite import binding
    except ImportError:
        return None
    return f"{binding.get_host_cpu_name()} {binding.get_host_cpu_features().flatten()}"


def compile_booster(booster: lgb.Booster, cache: Path | None = None) -> bool:
    """Compile the model to native code with lleaves (LLVM), kept on the booster. The trees
    are cache-blocked and summed one after the other as LightGBM does (gie/expand/treecode):
    the raw scores are the same bits (tested), 8x faster than LightGBM on one core at 400
    trees. With `cache`, the code is written to that file, or read from it when it exists
    (lleaves' cache: the file must be this model's, compiled by this code for this host).
    False when lleaves is not installed (LightGBM then predicts)."""
    try:
        import lleaves
    except ImportError:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.txt"
        booster.save_model(str(path))
        model = lleaves.Model(model_file=str(path))
        treecode.compile_model(model, None if cache is None else str(cache),
                               booster.num_trees())
    setattr(booster, COMPILED, model)
    return True


def fixed_scores(table: CandidateTable, mask: np.ndarray, weights: dict[str, float],
                 rrf_k: float) -> np.ndarray:
    """Weighted reciprocal-rank fusion: sum over sources of w / (rrf_k + rank)."""
    total = np.zeros(int(mask.sum()))
    for name, w in weights.items():
        col = f"{name}.rank"
        if w > 0 and col in table.names:
            rank = table.column(col)[mask].astype(np.float64)
            total += np.where(np.isnan(rank), 0.0, w / (rrf_k + rank))
    return np.where(total > 0, total, -np.inf)


def fixed_scorer(names: list[str], weights: dict[str, float], cfg: FusionConfig,
                 info: dict) -> Scorer:
    return Scorer(FIXED, names, weights=weights, rrf_k=cfg.rrf_k, info=info)


# ------------------------------------------------------------------------------------------
# The nightly fit
# ------------------------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """Candidates of label nodes, grouped by node (the rows of a group are contiguous)."""

    X: np.ndarray               # float32 [rows, features]
    y: np.ndarray               # 1 = the node gifted (or was gifted by) this candidate
    group: np.ndarray           # group index of each row, non-decreasing
    n_labels: np.ndarray        # per group: every label, including those no source proposed
    names: list[str]
    history: np.ndarray         # per row: the pair has a gift edge in that night's graph
    held_out: np.ndarray | None = None   # per group: judges the fit instead of feeding it
    # A merged set's first-gift labels per group: what its explore set counts (see explore()).
    explore_labels: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return len(self.n_labels)

    def explore(self) -> TrainingSet:
        """The explore set of a merged set: its rows without a gift edge, in the same order
        and groups. Made when a fit needs it, not kept beside the merged rows: it is nearly
        all of them (2.4 GB of features at 20,000 label nodes a night)."""
        first = ~self.history
        return TrainingSet(self.X[first], self.y[first], self.group[first],
                           self.explore_labels, self.names, self.history[first],
                           self.held_out)


def concat(sets: list[TrainingSet]) -> TrainingSet:
    """One training set of several nights (groups renumbered, held-out flags kept)."""
    offsets = np.cumsum([0] + [s.n_groups for s in sets])
    return TrainingSet(np.concatenate([s.X for s in sets]), np.concatenate([s.y for s in sets]),
                       np.concatenate([s.group + o for s, o in zip(sets, offsets)]),
                       np.concatenate([s.n_labels for s in sets]), sets[0].names,
                       np.concatenate([s.history for s in sets]),
                       np.concatenate([s.held_out for s in sets]),
                       np.concatenate([s.explore_labels for s in sets]))


def _params(cfg: LearnConfig, k: int, seed: int) -> dict:
    task = {"objective": "binary", "metric": "auc"} if cfg.objective == "binary" else \
        {"objective": "lambdarank", "metric": "ndcg", "eval_at": [k],
         "lambdarank_truncation_level": k}
    return {**task, "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction, "bagging_fraction": 0.8,
            "bagging_freq": 1, "seed": seed, "deterministic": True, "force_row_wise": True,
            "num_threads": cfg.threads, "verbose": -1}


def _dataset(data: TrainingSet, groups: np.ndarray, fit_rows: np.ndarray,
             reference=None) -> lgb.Dataset:
    """The rows of `groups` (sorted group indexes) among `fit_rows`."""
    rows = np.isin(data.group, groups) & fit_rows
    sizes = np.bincount(data.group[rows], minlength=data.n_groups)[groups]
    return lgb.Dataset(data.X[rows], data.y[rows], group=sizes[sizes > 0],
                       feature_name=data.names, reference=reference, free_raw_data=False)


RECALL_CHUNK = 1 << 24       # pairs compared at a time by recall_at_k


def recall_at_k(data: TrainingSet, groups: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over `groups` of |top-k by score ∩ labels| / |labels| (-inf = not ranked).

    A group ranks its rows by score, higher first, ties by row order; only the positives'
    ranks matter, so each finite positive is compared with the rows of its own group (about
    a hundred thousand positives against a few hundred rows each) instead of sorting every
    row of every group: the same hits, several times faster on a judgement's 5M rows."""
    if not len(groups):
        return 0.0
    chosen = np.zeros(data.n_groups, bool)
    chosen[groups] = True
    pos = np.flatnonzero(chosen[data.group] & (data.y > 0) & np.isfinite(scores))
    g = data.group[pos]
    lo = np.searchsorted(data.group, g, side="left")
    size = np.searchsorted(data.group, g, side="right") - lo
    hits = np.zeros(data.n_groups, np.int64)
    ends = np.cumsum(size)
    a = 0
    while a < len(pos):
        b = max(a + 1, int(np.searchsorted(ends, ends[a] - size[a] + RECALL_CHUNK, "right")))
        n = size[a:b]
        owner = np.repeat(np.arange(b - a), n)
        other = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo[a:b], n)
        mine = pos[a:b][owner]
        better = (scores[other] > scores[mine]) | ((scores[other] == scores[mine])
                                                   & (other < mine))
        rank = np.bincount(owner, weights=better, minlength=b - a)
        hits += np.bincount(g[a:b][rank < k], minlength=data.n_groups)
        a = b
    return float(np.mean(hits[groups] / data.n_labels[groups]))


@dataclass
class _Fit:
    """One model fitted on the training nights (judged on the held-out one)."""

    booster: lgb.Booster | None       # None: too few label nodes
    rounds: int
    sizes: dict
    reason: str | None = None
    judged: np.ndarray | None = None  # its scores of the held-out rows (others -inf), once judged


def _fit_rows(data: TrainingSet, cfg: LearnConfig, seed: int) -> np.ndarray:
    """Every positive and a seeded `negative_share` of the negatives: the fit is several
    times faster and ranks as well (measured: docs/BUNDLE.md)."""
    return (data.y > 0) | (np.random.default_rng(seed).random(len(data.y)) < cfg.negative_share)


def _fit(data: TrainingSet, held_out: np.ndarray, cfg: LearnConfig, k: int,
         seed: int) -> _Fit:
    has_pos = np.bincount(data.group, weights=data.y, minlength=data.n_groups) > 0
    train = np.flatnonzero(~held_out & has_pos)
    valid = np.flatnonzero(held_out & has_pos)
    sizes = {"label_nodes": int(data.n_groups), "rows": int(len(data.y)),
             "positives": int(data.y.sum()), "labels": int(data.n_labels.sum()),
             "train_nodes": int(len(train)),
             "held_out_nodes": int((held_out & (data.n_labels > 0)).sum())}
    if len(train) < MIN_TRAIN_GROUPS or len(valid) < MIN_VALID_GROUPS:
        return _Fit(None, 0, sizes, f"too few label nodes to learn from ({len(train)} for "
                                    f"training, {len(valid)} held out with a proposed label)")
    params, rows = _params(cfg, k, seed), _fit_rows(data, cfg, seed)
    dtrain = _dataset(data, train, rows)
    booster = lgb.train(params, dtrain, cfg.rounds,
                        valid_sets=[_dataset(data, valid, rows, reference=dtrain)],
                        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
    return _Fit(booster, max(1, booster.best_iteration or cfg.rounds), sizes)


def _refit(data: TrainingSet, fit: _Fit, cfg: LearnConfig, k: int, seed: int) -> lgb.Booster:
    has_pos = np.flatnonzero(np.bincount(data.group, weights=data.y,
                                         minlength=data.n_groups) > 0)
    return lgb.train({**_params(cfg, k, seed), "metric": "none"},
                     _dataset(data, has_pos, _fit_rows(data, cfg, seed)), fit.rounds)


def _judge(data: TrainingSet, held_out: np.ndarray, fused: np.ndarray, sources: list[str],
           fixed: dict[str, float], cfg: FusionConfig, k: int) -> dict:
    """Held-out Recall@k of the fused ranking, the fixed weights and every source."""
    valid = np.flatnonzero(held_out & (data.n_labels > 0))
    table = _as_table(data)
    every = np.ones(len(data.y), bool)
    held = {"fused": recall_at_k(data, valid, fused, k),
            "fixed_weights": recall_at_k(data, valid, fixed_scores(table, every, fixed,
                                                                   cfg.rrf_k), k)}
    for s in sources:
        rank = table.column(f"{s}.rank").astype(np.float64)
        held[s] = recall_at_k(data, valid, np.where(np.isnan(rank), -np.inf, -rank), k)
    return held


def fit_fused(merged: TrainingSet, sources: list[str], fixed: dict[str, float],
              cfg: FusionConfig, k: int, seed: int, what: str) -> dict[str, Scorer]:
    """Learn both fused rankings of one node type (see the module docstring). The explore
    set (the merged rows without a gift edge) is made, fitted and judged first and released
    before the merged side's fit: each fit is the same either way."""
    lcfg = cfg.learn
    explore = merged.explore()
    held_out = explore.held_out
    has_pos = np.bincount(explore.group, weights=explore.y, minlength=explore.n_groups) > 0
    if held_out is None or int((held_out & has_pos).sum()) < MIN_VALID_GROUPS:
        held_out = np.random.default_rng(seed).random(explore.n_groups) < lcfg.valid_share
    first = _fit(explore, held_out, lcfg, k, seed)
    out = {"explore": _choose(explore, first, None, held_out, sources, fixed, cfg, k, seed,
                              f"{what} explore")}
    del explore
    # merged scores outside the history with the explore model, when that one is kept
    companion = first if lcfg.objective == "binary" and out["explore"].kind == LEARNED \
        else None
    out["merged"] = _choose(merged, _fit(merged, held_out, lcfg, k, seed), companion,
                            held_out, sources, fixed, cfg, k, seed, f"{what} merged")
    if companion and out["merged"].kind == LEARNED:
        out["merged"].companion = out["explore"].booster
    return out


def _choose(data: TrainingSet, fit: _Fit, companion: _Fit | None, held_out: np.ndarray,
            sources: list[str], fixed: dict[str, float], cfg: FusionConfig, k: int, seed: int,
            label: str) -> Scorer:
    """The learned ranking if it is at least as good as every source on the held-out nodes,
    else the best source's; fixed weights when there was too little to learn from."""
    if fit.booster is None:
        log.warning("%s: %s; fixed weights", label, fit.reason)
        return fixed_scorer(data.names, fixed, cfg, {"reason": fit.reason, **fit.sizes})
    # Only the held-out rows are judged; scores do not depend on the thread count, nor on
    # which other rows are predicted with them: outside the history, the companion's scores
    # are those it was judged with (the explore rows are these rows, in the same order).
    judged = np.isin(data.group, np.flatnonzero(held_out))
    threads = cfg.predict_threads or os.cpu_count() or 1
    fused = np.full(len(data.y), -np.inf)
    own = judged & data.history if companion else judged
    judge, rounds = _judging(fit.booster, fit.rounds, int(own.sum()))
    fused[own] = _predict(judge, None, data.X, data.history, own, threads, (rounds, None))
    if companion:
        fused[~data.history] = companion.judged      # -inf outside the held-out nodes
    fit.judged = fused
    held = _judge(data, held_out, fused, sources, fixed, cfg, k)
    best = max(sources, key=lambda s: (held[s], -sources.index(s)))
    info = {"held_out": {f"recall@{k}": {m: round(v, 6) for m, v in held.items()}},
            "best_source": best, "rounds": fit.rounds, **fit.sizes}
    if held["fused"] < held[best]:
        log.warning("%s: the learned ranking (held-out recall@%d %.4f) is below the best "
                    "single source %s (%.4f): publishing %s's ranking", label, k,
                    held["fused"], best, held[best], best)
        return Scorer(SOURCE, data.names, source=best,
                      info={**info, "reason": f"learned ranking below {best} on held-out nodes"})
    booster = _refit(data, fit, cfg.learn, k, seed)
    gain = booster.feature_importance("gain")
    info["importance_gain"] = {n: round(float(v), 3) for n, v in
                               sorted(zip(data.names, gain), key=lambda t: -t[1]) if v > 0}
    log.info("%s: learned ranking, held-out recall@%d %.4f vs best source %s %.4f and fixed "
             "weights %.4f (%d rounds, %d label nodes)", label, k, held["fused"], best,
             held[best], held["fixed_weights"], fit.rounds, data.n_groups)
    return Scorer(LEARNED, data.names, booster=booster, threads=cfg.learn.threads, info=info)


JUDGE_COMPILED_ROWS = 1_000_000      # held-out rows from which _choose compiles (see _judging)


def _judging(booster: lgb.Booster, rounds: int, rows: int) -> tuple[lgb.Booster, int | None]:
    """The model that scores `rows` held-out rows with the first `rounds` trees of `booster`,
    and the num_iteration to predict with. From JUDGE_COMPILED_ROWS rows on, those trees
    compiled (the same bits): at 1.3M users a night's 4.8M held-out rows took LightGBM 19 s
    on two cores, and compiling costs 2-5 s."""
    if rows >= JUDGE_COMPILED_ROWS and compile_target() is not None:
        first = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
        if compile_booster(first):
            return first, None
    return booster, rounds


def _as_table(data: TrainingSet) -> CandidateTable:
    """A TrainingSet seen as a CandidateTable, so scorers read its columns by name."""
    n = len(data.y)
    none = np.zeros(n, np.int64)
    return CandidateTable(data.group, none, data.history, data.X, data.names, none, none, [])


# ------------------------------------------------------------------------------------------
# Saving and loading (bundle/ranker/)
# ------------------------------------------------------------------------------------------
def save(scorer: Scorer, folder: Path, name: str) -> dict:
    out = scorer.describe()
    if scorer.kind == LEARNED:
        path = folder / f"{name}.txt"
        scorer.booster.save_model(str(path))
        out["model_file"] = f"ranker/{path.name}"
    out["features"] = scorer.names
    return out


def load(desc: dict, folder: Path, threads: int = 1) -> Scorer:
    kind = desc["kind"]
    booster = lgb.Booster(model_file=str(folder / Path(desc["model_file"]).name)) \
        if kind == LEARNED else None
    info = {k: v for k, v in desc.items() if k not in (
        "kind", "source", "weights", "rrf_k", "features", "model_file", "outside_history")}
    return Scorer(kind, desc["features"], booster=booster, source=desc.get("source"),
                  weights=desc.get("weights", {}), rrf_k=desc.get("rrf_k", 60.0), threads=threads,
                  info=info)


def link(scorers: dict[str, Scorer], descs: dict[str, dict]) -> None:
    """After loading: give `merged` its companion when it was saved with one."""
    if descs.get("merged", {}).get("outside_history"):
        scorers["merged"].companion = scorers["explore"].booster
