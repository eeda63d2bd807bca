"""Candidate sources: metapath walks over six relations, the cross-type kNN hop, and priors.

Relations (each row a probability distribution, see docs/BUNDLE.md "Scoring"):
    US / SU  gift weight share (user -> streamer / streamer -> user)
    UW / WU  watch weight share (clicks, comments, likes) likewise
    UU / SS  similar users / streamers: u2u / s2s edges, Faiss kNN cosine, or both mixed
A walk source is one or two steps (STEPS): U-U-S = UU.US, U-W-S-S = UW.SS, and so on.
`U-knn-S` / `S-knn-U` search a node's vector in the other type's index (the model's own
score); `POP`, `NEW` and `ACT` are priors, one list for every node, and `TOPIC` reads the
topic clusters (gie/expand/features.py, Topics) (fusion only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gie.errors import BadInputError
from gie.expand import relations as R
from gie.expand.config import ExpandConfig
from gie.expand.features import Topics
from gie.sorting import unique, unique_inverse
from graphbuild.dataset import GraphData
from graphbuild.schema import PRIORS, SOURCES

DAY_MS = 86_400_000
STEPS: dict[str, tuple[str, ...]] = {
    "U-S": ("US",), "U-U-S": ("UU", "US"), "U-S-S": ("US", "SS"),
    "U-W-S": ("UW",), "U-W-S-S": ("UW", "SS"), "U-s2s-S": ("US", "SS"),
    "S-U": ("SU",), "S-S-U": ("SS", "SU"), "S-U-U": ("SU", "UU"),
    "S-W-U": ("WU",), "S-S-W-U": ("SS", "WU"), "S-u2u-U": ("SU", "UU"),
}
CROSS_KNN = {"U-knn-S", "S-knn-U"}
STEP_TYPES = {"US": ("user", "streamer"), "SU": ("streamer", "user"),
              "UW": ("user", "streamer"), "WU": ("streamer", "user"),
              "UU": ("user", "user"), "SS": ("streamer", "streamer")}
HISTORY = {"user": "US", "streamer": "SU"}
OWN_HISTORY = {"user": "U-S", "streamer": "S-U"}      # the sources that are the history
NEVER_GIFTED = {"U-W-S", "S-W-U"}            # watched but never gifted: history removed
GRAPH_HOP_ONLY = {"U-s2s-S", "S-u2u-U"}      # the similar hop over the build's edges alone
SIMILAR_EDGES = {"UU": "u2u", "SS": "s2s"}
OTHER = {"user": "streamer", "streamer": "user"}
BASE_STEPS = ("US", "SU", "UW", "WU")          # the relations read from the graph's edges

# (similarities, node ids) [n, k] of the other type's k nearest vectors for source node ids.
CrossSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


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


def _checked_weights(graph: GraphData, etype: str) -> np.ndarray:
    edges = graph.edges[etype]
    w = np.asarray(edges.data["weight"], np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        raise BadInputError(f"{graph.path}/edges/{etype} column 'weight': {len(bad)} rows "
                            f"are negative or not finite (first: src={edges.src[bad[0]]} "
                            f"dst={edges.dst[bad[0]]} weight={w[bad[0]]})")
    return w


def base_relations(graph: GraphData) -> dict[str, R.Rel]:
    """The gift and watch relations read from the graph's edges, both ways (BASE_STEPS):
    the costly part of building `Relations` (sorts of every edge)."""
    nu, ns = graph.num_nodes("user"), graph.num_nodes("streamer")
    rels = {}
    for fwd, back, etype in (("US", "SU", "gift"), ("UW", "WU", "watch")):
        edges = graph.edges.get(etype)
        if edges is None:
            raw = R.from_pairs(np.zeros(0), np.zeros(0), np.zeros(0), nu, ns)
        else:
            raw = R.from_pairs(edges.src, edges.dst, _checked_weights(graph, etype), nu, ns)
        rels[fwd], rels[back] = R.normalise_rows(raw), R.normalise_rows(R.transpose(raw))
    return rels


@dataclass
class Relations:
    """The relations of one graph, the 'similar' steps in each hop kind (built lazily and
    cached), the cross-type searches and the priors."""

    graph: GraphData
    knn: dict[str, R.Rel]                 # "UU" / "SS" -> kNN relation
    graph_weight: float
    cross: dict[str, CrossSearch] = field(default_factory=dict)   # source node type -> search
    fresh_days: int = 3
    base: dict[str, R.Rel] | None = None    # BASE_STEPS' relations, when computed earlier
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = self.base or base_relations(self.graph)
        self._cache.update({(step, "graph"): base[step] for step in BASE_STEPS})

    def get(self, step: str, hop: str = "graph") -> R.Rel:
        if step not in SIMILAR_EDGES:
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

    def gather(self, step: str, hop: str, k: int, rows: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """R.gather of `rows` in truncated(step, hop, k). A mixed ('both') step is mixed for
        these rows alone: the same entries as get(step, 'both'), bit for bit (a row's mix
        reads that row only), without mixing a million-row kNN table in every process."""
        if step in SIMILAR_EDGES and hop == "both":
            uniq, inverse = unique_inverse(rows)
            part = R.mix(R.sub_rows(self.get(step, "graph"), uniq),
                         R.sub_rows(self.get(step, "knn"), uniq), self.graph_weight)
            return R.gather(R.truncate(part, k), inverse)
        return R.gather(self.truncated(step, hop, k), rows)

    def raw_order(self, ntype: str) -> R.RawOrder:
        if ntype not in self._cache:
            self._cache[ntype] = R.RawOrder.of(self.graph.raw_ids[ntype])
        return self._cache[ntype]

    def truncated(self, step: str, hop: str, k: int) -> R.Rel:
        if (step, hop, k) not in self._cache:
            self._cache[step, hop, k] = R.truncate(self.get(step, hop), k)
        return self._cache[step, hop, k]

    def prior(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(node ids best first, scores) of a prior list."""
        if name not in self._cache:
            self._cache[name] = self._prior(name)
        return self._cache[name]

    def _prior(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        gift = self.graph.edges["gift"]
        if name == "POP":          # streamers by gifts received in the window
            score = np.bincount(gift.dst, weights=gift.data["count"],
                                minlength=self.graph.num_nodes("streamer"))
        elif name == "ACT":        # users by gifts sent in the window
            score = np.bincount(gift.src, weights=gift.data["count"],
                                minlength=self.graph.num_nodes("user"))
        elif name == "NEW":        # fresh streamers by how many users watched or gifted them
            n = self.graph.num_nodes("streamer")
            reach = np.bincount(gift.dst, minlength=n).astype(np.float64)
            if "watch" in self.graph.edges:
                reach += np.bincount(self.graph.edges["watch"].dst, minlength=n)
            end = int(self.graph.metadata["window"]["end_ms"])
            first = self.graph.node_columns["streamer"]["first_seen_ts"]
            score = np.where(first >= end - self.fresh_days * DAY_MS, reach, 0.0)
        else:
            raise KeyError(name)
        score = np.asarray(score, np.float64)
        target_type = "user" if name == "ACT" else "streamer"
        nodes = np.flatnonzero(score > 0)
        order = np.lexsort((self.raw_order(target_type).rank[nodes], -score[nodes]))
        return nodes[order], score[nodes[order]]

    def _similar_edges(self, step: str) -> R.Rel:
        ntype = STEP_TYPES[step][0]
        n = self.graph.num_nodes(ntype)
        edges = self.graph.edges.get(SIMILAR_EDGES[step])
        if edges is None:
            return R.from_pairs(np.zeros(0), np.zeros(0), np.zeros(0), n, n)
        keep = edges.src != edges.dst
        return R.normalise_rows(R.from_pairs(edges.src[keep], edges.dst[keep],
                                             edges.data["score"][keep], n, n))


def history_margin(rels: Relations, ntype: str, rows: np.ndarray, cap: int) -> int:
    """How many more candidates to draw so that `cap` remain outside the longest history of
    the batch (at most `cap` more)."""
    return min(int(rels.get(HISTORY[ntype]).row_lengths()[rows].max(initial=0)), cap)


def enabled_sources(cfg: ExpandConfig, ntype: str) -> list[str]:
    return [s for s in SOURCES[ntype] if cfg.metapaths[s].enabled]


def _cross_knn(rels: Relations, cfg: ExpandConfig, ntype: str, rows: np.ndarray,
               order: R.RawOrder) -> R.Candidates:
    """The nearest vectors of the other type: enough of them that `fusion.depth` (and the
    published cap) remain once the node's own history is left out (up to `depth` history
    entries: a streamer with thousands of gifters must not make every search that deep)."""
    search = rels.cross.get(ntype)
    if search is None or not len(rows):
        return R.empty()
    k = max(cfg.fusion.depth, *(cfg.cap(s) for s in CROSS_KNN)) + \
        history_margin(rels, ntype, rows, cfg.fusion.depth)
    sims, ids = search(rows, min(k, rels.graph.num_nodes(OTHER[ntype])))
    owner = np.broadcast_to(np.arange(len(rows))[:, None], ids.shape)
    keep = (ids >= 0) & (sims > 0)          # as for same-type kNN: dissimilar is no candidate
    # Scores are cosines, ranked as they are (not normalised into walk probabilities).
    return R.aggregate(owner[keep], ids[keep], sims[keep].astype(np.float64),
                       rows[owner[keep]], order)


def similar_rows_read(rels: Relations, cfg: ExpandConfig, groups: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray | None]:
    """Rows of each kNN similar-node step (UU, SS) that the walk sources of `groups` (source
    node ids per type) read; None when every row may be read. A night learned from needs
    only these rows of its kNN table, not a search of every node."""
    need: dict[str, list | None] = {step: [] for step in SIMILAR_EDGES}
    for ntype, rows in groups.items():
        for name in enabled_sources(cfg, ntype):
            mcfg = cfg.metapaths[name]
            if name in CROSS_KNN or name in GRAPH_HOP_ONLY or mcfg.hop == "graph":
                continue
            steps = STEPS[name]
            if steps[0] in SIMILAR_EDGES and need[steps[0]] is not None:
                need[steps[0]].append(rows)
            if len(steps) > 1 and steps[1] in SIMILAR_EDGES:
                if steps[0] in SIMILAR_EDGES:             # reached through kNN rows itself
                    need[steps[1]] = None
                elif need[steps[1]] is not None:
                    _, cols, _ = rels.gather(steps[0], mcfg.hop, mcfg.fanout[0], rows)
                    need[steps[1]].append(cols)
    return {step: None if rows is None else np.unique(np.concatenate(rows or [np.zeros(0, int)]))
            for step, rows in need.items()}


def source_candidates(rels: Relations, cfg: ExpandConfig, ntype: str, rows: np.ndarray
                      ) -> dict[str, R.Candidates]:
    """Every enabled source's candidates for source node ids `rows`, unsorted and uncapped.

    `row` indexes `rows`; `target` is a node id of the other type; `via` is a raw id.
    """
    target_type = OTHER[ntype]
    order = rels.raw_order(target_type)
    history = R.RowPairs.of(rels.get(HISTORY[ntype]), rows)
    raw_ids = rels.graph.raw_ids
    out: dict[str, R.Candidates] = {}
    for name in enabled_sources(cfg, ntype):
        mcfg = cfg.metapaths[name]
        if name in CROSS_KNN:
            c = _cross_knn(rels, cfg, ntype, rows, order)
            via_type = ntype
            if cfg.exclude_history:
                c = R.drop_pairs(c, history)
        else:
            steps = STEPS[name]
            hop = "graph" if name in GRAPH_HOP_ONLY else mcfg.hop
            if len(steps) == 1:
                c = R.one_hop(rels.get(steps[0]), rows, order)
            else:
                # score(s, t) = sum over mids m of first(s, m) * second(m, t); via = the
                # mid of the largest contribution.
                owner, mid, a = rels.gather(steps[0], hop, mcfg.fanout[0], rows)
                pos, tgt, b = rels.gather(steps[1], hop, mcfg.fanout[1], mid)
                c = R.aggregate(owner[pos], tgt, a[pos] * b, mid[pos], order)
            via_type = ntype if len(steps) == 1 else STEP_TYPES[steps[0]][1]
            if name in NEVER_GIFTED or (cfg.exclude_history and len(steps) > 1):
                c = R.drop_pairs(c, history)
        c.via = raw_ids[via_type][c.via]
        out[name] = c
    return out


def prior_candidates(rels: Relations, ntype: str, rows: np.ndarray, depth: int
                     ) -> dict[str, R.Candidates]:
    """The same best `depth` prior entries for every row (via = the source node itself)."""
    out = {}
    for name in PRIORS[ntype]:
        nodes, score = rels.prior(name)
        nodes, score = nodes[:depth], score[:depth]
        row = np.repeat(np.arange(len(rows)), len(nodes))
        out[name] = R.Candidates(row, np.tile(nodes, len(rows)), np.tile(score, len(rows)),
                                 rels.graph.raw_ids[ntype][rows[row]])
    return out


def topic_candidates(rels: Relations, topics: Topics, ntype: str, rows: np.ndarray, depth: int,
                     clusters_per_user: int) -> R.Candidates:
    """TOPIC: the generator-shaped guess of a first gift, scored by `Topics.score` (the user's
    share of each cluster x the streamer's share of its audience, summed over clusters; for a
    streamer's candidates, times the user's gifts in the window). A user's candidates are the
    streamers of largest audience share in each of their `clusters_per_user` likeliest
    clusters; a streamer's, the users whose gifts times share of its likeliest cluster are
    largest. Each list runs `depth` past the node's history length, so that `depth` remain
    outside the history. Via: the node itself."""
    if not topics.n:
        return R.empty()
    order = rels.raw_order(OTHER[ntype])
    history = rels.get(HISTORY[ntype]).row_lengths()
    need = depth + history[rows]
    lists = _topic_lists(rels, topics, ntype, depth + int(history.max(initial=0)))
    if ntype == "user":
        share = topics.shares(rows)
        # Likeliest clusters first; a tie (no history) goes to the larger audience.
        best = np.lexsort((np.broadcast_to(-topics.mass, share.shape), -share),
                          axis=-1)[:, :clusters_per_user]
        row = np.repeat(np.arange(len(rows)), best.shape[1])
        cl = best.reshape(-1)
    else:
        row = np.flatnonzero(topics.cluster[rows] >= 0)
        cl = topics.cluster[rows[row]]
    lens = need[row]
    offsets = np.cumsum(lens) - lens
    flat = np.repeat(cl * lists.shape[1] - offsets, lens) + np.arange(int(lens.sum()))
    row, target = np.repeat(row, lens), lists.reshape(-1)[flat]
    keep = target >= 0
    # A streamer can lead the lists of two of a user's clusters: once per row, by raw id.
    key = unique(row[keep] * len(order.rank) + order.rank[target[keep]])
    row, target = key // len(order.rank), order.node[key % len(order.rank)]
    users, streamers = (rows[row], target) if ntype == "user" else (target, rows[row])
    score = topics.score(users, streamers)
    if ntype == "streamer":
        score = score * topics.user_gifts[users]
    return R.Candidates(row, target, score.astype(np.float64),
                        rels.graph.raw_ids[ntype][rows[row]])


def _topic_lists(rels: Relations, topics: Topics, ntype: str, n: int) -> np.ndarray:
    """Per cluster, the best `n` targets of the TOPIC source (ties: raw id; -1 past the
    end), computed once per graph: streamers by their share of the cluster's audience, users
    by their gifts x their share of the cluster."""
    key = ("TOPIC", ntype, n)
    if key not in rels._cache:
        target_type = OTHER[ntype]
        rank = rels.raw_order(target_type).rank
        lists = np.full((topics.n, n), -1, np.int64)
        gifters = np.flatnonzero(topics.user_gifts > 0)
        shares = topics.shares(gifters) if target_type == "user" else None
        for c in range(topics.n):
            if target_type == "streamer":
                nodes = np.flatnonzero(topics.has)
                score = topics.audience_share[nodes, c].astype(np.float64)
            else:
                nodes = gifters
                score = shares[:, c] * topics.user_gifts[nodes]
            top = np.lexsort((rank[nodes], -score))[:n]
            top = top[score[top] > 0]
            lists[c, :len(top)] = nodes[top]
        rels._cache[key] = lists
    return rels._cache[key]


def published_sequences(cands: dict[str, R.Candidates], cfg: ExpandConfig
                        ) -> dict[str, R.Candidates]:
    """Each walk/kNN source's published sequence: best first, capped, above min_score."""
    return {name: R.top_per_row(c, cfg.cap(name), cfg.min_score) for name, c in cands.items()}
