"""Training throughput: our GIE training loop vs a plain DGL GraphSAGE link-prediction loop.

Both loops run in this process on the same in-memory heterograph, with the same fan-outs,
hidden size, batch size and thread count; figures are positive gift edges per second and
the time of one epoch: the faster of epochs 2 and 3 (start-up excluded; on a shared machine
the faster epoch is the less disturbed one, and both loops are treated alike). The plain loop is
written the way DGL's examples write it: `as_edge_prediction_sampler` with per-edge
uniform negatives, a HeteroGraphConv SAGE model on concatenated input features, and
`u_dot_v` scores on the positive and negative pair graphs with a BCE loss.

    .venv/bin/python bench/bench_train.py [--sizes 2000:8000,5000:20000] [--device cuda]
writes docs/benchmarks/train.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import dgl
import dgl.function as fn
import dgl.nn as dglnn
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gie.model.encoder import GIEModel, ModelSpec  # noqa: E402
from gie.train import ddp  # noqa: E402
from gie.train.config import TrainConfig  # noqa: E402
from gie.train.data import link_options  # noqa: E402
from gie.train.history import LayerHistory  # noqa: E402
from gie.train.objective import amount_weights  # noqa: E402
from gie.train.optim import GIEOptimizer  # noqa: E402
from gie.train.run import seed_all, train_epoch  # noqa: E402
from gie.train.sampler import GIFT, EdgeBatches, InEdges  # noqa: E402
from graphbuild.dgl_graph import CANONICAL  # noqa: E402

MODS = {"image": 32, "speech": 16, "comment": 16}
MEASURED = (2, 3)                        # epoch 1 warms up; the faster of these is reported
DEFAULT = "default (layer histories, 4 snapshots per epoch)"
DGL_SAMPLER = "default, but DGL's sampler (before issue 14: not reproducible)"


def synthetic_graph(n_users: int, n_streamers: int, seed: int = 0) -> dgl.DGLGraph:
    """Planted topics, power-law popularity, ~5 gift pairs and ~10 watch pairs per user."""
    rng = np.random.default_rng(seed)
    topics = 16
    u_topic, s_topic = rng.integers(0, topics, n_users), rng.integers(0, topics, n_streamers)
    pop = 1.0 / np.arange(1, n_streamers + 1) ** 0.8

    def pairs(per_user: int, same: float):
        src = np.repeat(np.arange(n_users), per_user)
        own = rng.random(len(src)) < same
        dst = rng.choice(n_streamers, len(src), p=pop / pop.sum())
        by_topic = [np.flatnonzero(s_topic == t) for t in range(topics)]
        pick = [by_topic[u_topic[u]] for u in src[own]]
        dst[own] = [p[rng.integers(len(p))] if len(p) else 0 for p in pick]
        key = np.unique(src * n_streamers + dst)
        return torch.from_numpy(key // n_streamers), torch.from_numpy(key % n_streamers)

    gs, gd = pairs(5, 0.85)
    ws, wd = pairs(10, 0.7)
    ss, sd = rng.integers(0, n_streamers, n_streamers * 10), rng.integers(0, n_streamers, n_streamers * 10)
    us, ud = rng.integers(0, n_users, n_users * 10), rng.integers(0, n_users, n_users * 10)
    g = dgl.heterograph({
        CANONICAL["gift"]: (gs, gd), CANONICAL["gifted_by"]: (gd, gs),
        CANONICAL["watch"]: (ws, wd), CANONICAL["watched_by"]: (wd, ws),
        CANONICAL["s2s"]: (torch.from_numpy(ss), torch.from_numpy(sd)),
        CANONICAL["u2u"]: (torch.from_numpy(us), torch.from_numpy(ud)),
    }, num_nodes_dict={"user": n_users, "streamer": n_streamers})
    for e in g.canonical_etypes:
        g.edges[e].data["w"] = torch.rand(g.num_edges(e)) + 0.1
    g.edges[GIFT].data["amount"] = torch.from_numpy(rng.lognormal(3, 1, g.num_edges(GIFT))).float()
    g.nodes["user"].data["feat"] = torch.randn(n_users, 24)
    g.nodes["streamer"].data["feat"] = torch.randn(n_streamers, 8)
    for m, d in MODS.items():
        g.nodes["streamer"].data[m] = torch.randn(n_streamers, d)
    g.nodes["streamer"].data["mask"] = torch.rand(n_streamers, len(MODS)) < 0.9
    return g


class PlainSAGE(nn.Module):
    """DGL-example style: project input features, then stacked HeteroGraphConv(SAGEConv)."""

    def __init__(self, in_dims: dict[str, int], hidden: int, out: int, etypes, layers: int):
        super().__init__()
        self.proj = nn.ModuleDict({t: nn.Linear(d, hidden) for t, d in in_dims.items()})
        dims = [hidden] * layers + [out]
        self.layers = nn.ModuleList(
            dglnn.HeteroGraphConv({e: dglnn.SAGEConv(dims[i], dims[i + 1], "mean")
                                   for _, e, _ in etypes}, aggregate="sum")
            for i in range(layers))

    def forward(self, blocks, x):
        h = {t: F.relu(self.proj[t](v)) for t, v in x.items()}
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = {t: F.relu(v) for t, v in h.items()}
        return h


def score(pair_graph, h):
    with pair_graph.local_scope():
        pair_graph.ndata["h"] = h
        pair_graph.apply_edges(fn.u_dot_v("h", "h", "score"), etype=GIFT)
        return pair_graph.edges[GIFT].data["score"].squeeze(-1)


def plain_epoch(g, model, opt, cfg: TrainConfig, k: int, device) -> tuple[float, int]:
    sampler = dgl.dataloading.as_edge_prediction_sampler(
        dgl.dataloading.NeighborSampler(cfg.fanouts, prob="w"), exclude="reverse_types",
        reverse_etypes={"gift": "gifted_by", "gifted_by": "gift"},
        negative_sampler=dgl.dataloading.negative_sampler.Uniform(k))
    loader = dgl.dataloading.DataLoader(g, {GIFT: torch.arange(g.num_edges(GIFT))}, sampler,
                                        device=device, batch_size=cfg.batch_size, shuffle=True)
    streamer_x = torch.cat([g.nodes["streamer"].data["feat"]]
                           + [g.nodes["streamer"].data[m] for m in MODS], dim=1)
    start, n = time.perf_counter(), 0
    for input_nodes, pos_graph, neg_graph, blocks in loader:
        x = {"user": g.nodes["user"].data["feat"][input_nodes["user"]].to(device),
             "streamer": streamer_x[input_nodes["streamer"]].to(device)}
        h = model(blocks, x)
        pos, neg = score(pos_graph, h), score(neg_graph, h)
        loss = F.binary_cross_entropy_with_logits(
            torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += pos_graph.num_edges(GIFT)
    return time.perf_counter() - start, n


def dgl_loader(g, cfg: TrainConfig, device, one_hop: bool):
    """Training batches as they were made before issue 14: DGL's DataLoader and
    NeighborSampler (fast, but not reproducible with more than one thread or after other
    multi-threaded DGL work in the process; docs/TRAINING.md, "Determinism")."""
    fanouts = cfg.fanouts[-1:] if one_hop else cfg.fanouts
    sampler = dgl.dataloading.as_edge_prediction_sampler(
        dgl.dataloading.NeighborSampler(fanouts, prob="w"), **link_options(cfg))
    return dgl.dataloading.DataLoader(g, {GIFT: torch.arange(g.num_edges(GIFT))}, sampler,
                                      device=device, batch_size=cfg.batch_size, shuffle=True)


def ours_epoch(g, index: InEdges, model, opt, cfg: TrainConfig, device, epoch: int,
               dgl_sampler: bool = False) -> tuple[float, int]:
    ctx = ddp.Ctx(0, 1, device)
    weights = amount_weights(g.edges[GIFT].data["amount"], cfg.amount_weighting)
    one_hop = cfg.layer_history_refreshes > 0
    loader = dgl_loader(g, cfg, device, one_hop) if dgl_sampler else EdgeBatches(
        index, torch.arange(g.num_edges(GIFT)), cfg.batch_size,
        cfg.fanouts[-1:] if one_hop else cfg.fanouts, cfg.num_negatives, 0, epoch,
        device=device)
    history = LayerHistory(g, len(loader), cfg.layer_history_refreshes, cfg.infer_batch_size,
                           device, index) if one_hop else None
    stats = train_epoch(model, model.spec, loader, g, weights.__getitem__, opt, cfg, ctx, epoch,
                        history=history)
    return stats["seconds"], g.num_edges(GIFT)


def run_size(n_users: int, n_streamers: int, cfg: TrainConfig, device, ks,
             all_modes: bool = True) -> list[dict]:
    g = synthetic_graph(n_users, n_streamers)
    rows = []
    seed_all(0)
    spec = ModelSpec(etypes=list(g.canonical_etypes), num_users=n_users, user_dim=24,
                     streamer_dim=8, modality_dims=MODS, hidden_dim=cfg.hidden_dim,
                     embed_dim=cfg.embed_dim, num_layers=len(cfg.fanouts),
                     num_queries=cfg.num_queries, num_heads=cfg.num_heads, dropout=cfg.dropout,
                     user_id_embedding=cfg.user_id_embedding)
    index = InEdges(g, "w")
    modes = {DEFAULT: {}, DGL_SAMPLER: {}, "fused MFQ cache only": {"layer_history_refreshes": 0},
             "exact: every hop sampled, MFQ on every node": {"layer_history_refreshes": 0,
                                                             "fused_cache_age": 0}}
    for mode, update in list(modes.items())[:None if all_modes else 2]:
        seed_all(0)
        run_cfg = cfg.model_copy(update=update)
        model = GIEModel(spec).to(device)
        opt = GIEOptimizer(model, cfg.lr)
        old = mode == DGL_SAMPLER
        ours_epoch(g, index, model, opt, run_cfg, device, 1, old)
        secs, n = min(ours_epoch(g, index, model, opt, run_cfg, device, e, old)
                      for e in MEASURED)
        rows.append({"loop": f"gie, {mode}", "seconds": secs, "edges": n})
    for k in ks:
        seed_all(0)
        plain = PlainSAGE({"user": 24, "streamer": 8 + sum(MODS.values())}, cfg.hidden_dim,
                          cfg.embed_dim, g.canonical_etypes, len(cfg.fanouts)).to(device)
        opt = torch.optim.Adam(plain.parameters(), lr=cfg.lr)
        plain_epoch(g, plain, opt, cfg, k, device)
        secs, n = min(plain_epoch(g, plain, opt, cfg, k, device) for _ in MEASURED)
        rows.append({"loop": f"plain DGL SAGE, Uniform({k}) negatives per edge",
                     "seconds": secs, "edges": n})
    for r in rows:
        r.update(users=n_users, streamers=n_streamers, gift_edges=g.num_edges(GIFT),
                 total_edges=g.num_edges(), edges_per_s=r["edges"] / r["seconds"])
        print(r, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000:8000,5000:20000", help="users:streamers,...")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--negatives", default="1,5", help="plain loop negatives per edge")
    ap.add_argument("--modes-max-users", type=int, default=5000,
                    help="larger graphs run our default mode only (the exact mode takes "
                         "minutes per epoch there)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "train.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = TrainConfig(batch_size=1024, hidden_dim=64, embed_dim=64, fanouts=[10, 10])
    ks = [int(k) for k in args.negatives.split(",")]
    rows = []
    for size in args.sizes.split(","):
        u, s = (int(x) for x in size.split(":"))
        rows += run_size(u, s, cfg, device, ks, all_modes=u <= args.modes_max_users)

    lines = [
        "# Training throughput", "",
        f"`.venv/bin/python bench/bench_train.py --sizes {args.sizes} --device {args.device} "
        f"--threads {args.threads} --modes-max-users {args.modes_max_users}` on {platform.machine()} ({args.device}, torch "
        f"{torch.__version__}, dgl {dgl.__version__}, {args.threads} torch threads); "
        "fan-outs [10, 10] (weighted by `w` in both loops), hidden 64, batch 1024 positive gift "
        "edges, same graph and thread count for every loop; epoch s = the faster of epochs 2 "
        "and 3 (epoch 1 warms up). Throughput = positive gift edges per second.", "",
        "| users | streamers | gift edges | loop | epoch s | edges/s | vs plain |",
        "|---:|---:|---:|---|---:|---:|---:|"]
    for size in sorted({(r["users"], r["streamers"]) for r in rows}):
        group = [r for r in rows if (r["users"], r["streamers"]) == size]
        for r in group:
            plains = [p for p in group if p["loop"].startswith("plain")]
            ratios = ", ".join(f"{r['edges_per_s'] / p['edges_per_s']:.2f}x"
                               for p in plains) if r["loop"].startswith("gie") else ""
            lines.append(f"| {r['users']} | {r['streamers']} | {r['gift_edges']} | {r['loop']} | "
                         f"{r['seconds']:.1f} | {r['edges_per_s']:.0f} | {ratios} |")
    ratios = {r["users"]: r["edges_per_s"] / p["edges_per_s"] for r in rows
              if r["loop"] == f"gie, {DEFAULT}"
              for p in rows if "Uniform(1)" in p["loop"] and p["users"] == r["users"]}
    verdict = "; ".join(f"{u} users {x:.2f}x ({'met' if x >= 1.5 else 'not met'})"
                        for u, x in sorted(ratios.items()))
    lines += [
        "", "Measured on a shared 2-core machine while other test suites ran: absolute "
        "figures move by up to 2x between runs, so compare the loops within one run (they "
        "run back to back in one process).", "",
        "Reading the table: all gie rows use MFQ with 2 queries, 256 shared plus in-batch "
        "negatives, and sample neighbours by edge weight, as the plain loop does; they sample "
        "with gie/train/sampler.py (reproducible whatever the threads and load), except the "
        "row marked DGL's sampler, which uses DGL's DataLoader and NeighborSampler as gie did "
        "before issue 14 (same model, loss and layer histories): the difference between the "
        "two default rows is the cost of reproducible sampling. The "
        "exact mode samples both hops at every step and runs MFQ forward and backward on "
        "every sampled streamer; on the two smaller graphs a batch of 1024 edges reaches every "
        "node within two hops, so each step encodes the whole graph. The fused MFQ cache "
        "(gie/train/fused_cache.py) runs MFQ with gradients only on the batch's seed "
        "streamers. The default, layer histories (gie/train/history.py), samples one hop and "
        "computes both layers for the seeds only, reading the neighbours' vectors from a "
        "snapshot of every node's layer vectors taken 4 times per epoch: sampling drops to "
        "a fraction and the per-step work to the seeds. Held-out AUC on the `make demo` "
        "graph: 0.881 with layer histories, 0.858 with the fused cache only, 0.861 exact "
        "(seed 0; docs/TRAINING.md). "
        "A snapshot costs about one full-graph inference pass, so on the smallest graph "
        "(10 steps per epoch, 4 snapshots) they are about a third of the epoch, while on "
        "larger graphs they are amortised over more steps and the plain loop's 2-hop blocks "
        "grow. Default vs the plain Uniform(1) loop, against the 1.5x target: "
        f"{verdict}."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
