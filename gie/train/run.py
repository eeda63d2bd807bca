"""train(): one published graph dataset -> user and streamer embeddings.

Out folder (one date):
    checkpoints/epoch-NNNN.pt   written atomically every epoch, read by --resume
    embeddings/{user,streamer}.parquet   model.pt   metrics.json   metadata.json   _SUCCESS
`_SUCCESS` is removed when a run starts and written last, once embeddings, model and metrics
are all in place; the embeddings folder itself is staged and swapped in with one rename.
Validation holds out the gift edges first seen on the last day of the window (removed from
the training graph with their reverses); final embeddings use the full graph.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable

import dgl
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import gie
from gie import environment, failpoints
from gie.config import dump_config
from gie.embeddings import write_embeddings
from gie.errors import BadInputError, QualityFloorError
from gie.model.encoder import GIEModel, ModelSpec, gather_inputs
from gie.progress import progress
from gie.publish import SUCCESS, publish_dir, staging_path, write_json_atomic
from gie.train import checkpoint, ddp
from gie.train.config import TrainConfig
from gie.train.data import as_edge_batch
from gie.train.fused_cache import FusedCache
from gie.train.history import LayerHistory
from gie.train.inference import full_inference
from gie.train.metrics import known_pairs, rank_metrics
from gie.train.objective import amount_weights, contrastive_loss, link_loss, sampling_log_q
from gie.train.optim import GIEOptimizer
from gie.train.sampler import GIFT, EdgeBatches, InEdges
from gie.train.threads import pinned_threads
from gie.train.warm import MODEL_FILE, load_warm_start
from graphbuild.dataset import GraphData, load_graph
from graphbuild.dgl_graph import (
    DGL_EDGE_COLUMNS, holdout_mask, id_map_version, modality_dims, to_dgl,
)
from graphbuild.schema import EMBEDDINGS_SCHEMA_VERSION, NODE_TYPES

log = logging.getLogger(__name__)


def seed_all(seed: int, epoch: int = 0) -> None:
    """Reseed every RNG at each epoch start: a resumed run replays exactly the same epochs."""
    s = seed * 1000 + epoch
    random.seed(s), np.random.seed(s % 2**32), torch.manual_seed(s), dgl.seed(s)


def model_spec(data: GraphData, g: dgl.DGLGraph, cfg: TrainConfig) -> ModelSpec:
    return ModelSpec(
        etypes=list(g.canonical_etypes), num_users=data.num_nodes("user"),
        user_dim=data.features["user"].shape[1], streamer_dim=data.features["streamer"].shape[1],
        modality_dims=modality_dims(data), hidden_dim=cfg.hidden_dim, embed_dim=cfg.embed_dim,
        num_layers=len(cfg.fanouts), num_queries=cfg.num_queries, num_heads=cfg.num_heads,
        dropout=cfg.dropout, user_id_embedding=cfg.user_id_embedding)


def train_epoch(net, spec: ModelSpec, loader, g, edge_weight: Callable, opt: GIEOptimizer,
                cfg: TrainConfig, ctx: ddp.Ctx, epoch: int, max_steps: int | None = None,
                history: LayerHistory | None = None, log_q: torch.Tensor | None = None) -> dict:
    """One pass over the loader (at most `max_steps` batches: DDP ranks must agree).
    `g` is a DGLGraph or a DistGraph; `edge_weight(gift edge ids)` gives the loss weights.
    With `history` the loader samples one hop (`edge_loader(..., one_hop=True)`).
    `log_q` (per streamer node id) corrects the in-batch negatives' popularity."""
    net.train()
    model = net.module if isinstance(net, DistributedDataParallel) else net
    mods, views = list(spec.modality_dims), 2 if cfg.contrastive_weight > 0 else 0
    cache = FusedCache(g.num_nodes("streamer"), spec.hidden_dim, cfg.fused_cache_age,
                       cfg.infer_batch_size, ctx.device) \
        if cfg.fused_cache_age and cfg.fanouts and history is None else None
    n_edges, loss_sum, steps, start = 0, 0.0, 0, time.perf_counter()
    bar = progress(loader, desc=f"epoch {epoch}", disable=not ctx.is_main, mininterval=2, leave=False)
    for raw in bar:
        if steps == max_steps:
            break
        batch = as_edge_batch(raw)
        input_nodes, blocks = batch.input_nodes, batch.blocks
        stale = None
        if history is not None:     # one sampled hop, used by every layer
            history.before_step(model, steps)
            input_nodes, stale = history.split(input_nodes, blocks[0])
            blocks = blocks * len(model.layers)
        elif cache is not None:     # seed streamers lead the input nodes (DGL block order)
            ids, n_seeds = input_nodes["streamer"], blocks[-1].num_dst_nodes("streamer")
            stale = [{"streamer": cache.lookup(model, g, ids[n_seeds:], mods)}]
            input_nodes = {**input_nodes, "streamer": ids[:n_seeds]}
        inputs = {t: {k: v.to(ctx.device) for k, v in gather_inputs(g.nodes, t, ids, mods).items()}
                  for t, ids in input_nodes.items()}
        outs = net(blocks, inputs, views=views, view_drop=cfg.augment_drop, stale=stale)
        h = outs[0]
        src, dst = batch.pos_src.to(ctx.device), batch.pos_dst.to(ctx.device)
        negatives = (torch.arange(len(h["streamer"]), device=ctx.device) if cfg.in_batch_negatives
                     else batch.negatives.to(ctx.device))
        w = edge_weight(batch.eids).to(ctx.device)
        local_q = None if log_q is None else log_q[batch.seed_streamers].to(ctx.device)
        loss = link_loss(h["user"], h["streamer"], src, dst, negatives, w, cfg.temperature, local_q)
        if views:
            loss = loss + cfg.contrastive_weight * contrastive_loss(
                outs[1], outs[2], cfg.contrastive_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        failpoints.reached("train-step")
        if cache is not None:
            cache.tick()
        n_edges, loss_sum, steps = n_edges + len(src), loss_sum + float(loss), steps + 1
        bar.set_postfix(loss=f"{loss_sum / steps:.4f}",
                        edges_per_s=f"{n_edges / (time.perf_counter() - start):.0f}")
    seconds = time.perf_counter() - start
    return {"loss": ddp.all_mean(ctx, loss_sum / max(steps, 1)), "steps": steps,
            "seconds": seconds, "edges_per_s": n_edges * ctx.world / max(seconds, 1e-9)}


def validate(model: GIEModel, g_train: dgl.DGLGraph, data: GraphData, holdout: np.ndarray,
             cfg: TrainConfig, device: torch.device, seed: int,
             index: InEdges | None = None) -> dict | None:
    idx = np.flatnonzero(holdout)
    if not len(idx):
        return None
    if len(idx) > cfg.valid_max_edges:
        idx = np.sort(np.random.default_rng(seed).choice(idx, cfg.valid_max_edges, replace=False))
    gift = data.edges["gift"]
    # The last layer of the ranked users alone (and of every streamer): at 1.3M users an
    # epoch's validation took 13-17 s instead of 20 s, with the same figures.
    ranked = torch.from_numpy(np.unique(gift.src[idx]).astype(np.int64))
    emb = full_inference(model, g_train, cfg.infer_batch_size, device, desc="validation",
                         index=index, only={"user": ranked})
    known = known_pairs(gift.src, gift.dst, data.num_nodes("user"), data.num_nodes("streamer"))
    return rank_metrics(emb["user"], emb["streamer"], gift.src[idx], gift.dst[idx], known,
                        cfg.recall_k)


def publish(out: Path, model: GIEModel, data: GraphData, emb: dict, metrics: dict,
            meta: dict) -> None:
    stage = staging_path(out / "embeddings")
    for t in NODE_TYPES:
        n = data.num_nodes(t)
        write_embeddings(stage / f"{t}.parquet", t, np.arange(n), data.raw_ids[t],
                         emb[t].numpy())
    publish_dir(stage, out / "embeddings")
    checkpoint.save_atomic({"spec": model.spec.to_dict(), "state_dict": model.state_dict(),
                            "raw_ids": data.raw_ids, "id_map": meta["id_map"],
                            "config": meta["config"], "version": gie.__version__},
                           out / MODEL_FILE)
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "metadata.json", meta)
    (out / SUCCESS).write_text("")


