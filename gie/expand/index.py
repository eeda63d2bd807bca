"""Faiss indexes of node embeddings: type chosen by size, search effort tuned to a recall target.

Cosine similarity = inner product of L2-normalised vectors. Every build measures recall@K of
the index against exact search on a sample of the indexed vectors (a neighbour within
`recall_epsilon` of the exact K-th's distance counts, see `epsilon_recall`; the other type's
searches count the exact K only); IVF `nprobe` / HNSW
`efSearch` are raised until `recall_target` is met, and a build whose best recall stays below
`recall_floor` fails with QualityFloorError. The saved index is written with its id map
(position -> raw id) so a consumer can search by raw id.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gie.errors import QualityFloorError
from gie.expand.config import IndexConfig
from gie.expand.relations import float_key
from gie.progress import progress
from graphbuild.schema import RAW_ID_COLUMN

log = logging.getLogger(__name__)

SEARCH_BATCH = 16_384
# Queries rescored at once: their gathered hits stay in cache (the pair scores of 50k users'
# 108 hits each, 64-d vectors, one core: 1.6 s, against 2.3-3.6 s in batches of SEARCH_BATCH).
RESCORE_BATCH = 512


@dataclass
class BuiltIndex:
    index: faiss.Index               # searchable (maybe on GPU); positions = node ids
    info: dict = field(default_factory=dict)


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(vectors)      # zero vectors stay zero
    return vectors


def choose_factory(n: int, d: int, cfg: IndexConfig, gpu: bool = False) -> str:
    """Faiss factory string for n vectors of dimension d. On a CPU, lists of `list_size`
    vectors whose nearest ones a query finds in an HNSW graph of the centroids: a probe
    scans as much at every size, and finding the lists grows with the log of their count
    (1.29M users' kNN 48 s against 74 s with 2*sqrt(n) lists and every centroid compared,
    docs/benchmarks/knn.md). A GPU compares every centroid in one matrix product, where
    2*sqrt(n) lists keep that product small."""
    if cfg.factory:
        return cfg.factory
    kind = cfg.kind
    if kind == "auto":
        kind = "flat" if n < cfg.exact_below else "ivf_pq" if n >= cfg.pq_above else "ivf_flat"
    if cfg.list_size and not gpu:
        nlist = max(16, round(n / cfg.list_size))
    else:
        nlist = int(2 ** round(math.log2(max(16.0, 2 * math.sqrt(n)))))
    ivf = f"IVF{nlist}_HNSW32" if cfg.quantizer == "hnsw" and not gpu else f"IVF{nlist}"
    if kind == "flat":
        return "Flat"
    if kind == "ivf_flat":
        return f"{ivf},Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    m = max(m for m in (4, 8, 16, 32, 48, 64) if d % m == 0 and m <= max(4, d // 2)) \
        if d % 4 == 0 else 1
    return f"{ivf},PQ{m}x8,RFlat"           # PQ codes, exact re-ranking of the shortlist


def _gpu_wanted(cfg: IndexConfig) -> bool:
    return cfg.use_gpu and hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0


def _to_gpu(index: faiss.Index, cfg: IndexConfig) -> tuple[faiss.Index, bool]:
    if _gpu_wanted(cfg):
        return faiss.index_cpu_to_all_gpus(index), True
    return index, False


def _effort_knobs(index: faiss.Index) -> tuple[str | None, list[int]]:
    """The search-effort parameter of this index type and the values to try, cheapest first."""
    base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
    if isinstance(base, faiss.IndexIVF):
        return "nprobe", [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= base.nlist]
    if isinstance(base, faiss.IndexHNSW):
        return "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    return None, []


def _cheapest(values: list[int], recall_of, target: float) -> tuple[int, float]:
    """The least effort whose recall (non-decreasing in the effort) reaches `target`: the
    first of `values` that does, then a bisection down to the value before it (1.3M users'
    embeddings reach 0.95 with 7 lists probed, where doubling stops at 8); the largest value
    where none does."""
    below, results = None, {}
    for value in values:
        results[value] = recall_of(value)
        if results[value] >= target:
            break
        below = value
    else:
        return value, results[value]
    hi = value
    while below is not None and hi - below > 1:
        mid = (below + hi) // 2
        results[mid] = recall_of(mid)
        below, hi = (below, mid) if results[mid] >= target else (mid, hi)
    return hi, results[hi]


def _set_effort(index: faiss.Index, name: str, value: int) -> None:
    faiss.ParameterSpace().set_index_parameter(index, name, value)
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = 4


def cross_params(index: faiss.Index, effort: dict | None) -> faiss.SearchParameters | None:
    """Search parameters with `effort` ({"nprobe": 16}, the build's `cross_search_param`) for
    one call, leaving the index's own effort as it is (safe across threads); None where there
    is nothing to set or the index is on a GPU (it keeps its own effort)."""
    if not effort or type(index).__name__.startswith("Gpu"):
        return None
    (name, value), = effort.items()
    refine = isinstance(index, faiss.IndexRefine)
    base = faiss.downcast_index(index.base_index) if refine else index
    if name == "nprobe" and isinstance(base, faiss.IndexIVF):
        inner = faiss.SearchParametersIVF(nprobe=value)
        quantizer = faiss.downcast_index(base.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            # The other type's queries lie off the indexed vectors, where a walk of the
            # centroid graph as wide as nprobe misses near lists: 13k streamers searching
            # 129k users' 504 lists stopped at recall@50 0.939 with 256 probes, and reached
            # 0.952 with 20 when the walk kept 4 * nprobe candidates.
            walk = faiss.SearchParametersHNSW(efSearch=max(quantizer.hnsw.efSearch, 4 * value))
            inner.quantizer_params = walk
            inner.referenced = walk              # Python owns `walk`: keep it alive
    elif name == "efSearch" and isinstance(base, faiss.IndexHNSW):
        inner = faiss.SearchParametersHNSW(efSearch=value)
    else:
        return None
    if not refine:
        return inner
    params = faiss.IndexRefineSearchParameters(k_factor=index.k_factor, base_index_params=inner)
    params.referenced = inner                  # Python owns `inner`: keep it alive
    return params


@contextlib.contextmanager
def omp_threads(n: int | None):
    """Faiss' OpenMP threads, and torch's (the sorts of gie/sorting.py), set to `n` inside
    the block (None: left as they are), e.g. one core each for local workers that search and
    sort side by side."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


def _list_order(index: faiss.Index, queries: np.ndarray) -> np.ndarray | None:
    """The queries' order grouped by their nearest inverted list (IVF indexes on CPU; None
    otherwise). Scanned one after the other, queries that probe the same lists find them
    in cache: the kNN of 1.3M users took half the time (the same results, each query is
    scanned on its own)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or len(queries) < 2:
        return None
    _, nearest = ivf.quantizer.search(queries, 1)
    return np.argsort(nearest[:, 0], kind="stable")


def _stored_order(index: faiss.Index, n: int) -> np.ndarray | None:
    """The ids of an IVF index (on CPU) list by list, in the order they were added to each:
    for the kNN of the `n` indexed vectors themselves, `_list_order`'s grouping without a
    search of the quantizer, which took 5 s of the 1.29M users' kNN and 20-30 s at 3.87M
    (an HNSW walk over 15,115 centroids a query). None unless the lists hold every position
    0..n-1 once."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or ivf.ntotal != n or n < 2:
        return None
    lists = ivf.invlists
    ids = np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                          for i in range(ivf.nlist) if lists.list_size(i)])
    seen = np.zeros(n, bool)
    seen[ids[(ids >= 0) & (ids < n)]] = True
    return ids if len(ids) == n and seen.all() else None


