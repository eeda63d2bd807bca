"""Ranking and classification metrics, as pure functions plus one streaming accumulator.

Definitions (also in docs/EVALUATION.md), for a ranked list L and a relevant set R:
    HitRate@K = 1 if L[:K] meets R            Recall@K = |L[:K] & R| / |R|
    NDCG@K    = sum_{i<K, L[i] in R} 1/log2(i+2)  /  sum_{i<min(K,|R|)} 1/log2(i+2)
Each is averaged over users (one user, one vote), whatever the length of their lists.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np
from sklearn.metrics import roc_auc_score


def ranking_at_k(ranked: Iterable[int], relevant: set[int], k: int) -> tuple[float, float, float]:
    """(hit, recall, ndcg) of one ranked list cut at k; `relevant` must not be empty."""
    return _at_k(_gains(ranked, relevant, k), len(relevant), k)


def _gains(ranked: Iterable[int], relevant: set[int], k: int) -> np.ndarray:
    return np.array([1.0 if x in relevant else 0.0 for x in list(ranked)[:k]])


@lru_cache(maxsize=None)
def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def _at_k(gains: np.ndarray, n_relevant: int, k: int) -> tuple[float, float, float]:
    """ranking_at_k from the gains of the list's first k entries (or more)."""
    gains, discounts = gains[:k], _discounts(k)
    hits = gains.sum()
    dcg = float((gains * discounts[:len(gains)]).sum())
    idcg = float(discounts[:min(k, n_relevant)].sum())
    return float(hits > 0), float(hits / n_relevant), dcg / idcg


class RankingMetrics:
    """Accumulates HitRate/Recall/NDCG at several K over users; `compute` gives the means.

    An update keeps the list's gains; `compute` scores every user at every K in a few array
    operations (a call of `_at_k` per user and K took 10 s of a 1M evaluation). The means
    add the users in order, as a running sum would."""

    def __init__(self, ks: Iterable[int]):
        self.ks = sorted(set(ks))
        self.gains: list[np.ndarray] = []
        self.n_relevant: list[int] = []

    @property
    def users(self) -> int:
        return len(self.gains)

    def update(self, ranked: Iterable[int], relevant: set[int]) -> None:
        if relevant:
            self.gains.append(_gains(ranked, relevant, self.ks[-1]))      # once for every k
            self.n_relevant.append(len(relevant))

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {"users": self.users}
        kmax = self.ks[-1]
        gains = np.zeros((self.users, kmax))
        for row, g in zip(gains, self.gains):
            row[:len(g)] = g
        n_rel = np.array(self.n_relevant, np.int64)
        for k in self.ks:
            discounts = _discounts(k)
            ideal = np.array([discounts[:m].sum() for m in range(k + 1)])
            hits = gains[:, :k].sum(axis=1)
            per_user = np.stack([(hits > 0).astype(float), hits / n_rel,
                                 (gains[:, :k] * discounts).sum(axis=1)
                                 / ideal[np.minimum(k, n_rel)]], axis=1)
            mean = np.cumsum(per_user, axis=0)[-1] / self.users if self.users else np.zeros(3)
            out.update({f"hit_rate@{k}": float(mean[0]), f"recall@{k}": float(mean[1]),
                        f"ndcg@{k}": float(mean[2])})
        return out


def link_prediction(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """AUC and MRR of positive-edge scores `pos` [n] against their own negatives `neg` [n, m].

    AUC counts ties as one half. The rank of a positive is 1 + the number of its negatives
    scoring at least as high (ties count against the model), and MRR is the mean of 1/rank.
    """
    if len(pos) == 0:
        return {"auc": float("nan"), "mrr": float("nan"), "edges": 0}
    pos = pos[:, None]
    auc = float(((neg < pos).mean(axis=1) + 0.5 * (neg == pos).mean(axis=1)).mean())
    mrr = float((1.0 / (1.0 + (neg >= pos).sum(axis=1))).mean())
    return {"auc": auc, "mrr": mrr, "edges": int(len(pos))}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions, over users with both classes."""
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    total = weight = 0.0
    for lab, sc in zip(np.split(labels, bounds), np.split(scores, bounds)):
        if 0 < lab.sum() < len(lab):
            total += len(lab) * roc_auc_score(lab, sc)
            weight += len(lab)
    return total / weight if weight else float("nan")