def train(graph: str | Path, out: str | Path, cfg: TrainConfig, seed: int = 0,
          resume: bool = False, warm_start: str | Path | None = None) -> dict:
    """Train on one published graph dataset and publish the model folder `out`."""
    ctx = ddp.setup(cfg.device)
    try:
        with pinned_threads(cfg.num_threads):
            return _train(Path(graph), Path(out), cfg, seed, resume, warm_start, ctx)
    finally:
        ddp.teardown(ctx)


def _train(graph: Path, out: Path, cfg: TrainConfig, seed: int, resume: bool,
           warm_start, ctx: ddp.Ctx) -> dict:
    t0 = time.time()
    data = load_graph(graph, edge_columns=DGL_EDGE_COLUMNS)
    holdout = holdout_mask(data)
    g_train = to_dgl(data, drop_gift=holdout)
    idmap = id_map_version(data)
    log.info("graph %s: %d users, %d streamers, %d gift edges (%d held out for validation)",
             graph, data.num_nodes("user"), data.num_nodes("streamer"), len(holdout),
             int(holdout.sum()))
    n_train = g_train.num_edges(GIFT)
    if n_train == 0:
        raise BadInputError(f"graph {graph}: no gift edges left for training")

    seed_all(seed)
    spec = model_spec(data, g_train, cfg)            # the same node types, edge types
    model = GIEModel(spec)
    model.fit_scaling(g_train.nodes["user"].data["feat"], g_train.nodes["streamer"].data["feat"])
    warm = load_warm_start(model, warm_start, data.raw_ids, str(graph)) if warm_start else None
    model.to(ctx.device)
    opt = GIEOptimizer(model, cfg.lr, cfg.weight_decay)

    ckdir = out / "checkpoints"
    state = {"epoch": 0, "best_auc": None, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "best_model": None, "resumed_from": None}
    last = checkpoint.resume_point(out, resume)
    if last is not None:
        state = checkpoint.restore(last, model, opt, spec.to_dict(), idmap)
        state["resumed_from"] = state["epoch"]
    if ctx.is_main:
        checkpoint.unpublish(out, keep_checkpoints=last is not None)
    ddp.barrier(ctx)

    net = DistributedDataParallel(model, find_unused_parameters=True) if ctx.distributed else model
    weights = amount_weights(g_train.edges[GIFT].data["amount"], cfg.amount_weighting)
    log_q = cfg.logq_correction * sampling_log_q(
        g_train.in_degrees(etype=GIFT), cfg.batch_size, cfg.num_negatives) \
        if cfg.logq_correction > 0 and cfg.in_batch_negatives else None
    use_history = cfg.layer_history_refreshes > 0 and len(cfg.fanouts) > 1
    index = InEdges(g_train, "w" if cfg.weighted_sampling else None)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        seed_all(seed, epoch)
        # Every draw of an epoch comes from generators seeded from (seed, epoch, rank), so
        # epoch N is the same whether or not epochs 1..N-1 ran in this process (exact resume).
        loader = EdgeBatches(index, torch.arange(n_train), cfg.batch_size,
                             cfg.fanouts[-1:] if use_history else cfg.fanouts,
                             cfg.num_negatives, seed, epoch, ctx.rank, ctx.world, ctx.device)
        history = LayerHistory(g_train, len(loader), cfg.layer_history_refreshes,
                               cfg.infer_batch_size, ctx.device, index) if use_history else None
        stats = train_epoch(net, spec, loader, g_train, weights.__getitem__, opt, cfg, ctx, epoch,
                            history=history, log_q=log_q)
        history = None        # its snapshot (every node's vectors) is not validation's
        valid = validate(model, g_train, data, holdout, cfg, ctx.device, seed, index) \
            if ctx.is_main else None
        auc, has_valid = ddp.broadcast(ctx, [valid["auc"] if valid else -1.0, float(bool(valid))])
        stats.update(epoch=epoch, valid=valid)
        state["history"].append(stats)
        log.info("epoch %d: loss %.4f, %d steps, %.1fs, %.0f edges/s%s", epoch, stats["loss"],
                 stats["steps"], stats["seconds"], stats["edges_per_s"],
                 "".join(f", valid {k} {v:.4f}" for k, v in (valid or {}).items() if k != "edges"))
        improved = not has_valid or state["best_auc"] is None or auc > state["best_auc"]
        if improved:
            state.update(best_auc=auc if has_valid else None, best_epoch=epoch, bad_epochs=0,
                         best_model={k: v.detach().cpu().clone()
                                     for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        if ctx.is_main:
            checkpoint.save_epoch(ckdir, epoch, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                "spec": spec.to_dict(), "id_map": idmap, "config": dump_config(cfg),
                "version": gie.__version__}, keep=cfg.keep_checkpoints)
            failpoints.reached("train-epoch-end")
        ddp.barrier(ctx)
        if state["bad_epochs"] >= cfg.patience:
            log.info("early stop after epoch %d: no better valid AUC for %d epochs (best %.4f "
                     "at epoch %d)", epoch, cfg.patience, state["best_auc"], state["best_epoch"])
            break
    if not ctx.is_main:
        return {}

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    best = next((h["valid"] for h in state["history"] if h["epoch"] == state["best_epoch"]), None)
    train_s = [h["edges_per_s"] for h in state["history"]]
    metrics = {
        "valid": best, "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "resumed_from": state["resumed_from"], "warm_start": warm, "history": state["history"],
        "train_edges": n_train, "valid_edges": int(holdout.sum()), "world_size": ctx.world,
        "threads": torch.get_num_threads(),
        "edges_per_s": float(np.mean(train_s)) if train_s else None,
    }
    if best is None:
        log.warning("no gift edge was first seen on the last day: validation and the AUC "
                    "floor were skipped")
    elif best["auc"] < cfg.min_valid_auc:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", metrics)
        raise QualityFloorError(f"validation AUC {best['auc']:.4f} < min_valid_auc "
                                f"{cfg.min_valid_auc} (see {out / 'metrics.json'}); not published")
    # The full graph (held-out edges included) only now, once training's graph and sampler
    # index are released: one graph in memory at a time.
    g_train = index = loader = history = None
    emb = full_inference(model, to_dgl(data), cfg.infer_batch_size, ctx.device,
                         desc="embeddings")
    metrics["seconds"] = round(time.time() - t0, 2)
    meta = {"schema_version": EMBEDDINGS_SCHEMA_VERSION, "version": gie.__version__,
            "graph": str(graph), "seed": seed, "config": dump_config(cfg), "id_map": idmap,
            "counts": {t: data.num_nodes(t) for t in NODE_TYPES}, "model": spec.to_dict(),
            "seconds": metrics["seconds"], "valid": best, "environment": environment.describe()}
    publish(out, model, data, emb, metrics, meta)
    log.info("published %s: %d user and %d streamer embeddings (dim %d) in %.1fs", out,
             data.num_nodes("user"), data.num_nodes("streamer"), spec.embed_dim, metrics["seconds"])
    return metrics
