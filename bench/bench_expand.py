#!/usr/bin/env python
"""Benchmark of the expansion stage: Faiss build/search/recall and expansion throughput.

The benchmark graph is generated directly as arrays (no Spark build, no training), at the
requested number of users with users/10 streamers: planted topics, 60% of users with 1-8
gifts mostly inside their topic, 10 u2u / s2s neighbours per node inside the topic, and
64-dim embeddings = topic centre + noise. Each size runs in its own process so that peak RSS
is that size's. It calls the same functions as gie.expand.run.expand (index build and
tuning, kNN of every node, batched expansion, Parquet writing), minus reading the inputs,
for the paper's six metapaths without the fused ranking (whose cost bench/bench_fusion.py
measures on real nightly outputs).

    .venv/bin/python bench/bench_expand.py --users 100000 --users 1000000 --out bench/out/expand
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_graph(n_users: int, dim: int, seed: int):
    from graphbuild.dataset import EdgeSet, GraphData

    rng = np.random.default_rng(seed)
    n_streamers = max(n_users // 10, 100)
    n_topics = max(n_users // 2000, 8)
    u_topic = rng.integers(0, n_topics, n_users)
    s_topic = rng.integers(0, n_topics, n_streamers)
    by_topic = [np.flatnonzero(s_topic == t) for t in range(n_topics)]
    gifters = np.flatnonzero(rng.random(n_users) < 0.6)
    per_user = rng.integers(1, 9, len(gifters))
    src = np.repeat(gifters, per_user)
    same = rng.random(len(src)) < 0.85
    dst = rng.integers(0, n_streamers, len(src))
    topic_pick = np.array([by_topic[t][rng.integers(0, len(by_topic[t]))] if len(by_topic[t])
                           else 0 for t in u_topic[src[same]]])
    dst[same] = topic_pick
    key = np.unique(src * n_streamers + dst)
    src, dst = key // n_streamers, key % n_streamers
    weight = rng.gamma(1.0, 1.0, len(src))

    def similar(topic, n):
        order = np.argsort(topic, kind="stable")
        a = np.repeat(np.arange(n), 10)
        pos = np.searchsorted(topic[order], topic)          # first member of the topic
        size = np.bincount(topic, minlength=topic.max() + 1)[topic]
        b = order[pos[a] + rng.integers(0, size[a])]
        keep = a != b
        return EdgeSet(a[keep], b[keep], {"score": rng.random(keep.sum()),
                                          "rank": np.zeros(keep.sum(), np.int32)})

    centres = rng.normal(size=(n_topics, dim)).astype(np.float32)
    emb = {"user": centres[u_topic] + rng.normal(scale=0.8, size=(n_users, dim)).astype(np.float32),
           "streamer": centres[s_topic] + rng.normal(scale=0.8, size=(n_streamers, dim)).astype(
               np.float32)}
    raw = {"user": np.arange(n_users) + 1_000_000_000, "streamer": np.arange(n_streamers) + 5}
    graph = GraphData(Path("."), {}, raw, {}, {}, {}, np.zeros((0, 3), bool), {
        "gift": EdgeSet(src, dst, {"weight": weight}),
        "u2u": similar(u_topic, n_users), "s2s": similar(s_topic, n_streamers)})
    return graph, emb


def cpu_s() -> float:
    """CPU seconds of this process: wall time on a shared machine overstates the cost."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(n_users: int, dim: int, seed: int) -> dict:
    from gie.expand import index as ix
    from gie.expand.bundle import ShardedStage
    from gie.expand.config import ExpandConfig
    from gie.expand.fusion import View
    from gie.expand.run import _expand_type
    from gie.expand.sources import Relations, knn_relation

    t0, c0 = time.perf_counter(), cpu_s()
    load = os.getloadavg()[0]
    graph, emb = make_graph(n_users, dim, seed)
    result = {"users": n_users, "streamers": graph.num_nodes("streamer"),
              "gift_edges": len(graph.edges["gift"]), "dim": dim,
              "generate_s": round(time.perf_counter() - t0, 1)}
    cfg = ExpandConfig(fusion={"enabled": False}, metapaths={   # the six metapaths only
        m: {"enabled": False} for m in ("U-W-S", "U-W-S-S", "U-knn-S", "U-s2s-S", "S-W-U",
                                        "S-S-W-U", "S-knn-U", "S-u2u-U")})
    knn, t_knn, c_knn = {}, {}, {}
    for t in ("user", "streamer"):
        vectors = ix.normalise(emb[t])
        built = ix.build_index(vectors, cfg.index, cfg.recall_floor, seed, name=t)
        result[f"index_{t}"] = built.info
        t1, c1 = time.perf_counter(), cpu_s()
        knn[t] = ix.search(built.index, vectors, cfg.knn_k + 1, desc=f"kNN {t}", indexed=True)
        t_knn[t] = round(time.perf_counter() - t1, 1)
        c_knn[t] = round(cpu_s() - c1, 1)
        del built
    result["knn_all_nodes_s"], result["knn_all_nodes_cpu_s"] = t_knn, c_knn
    t1, c1 = time.perf_counter(), cpu_s()
    rels = Relations(graph, {"UU": knn_relation(*knn["user"], cfg.knn_k),
                             "SS": knn_relation(*knn["streamer"], cfg.knn_k)}, cfg.graph_weight)
    del knn
    view = View(rels, None)                # no fusion here: pair features are never read
    with tempfile.TemporaryDirectory() as tmp:
        stage = ShardedStage(Path(tmp) / "bundle", 0, 1, "bench")
        stage.path.mkdir()
        stats = {t: _expand_type(stage, view, None, cfg, t) for t in ("user", "streamer")}
        out_bytes = sum(p.stat().st_size for p in stage.path.rglob("*.parquet"))
    expand_s, expand_cpu = time.perf_counter() - t1, cpu_s() - c1
    nodes = sum(s["nodes"] for s in stats.values())
    result.update({
        "expand_s": round(expand_s, 1), "expand_cpu_s": round(expand_cpu, 1),
        "expand_nodes": nodes,
        "expand_nodes_per_s": round(nodes / expand_s),
        "expand_users_per_s": round(stats["user"]["nodes"] / stats["user"]["seconds"]),
        "output_mb": round(out_bytes / 2**20, 1),
        "total_s": round(time.perf_counter() - t0, 1), "total_cpu_s": round(cpu_s() - c0, 1),
        "load_avg_1m_at_start": round(load, 2), "cores": os.cpu_count(),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    })
    return result


@click.command()
@click.option("--users", "sizes", multiple=True, type=int, default=[100_000], show_default=True)
@click.option("--dim", default=64, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="bench/out/expand")
@click.option("--one", type=int, default=None, hidden=True)
def main(sizes, dim, seed, out, one):
    if one is not None:                       # child process: one size, JSON on stdout
        print(json.dumps(run_one(one, dim, seed)))
        return
    results = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--dim", str(dim),
                               "--seed", str(seed)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-4000:])
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1], indent=1))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