def search(index: faiss.Index, queries: np.ndarray, k: int, desc: str | None = None,
           params: faiss.SearchParameters | None = None, indexed: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """Batched search (bounded memory, progress bar): (similarities, positions); `params`
    overrides the index's search effort for this call (see `cross_params`); `indexed`:
    the queries are the index's own vectors, position = id (the kNN of its nodes)."""
    order = _stored_order(index, len(queries)) if indexed else None
    if order is None:
        order = _list_order(index, queries)
    sims = np.empty((len(queries), k), np.float32)
    ids = np.empty((len(queries), k), np.int64)
    for lo in progress(range(0, len(queries), SEARCH_BATCH), desc=desc, disable=desc is None,
                   unit="batch", mininterval=5):
        rows = slice(lo, lo + SEARCH_BATCH) if order is None else order[lo:lo + SEARCH_BATCH]
        sims[rows], ids[rows] = index.search(np.ascontiguousarray(queries[rows]), k,
                                             params=params)
    return sims, ids


def search_exact_scores(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int,
                        margin: int = 8, params: faiss.SearchParameters | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Search, then score the hits again pair by pair and keep the best k (ties: lower id).

    Faiss computes a batch of queries with one matrix product, whose last bits depend on how
    many queries the batch holds; scoring each (query, hit) pair on its own gives the same
    bytes however the nodes are batched or sharded. `margin` extra hits absorb the order of
    near-ties at the k-th place."""
    n = min(k + margin, index.ntotal)
    _, ids = search(index, queries, n, params=params)
    out_sims, out_ids = np.empty((len(queries), min(k, n)), np.float32), \
        np.empty((len(queries), min(k, n)), np.int64)
    for lo in range(0, len(queries), RESCORE_BATCH):
        q, hit = queries[lo:lo + RESCORE_BATCH], ids[lo:lo + RESCORE_BATCH]
        pairs = vectors[np.maximum(hit, 0)]
        pairs *= q[:, None, :]
        sims = pairs.sum(-1, dtype=np.float32)
        sims[hit < 0] = -np.inf
        out_sims[lo:lo + RESCORE_BATCH], out_ids[lo:lo + RESCORE_BATCH] = \
            _best_by_score(sims, hit, k)
    return out_sims, out_ids


def _best_by_score(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best scores, ties to the lower id: the order np.lexsort((ids, -sims))
    gives a row, from one sort of (score, id) packed in a uint64, unpacked again (half the
    time of the lexsort; -0.0 is taken as 0.0, as a comparison takes it)."""
    score = np.uint64(0xFFFFFFFF) - float_key(sims + np.float32(0)).astype(np.uint64)
    key = np.sort((score << np.uint64(32)) | (ids + 1).astype(np.uint64), axis=-1)[:, :k]
    bits = (np.uint64(0xFFFFFFFF) - (key >> np.uint64(32))).astype(np.int64) - (1 << 31)
    best = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits).astype(np.int32).view(np.float32)
    return best, (key & np.uint64(0xFFFFFFFF)).astype(np.int64) - 1


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, int((truth >= 0).sum()))


