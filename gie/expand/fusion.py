"""The fused sequences of one batch: `merged` and `explore` from every source's candidates.

For each source node the best `fusion.depth` candidates of every source (walks, kNN hops,
priors, TOPIC) are pooled; a Scorer (gie/expand/ranker.py) scores the pool and the best `topk`
are kept: in `merged` at most `max_history` of them from the node's own gift history, in
`explore` none. Each entry keeps the via node and the name of the source that ranked it best.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gie.expand import relations as R
from gie.expand.config import ExpandConfig
from gie.expand.features import CandidateTable, GraphFeatures, candidate_table, feature_names
from gie.expand.ranker import Scorer, fixed_scorer
from gie.expand.sources import (
    HISTORY, OTHER, OWN_HISTORY, Relations, enabled_sources, history_margin, prior_candidates,
    topic_candidates,
)
from graphbuild.schema import EXPLORE, FUSED, MERGED, NODE_TYPES, PRIORS, TOPIC


@dataclass
class View:
    """One graph with everything the sources and the features read."""

    rels: Relations
    features: GraphFeatures

    @property
    def graph(self):
        return self.rels.graph


@dataclass
class Fusion:
    """The scorer of each fused sequence per node type, and where they came from."""

    scorers: dict[str, dict[str, Scorer]]      # node type -> merged / explore -> scorer
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {**self.info, **{t: {k: s.describe() for k, s in by_kind.items()}
                                for t, by_kind in self.scorers.items()}}


def fusion_sources(cfg: ExpandConfig, ntype: str) -> list[str]:
    return [*enabled_sources(cfg, ntype), *PRIORS[ntype], TOPIC]


def fixed_weights(cfg: ExpandConfig, ntype: str) -> dict[str, float]:
    weights = {s: cfg.metapaths[s].weight for s in enabled_sources(cfg, ntype)}
    return {**weights, **{p: cfg.fusion.prior_weight for p in (*PRIORS[ntype], TOPIC)}}


def fixed_fusion(cfg: ExpandConfig, reason: str) -> Fusion:
    return Fusion({t: {k: fixed_scorer(feature_names(fusion_sources(cfg, t)),
                                       fixed_weights(cfg, t), cfg.fusion, {"reason": reason})
                       for k in FUSED} for t in NODE_TYPES}, {"learned": False, "reason": reason})


def pooled_table(view: View, cfg: ExpandConfig, ntype: str, rows: np.ndarray,
                cands: dict[str, R.Candidates]) -> CandidateTable:
    """The pooled candidates of `rows` with their features (`cands` from source_candidates).

    The history source (`U-S` / `S-U`) brings the node's own history; every other source and
    prior brings its best `depth` candidates outside it (ranked among those), so that a long
    history does not crowd the never-gifted candidates out of the pool.
    """
    depth = cfg.fusion.depth
    history = R.RowPairs.of(view.rels.get(HISTORY[ntype]), rows)
    ranked = {name: R.top_per_row(c if name == OWN_HISTORY[ntype]
                                  else R.drop_pairs(c, history), depth)
              for name, c in cands.items()}
    extra = history_margin(view.rels, ntype, rows, depth)
    priors = prior_candidates(view.rels, ntype, rows, depth + extra)
    priors[TOPIC] = topic_candidates(view.rels, view.features.topics, ntype, rows, depth,
                                     cfg.fusion.topic_source_clusters)
    ranked.update({name: R.top_per_row(R.drop_pairs(c, history), depth)
                   for name, c in priors.items()})
    return candidate_table(view.features, ntype, rows, ranked, view.rels.raw_order(OTHER[ntype]))


def fuse(table: CandidateTable, scorers: dict[str, Scorer],
         cfg: ExpandConfig) -> dict[str, R.Candidates]:
    """Both fused sequences of the batch. Each candidate is scored once: when `merged` uses
    the explore model outside the history, the explore scores are reused."""
    outside = ~table.history
    everything = np.ones(len(table.row), bool)
    explore = scorers[EXPLORE].score(table, outside)
    merged_scorer = scorers[MERGED]
    if merged_scorer.companion is not None and \
            merged_scorer.companion is scorers[EXPLORE].booster:
        merged = np.empty(len(table.row))
        merged[outside] = explore
        merged[table.history] = merged_scorer.score(table, table.history)
    else:
        merged = merged_scorer.score(table, everything)
    return {EXPLORE: ranked(table, outside, explore, EXPLORE, cfg),
            MERGED: ranked(table, everything, merged, MERGED, cfg)}


def ranked(table: CandidateTable, mask: np.ndarray, score: np.ndarray, kind: str,
           cfg: ExpandConfig) -> R.Candidates:
    """One fused sequence from the scores of the rows in `mask`: best first (float32 score
    desc, raw id asc), the history rules of `kind` applied, cut at `topk`."""
    idx = np.flatnonzero(mask)[np.isfinite(score)]
    c = R.top_per_row(R.Candidates(table.row[idx], idx, score[np.isfinite(score)], idx),
                      len(idx))            # table rows come in raw id order within a node
    idx, score = c.target, c.score.astype(np.float32)
    if kind == MERGED:                 # at most max_history entries of the node's own history
        hist = table.history[idx]
        keep = ~hist | (_count_in_row(table.row[idx], hist) <= cfg.fusion.max_history)
        idx, score = idx[keep], score[keep]
    names = np.array(table.sources, dtype=object)
    c = R.Candidates(table.row[idx], table.target[idx], score.astype(np.float64),
                     table.via[idx], names[table.best_source[idx]])
    return R.select(c, R.rank_in_row(c.row) < cfg.topk)


def _count_in_row(row: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Running count of `flag` within each row, inclusive (rows contiguous)."""
    total = np.cumsum(flag)
    before = total - flag                       # count before each entry, over all rows
    start = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else np.zeros(0, int)
    return total - np.repeat(before[start], np.diff(np.r_[start, len(row)]))
