"""Features of (node, candidate) pairs for the fused ranking, computed from one graph.

A row of the feature matrix describes one candidate of one source node, as of the end of the
graph's window: each source's score and rank for it (NaN when that source did not propose
it), how many sources proposed it and its best rank, the model's embedding score and how close
the streamer's multi-modal content is to what the user gifted and watched (these scores also
as ranks within the node's pool), how much of the user's history falls in the streamer's
topic cluster (of its content and audience) and how much of that cluster's audience the
streamer draws (the "topic" features), the evidence on the pair itself (gift and watch
edges, recency), and statistics of both nodes (activity, history length, popularity, trend,
age).
Names are fixed by the sources enabled, so a ranker fitted on one night reads another's.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from gie.expand import index as ix
from gie.expand import relations as R
from gie.sorting import stable_argsort, unique, unique_inverse
from graphbuild.dataset import EdgeSet, GraphData

DAY_MS = 86_400_000
MINUTE_MS = 60_000
CONTENT_COLUMNS = ("content_gift", "content_watch")
# Pair scores also ranked within the node's pool: a pointwise model compares one node's
# candidates, and a score's scale differs from node to node.
POOL_RANKED = ("emb_score", "content_gift", "content_watch")
TOPIC_COLUMNS = ("topic_gift_share", "topic_watch_share", "topic_pop_share", "topic_score")
TOPIC_PSEUDO_COUNT = 0.5     # a user's history: prior streamer count, spread over the clusters
TOPIC_SEED = 0               # k-means initialisation: fixed, so a graph always has one clustering
AUDIENCE_SEED = 0            # the audience vectors' random start: fixed, as TOPIC_SEED
AUDIENCE_OVERSAMPLE = 10     # extra directions in the subspace iteration
AUDIENCE_POWER_ITERATIONS = 4
GIFT_COLUMNS = ("gift_weight", "gift_count", "gift_price", "gift_days_since_last",
                "gift_days_since_first")
WATCH_COLUMNS = ("watch_weight", "watch_clicks", "watch_comments", "watch_likes",
                 "watch_minutes", "watch_days_since_last")
USER_COLUMNS = ("user_gifted_streamers", "user_watched_streamers", "user_gifts", "user_clicks",
                "user_comments", "user_likes", "user_spend", "user_days_active",
                "user_gifts_1d")
STREAMER_COLUMNS = ("streamer_gifts", "streamer_gifters", "streamer_received",
                    "streamer_clicks", "streamer_watchers", "streamer_age_days",
                    "streamer_gifters_1d", "streamer_gifters_3d", "streamer_watchers_1d")

FILL_BLOCK = 8192          # rows of the candidate table written at a time


def feature_names(sources: list[str]) -> list[str]:
    per_source = [f"{s}.{kind}" for s in sources for kind in ("score", "rank")]
    return [*per_source, "n_sources", "best_rank", "emb_score", *CONTENT_COLUMNS,
            *(f"{c}.pool_rank" for c in POOL_RANKED), *TOPIC_COLUMNS, *GIFT_COLUMNS,
            *WATCH_COLUMNS, *USER_COLUMNS, *STREAMER_COLUMNS]


class PairIndex:
    """(user, streamer) -> row of an edge set, by binary search over sorted pair keys."""

    def __init__(self, edges: EdgeSet | None, n_streamers: int):
        self.n = n_streamers
        if edges is None:
            self.keys, self.rows = np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            keys = edges.src * n_streamers + edges.dst
            self.rows = stable_argsort(keys)
            self.keys = keys[self.rows]

    def find(self, users: np.ndarray, streamers: np.ndarray) -> np.ndarray:
        """Edge row of each pair, -1 where there is no edge."""
        if not len(self.keys) or not len(users):
            return np.full(len(users), -1, np.int64)
        keys = users * self.n + streamers
        # Searched in key order, each search starts near the last one: at 16M watch edges a
        # streamer batch's 270k pairs take 0.09 s instead of 0.45 s (a user batch's pairs come
        # nearly sorted already, and cost the same either way).
        order = stable_argsort(keys)
        ordered = keys[order]
        # Only the keys between the smallest and the largest query can match: a user batch's
        # pairs span its users' edges, so each search stays in that slice (in cache, as deep
        # as the batch's edges rather than the graph's): 307k pairs of 1,024 users in 10.6
        # instead of 14.1 ms among 16M watch edges, 10.7 instead of 14.7 ms among 47M.
        lo = int(np.searchsorted(self.keys, ordered[0]))
        hi = int(np.searchsorted(self.keys, ordered[-1], "right"))
        pos = np.empty(len(keys), np.int64)
        pos[order] = lo + np.searchsorted(self.keys[lo:hi], ordered)
        pos = np.minimum(pos, len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.rows[pos], -1)


def _take(values: np.ndarray, rows: np.ndarray, transform=None) -> np.ndarray:
    """values[rows] as float32, NaN where rows < 0 (no edge)."""
    out = np.full(len(rows), np.nan, np.float32)
    hit = rows >= 0
    v = np.asarray(values[rows[hit]], np.float64)
    out[hit] = transform(v) if transform else v
    return out


def streamer_content(graph: GraphData, smooth_k: int, reference: int) -> np.ndarray:
    """Unit vector of each streamer's multi-modal content [ns, sum of dims], zero without any.

    Each modality is centred on the streamers that have it and scaled to unit length, so every
    modality weighs the same whatever its dimension or noise. A streamer's own style is mostly
    noise around what its kind of streamers share, so each vector is then replaced by the mean
    of its `smooth_k` nearest among the `reference` most gifted streamers with content (a
    bounded search: ns x reference products, about 11 s of one core at 130k streamers).
    """
    blocks = []
    for i, v in enumerate(graph.modalities.values()):
        has = np.asarray(graph.modality_mask[:, i], bool)
        v = np.asarray(v, np.float32)
        if has.any():
            v = v - v[has].mean(axis=0)
        v = np.where(has[:, None], v, np.float32(0))
        blocks.append(v / _norms(v))
    if not blocks:
        return np.zeros((graph.num_nodes("streamer"), 0), np.float32)
    out = np.concatenate(blocks, axis=1)
    out /= _norms(out)
    with_content = np.flatnonzero(np.linalg.norm(out, axis=1) > 0)
    sc = graph.node_columns["streamer"]
    rank = np.lexsort((graph.raw_ids["streamer"][with_content],
                       -np.asarray(sc["n_gifts"], np.float64)[with_content]))
    ref = np.sort(with_content[rank[:reference]])
    return _smoothed(out, out[ref], min(smooth_k, len(ref)))


def streamer_audience(graph: GraphData, dim: int, seed: int = AUDIENCE_SEED) -> np.ndarray:
    """Unit vector of each streamer's audience [ns, <= dim] (zero for a streamer nobody gifted
    or watched): the leading right singular vectors of the user x streamer matrix (1 where the
    user gifted or watched the streamer; rows and columns scaled by 1 / sqrt(their count)),
    the first one (the counts themselves) dropped, the others scaled by their singular values.

    Why: streamers of one kind share their audience, and a log of gifts and clicks always has
    one, content or not. Clustered with the content (`topic_vectors`), it found more of the
    next day's first gifts than the content alone where clicks follow interests, and as many
    where they do not (docs/BUNDLE.md "Topics").
    Randomized subspace iteration (Halko et al. 2011) from a seeded start, on one BLAS
    thread: the same bytes on any machine load."""
    nu, ns = graph.num_nodes("user"), graph.num_nodes("streamer")
    edges = [e for e in (graph.edges["gift"], graph.edges.get("watch")) if e is not None]
    src = np.concatenate([e.src for e in edges])
    a = sp.csr_matrix((np.ones(len(src)), (src, np.concatenate([e.dst for e in edges]))),
                      shape=(nu, ns))
    a.sum_duplicates()
    a.data[:] = 1.0
    count_u, count_s = np.asarray(a.sum(axis=1)).ravel(), np.asarray(a.sum(axis=0)).ravel()
    a = (sp.diags(1 / np.sqrt(np.maximum(count_u, 1))) @ a
         @ sp.diags(1 / np.sqrt(np.maximum(count_s, 1)))).tocsr()
    # a.T is a CSC view: its product adds each user's row into its streamers' rows, in
    # ascending user order, the same terms in the same order as a transposed CSR copy, whose
    # rows read the users' rows at random (770 MB at 3.87M users): the same bits, 4.5 -> 2.3 s
    # an iteration at 3.87M users and 1.3 -> 0.55 s at 1.29M.
    at = a.T
    k = min(dim + 1 + AUDIENCE_OVERSAMPLE, nu, ns)
    if k < 2:
        return np.zeros((ns, 0), np.float32)
    with threadpool_limits(1):
        q = np.linalg.qr(np.random.default_rng(seed).standard_normal((ns, k)))[0]
        for _ in range(AUDIENCE_POWER_ITERATIONS):
            q = np.linalg.qr(at @ (a @ q))[0]
        b = a @ q
        eigval, eigvec = np.linalg.eigh(b.T @ b)                  # ascending
        order = np.argsort(-eigval, kind="stable")[1:dim + 1]       # the first: the counts
        v = (q @ eigvec[:, order]) * np.sqrt(np.maximum(eigval[order], 0))
    v[count_s == 0] = 0
    return (v / _norms(v)).astype(np.float32)


def topic_vectors(graph: GraphData, content: np.ndarray, basis: str, audience_dim: int
                  ) -> np.ndarray:
    """What the topic clusters are fitted on: the smoothed content, the audience
    (`streamer_audience`), or both, each a unit block, concatenated and scaled to unit
    length (a streamer with only one of them has that one alone)."""
    if basis == "content":
        return content
    audience = streamer_audience(graph, audience_dim)
    if basis == "audience":
        return audience
    out = np.concatenate([content, audience], axis=1)
    return out / _norms(out)


def _smoothed(v: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Unit mean of each vector's k nearest reference vectors (zero vectors stay zero); exact
    pair scores decide the neighbours, so any batching gives the same bytes."""
    if k <= 1 or not len(ref):
        return v
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(np.ascontiguousarray(ref))
    _, near = ix.search_exact_scores(index, ref, np.ascontiguousarray(v), k)
    near.sort(axis=1)
    out = np.empty_like(v)
    for lo in range(0, len(v), ix.SEARCH_BATCH):     # [rows, k, dim] a chunk at a time
        out[lo:lo + ix.SEARCH_BATCH] = ref[near[lo:lo + ix.SEARCH_BATCH]].sum(axis=1)
    out[np.linalg.norm(v, axis=1) == 0] = 0
    return out / _norms(out)