def epsilon_recall(found: tuple[np.ndarray, np.ndarray], exact: tuple[np.ndarray, np.ndarray],
                   epsilon: float) -> float:
    """Recall@K of (similarities, ids) found against the exact ones, where a found neighbour
    counts when its distance is within (1 + epsilon) of the exact K-th neighbour's (ANN-
    Benchmarks' "epsilon" recall; epsilon = 0: the exact K ids). Vectors are normalised, so a
    distance is sqrt(2 - 2 * similarity). Where many neighbours lie almost equally near,
    which of them an index returns changes no score by more than that margin, but identity
    recall demands the exact ones: 1.29M users' embeddings needed 7 lists probed for 0.95
    identity recall and 5 for 0.95 at epsilon 0.01 (docs/BUNDLE.md)."""
    if epsilon <= 0:
        return recall_at_k(found[1], exact[1])
    exact_sims, exact_ids = exact
    valid = exact_ids >= 0
    kth = np.where(valid, exact_sims, np.inf).min(axis=1, keepdims=True).astype(np.float64)
    limit = (1.0 + epsilon) ** 2 * np.maximum(0.0, 2.0 - 2.0 * kth)
    near = (found[1] >= 0) & (np.maximum(0.0, 2.0 - 2.0 * found[0].astype(np.float64)) <= limit)
    return float(np.minimum(near.sum(1), valid.sum(1)).sum()) / max(1, int(valid.sum()))


