"""expand(): indexes + metapath expansions of every user and streamer -> one published bundle.

Shard 0 (the only shard of a plain run) builds the Faiss indexes, copies the embeddings and
computes every node's kNN neighbours once; each shard then expands the nodes with
node_id % N == I in vectorised batches, streaming row groups to its own part file. See
gie.expand.bundle for how shards meet and publish, docs/BUNDLE.md for the output.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import gie
from gie.config import dump_config
from gie.embeddings import read_embeddings, write_embeddings
from gie.errors import BadInputError
from gie.expand import index as ix
from gie.expand.bundle import (
    FAILED, PREPARED, ShardedStage, batch_table, file_signature, fingerprint, parse_shard,
    part_path, shard_from_env,
)
from gie.expand.config import ExpandConfig
from gie.expand.metapaths import Relations, expand_batch, knn_relation
from gie.progress import progress
from graphbuild.dataset import GraphData, load_graph
from graphbuild.schema import (
    BUNDLE_SCHEMA_VERSION, MERGED, METAPATHS, NODE_TYPES, expansion_schema,
)

log = logging.getLogger(__name__)
KNN_STEP = {"user": "UU", "streamer": "SS"}


def _load_inputs(graph: Path, embeddings: Path) -> tuple[GraphData, dict]:
    data = load_graph(graph, edge_types=("gift", "s2s", "u2u"))
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


def _prepare(stage: ShardedStage, data: GraphData, emb: dict, cfg: ExpandConfig,
             seed: int) -> tuple[dict, dict]:
    """Shard 0: indexes, embeddings copy, kNN tables. Returns (kNN results, prepared info)."""
    info: dict = {"index": {}, "timings_s": {}}
    (stage.path / "index").mkdir(exist_ok=True)
    work = stage.path / "_work"
    work.mkdir(exist_ok=True)
    knn = {}
    for t in NODE_TYPES:
        t0 = time.perf_counter()
        write_embeddings(stage.path / "embeddings" / f"{t}.parquet", t,
                         np.arange(data.num_nodes(t)), data.raw_ids[t], emb[t])
        vectors = ix.normalise(emb[t])
        built = ix.build_index(vectors, cfg.index, cfg.recall_floor, seed, name=t)
        built.info.update(ix.save_index(built, data.raw_ids[t], stage.path / "index", t))
        t1 = time.perf_counter()
        k = min(cfg.knn_k + 1, data.num_nodes(t))
        knn[t] = ix.search(built.index, vectors, k, desc=f"kNN {t}")
        info["index"][t] = built.info
        info["timings_s"][f"index_{t}"] = round(t1 - t0, 3)
        info["timings_s"][f"knn_{t}"] = round(time.perf_counter() - t1, 3)
        log.info("kNN of %d %ss (k=%d) in %.1fs", data.num_nodes(t), t, k - 1,
                 time.perf_counter() - t1)
        if stage.n > 1:
            np.save(work / f"knn-{t}-sims.npy", knn[t][0])
            np.save(work / f"knn-{t}-ids.npy", knn[t][1])
    return knn, info


def _expand_type(stage: ShardedStage, rels: Relations, cfg: ExpandConfig, ntype: str,
                 raw_ids: dict) -> dict:
    """Expand this shard's nodes of one type; returns per-metapath statistics."""
    nodes = np.arange(stage.shard, len(raw_ids[ntype]), stage.n, dtype=np.int64)
    order = list(METAPATHS[ntype]) + [MERGED]
    target = "streamer" if ntype == "user" else "user"
    longest = max([cfg.topk] + [cfg.cap(mp) for mp in METAPATHS[ntype]])
    lengths = {mp: np.zeros(longest + 1, np.int64) for mp in order}
    path = part_path(stage.path, ntype, stage.shard, stage.n)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    t0 = time.perf_counter()
    try:
        for lo in progress(range(0, len(nodes), cfg.batch_size), desc=f"expand {ntype}s",
                       unit="batch", mininterval=5):
            rows = nodes[lo:lo + cfg.batch_size]
            results = expand_batch(rels, cfg, ntype, rows, raw_ids)
            for mp, c in results.items():
                per_row = np.bincount(np.bincount(c.row, minlength=len(rows)))
                lengths[mp][:len(per_row)] += per_row
            table = batch_table(ntype, rows, raw_ids[ntype], raw_ids[target], results, order)
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
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs, "seed": seed, "shards": n_shards, "config": dump_config(cfg),
        "counts": {"nodes": num_nodes, "rows": {t: sum(s["rows"] for s in e.values())
                                                for t, e in expansions.items()}},
        "expansions": expansions, "index": prepared.get("index", {}), "timings_s": timings,
    }


def expand(graph: str | Path, embeddings: str | Path, out: str | Path, cfg: ExpandConfig,
           seed: int = 0, shard: str | tuple[int, int] | None = None) -> dict:
    """Publish the bundle `out` (or this shard's share of it); returns the bundle metadata,
    or this shard's statistics with published=False when other shards are still running."""
    started = time.time()
    i, n = parse_shard(shard) or shard_from_env() or (0, 1)
    graph, embeddings, out = Path(graph), Path(embeddings), Path(out)
    data, emb = _load_inputs(graph, embeddings)
    inputs = {"graph": str(graph.resolve()), "embeddings": str(embeddings.resolve()),
              "graph_date": data.metadata.get("date")}
    token = fingerprint(inputs, file_signature(embeddings), data.metadata, dump_config(cfg),
                        seed, n, gie.__version__)
    stage = ShardedStage(out, i, n, token)
    stage.open()
    log.info("expanding shard %d/%d of %d users and %d streamers into %s", i, n,
             data.num_nodes("user"), data.num_nodes("streamer"), out)
    try:
        if i == 0:
            try:
                knn, prepared = _prepare(stage, data, emb, cfg, seed)
            except Exception as e:
                stage.mark(FAILED, {"error": f"{type(e).__name__}: {e}"})
                raise
            stage.mark(PREPARED, prepared)
        else:
            prepared = stage.wait_prepared(cfg.shard_wait_s)
            work = stage.path / "_work"
            knn = {t: (np.load(work / f"knn-{t}-sims.npy"), np.load(work / f"knn-{t}-ids.npy"))
                   for t in NODE_TYPES}
        rels = Relations(data, {KNN_STEP[t]: knn_relation(*knn[t], cfg.knn_k) for t in NODE_TYPES},
                         cfg.graph_weight)
        del knn
        stats = {t: _expand_type(stage, rels, cfg, t, data.raw_ids) for t in NODE_TYPES}
        stage.mark(f"_done-{i}.json", {"shard": i, "types": stats})
        num_nodes = {t: data.num_nodes(t) for t in NODE_TYPES}
        metadata = stage.try_publish(lambda prep, done: _metadata(
            cfg, seed, inputs, n, num_nodes, prep, done, started))
    except BaseException:
        if n == 1:
            stage.discard()                      # a plain run leaves nothing half-written
        raise
    if metadata is None:
        return {"published": False, "shard": i, "shards": n, "types": stats}
    log.info("published bundle %s: %s rows", out, metadata["counts"]["rows"])
    return metadata