def topic_clusters(vectors: np.ndarray, clusters: int, temperature: float, seed: int
                   ) -> np.ndarray:
    """Soft cluster memberships of each streamer's topic vector [streamers, clusters]
    (`topic_vectors`; rows sum to 1; zero for a zero vector; no columns when `clusters` is
    0): spherical k-means (the best of 5 starts), fitted on one thread (the same centroids on
    any machine load), then a softmax of each streamer's cosines to the centroids over
    `temperature`, the cosines by exact pair scores (the same bytes however it is batched).

    Why: a gifter picks a kind of streamer, then a streamer of that kind by its popularity, so
    how much of a user's history lies in a candidate's kind, times the candidate's share of
    its kind's audience, is a score of the very form of the choice, which a small tree
    ensemble cannot build from a cosine and the popularity on its own. Soft
    memberships keep what a hard assignment loses at the clusters' borders."""
    has = np.flatnonzero(np.linalg.norm(vectors, axis=1) > 0)
    if clusters < 1 or len(has) < clusters:
        return np.zeros((len(vectors), 0), np.float32)
    km = faiss.Kmeans(vectors.shape[1], clusters, niter=25, nredo=5, seed=seed, spherical=True,
                      min_points_per_centroid=1)   # few streamers: no warning, it is fine
    with ix.omp_threads(1):
        km.train(np.ascontiguousarray(vectors[has]))
    centroids = km.centroids / _norms(km.centroids)
    out = np.zeros((len(vectors), clusters), np.float32)
    for lo in range(0, len(has), 1 << 16):
        part = has[lo:lo + (1 << 16)]
        z = np.einsum("nd,cd->nc", vectors[part], centroids).astype(np.float64) / temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        out[part] = z / z.sum(axis=1, keepdims=True)
    return out


