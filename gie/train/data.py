"""Mini-batches of gift edges with DGL's neighbour sampler, and the shared negatives."""
from __future__ import annotations

import dgl
import torch
from dgl.dataloading import BlockSampler, NeighborSampler, as_edge_prediction_sampler
from dgl.dataloading.negative_sampler import _BaseNegativeSampler

from gie.train.config import TrainConfig
from graphbuild.dgl_graph import REVERSE

GIFT = ("user", "gift", "streamer")


class SharedNegatives(_BaseNegativeSampler):
    """K uniform streamers for the whole batch (not K per edge): they are encoded once and
    scored against every positive by one matrix multiply, as PyTorch-BigGraph does."""

    def __init__(self, k: int):
        self.k = k

    def _generate(self, g, eids, canonical_etype):
        src, _ = g.find_edges(eids, etype=canonical_etype)
        n_dst = g.num_nodes(canonical_etype[2])
        pick = torch.randint(len(src), (self.k,))
        return src[pick], torch.randint(n_dst, (self.k,))


class NoNeighbours(BlockSampler):
    """Zero layers, for the features-only baseline: the inputs are the seed nodes."""

    def sample(self, g, seed_nodes, exclude_eids=None):
        return seed_nodes, seed_nodes, []


def neighbour_sampler(cfg: TrainConfig, one_hop: bool = False) -> BlockSampler:
    """`fanouts` hops; only the last one with `one_hop` (layer histories, gie.train.history)."""
    prob = "w" if cfg.weighted_sampling else None
    fanouts = list(cfg.fanouts[-1:] if one_hop else cfg.fanouts)
    return NeighborSampler(fanouts, prob=prob) if fanouts else NoNeighbours()


def link_options(cfg: TrainConfig) -> dict:
    """Target gift edges and their reverses are excluded from message passing, so the model
    never sees the answer; negatives are shared by the batch."""
    return {"exclude": "reverse_types",
            "reverse_etypes": {"gift": REVERSE["gift"], REVERSE["gift"]: "gift"},
            "negative_sampler": SharedNegatives(cfg.num_negatives) if cfg.num_negatives else None}


def edge_loader(g: dgl.DGLGraph, eids: torch.Tensor, cfg: TrainConfig, device: torch.device,
                use_ddp: bool = False, seed: int = 0, one_hop: bool = False
                ) -> dgl.dataloading.DataLoader:
    sampler = as_edge_prediction_sampler(neighbour_sampler(cfg, one_hop), **link_options(cfg))
    return dgl.dataloading.DataLoader(
        g, {GIFT: eids}, sampler, device=device, batch_size=cfg.batch_size,
        shuffle=True, drop_last=False, use_ddp=use_ddp, ddp_seed=seed, num_workers=0)
