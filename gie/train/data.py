"""DGL's neighbour sampler and shared negatives, for `--dist` training on a DistGraph.

Single-process and DDP training sample with gie.train.sampler instead (deterministic; see
there why). The DistGraph's neighbours live on the graph servers, so `--dist` keeps DGL's
sampler, and its runs are not bit-reproducible (docs/TRAINING.md).
"""
from __future__ import annotations

import dgl
import torch
from dgl.dataloading import BlockSampler, NeighborSampler
from dgl.dataloading.negative_sampler import _BaseNegativeSampler

from gie.train.config import TrainConfig
from gie.train.sampler import GIFT, EdgeBatch
from graphbuild.dgl_graph import REVERSE


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


def neighbour_sampler(cfg: TrainConfig) -> BlockSampler:
    prob = "w" if cfg.weighted_sampling else None
    return NeighborSampler(list(cfg.fanouts), prob=prob) if cfg.fanouts else NoNeighbours()


def link_options(cfg: TrainConfig) -> dict:
    """Target gift edges and their reverses are excluded from message passing, so the model
    never sees the answer; negatives are shared by the batch."""
    return {"exclude": "reverse_types",
            "reverse_etypes": {"gift": REVERSE["gift"], REVERSE["gift"]: "gift"},
            "negative_sampler": SharedNegatives(cfg.num_negatives) if cfg.num_negatives else None}


def as_edge_batch(batch) -> EdgeBatch:
    """An EdgeBatch from what DGL's edge loaders yield: (input nodes, pair graph, [negative
    graph,] blocks)."""
    if isinstance(batch, EdgeBatch):
        return batch
    input_nodes, pair, blocks = batch[0], batch[1], batch[-1]
    src, dst = pair.edges(etype=GIFT)
    negatives = batch[2].edges(etype=GIFT)[1].unique() if len(batch) == 4 else None
    return EdgeBatch({t: ids.cpu() for t, ids in input_nodes.items()}, blocks, src, dst,
                     pair.edges[GIFT].data[dgl.EID].cpu(), negatives,
                     pair.nodes["streamer"].data[dgl.NID].cpu())