def streamer_vectors_of(graph: GraphData, smooth_k: int, reference: int, clusters: int,
                        temperature: float, basis: str, audience_dim: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(content, topic memberships) of every streamer: the costly part of
    `GraphFeatures.of` (the smoothing search, the audience's subspace iteration, k-means)."""
    content = streamer_content(graph, smooth_k, reference)
    vectors = topic_vectors(graph, content, basis, audience_dim) if clusters else content
    return content, topic_clusters(vectors, clusters, temperature, TOPIC_SEED)


class Topics:
    """What the topic features and the TOPIC source read: each user's distinct gifted and
    watched streamers summed per cluster (soft), each user's gifts, and each streamer's share
    of each cluster's audience (its clicks and gifts a day since first seen in the window,
    times its membership, over the cluster's sum)."""

    def __init__(self, member: np.ndarray, gift: EdgeSet, watch: EdgeSet | None,
                 n_users: int, audience: np.ndarray, user_gifts: np.ndarray | None = None):
        self.member = member
        self.n = member.shape[1]
        self.has = member.sum(axis=1) > 0
        self.cluster = np.where(self.has, member.argmax(axis=1) if self.n else 0, -1)
        self.per_user = {"gift": self._counts(gift, n_users),
                         "watch": None if watch is None else self._counts(watch, n_users)}
        self.mass = member.T.astype(np.float64) @ audience
        self.audience_share = (member * (audience[:, None]
                                         / np.maximum(self.mass, 1e-9)[None, :])).astype(np.float32)
        self.user_gifts = np.zeros(n_users) if user_gifts is None else user_gifts

    def _counts(self, edges: EdgeSet, n_users: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = sp.csr_matrix((np.ones(len(edges.src)), (edges.src, edges.dst)),
                              shape=(n_users, len(self.member)))
        counts = np.asarray(pairs @ self.member.astype(np.float64), np.float32)
        return counts, counts.sum(axis=1)

    def shares(self, users: np.ndarray, kind: str = "gift") -> np.ndarray:
        """[len(users), clusters]: each user's estimated share of each cluster in `kind`: its
        distinct streamers there plus a pseudo-count spread evenly, over its total.

        Computed once per run of equal ids and repeated: a user batch's pairs come grouped
        by user (about 180 a user), and the per-pair arithmetic was most of the topic
        features' time. Each row is the same sum either way, so the bits do not change."""
        counts, total = self.per_user[kind]
        start = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else \
            np.zeros(0, np.int64)
        first = users[start]
        out = (counts[first].astype(np.float64) + TOPIC_PSEUDO_COUNT / self.n) \
            / (total[first, None].astype(np.float64) + TOPIC_PSEUDO_COUNT)
        return np.repeat(out, np.diff(np.r_[start, len(users)]), axis=0)

    def score(self, users: np.ndarray, streamers: np.ndarray) -> np.ndarray:
        """topic_score of each pair: sum over clusters of the user's share x the streamer's
        share of the cluster's audience."""
        return np.einsum("nc,nc->n", self.shares(users), self.audience_share[streamers])

    def features(self, users: np.ndarray, streamers: np.ndarray) -> dict[str, np.ndarray]:
        out = {c: np.full(len(users), np.nan, np.float32) for c in TOPIC_COLUMNS}
        has = self.has[streamers]
        if not self.n or not has.any():
            return out
        u, s = users[has], streamers[has]
        member, audience = self.member[s], self.audience_share[s]
        gift = self.shares(u)
        out["topic_gift_share"][has] = np.einsum("nc,nc->n", gift, member)
        if self.per_user["watch"] is not None:
            out["topic_watch_share"][has] = np.einsum("nc,nc->n", self.shares(u, "watch"),
                                                      member)
        out["topic_pop_share"][has] = audience.sum(axis=1)
        out["topic_score"][has] = np.einsum("nc,nc->n", gift, audience)
        return out


def _pair_dots(lefts: list[np.ndarray], ia: np.ndarray, b: np.ndarray, ib: np.ndarray,
               chunk: int = 1 << 16) -> list[np.ndarray]:
    """left[ia] . b[ib] row by row for each left, in chunks that stay in cache (b's rows are
    read once per chunk for all of them)."""
    out = [np.empty(len(ia), np.float32) for _ in lefts]
    for lo in range(0, len(ia), chunk):
        sl = slice(lo, lo + chunk)
        right = b[ib[sl]]
        for a, o in zip(lefts, out):
            o[sl] = np.einsum("nd,nd->n", a[ia[sl]], right)
    return out


def _norms(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(n > 0, n, 1).astype(np.float32)


class Taste:
    """A user's content taste: the edge-weighted sum of the content of the streamers at the end
    of their edges (gifted, or watched), unit length. Computed the first time a batch asks for
    a user and kept: a streamer batch's candidates are a few hundred thousand users, and the
    same users come back batch after batch (the memo is allocated lazily, so only the users
    asked for take memory; each user's taste is its own sum, so the bits do not depend on
    which batch computed it)."""

    def __init__(self, edges: EdgeSet | None, n_users: int, content: np.ndarray):
        self.content = content
        src, dst, w = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)) \
            if edges is None else (edges.src, edges.dst, edges.data["weight"])
        order = np.argsort(src, kind="stable")
        # Rows keep the edges' order: a user's sum adds its edges in one fixed order.
        self.edges = sp.csr_matrix((np.asarray(w, np.float32)[order], dst[order],
                                    np.searchsorted(src[order], np.arange(n_users + 1))),
                                   shape=(n_users, len(content)))
        self.known = np.zeros(n_users, bool)
        self.memo = np.zeros((n_users, content.shape[1]), np.float32)   # pages on first write

    def vectors(self, users: np.ndarray) -> np.ndarray:
        """Unit taste of each of `users` (distinct ids; zero without edges)."""
        new = users[~self.known[users]]
        if len(new):
            taste = np.asarray(self.edges[new] @ self.content, np.float32)
            self.memo[new] = taste / _norms(taste)
            self.known[new] = True
        return self.memo[users]


def content_scores(tastes: dict[str, Taste], users: np.ndarray, streamers: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Cosine of each user's tastes with the streamer's content (0 without either); the
    tastes share one content matrix, each built once per distinct user."""
    u, inv = unique_inverse(users)
    content = next(iter(tastes.values())).content
    scores = _pair_dots([t.vectors(u) for t in tastes.values()], inv, content, streamers)
    return dict(zip(tastes, scores))


@dataclass
class GraphFeatures:
    """Everything about one graph that the features read, computed once per graph."""

    end_ms: int
    gift: EdgeSet
    watch: EdgeSet | None
    gift_index: PairIndex
    watch_index: PairIndex
    user: dict[str, np.ndarray]
    streamer: dict[str, np.ndarray]
    emb: dict[str, np.ndarray]           # unit-length vectors per node type
    taste: dict[str, Taste]              # CONTENT_COLUMNS -> the users' content taste
    topics: Topics

    @classmethod
    def of(cls, graph: GraphData, emb: dict[str, np.ndarray], smooth_k: int,
           reference: int, clusters: int, temperature: float, topic_basis: str,
           audience_dim: int, streamer_vectors: tuple[np.ndarray, np.ndarray] | None = None
           ) -> "GraphFeatures":
        """`streamer_vectors`: (content, topic memberships) of this graph with these settings,
        when an earlier run computed them (gie/expand/viewcache.py); otherwise computed."""
        end = int(graph.metadata["window"]["end_ms"])
        nu, ns = graph.num_nodes("user"), graph.num_nodes("streamer")
        gift, watch = graph.edges["gift"], graph.edges.get("watch")
        uc, sc = graph.node_columns["user"], graph.node_columns["streamer"]

        def count(ids, n, mask=None):
            return np.bincount(ids if mask is None else ids[mask], minlength=n).astype(np.float32)

        no_watch = np.zeros(0, np.int64)
        w_src = watch.src if watch is not None else no_watch
        w_dst = watch.dst if watch is not None else no_watch
        w_last = watch.data["last_ts"] if watch is not None else no_watch
        g_last = gift.data["last_ts"]
        user = {
            "user_gifted_streamers": count(gift.src, nu),
            "user_watched_streamers": count(w_src, nu),
            "user_gifts": uc["n_gifts"], "user_clicks": uc["n_clicks"],
            "user_comments": uc["n_comments"], "user_likes": uc["n_likes"],
            "user_spend": uc["total_spend"], "user_days_active": uc["days_active"],
            "user_gifts_1d": count(gift.src, nu, g_last >= end - DAY_MS),
        }
        streamer = {
            "streamer_gifts": sc["n_gifts"], "streamer_gifters": sc["n_gifters"],
            "streamer_received": sc["total_received"], "streamer_clicks": sc["n_clicks"],
            "streamer_watchers": count(w_dst, ns),
            "streamer_age_days": (end - sc["first_seen_ts"]) / DAY_MS,
            "streamer_gifters_1d": count(gift.dst, ns, g_last >= end - DAY_MS),
            "streamer_gifters_3d": count(gift.dst, ns, g_last >= end - 3 * DAY_MS),
            "streamer_watchers_1d": count(w_dst, ns, w_last >= end - DAY_MS),
        }
        unit = {}
        for t, v in emb.items():
            v = np.asarray(v, np.float32)
            unit[t] = v / _norms(v)
        content, member = streamer_vectors or streamer_vectors_of(
            graph, smooth_k, reference, clusters, temperature, topic_basis, audience_dim)
        window_days = (end - int(graph.metadata["window"]["start_ms"])) / DAY_MS
        days_seen = np.clip(streamer["streamer_age_days"], 1.0, max(window_days, 1.0))
        topics = Topics(member, gift, watch, nu,
                        (np.asarray(sc["n_clicks"], np.float64) + sc["n_gifts"]) / days_seen,
                        np.asarray(uc["n_gifts"], np.float64))
        return cls(end, gift, watch, PairIndex(gift, ns), PairIndex(watch, ns),
                   {k: np.asarray(v, np.float32) for k, v in user.items()},
                   {k: np.asarray(v, np.float32) for k, v in streamer.items()}, unit,
                   dict(zip(CONTENT_COLUMNS, (Taste(gift, nu, content),
                                              Taste(watch, nu, content)))), topics)

    def pair_features(self, users: np.ndarray, streamers: np.ndarray,
                      gift_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every feature that depends on the pair or its nodes, not on the sources
        (`gift_rows`: the pairs' gift edge rows, when the caller found them already)."""
        days = lambda ts: (self.end_ms - ts) / DAY_MS  # noqa: E731
        g = self.gift_index.find(users, streamers) if gift_rows is None else gift_rows
        out = {"emb_score": self.emb_score(users, streamers),
               **content_scores(self.taste, users, streamers),
               **self.topics.features(users, streamers)}
        d = self.gift.data
        out.update(zip(GIFT_COLUMNS, (
            _take(d["weight"], g), _take(d["count"], g), _take(d["total_price"], g),
            _take(d["last_ts"], g, days), _take(d["first_ts"], g, days))))
        w = self.watch_index.find(users, streamers)
        if self.watch is not None:
            d = self.watch.data
            out.update(zip(WATCH_COLUMNS, (
                _take(d["weight"], w), _take(d["n_clicks"], w), _take(d["n_comments"], w),
                _take(d["n_likes"], w), _take(d["watch_ms"], w, lambda v: v / MINUTE_MS),
                _take(d["last_ts"], w, days))))
        else:
            out.update({c: np.full(len(users), np.nan, np.float32) for c in WATCH_COLUMNS})
        out.update({c: v[users] for c, v in self.user.items()})
        out.update({c: v[streamers] for c, v in self.streamer.items()})
        return out

    def emb_score(self, users: np.ndarray, streamers: np.ndarray) -> np.ndarray:
        """Dot products of the pairs' unit vectors."""
        return _pair_dots([self.emb["user"]], users, self.emb["streamer"], streamers)[0]

    def in_history(self, users: np.ndarray, streamers: np.ndarray) -> np.ndarray:
        return self.gift_index.find(users, streamers) >= 0


@dataclass
class CandidateTable:
    """The union of the sources' candidates of one batch, with features (rows sorted by
    source row, then target raw id)."""

    row: np.ndarray            # position of the source node in the batch
    target: np.ndarray         # node id of the candidate
    history: np.ndarray        # bool: the pair has a gift edge
    X: np.ndarray              # float32 [n, len(names)]
    names: list[str]
    best_source: np.ndarray    # index into `sources` of the source ranking it best
    via: np.ndarray            # raw id: the via of that source
    sources: list[str]

    def column(self, name: str) -> np.ndarray:
        return self.X[:, self.names.index(name)]


def candidate_table(gf: GraphFeatures, ntype: str, rows: np.ndarray,
                    ranked: dict[str, R.Candidates], order: R.RawOrder) -> CandidateTable:
    """`ranked`: each source's candidates, best first and cut at the fusion depth.

    `order` is the raw order of the candidates' node type (targets sort by raw id in a row).
    """
    sources = list(ranked)
    n = len(order.rank)
    keys_per = [c.row * n + order.rank[c.target] for c in ranked.values()]
    keys = unique(np.concatenate(keys_per)) if keys_per else np.zeros(0, np.int64)
    row, target = keys // n, order.node[keys % n]
    m = len(keys)
    cols: dict[str, np.ndarray] = {}
    best_rank = np.full(m, np.inf)
    best_source = np.zeros(m, np.int64)
    via = np.zeros(m, np.int64)
    for i, (name, c) in enumerate(ranked.items()):
        pos = np.searchsorted(keys, keys_per[i])
        rank = R.rank_in_row(c.row).astype(np.float64) + 1
        score, rk = np.full(m, np.nan, np.float32), np.full(m, np.nan, np.float32)
        score[pos], rk[pos] = c.score, rank
        cols[f"{name}.score"], cols[f"{name}.rank"] = score, rk
        better = rank < best_rank[pos]            # first source wins ties (a fixed order)
        best_rank[pos[better]] = rank[better]
        best_source[pos[better]] = i
        via[pos[better]] = c.via[better]
    cols["n_sources"] = sum((~np.isnan(cols[f"{s}.rank"])).astype(np.float32) for s in sources)
    cols["best_rank"] = best_rank.astype(np.float32)
    node = rows[row]
    users, streamers = (node, target) if ntype == "user" else (target, node)
    gift_rows = gf.gift_index.find(users, streamers)
    cols.update(gf.pair_features(users, streamers, gift_rows))
    for c in POOL_RANKED:
        cols[f"{c}.pool_rank"] = _rank_in_pool(row, cols[c])
    names = feature_names(sources)
    X = np.empty((m, len(names)), np.float32)
    # Block by block of rows: a block of the row-major table stays in cache while every
    # column is written into it (the fill alone about 2x faster than whole columns; the
    # pooled table of a 1M user batch 2% faster).
    for lo in range(0, m, FILL_BLOCK):
        block = X[lo:lo + FILL_BLOCK]
        for j, name in enumerate(names):
            block[:, j] = cols[name][lo:lo + FILL_BLOCK]
    return CandidateTable(row, target, gift_rows >= 0, X, names, best_source, via, sources)


def _rank_in_pool(row: np.ndarray, value: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its row, highest first (ties and NaN last: table
    order). One stable argsort of (row, value) packed in an int64, as in R.top_per_row: a
    third of a three-key lexsort's work."""
    key = np.where(np.isnan(value), 0, R.float_key(value + np.float32(0)))  # -0.0 -> 0.0
    order = stable_argsort((row.astype(np.int64) << 32) | (0xFFFFFFFF - key))
    out = np.empty(len(row), np.float32)
    out[order] = R.rank_in_row(row[order]) + 1
    return out