def build_index(vectors: np.ndarray, cfg: IndexConfig, recall_floor: float, seed: int = 0,
                name: str = "index", other: np.ndarray | None = None) -> BuiltIndex:
    """Build, tune and check an index over normalised `vectors` (rows = node ids).

    `other`: the other node type's embeddings, whose searches of this index get an effort of
    their own (`cross_search_param`, tuned to the same target on a sample of them): they lie
    further from the lists than the indexed vectors (at the effort tuned on those, 3.87M
    users found 0.88 of their exact 50 nearest streamers)."""
    n, d = vectors.shape
    factory = choose_factory(n, d, cfg, gpu=_gpu_wanted(cfg))
    t0 = time.perf_counter()
    cpu_index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    if not cpu_index.is_trained:
        ivf = faiss.try_extract_index_ivf(cpu_index)
        lists = ivf.nlist if ivf is not None else 256       # 256 = PQ codebook size
        if n < lists:
            raise QualityFloorError(f"{name}: {n} vectors cannot train {factory}; "
                                    f"use a Flat index below {lists} vectors")
        size = min(n, max(lists * cfg.train_per_list, 1000))
        train = vectors[np.sort(rng.choice(n, size, replace=False))]
        if ivf is not None:
            ivf.cp.seed = seed
            ivf.cp.max_points_per_centroid = cfg.train_per_list
            if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
                _fill_graph_quantizer(ivf, train, seed)
    index, on_gpu = _to_gpu(cpu_index, cfg)
    if not index.is_trained:        # (an HNSW quantizer, filled above, is not trained again)
        index.train(train)
    index.add(vectors)
    build_s = time.perf_counter() - t0

    k = min(cfg.recall_k, n)
    queries = vectors[np.sort(rng.choice(n, min(cfg.recall_sample, n), replace=False))]
    t0 = time.perf_counter()
    exact = faiss.knn(queries, vectors, k, faiss.METRIC_INNER_PRODUCT)
    exact_s = time.perf_counter() - t0
    knob, values = _effort_knobs(cpu_index)
    effort, recall, search_s = None, 1.0, exact_s
    if knob is not None:
        seconds = {}

        def recall_of(value: int) -> float:
            _set_effort(index, knob, value)
            t0 = time.perf_counter()
            found = index.search(queries, k)
            seconds[value] = time.perf_counter() - t0
            return epsilon_recall(found, exact, cfg.recall_epsilon)

        effort, recall = _cheapest(values, recall_of, cfg.recall_target)
        _set_effort(index, knob, effort)
        search_s = seconds[effort]
    if knob is None and factory != "Flat":
        t0 = time.perf_counter()
        found = index.search(queries, k)
        search_s, recall = time.perf_counter() - t0, epsilon_recall(found, exact,
                                                                    cfg.recall_epsilon)
    info = {"factory": factory, "n": n, "dim": d, "gpu": on_gpu, "recall_k": k,
            "recall": round(recall, 4), "recall_epsilon": cfg.recall_epsilon,
            "recall_queries": len(queries),
            "search_param": {knob: effort} if knob else {},
            "build_s": round(build_s, 3), "exact_search_s": round(exact_s, 4),
            "index_search_s": round(search_s, 4),
            "speedup_vs_exact": round(exact_s / max(search_s, 1e-9), 2)}
    log.info("%s index %s over %d vectors: recall@%d=%.4f (%s) built in %.1fs, %.1fx exact speed",
             name, factory, n, k, recall, info["search_param"] or "exact", build_s,
             info["speedup_vs_exact"])
    if other is not None and len(other):
        info.update(_tune_cross(index, vectors, other, cfg, k, knob, values, rng))
        log.info("%s index: the other type's queries recall@%d=%.4f (%s)", name, k,
                 info["cross_recall"], info["cross_search_param"] or "exact")
    if recall < recall_floor:
        raise QualityFloorError(f"{name} index {factory}: recall@{k} {recall:.4f} against exact "
                                f"search is below the floor {recall_floor}")
    return BuiltIndex(index, info)


