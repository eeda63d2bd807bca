"""expand(): indexes + metapath expansions of every user and streamer -> one published bundle.

Shard 0 (the only shard of a plain run) builds the Faiss indexes, copies the embeddings and
computes every node's kNN neighbours once; each shard then expands the nodes with
node_id % N == I in vectorised batches, streaming row groups to its own part file. See
gie.expand.bundle for how shards meet and publish, docs/BUNDLE.md for the output.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq

import gie
from gie import environment, failpoints
from gie.config import dump_config
from gie.embeddings import read_embeddings, write_embeddings
from gie.errors import BadInputError
from gie.expand import index as ix
from gie.expand import once, ranker, treecode, workers
from gie.expand.bundle import (
    FAILED, PREPARED, ShardedStage, batch_table, file_signature, fingerprint, parse_shard,
    part_path, shard_from_env,
)
from gie.expand.config import ExpandConfig
from gie.expand.features import GraphFeatures
from gie.expand.fusion import Fusion, View, fixed_fusion, fuse, pooled_table
from gie.expand.learn import (
    CachedSets, SetCache, fit_fusion, label_groups, label_pairs, load_sets, training_sets,
)
from gie.expand.sources import (
    OTHER, Relations, enabled_sources, knn_relation, published_sequences,
    similar_rows_read, source_candidates,
)
from gie.expand.viewcache import VIEWS_CACHE, ViewCache
from gie.progress import progress
from gie.publish import write_json_atomic
from graphbuild.dataset import GraphData, add_edges, graph_metadata, load_graph
from graphbuild.schema import BUNDLE_SCHEMA_VERSION, FUSED, NODE_TYPES, expansion_schema

log = logging.getLogger(__name__)
KNN_STEP = {"user": "UU", "streamer": "SS"}
DAY_MS = 86_400_000
FUSION_FILE = "fusion.json"
SETS_CACHE = "_fusion_sets"       # beside the bundle folders: previous nights' training sets
CLAIMS = "claims"                 # in the run's work folder: who builds what (once.py)


EDGES = ("gift", "watch", "s2s", "u2u")     # the edge types an expansion reads


def _load_inputs(graph: Path, embeddings: Path, edge_types: tuple[str, ...] = EDGES
                 ) -> tuple[GraphData, dict]:
    data = load_graph(graph, edge_types=edge_types, node_features=False)
    emb = {}
    for t in NODE_TYPES:
        raw, vec = read_embeddings(embeddings, t, data.num_nodes(t))
        if not np.array_equal(raw, data.raw_ids[t]):
            row = int(np.flatnonzero(raw != data.raw_ids[t])[0])
            raise BadInputError(f"embeddings {embeddings} ({t}): raw id {raw[row]} at node_id {row} "
                                f"differs from the graph's {data.raw_ids[t][row]}: embeddings "
                                f"were trained on another graph")
        if vec.shape[1] == 0:
            raise BadInputError(f"embeddings {embeddings} ({t}): vectors are empty")
        emb[t] = vec
    return data, emb


def _neighbours(data: GraphData, emb: dict, cfg: ExpandConfig, seed: int, timings: dict,
                only: dict[str, np.ndarray | None] | None = None) -> tuple[dict, dict]:
    """Faiss index of each node type, and every node's kNN among its own type; with `only`
    (node ids per type, None = all), the kNN of those nodes alone (other rows: no neighbour)."""
    indexes, knn = {}, {}
    for t in NODE_TYPES:
        t0 = time.perf_counter()
        vectors = ix.normalise(emb[t])
        indexes[t] = ix.build_index(vectors, cfg.index, cfg.recall_floor, seed, name=t,
                                    other=emb[OTHER[t]])
        t1 = time.perf_counter()
        k = min(cfg.knn_k + 1, data.num_nodes(t))
        rows = (only or {}).get(t)
        if rows is None:
            knn[t] = ix.search(indexes[t].index, vectors, k, desc=f"kNN {t}", indexed=True)
        else:
            sims, ids = np.zeros((len(vectors), k), np.float32), np.full((len(vectors), k), -1)
            sims[rows], ids[rows] = ix.search(indexes[t].index, vectors[rows], k,
                                              desc=f"kNN {t}")
            knn[t] = (sims, ids)
        timings[f"index_{t}"] = round(t1 - t0, 3)
        timings[f"knn_{t}"] = round(time.perf_counter() - t1, 3)
        log.info("kNN of %d %ss (k=%d) in %.1fs", data.num_nodes(t) if rows is None else
                 len(rows), t, k - 1, time.perf_counter() - t1)
    return indexes, knn


def _view(data: GraphData, emb: dict, indexes: dict, index_info: dict, knn: dict,
          cfg: ExpandConfig, bare: Relations | None = None,
          streamer_vectors: tuple[np.ndarray, np.ndarray] | None = None) -> View:
    """Relations, cross-type searches and features of one graph; `index_info`: each index's
    build info (its effort for the other type's queries); `bare`: its relations built
    already without kNN and cross searches (they are added to it); `streamer_vectors`: its
    streamers' content and topic memberships, kept by an earlier run (gie.expand.viewcache)."""
    vectors = {t: ix.normalise(emb[t]) for t in NODE_TYPES}

    def cross(ntype: str):
        other = OTHER[ntype]
        params = ix.cross_params(indexes[other], index_info[other].get("cross_search_param"))
        return lambda rows, k: ix.search_exact_scores(indexes[other], vectors[other],
                                                      vectors[ntype][rows], k, params=params)

    rels = bare or Relations(data, {}, cfg.graph_weight, {}, cfg.fusion.fresh_days)
    rels.knn = {KNN_STEP[t]: knn_relation(*knn[t], cfg.knn_k) for t in NODE_TYPES}
    rels.cross = {t: cross(t) for t in NODE_TYPES}
    return View(rels, GraphFeatures.of(data, emb, cfg.fusion.content_smooth_k,
                                       cfg.fusion.content_reference, cfg.fusion.topic_clusters,
                                       cfg.fusion.topic_temperature, cfg.fusion.topic_basis,
                                       cfg.fusion.topic_audience_dim, streamer_vectors))


def load_view(graph: Path, embeddings: Path, indexes_from: Path, cfg: ExpandConfig,
              index_info: dict) -> View:
    """The view `expand` worked on, rebuilt from a bundle's saved indexes (for `query`)."""
    data, emb = _load_inputs(graph, embeddings)
    indexes = {t: ix.load_index(indexes_from, t, index_info[t]) for t in NODE_TYPES}
    knn = {t: ix.search(indexes[t], ix.normalise(emb[t]), min(cfg.knn_k + 1, data.num_nodes(t)),
                        indexed=True) for t in NODE_TYPES}
    return _view(data, emb, indexes, index_info, knn, cfg)


def load_fusion(bundle: Path, cfg: ExpandConfig) -> Fusion | None:
    return _load_fusion(bundle / "ranker", cfg)


def _fusion(data: GraphData, cfg: ExpandConfig, seed: int, learn_from: list, timings: dict,
            work: Path, cache: SetCache | None, views: ViewCache | None) -> Fusion | None:
    """Learn the fused ranking from previous nights, or say why fixed weights are used.

    The newest `learn.nights` nights are read, then older ones while their label nodes are
    fewer than `learn.min_label_nodes`. A night's training sets come from the cache when an
    earlier run built them from the same inputs; otherwise they are built here, or, with
    `learn.workers` > 1, the missing ones among the first `learn.nights` side by side in
    local processes (gie.expand.workers), each holding one previous graph. A night's view
    comes from `views` when its own run kept it there."""
    if not cfg.fusion.enabled:
        return None
    if not learn_from:
        return fixed_fusion(cfg, "first night: no previous graph and model to learn from")
    if not cfg.fusion.learn.enabled:
        return fixed_fusion(cfg, "learning switched off (expand.fusion.learn.enabled)")
    t0 = time.perf_counter()
    learn = cfg.fusion.learn
    plan, dates = [], []     # (graph, embeddings, the graph after it, days between them)
    after, after_meta = data.path, data.metadata
    for graph, embeddings in learn_from[: max(learn.nights, learn.max_nights)]:
        meta = graph_metadata(graph)
        gap = (int(after_meta["window"]["end_ms"]) - int(meta["window"]["end_ms"])) / DAY_MS
        if gap <= 0:
            raise BadInputError(f"previous graph {graph} ends at or after the graph after it "
                                f"({after}): it cannot be an earlier night")
        if gap > learn.max_gap_days:
            log.warning("night %s is %g days before the next: not learned from (max_gap_days "
                        "%d)", meta.get("date"), gap, learn.max_gap_days)
            break
        plan.append((Path(graph), Path(embeddings), Path(after), gap))
        dates.append(str(meta.get("date")))
        after, after_meta = graph, meta
    if not plan:
        return fixed_fusion(cfg, f"the previous night is more than "
                                 f"{learn.max_gap_days} days back")
    keys = [cache.key(*night) if cache else "" for night in plan]
    # plan index -> (sets, or the cache's CachedSets until the fit, learned_from record)
    found: dict[int, tuple[dict | CachedSets, dict]] = {}

    def from_cache(i: int) -> bool:
        hit = cache.get(dates[i], keys[i]) if cache else None
        if hit:
            found[i] = hit
            log.info("fused ranking: night %s's training sets read from %s", dates[i],
                     cache.folder)
        return hit is not None

    def build(i: int, later: GraphData | None) -> GraphData:
        """Night i's sets (cached); returns its graph's gift edges (the next night's labels)."""
        graph, embeddings, after, gap = plan[i]
        if later is None:
            later = load_graph(after, edge_types=("gift",), node_features=False)
        sets, info, prev = night_sets(graph, embeddings, later, gap, cfg, seed, views)
        found[i] = (sets, info)
        if cache:
            cache.put(dates[i], keys[i], sets, info)
        # The next (older) night reads only this one's gift edges, for its labels: the
        # watch edges and node attributes go now, not after every night is loaded.
        return dataclasses.replace(prev, node_columns={}, modalities={},
                                   edges={"gift": prev.edges["gift"]})

    todo = [i for i in range(min(learn.nights, len(plan))) if not from_cache(i)]
    if learn.workers > 1 and len(todo) > 1:
        files = workers.nights([plan[i] for i in todo], dump_config(cfg), seed, work,
                               learn.workers, views.folder if views else None)
        for i, f in zip(todo, files):
            found[i] = (load_sets(f), json.loads(f.with_suffix(".json").read_text()))
            if cache:
                cache.put(dates[i], keys[i], *found[i])
            f.unlink()
    later = data
    for i in range(len(plan)):
        if i >= learn.nights:       # the first nights' cache was looked up above
            if min(_label_nodes([found[j][0] for j in range(i)]).values()) >= \
                    learn.min_label_nodes:
                break
            from_cache(i)
        if i in found:
            later = None
            continue
        later = build(i, later)
    del later
    for i in sorted(found):         # cached sets are read once no night is being built
        if isinstance(found[i][0], CachedSets):
            try:
                found[i] = (found[i][0].load(), found[i][1])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                log.warning("fused ranking: night %s's cached training sets are unreadable "
                            "(%s): built again", dates[i], e)
                build(i, None)
    read = sorted(found)
    if cache:
        cache.prune({dates[i]: keys[i] for i in read}, min(dates[i] for i in read))
    nights, used = [found[i][0] for i in read], [found[i][1] for i in read]
    del found
    log.info("fused ranking: learning from %d previous night(s), %s label nodes", len(nights),
             _label_nodes(nights))
    fusion = fit_fusion(nights, cfg, seed, {
        "learned_from": used,
        "held_out": "newest night" if len(nights) > 1 else
                    f"{cfg.fusion.learn.valid_share:.0%} of the label nodes"}, work)
    timings["learn_fusion"] = round(time.perf_counter() - t0, 3)
    return fusion


def _label_nodes(nights: list[dict | CachedSets]) -> dict[str, int]:
    return {t: sum(n.n_groups[t] if isinstance(n, CachedSets) else n[t].n_groups
                   for n in nights) for t in NODE_TYPES}


def night_sets(graph: Path, embeddings: Path, later: GraphData, gap: float, cfg: ExpandConfig,
               seed: int, views: ViewCache | None = None) -> tuple[dict, dict, GraphData]:
    """The fused ranking's training sets of a previous night: its candidates against the
    gifts of the night after it (`later`, `gap` days later). The label nodes' sample is
    seeded by the night's own day, so every later run that reads this night builds the same
    sets (what the cache relies on). Returns (sets, what was learned from, its graph)."""
    log.info("fused ranking: learning from %s against the gifts of the %g day(s) after it",
             graph, gap)
    prev, prev_emb = _load_inputs(graph, embeddings)
    night_seed = seed + int(prev.metadata["window"]["end_ms"]) // DAY_MS
    users, streamers = label_pairs(prev, later)
    date = prev.metadata.get("date")
    base, vectors = views.get(str(date), graph, embeddings) if views and date else (None, None)
    # Only the kNN rows the label nodes' walks read (tested equal to the full table).
    bare = Relations(prev, {}, cfg.graph_weight, {}, cfg.fusion.fresh_days, base=base)
    read = similar_rows_read(bare, cfg, label_groups(users, streamers, cfg, night_seed))
    built, knn = _neighbours(prev, prev_emb, cfg, seed, {},
                             only={t: read[KNN_STEP[t]] for t in NODE_TYPES})
    view = _view(prev, prev_emb, {t: b.index for t, b in built.items()},
                 {t: b.info for t, b in built.items()}, knn, cfg, bare, vectors)
    info = {"graph": str(graph), "date": date,
            "labels_from_ms": int(prev.metadata["window"]["end_ms"]),
            "labels_to_ms": int(later.metadata["window"]["end_ms"]),
            "label_pairs": int(len(users))}
    return training_sets(view, cfg, users, streamers, night_seed), info, prev


def _view_cache(stage: ShardedStage, cfg: ExpandConfig) -> ViewCache | None:
    learn = cfg.fusion.learn
    return ViewCache(stage.final.parent / VIEWS_CACHE, cfg) \
        if cfg.fusion.enabled and learn.enabled and learn.cache_views else None


def _save_fusion(fusion: Fusion | None, folder: Path) -> dict | None:
    if fusion is None:
        return None
    folder.mkdir(exist_ok=True)
    desc = {**fusion.info, **{t: {k: ranker.save(s, folder, f"{t}-{k}") for k, s in by.items()}
                              for t, by in fusion.scorers.items()}}
    write_json_atomic(folder / FUSION_FILE, desc)
    return desc


def _load_fusion(folder: Path, cfg: ExpandConfig, threads: int | None = None,
                 num_nodes: dict[str, int] | None = None,
                 shared: tuple[Path, int, int] | None = None) -> Fusion | None:
    """The saved scorers; `threads` (LightGBM's when scoring) unless the config sets them.
    Learned models of node types with `fusion.compile_above` nodes or more are compiled;
    `shared` = (the run's work folder, shard, shards): each once among the shards."""
    path = folder / FUSION_FILE
    if not path.is_file():
        return None
    desc = json.loads(path.read_text())
    threads = cfg.fusion.predict_threads or threads or os.cpu_count() or 1
    scorers = {t: {k: ranker.load(desc[t][k], folder, threads) for k in FUSED}
               for t in NODE_TYPES}
    for t in NODE_TYPES:
        ranker.link(scorers[t], desc[t])
    learned = [(f"{t}-{k}", s.booster) for t in NODE_TYPES for k, s in scorers[t].items()
               if s.booster is not None and (num_nodes or {}).get(t, 0) >= cfg.fusion.compile_above]
    target = ranker.compile_target()
    if learned and target is not None:
        t0 = time.perf_counter()
        if shared is None:
            for _, booster in learned:
                ranker.compile_booster(booster)
        else:
            _compile_once(learned, target, *shared, cfg.shard_wait_s)
        log.info("fused ranking: %d model(s) compiled in %.1fs", len(learned),
                 time.perf_counter() - t0)
    return Fusion(scorers, {k: v for k, v in desc.items() if k not in NODE_TYPES})


def _compile_once(learned: list[tuple[str, lgb.Booster]], target: str, work: Path, shard: int,
                  n: int, wait_s: float) -> None:
    """Each model compiled by one shard into the run's work folder and loaded by the others
    (gie/expand/once.py): the file names hold the model's, the host's and the code
    generator's fingerprints, since the code is native to this host's CPU."""
    folder = work / f"compiled-{fingerprint(target, treecode.codegen())}"
    folder.mkdir(exist_ok=True)
    pieces = [once.Piece(folder / f"{name}-{fingerprint(b.model_to_string())}.o",
                         lambda p, b=b: ranker.compile_booster(b, p),
                         lambda p, b=b: ranker.compile_booster(b, p), f"model {name}")
              for name, b in learned]
    once.build_once(once.in_turn(pieces, shard, n), work / CLAIMS, wait_s)


def _prepare(stage: ShardedStage, data: GraphData, emb: dict, cfg: ExpandConfig,
             seed: int, learn_from) -> tuple[dict, dict, dict]:
    """Shard 0: indexes, embeddings copy, kNN tables, the fused ranking's scorers.
    Returns (indexes, kNN results, prepared info)."""
    info: dict = {"index": {}, "timings_s": {}}
    (stage.path / "index").mkdir(exist_ok=True)
    work = stage.path / "_work"
    work.mkdir(exist_ok=True)
    shutil.rmtree(work / CLAIMS, ignore_errors=True)     # an earlier attempt's
    cache = SetCache(stage.final.parent / SETS_CACHE, cfg, seed) \
        if cfg.fusion.learn.cache else None
    views = _view_cache(stage, cfg)
    # The fused ranking reads none of this night's indexes: by default it is learned in a
    # thread beside this night's kNN search (Faiss leaves the interpreter while it searches),
    # because building a previous night's training sets keeps one core of two busy. At 1.3M
    # users the expand reached its workers after 263 s instead of 304 s, with the same bundle
    # bytes. Learned first (`beside_knn` off), it does not hold this night's tables too.
    beside = cfg.fusion.learn.beside_knn
    with ThreadPoolExecutor(1, thread_name_prefix="fusion") as pool:
        fusion_timings: dict = {}
        fusion = pool.submit(_fusion, data, cfg, seed, learn_from, fusion_timings, work, cache,
                             views)
        if not beside:
            fusion.result()
            workers.release_memory()           # the previous night's graph and view
        indexes, knn = _neighbours(data, emb, cfg, seed, info["timings_s"])
        for t in NODE_TYPES:
            write_embeddings(stage.path / "embeddings" / f"{t}.parquet", t,
                             np.arange(data.num_nodes(t)), data.raw_ids[t], emb[t])
            indexes[t].info.update(ix.save_index(indexes[t], data.raw_ids[t],
                                                 stage.path / "index", t))
            info["index"][t] = indexes[t].info
            if stage.n > 1:
                np.save(work / f"knn-{t}-sims.npy", knn[t][0])
                np.save(work / f"knn-{t}-ids.npy", knn[t][1])
        info["fusion"] = _save_fusion(fusion.result(), stage.path / "ranker")
    info["timings_s"].update(fusion_timings)
    return indexes, knn, info


def _expand_type(stage: ShardedStage, view: View, fusion: Fusion | None, cfg: ExpandConfig,
                 ntype: str) -> dict:
    """Expand this shard's nodes of one type; returns per-sequence statistics."""
    raw_ids = view.graph.raw_ids
    nodes = np.arange(stage.shard, len(raw_ids[ntype]), stage.n, dtype=np.int64)
    order = enabled_sources(cfg, ntype) + (list(FUSED) if fusion else [])
    longest = max([cfg.topk] + [cfg.cap(mp) for mp in order if mp not in FUSED])
    lengths = {mp: np.zeros(longest + 1, np.int64) for mp in order}
    path = part_path(stage.path, ntype, stage.shard, stage.n)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    t0 = time.perf_counter()
    try:
        for lo in progress(range(0, len(nodes), cfg.batch_size), desc=f"expand {ntype}s",
                       unit="batch", mininterval=5):
            rows = nodes[lo:lo + cfg.batch_size]
            cands = source_candidates(view.rels, cfg, ntype, rows)
            results = published_sequences(cands, cfg)
            if fusion is not None:
                table = pooled_table(view, cfg, ntype, rows, cands)
                results.update(fuse(table, fusion.scorers[ntype], cfg))
            for mp, c in results.items():
                per_row = np.bincount(np.bincount(c.row, minlength=len(rows)))
                lengths[mp][:len(per_row)] += per_row
            table = batch_table(ntype, rows, raw_ids[ntype], raw_ids[OTHER[ntype]], results, order)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is None:                       # a shard with no nodes still writes its part
            pq.write_table(expansion_schema(ntype).empty_table(), path)
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - t0
    log.info("expanded %d %ss of shard %d/%d in %.1fs (%.0f nodes/s)", len(nodes), ntype,
             stage.shard, stage.n, seconds, len(nodes) / max(seconds, 1e-9))
    return {"nodes": int(len(nodes)), "seconds": round(seconds, 3),
            "lengths": {mp: h.tolist() for mp, h in lengths.items() if h.sum()}}


def _length_stats(hist: np.ndarray, nodes: int) -> dict:
    filled = hist.copy()
    filled[0] += nodes - hist.sum()              # nodes without a row have length 0
    cum = np.cumsum(filled)
    pct = lambda q: int(np.searchsorted(cum, q * cum[-1]))  # noqa: E731
    with_rows = int(hist[1:].sum())
    return {"rows": with_rows, "coverage": round(with_rows / max(nodes, 1), 4),
            "entries": int((np.arange(len(hist)) * hist).sum()),
            "mean_length": round(float((np.arange(len(hist)) * hist).sum() / max(nodes, 1)), 3),
            "p50_length": pct(0.5), "p90_length": pct(0.9), "max_length": int(np.flatnonzero(
                filled)[-1]) if filled.any() else 0}


def _metadata(cfg: ExpandConfig, seed: int, inputs: dict, n_shards: int, num_nodes: dict,
              prepared: dict, done: list[dict], started: float) -> dict:
    expansions = {}
    for t in NODE_TYPES:
        hists: dict[str, np.ndarray] = {}
        for d in done:
            for mp, h in d["types"][t]["lengths"].items():
                hists[mp] = hists.get(mp, np.zeros(len(h), np.int64)) + np.asarray(h)
        expansions[t] = {mp: _length_stats(h, num_nodes[t]) for mp, h in hists.items()}
    timings = dict(prepared.get("timings_s", {}))
    for d in sorted(done, key=lambda d: d["shard"]):
        for t in NODE_TYPES:
            timings[f"expand_{t}_shard{d['shard']}"] = d["types"][t]["seconds"]
    timings["total_wall"] = round(time.time() - started, 3)
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION, "code_version": gie.__version__,
        "environment": environment.describe(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs, "seed": seed, "shards": n_shards, "config": dump_config(cfg),
        "counts": {"nodes": num_nodes, "rows": {t: sum(s["rows"] for s in e.values())
                                                for t, e in expansions.items()}},
        "expansions": expansions, "index": prepared.get("index", {}),
        "fusion": prepared.get("fusion"), "timings_s": timings,
    }


def expand(graph: str | Path, embeddings: str | Path, out: str | Path, cfg: ExpandConfig,
           seed: int = 0, shard: str | tuple[int, int] | None = None,
           learn_from: list[tuple[str | Path, str | Path]] | None = None) -> dict:
    """Publish the bundle `out` (or this shard's share of it); returns the bundle metadata,
    or this shard's statistics with published=False when other shards are still running.

    `learn_from` = [(graph, embeddings)] of previous nights, newest first: the fused ranking
    is learned on them against the gifts that came after each; without them, fixed weights.
    """
    started = time.time()
    given = parse_shard(shard) or shard_from_env()
    i, n = given or (0, cfg.workers)            # a plain run: shard 0 of its local workers
    local = given is None and n > 1
    local_worker = os.environ.get("GIE_EXPAND_LOCAL_WORKER") == "1"
    graph, embeddings, out = Path(graph), Path(embeddings), Path(out)
    # The other edge types are read after the preparation, which needs only the gift edges
    # (the fused ranking's labels): not held while it learns from a previous night's graph.
    data, emb = _load_inputs(graph, embeddings, edge_types=("gift",))
    inputs = {"graph": str(graph.resolve()), "embeddings": str(embeddings.resolve()),
              "graph_date": data.metadata.get("date"),
              "learn_from": [[str(Path(p).resolve()) for p in night]
                             for night in learn_from or []]}
    token = fingerprint(inputs, file_signature(embeddings), data.metadata, dump_config(cfg),
                        seed, n, gie.__version__,
                        [file_signature(Path(p)) for night in learn_from or [] for p in night])
    stage = ShardedStage(out, i, n, token)
    stage.open()
    procs: list = []
    log.info("expanding shard %d/%d of %d users and %d streamers into %s", i, n,
             data.num_nodes("user"), data.num_nodes("streamer"), out)
    try:
        if i == 0:
            try:
                indexes, knn, prepared = _prepare(stage, data, emb, cfg, seed, learn_from)
            except Exception as e:
                stage.mark(FAILED, {"error": f"{type(e).__name__}: {e}"})
                raise
            stage.mark(PREPARED, prepared)
            failpoints.reached("expand-prepared")
            indexes = {t: b.index for t, b in indexes.items()}
            if local:
                workers.release_memory()         # the fit's training sets, before W copies
                procs = workers.start(graph, embeddings, out, dump_config(cfg), seed, n,
                                      learn_from or [])
        else:
            prepared = stage.wait_prepared(cfg.shard_wait_s)
            work = stage.path / "_work"
            knn = {t: (np.load(work / f"knn-{t}-sims.npy"), np.load(work / f"knn-{t}-ids.npy"))
                   for t in NODE_TYPES}
            indexes = {t: ix.load_index(stage.path / "index", t, prepared["index"][t])
                       for t in NODE_TYPES}
        add_edges(data, tuple(e for e in EDGES if e not in data.edges))
        work, date = stage.path / "_work", data.metadata.get("date")
        views = _view_cache(stage, cfg)
        # Built once among the shards, and kept for the next night's learning.
        base, vectors = views.shared(str(date), data, graph, embeddings, cfg, work / CLAIMS,
                                     i, n, cfg.shard_wait_s) if views and date else (None, None)
        bare = Relations(data, {}, cfg.graph_weight, {}, cfg.fusion.fresh_days, base=base)
        view = _view(data, emb, indexes, prepared["index"], knn, cfg, bare, vectors)
        threads = workers.threads_per_worker(n) if local or local_worker else None
        fusion = _load_fusion(stage.path / "ranker", cfg, threads,
                              {t: data.num_nodes(t) for t in NODE_TYPES}, (work, i, n))
        del knn, emb                             # the view holds what it reads of them
        with ix.omp_threads(threads):
            stats = {t: _expand_type(stage, view, fusion, cfg, t) for t in NODE_TYPES}
        stage.mark(f"_done-{i}.json", {"shard": i, "types": stats})
        if procs:
            workers.wait(procs)
        num_nodes = {t: data.num_nodes(t) for t in NODE_TYPES}
        metadata = stage.try_publish(lambda prep, done: _metadata(
            cfg, seed, inputs, n, num_nodes, prep, done, started))
        if metadata is None and local:          # the last worker to finish published it
            metadata = json.loads((out / "metadata.json").read_text())
    except BaseException:
        workers.stop(procs)
        if n == 1 or local:
            stage.discard()                      # a plain run leaves nothing half-written
        raise
    if metadata is None:
        return {"published": False, "shard": i, "shards": n, "types": stats}
    log.info("published bundle %s: %s rows", out, metadata["counts"]["rows"])
    return metadata
