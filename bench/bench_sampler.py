"""Sampling alone: gie/train/sampler.py (reproducible) against DGL's DataLoader (not).

On the synthetic graphs of bench_train.py, times (best of 3, same process, alternating) to
make one epoch of training batches (1024 gift edges, 256 shared negatives, target edges
excluded) with one hop (fan-out 10, the default with layer histories) and two hops, and to
make the full-neighbour blocks of one layer-wise inference pass over every node (what
validation and layer-history snapshots run). No model runs: this is the cost of
reproducible sampling, docs/TRAINING.md ("Determinism").

    .venv/bin/python bench/bench_sampler.py [--sizes 5000:20000,20000:80000] [--threads 1]
writes docs/benchmarks/sampler.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import dgl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_train import synthetic_graph  # noqa: E402
from gie.train.config import TrainConfig  # noqa: E402
from gie.train.data import link_options  # noqa: E402
from gie.train.sampler import GIFT, EdgeBatches, InEdges, full_neighbour_blocks  # noqa: E402

BATCH, INFER_BATCH = 1024, 8192


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_size(n_users: int, n_streamers: int, repeats: int) -> list[dict]:
    g = synthetic_graph(n_users, n_streamers)
    cfg = TrainConfig(batch_size=BATCH, num_negatives=256)
    eids = torch.arange(g.num_edges(GIFT))
    build = timed(lambda: InEdges(g, "w"))
    index = InEdges(g, "w")

    def ours_edges(fanouts):
        return lambda: sum(1 for _ in EdgeBatches(index, eids, BATCH, fanouts, 256, 0, 1))

    def dgl_edges(fanouts):
        sampler = dgl.dataloading.as_edge_prediction_sampler(
            dgl.dataloading.NeighborSampler(fanouts, prob="w"), **link_options(cfg))
        return lambda: sum(1 for _ in dgl.dataloading.DataLoader(
            g, {GIFT: eids}, sampler, batch_size=BATCH, shuffle=True))

    def ours_full():
        return sum(1 for _ in full_neighbour_blocks(index, INFER_BATCH))

    def dgl_full():
        nodes = {t: torch.arange(g.num_nodes(t)) for t in g.ntypes}
        return sum(1 for _ in dgl.dataloading.DataLoader(
            g, nodes, dgl.dataloading.MultiLayerFullNeighborSampler(1),
            batch_size=INFER_BATCH, shuffle=False))

    cases = {"edge batches, 1 hop [10]": (ours_edges([10]), dgl_edges([10])),
             "edge batches, 2 hops [10, 10]": (ours_edges([10, 10]), dgl_edges([10, 10])),
             "full-neighbour blocks, 1 layer": (ours_full, dgl_full)}
    rows = []
    for name, (ours, theirs) in cases.items():
        best = {"gie": float("inf"), "dgl": float("inf")}
        for _ in range(repeats):
            best["gie"] = min(best["gie"], timed(ours))
            best["dgl"] = min(best["dgl"], timed(theirs))
        rows.append({"users": n_users, "streamers": n_streamers, "edges": g.num_edges(),
                     "case": name, **best, "index_s": build})
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="5000:20000,20000:80000", help="users:streamers,...")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "sampler.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        u, s = (int(x) for x in size.split(":"))
        rows += run_size(u, s, args.repeats)
    lines = [
        "# Sampling: reproducible (gie/train/sampler.py) vs DGL's DataLoader", "",
        f"`.venv/bin/python bench/bench_sampler.py --sizes {args.sizes} --threads "
        f"{args.threads} --repeats {args.repeats}` on {platform.machine()} (torch "
        f"{torch.__version__}, dgl {dgl.__version__}, {args.threads} torch threads): seconds "
        f"for one epoch of training batches ({BATCH} gift edges, 256 shared negatives, target "
        f"edges excluded, weighted by `w`) and for the full-neighbour blocks of one layer of "
        f"inference ({INFER_BATCH} nodes a block); best of {args.repeats}, both samplers "
        "alternating in one process. No model runs.", "",
        "| users | streamers | edges (all types) | case | gie s | DGL s | gie / DGL |",
        "|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['users']} | {r['streamers']} | {r['edges']} | {r['case']} | "
                     f"{r['gie']:.2f} | {r['dgl']:.2f} | {r['gie'] / r['dgl']:.2f}x |")
    lines += ["", "Building the per-edge-type in-edge index (`InEdges`, once per graph and "
              "run): " + ", ".join(f"{r['users']} users {r['index_s']:.2f} s"
                                   for r in rows[::3]) + "."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
