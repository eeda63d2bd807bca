"""The six metapaths as walks over four relations, expanded for one batch of source nodes.

Relations (each row a probability distribution, see docs/BUNDLE.md "Scoring"):
    US  user -> streamer   gift weight / the user's total gift weight
    SU  streamer -> user   gift weight / the streamer's total received weight
    UU  user -> user       similar users: u2u edges, Faiss kNN cosine, or both mixed
    SS  streamer -> streamer  likewise with s2s edges
A metapath is one or two steps: U-S = US, U-U-S = UU.US, U-S-S = US.SS, S-U = SU,
S-S-U = SS.SU, S-U-U = SU.UU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gie.errors import BadInputError
from gie.expand import relations as R
from gie.expand.config import ExpandConfig
from graphbuild.dataset import GraphData
from graphbuild.schema import MERGED, METAPATHS

STEPS: dict[str, tuple[str, ...]] = {
    "U-S": ("US",), "U-U-S": ("UU", "US"), "U-S-S": ("US", "SS"),
    "S-U": ("SU",), "S-S-U": ("SS", "SU"), "S-U-U": ("SU", "UU"),
}
STEP_TYPES = {"US": ("user", "streamer"), "SU": ("streamer", "user"),
              "UU": ("user", "user"), "SS": ("streamer", "streamer")}
HISTORY = {"user": "US", "streamer": "SU"}
SIMILAR_EDGES = {"UU": "u2u", "SS": "s2s"}


def knn_relation(sims: np.ndarray, ids: np.ndarray, k: int) -> R.Rel:
    """Faiss results of every node against its own type -> similarity relation.

    The node itself is dropped (or the last hit when it is absent, e.g. duplicate vectors),
    negative cosines are clipped to 0 (dropped), and rows are normalised.
    """
    n = len(ids)
    rows = np.arange(n)[:, None]
    is_self = ids == rows
    drop = is_self.copy()
    drop[~is_self.any(axis=1), -1] = True
    keep = ~drop & (ids >= 0) & (sims > 0)
    src = np.broadcast_to(rows, ids.shape)[keep]
    return R.normalise_rows(R.truncate(R.from_pairs(src, ids[keep], sims[keep], n, n), k))


@dataclass
class Relations:
    """The four relations, with the 'similar' steps in each hop kind, built lazily and cached."""

    graph: GraphData
    knn: dict[str, R.Rel]                 # "UU" / "SS" -> kNN relation
    graph_weight: float
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        gift = self.graph.edges["gift"]
        w = np.asarray(gift.data["weight"], np.float64)
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if len(bad):
            raise BadInputError(f"{self.graph.path}/edges/gift column 'weight': {len(bad)} rows "
                                f"are negative or not finite (first: src={gift.src[bad[0]]} "
                                f"dst={gift.dst[bad[0]]} weight={w[bad[0]]})")
        nu, ns = self.graph.num_nodes("user"), self.graph.num_nodes("streamer")
        raw = R.from_pairs(gift.src, gift.dst, w, nu, ns)
        self._cache["US", "graph"] = R.normalise_rows(raw)
        self._cache["SU", "graph"] = R.normalise_rows(R.transpose(raw))

    def get(self, step: str, hop: str = "graph") -> R.Rel:
        if step in HISTORY.values():
            hop = "graph"
        if (step, hop) not in self._cache:
            if hop == "knn":
                rel = self.knn[step]
            elif hop == "graph":
                rel = self._similar_edges(step)
            else:
                rel = R.mix(self.get(step, "graph"), self.get(step, "knn"), self.graph_weight)
            self._cache[step, hop] = rel
        return self._cache[step, hop]

    def raw_order(self, ntype: str) -> R.RawOrder:
        if ntype not in self._cache:
            self._cache[ntype] = R.RawOrder.of(self.graph.raw_ids[ntype])
        return self._cache[ntype]

    def truncated(self, step: str, hop: str, k: int) -> R.Rel:
        if (step, hop, k) not in self._cache:
            self._cache[step, hop, k] = R.truncate(self.get(step, hop), k)
        return self._cache[step, hop, k]

    def _similar_edges(self, step: str) -> R.Rel:
        ntype = STEP_TYPES[step][0]
        n = self.graph.num_nodes(ntype)
        edges = self.graph.edges.get(SIMILAR_EDGES[step])
        if edges is None:
            return R.from_pairs(np.zeros(0), np.zeros(0), np.zeros(0), n, n)
        keep = edges.src != edges.dst
        return R.normalise_rows(R.from_pairs(edges.src[keep], edges.dst[keep],
                                             edges.data["score"][keep], n, n))


def expand_batch(rels: Relations, cfg: ExpandConfig, ntype: str, rows: np.ndarray,
                 raw_ids: dict[str, np.ndarray]) -> dict[str, R.Candidates]:
    """Best-first candidates per metapath (and `merged`) for source node ids `rows`.

    `row` indexes `rows`; `target` is a node id; `via` is already a raw id.
    """
    target_type = "streamer" if ntype == "user" else "user"
    order = rels.raw_order(target_type)
    history = rels.get(HISTORY[ntype])
    full: dict[str, R.Candidates] = {}
    for mp in METAPATHS[ntype]:
        mcfg = cfg.metapaths[mp]
        if not mcfg.enabled:
            continue
        steps = STEPS[mp]
        if len(steps) == 1:
            c = R.one_hop(rels.get(steps[0]), rows, order)
        else:
            first = rels.truncated(steps[0], mcfg.hop, mcfg.fanout[0])
            second = rels.truncated(steps[1], mcfg.hop, mcfg.fanout[1])
            c = R.two_hop(first, second, rows, order)
            if cfg.exclude_history:
                c = R.drop_pairs(c, history, rows)
        via_type = ntype if len(steps) == 1 else STEP_TYPES[steps[0]][1]
        c.via = raw_ids[via_type][c.via]
        full[mp] = c
    out = {mp: R.top_per_row(c, cfg.cap(mp), cfg.min_score)
           for mp, c in full.items()}
    if full:
        weights = {mp: cfg.metapaths[mp].weight for mp in full}
        merged = R.aggregate(
            np.concatenate([c.row for c in full.values()]),
            np.concatenate([c.target for c in full.values()]),
            np.concatenate([c.score * weights[mp] for mp, c in full.items()]),
            np.concatenate([c.via for c in full.values()]), order)
        merged = R.select(merged, merged.score > 0)      # metapaths of weight 0
        if cfg.exclude_history:
            merged = R.drop_pairs(merged, history, rows)
        out[MERGED] = R.top_per_row(merged, cfg.topk, cfg.min_score)
    return out