def _fill_graph_quantizer(ivf: faiss.IndexIVF, train: np.ndarray, seed: int) -> None:
    """Centroids for an IVF index whose quantizer is an HNSW graph, by k-means in two levels:
    about sqrt(nlist) groups, then each group into its share of the lists, so a training
    vector meets about 2*sqrt(nlist) centroids instead of nlist (Faiss' own training would
    assign through the graph, which threads build in an order of their own). The graph is
    built on one thread for the same reason: the same bytes on every run."""
    nlist, d, niter = ivf.nlist, train.shape[1], ivf.cp.niter

    def kmeans(points: np.ndarray, k: int, seed: int) -> faiss.Kmeans:
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True,
                          min_points_per_centroid=1, max_points_per_centroid=len(points))
        km.train(points)
        return km

    top = kmeans(train, max(1, round(math.sqrt(nlist))), seed)
    group = top.index.search(train, 1)[1][:, 0]
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=top.k)
    # lists per group in proportion to its points; at most its points, as len(train) >= nlist
    lists = np.diff(np.cumsum(counts) * nlist // len(train), prepend=0)
    parts, starts = [], np.concatenate([[0], np.cumsum(counts)])
    for g in np.flatnonzero(lists):
        points = train[order[starts[g]:starts[g + 1]]]
        parts.append(points if lists[g] == len(points)
                     else kmeans(points, int(lists[g]), seed + 1 + int(g)).centroids)
    with omp_threads(1):
        ivf.quantizer.add(np.vstack(parts))


def _tune_cross(index: faiss.Index, vectors: np.ndarray, other: np.ndarray, cfg: IndexConfig,
                k: int, knob: str | None, values: list[int], rng: np.random.Generator) -> dict:
    """The cheapest effort at which a sample of `other` finds its exact neighbours among
    `vectors` at the recall target, set per call (the index keeps its own effort). By
    identity, whatever `recall_epsilon`: these queries lie far from the indexed vectors, where
    a margin relative to the distance is a wide one in similarity (a median 0.01-0.017 at the
    50th neighbour, against 0.0002-0.0003 for a user's own); counted within it, 13k streamers'
    searches of 129k users fell from 24 probes to 3 (docs/BUNDLE.md)."""
    queries = normalise(other[np.sort(rng.choice(len(other), min(cfg.recall_sample, len(other)),
                                                 replace=False))])
    _, exact = faiss.knn(queries, vectors, k, faiss.METRIC_INNER_PRODUCT)
    if knob is None or cross_params(index, {knob: values[0]}) is None:
        # exact, or no effort to set per call (GPU)
        effort, (_, found) = None, index.search(queries, k)
        recall = recall_at_k(found, exact)
    else:
        effort, recall = _cheapest(values, lambda value: recall_at_k(index.search(
            queries, k, params=cross_params(index, {knob: value}))[1], exact), cfg.recall_target)
    return {"cross_recall": round(recall, 4), "cross_recall_queries": len(queries),
            "cross_search_param": {knob: effort} if effort is not None else {}}


def save_index(built: BuiltIndex, raw_ids: np.ndarray, folder: Path, node_type: str) -> dict:
    """Write `<type>.faiss` (a CPU copy; position i = node id i) and `<type>_ids.parquet`
    (position -> raw id), so a consumer can search by raw id and read raw ids back."""
    index = faiss.index_gpu_to_cpu(built.index) if built.info.get("gpu") else built.index
    faiss.write_index(index, str(folder / f"{node_type}.faiss"))
    column = RAW_ID_COLUMN[node_type]
    pq.write_table(pa.table({"position": pa.array(np.arange(len(raw_ids)), pa.int64()),
                             column: pa.array(raw_ids, pa.int64())}),
                   folder / f"{node_type}_ids.parquet")
    return {"file": f"index/{node_type}.faiss", "id_map": f"index/{node_type}_ids.parquet"}


def load_index(folder: Path, node_type: str, info: dict) -> faiss.Index:
    """A saved index (CPU), searched with the effort its build chose."""
    index = faiss.read_index(str(folder / f"{node_type}.faiss"))
    for name, value in (info.get("search_param") or {}).items():
        _set_effort(index, name, value)
    return index
