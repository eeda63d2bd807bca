"""Historical fused streamer vectors: MFQ with gradients only where the loss reads directly.

A batch's 2-hop blocks reach thousands of streamers, and running the MFQ fusion forward and
backward on every one of them was most of a training step (docs/TRAINING.md). A streamer's
fused input vector depends only on its own attributes and the MFQ weights, which move little
from one step to the next. So the batch's seed streamers (positives and negatives, the rows
the loss scores) go through MFQ with gradients as before; every other input streamer reuses
its vector from at most `max_age` steps ago, recomputed without gradients (in eval mode)
when older (historical embeddings, as in GNNAutoScale, Fey et al. 2021).

The cache starts empty at every epoch, so an epoch's result does not depend on the
previous one's cache and a resumed run replays the same steps.
"""
from __future__ import annotations

import torch

from gie.model.encoder import GIEModel, gather_inputs

NEVER = -(2**62)


class FusedCache:
    def __init__(self, num_nodes: int, dim: int, max_age: int, chunk: int,
                 device: torch.device):
        self.max_age, self.chunk, self.step = max_age, chunk, 0
        self.vec = torch.zeros(num_nodes, dim, device=device)
        self.stamp = torch.full((num_nodes,), NEVER, dtype=torch.long, device=device)
        self.recomputed = 0

    def lookup(self, model: GIEModel, g, ids: torch.Tensor, mods: list[str]) -> torch.Tensor:
        """Fused vectors of streamers `ids` (no gradient); stale ones are recomputed first."""
        dev_ids = ids.to(self.vec.device)
        old = dev_ids[self.step - self.stamp[dev_ids] >= self.max_age]
        if len(old):
            self.store(old, self._compute(model, g, old.cpu(), mods))
            self.recomputed += len(old)
        return self.vec[dev_ids]

    def store(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        ids = ids.to(self.vec.device)
        self.vec[ids] = vectors.detach().to(self.vec.device)
        self.stamp[ids] = self.step

    def tick(self) -> None:
        self.step += 1

    @torch.no_grad()
    def _compute(self, model: GIEModel, g, ids: torch.Tensor, mods: list[str]) -> torch.Tensor:
        fusion = model.streamer_fusion
        was_training = fusion.training
        fusion.eval()
        try:
            parts = []
            for lo in range(0, len(ids), self.chunk):
                inputs = {k: v.to(self.vec.device) for k, v in
                          gather_inputs(g.nodes, "streamer", ids[lo:lo + self.chunk], mods).items()}
                parts.append(model.input_layer({"streamer": inputs})["streamer"])
            return torch.cat(parts)
        finally:
            fusion.train(was_training)
