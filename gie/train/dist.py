"""Training on DGL's distributed graph: one process per trainer, graph servers elsewhere.

Started by gie.train.launch (never directly): the environment says whether this process
is a graph server (it serves the partition until the trainers exit) or a trainer. Trainers
sample from the DistGraph, synchronise gradients with DDP, and finish with layer-wise
inference in which each trainer embeds the nodes of its own partition and writes one part
file per node type (embeddings/<type>/part-<rank>.parquet).
--resume reads the newest checkpoint under --out (which trainers on several machines must
share); --warm-start maps yesterday's weights through the raw ids stored in the partitions.
Not in this mode (yet): per-epoch validation and layer histories (every hop is sampled).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import dgl
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import gie
from gie import environment
from gie.config import dump_config
from gie.embeddings import write_embeddings
from gie.errors import BadInputError
from gie.model.encoder import GIEModel, ModelSpec, gather_inputs
from gie.progress import progress
from gie.publish import SUCCESS, publish_dir, write_json_atomic
from gie.train import checkpoint, ddp, threads
from gie.train.config import TrainConfig
from gie.train.data import GIFT, link_options, neighbour_sampler
from gie.train.objective import amount_weights
from gie.train.optim import GIEOptimizer
from gie.train.partition import PART_META
from gie.train.run import seed_all, train_epoch
from gie.train.warm import MODEL_FILE, load_warm_start
from graphbuild.schema import EMBEDDINGS_SCHEMA_VERSION, NODE_TYPES

log = logging.getLogger(__name__)


def train_dist(part_config: str | Path, ip_config: str | Path, out: str | Path,
               cfg: TrainConfig, seed: int = 0, resume: bool = False,
               warm_start: str | Path | None = None) -> dict:
    part_config, out = Path(part_config), Path(out)
    meta_file = part_config.parent / PART_META
    if not meta_file.is_file():
        raise BadInputError(f"{meta_file} is missing: make the partition with `cli.py partition`")
    meta = json.loads(meta_file.read_text())
    if not cfg.fanouts:
        raise BadInputError("distributed training needs train.fanouts (the features-only "
                            "baseline runs in single-process mode)")
    dgl.distributed.initialize(str(ip_config))          # a server process never returns
    ctx = ddp.setup(cfg.device)
    try:
        return _train(part_config, meta, out, cfg, seed, ctx, resume, warm_start)
    finally:
        ddp.teardown(ctx)


def _spec(g, meta: dict, cfg: TrainConfig) -> ModelSpec:
    return ModelSpec(
        etypes=list(g.canonical_etypes), num_users=g.num_nodes("user"),
        user_dim=meta["feature_dims"]["user"], streamer_dim=meta["feature_dims"]["streamer"],
        modality_dims=meta["modality_dims"], hidden_dim=cfg.hidden_dim, embed_dim=cfg.embed_dim,
        num_layers=len(cfg.fanouts), num_queries=cfg.num_queries, num_heads=cfg.num_heads,
        dropout=cfg.dropout, user_id_embedding=cfg.user_id_embedding)


def _train(part_config: Path, meta: dict, out: Path, cfg: TrainConfig, seed: int,
           ctx: ddp.Ctx, resume: bool, warm_start) -> dict:
    t0 = time.time()
    torch.set_num_threads(threads.resolve(cfg.num_threads))     # one trainer process each
    g = dgl.distributed.DistGraph(meta["graph_name"], part_config=str(part_config))
    pb = g.get_partition_book()
    seed_all(seed)
    spec = _spec(g, meta, cfg)
    model = GIEModel(spec)
    # Every trainer fits scaling on the same leading nodes, so all start identical.
    model.fit_scaling(*(g.nodes[t].data["feat"][torch.arange(min(g.num_nodes(t), 100_000))]
                        for t in NODE_TYPES))
    raw_ids = _raw_ids_by_node_id(g)
    warm = load_warm_start(model, warm_start, raw_ids, str(part_config)) if warm_start else None
    model.to(ctx.device)
    opt = GIEOptimizer(model, cfg.lr, cfg.weight_decay)
    state = {"epoch": 0, "history": [], "resumed_from": None}
    last = checkpoint.resume_point(out, resume)
    if last is not None:
        state = checkpoint.restore(last, model, opt, spec.to_dict(), meta["id_map"])
        state["resumed_from"] = state["epoch"]
    net = DistributedDataParallel(model, find_unused_parameters=True)

    train_eids = dgl.distributed.edge_split(
        torch.ones(g.num_edges(GIFT), dtype=torch.bool), pb, etype=GIFT, force_even=True)
    amount = g.edges[GIFT].data["amount"]
    scale = float(torch.log1p(amount[torch.arange(min(g.num_edges(GIFT), 1_000_000))]
                              .clamp_min(0)).mean())

    def edge_weight(eids):
        return amount_weights(amount[eids], cfg.amount_weighting, scale)

    # force_even leaves shares differing by at most one edge: agree on the step count.
    steps = ddp.all_min(ctx, -(-len(train_eids) // cfg.batch_size))
    stage = out / ".staging-dist"
    if ctx.is_main:
        checkpoint.unpublish(out, keep_checkpoints=last is not None)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    ddp.barrier(ctx)
    history = state["history"]
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        seed_all(seed + ctx.rank, epoch)
        loader = dgl.dataloading.DistEdgeDataLoader(
            g, {GIFT: train_eids}, neighbour_sampler(cfg), batch_size=cfg.batch_size,
            shuffle=True, **link_options(cfg))
        stats = train_epoch(net, spec, loader, g, edge_weight, opt, cfg, ctx, epoch,
                            max_steps=steps)
        stats.update(epoch=epoch, valid=None)
        history.append(stats)
        log.info("trainer %d epoch %d: loss %.4f, %d steps, %.0f edges/s", ctx.rank, epoch,
                 stats["loss"], stats["steps"], stats["edges_per_s"])
        if ctx.is_main:
            checkpoint.save_epoch(out / "checkpoints", epoch, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "state": {"epoch": epoch, "history": history,
                          "resumed_from": state["resumed_from"]}, "spec": spec.to_dict(),
                "id_map": meta["id_map"], "config": dump_config(cfg),
                "version": gie.__version__}, keep=cfg.keep_checkpoints)
        ddp.barrier(ctx)

    counts = write_partition_embeddings(model, g, pb, stage / "embeddings", cfg, ctx)
    ddp.barrier(ctx)
    metrics = {"valid": None, "epochs_run": cfg.epochs, "history": history, "mode": "dgl-dist",
               "resumed_from": state["resumed_from"], "warm_start": warm,
               "world_size": ctx.world, "train_edges": g.num_edges(GIFT),
               "edges_per_s": float(np.mean([h["edges_per_s"] for h in history])),
               "seconds": round(time.time() - t0, 2)}
    if ctx.is_main:
        publish_dir(stage / "embeddings", out / "embeddings")
        shutil.rmtree(stage, ignore_errors=True)
        checkpoint.save_atomic({"spec": spec.to_dict(), "state_dict": model.state_dict(),
                                "raw_ids": raw_ids, "id_map": meta["id_map"],
                                "config": dump_config(cfg), "version": gie.__version__},
                               out / MODEL_FILE)
        write_json_atomic(out / "metrics.json", metrics)
        write_json_atomic(out / "metadata.json", {
            "schema_version": EMBEDDINGS_SCHEMA_VERSION, "version": gie.__version__,
            "partition": meta, "seed": seed, "config": dump_config(cfg),
            "id_map": meta["id_map"], "counts": meta["counts"]["nodes"], "model": spec.to_dict(),
            "seconds": metrics["seconds"], "environment": environment.describe()})
        (out / SUCCESS).write_text("")
        log.info("published %s: embeddings of %s written by %d trainers", out, counts, ctx.world)
    return metrics


def _raw_ids_by_node_id(g) -> dict[str, np.ndarray]:
    """Raw ids in our node id order (the partition renumbered nodes), for warm starts."""
    out = {}
    for t in NODE_TYPES:
        every = torch.arange(g.num_nodes(t))
        raw = np.empty(g.num_nodes(t), dtype=np.int64)
        raw[g.nodes[t].data["nid"][every].numpy()] = g.nodes[t].data["raw_id"][every].numpy()
        out[t] = raw
    return out


@torch.no_grad()
def write_partition_embeddings(model: GIEModel, g, pb, folder: Path, cfg: TrainConfig,
                               ctx: ddp.Ctx) -> dict:
    """Layer-wise inference over the DistGraph; this trainer writes the nodes it owns."""
    model.eval()
    mods = list(model.spec.modality_dims)
    mine = {t: dgl.distributed.node_split(torch.ones(g.num_nodes(t), dtype=torch.bool), pb,
                                          ntype=t, force_even=True) for t in NODE_TYPES}
    dims = [model.spec.hidden_dim] * len(model.layers) + [model.spec.embed_dim]
    h = {t: dgl.distributed.DistTensor((g.num_nodes(t), dims[0]), torch.float32,
                                       name=f"h0-{t}", persistent=False) for t in NODE_TYPES}
    for t, ids in mine.items():
        for lo in range(0, len(ids), cfg.infer_batch_size):
            chunk = ids[lo:lo + cfg.infer_batch_size]
            inputs = {k: v.to(ctx.device) for k, v in gather_inputs(g.nodes, t, chunk, mods).items()}
            h[t][chunk] = model.input_layer({t: inputs})[t].cpu()
    ddp.barrier(ctx)
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    for i in range(len(model.layers)):
        nxt = {t: dgl.distributed.DistTensor((g.num_nodes(t), dims[i + 1]), torch.float32,
                                             name=f"h{i + 1}-{t}", persistent=False)
               for t in NODE_TYPES}
        loader = dgl.dataloading.DistNodeDataLoader(g, mine, sampler,
                                                    batch_size=cfg.infer_batch_size)
        for input_nodes, output_nodes, blocks in progress(loader, desc=f"embeddings layer {i + 1}",
                                                      disable=not ctx.is_main, leave=False):
            out = model.layer(i, blocks[0].to(ctx.device),
                              {t: h[t][ids].to(ctx.device) for t, ids in input_nodes.items()})
            for t, ids in output_nodes.items():
                if len(ids):
                    nxt[t][ids] = out[t].cpu()
        ddp.barrier(ctx)
        h = nxt
    counts = {}
    for t, ids in mine.items():
        write_embeddings(folder / t / f"part-{ctx.rank:05d}.parquet", t,
                         g.nodes[t].data["nid"][ids].numpy(),
                         g.nodes[t].data["raw_id"][ids].numpy(), h[t][ids].numpy())
        counts[t] = len(ids)
    return counts
