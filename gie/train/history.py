"""Layer histories: train on one sampled hop, with the deeper hops read from a snapshot.

With two GraphSAGE layers a step normally samples two hops around its seeds, and on graphs
where a batch's 2-hop neighbourhood is most of the graph, sampling and encoding it is most
of the step, over and over for the same nodes. With histories, a step samples one hop
(`fanouts[-1]` neighbours per seed and edge type) and computes every layer for the seeds
only; the seeds' sampled neighbours enter each layer through their vectors from the last
snapshot: the input vectors and layer outputs of every node, computed without gradients by
the same layer-wise full-graph inference as validation. Snapshots are retaken
`refreshes` times per epoch (at its first step, then evenly), so their cost is a few
inference passes per epoch whatever the graph size (GNNAutoScale, Fey et al. 2021, keeps
historical embeddings the same way). The seeds' own vectors, and the loss's gradients
through them, are always fresh; target edges stay out of the seeds' sampled hop.

The snapshot at an epoch's first step depends only on the weights at that point, so a
resumed run replays the same steps.
"""
from __future__ import annotations

import math

import dgl
import torch

from gie.model.encoder import GIEModel
from gie.train.inference import layer_outputs
from gie.train.sampler import InEdges


class LayerHistory:
    def __init__(self, g: dgl.DGLGraph, steps_per_epoch: int, refreshes: int, batch_size: int,
                 device: torch.device, index: InEdges | None = None):
        self.g, self.batch_size, self.device = g, batch_size, device
        self.index = index or InEdges(g)
        self.every = max(1, math.ceil(steps_per_epoch / refreshes))
        self.snapshot: list[dict[str, torch.Tensor]] = []
        self.taken = 0

    def before_step(self, model: GIEModel, step: int) -> None:
        if step % self.every == 0:
            self.snapshot = []     # released before the next is computed: one in memory
            self.snapshot = [{t: x.to(self.device) for t, x in h.items()} for h in
                             layer_outputs(model, self.g, self.batch_size, self.device,
                                           len(model.layers) - 1, desc=None, index=self.index)]
            self.taken += 1

    def split(self, input_nodes: dict[str, torch.Tensor], block: dgl.DGLGraph
              ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        """The seeds of each type (to encode fresh) and, per layer, the snapshot vectors of
        the block's other input nodes (DGL puts a block's destination nodes first)."""
        seeds = {t: ids[:block.num_dst_nodes(t)] for t, ids in input_nodes.items()}
        rest = {t: ids[block.num_dst_nodes(t):].to(self.device) for t, ids in input_nodes.items()}
        return seeds, [{t: h[t][ids] for t, ids in rest.items()} for h in self.snapshot]
