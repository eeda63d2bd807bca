"""MFQ-style fusion (MMBee): learnable query tokens attend over a streamer's modality vectors.

Each modality vector and the side features become one token; a few learnable queries read
them by cross-attention (absent modalities masked out), talk to each other by self-attention,
and are pooled. The side-feature token is never masked, so a streamer without any modality
still gets a representation.

Every sampled streamer of every batch goes through this module, so both attentions call
the fused scaled_dot_product_attention on tiny per-node token sets (4 queries x 4 tokens);
the queries are shared by all nodes, so their projection is computed once per call.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MFQFusion(nn.Module):
    def __init__(self, modality_dims: dict[str, int], side_dim: int, hidden: int,
                 num_queries: int = 4, num_heads: int = 2, dropout: float = 0.1):
        super().__init__()
        self.modalities = list(modality_dims)
        self.heads, self.dropout = num_heads, dropout
        self.proj = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in modality_dims.items()})
        self.kind = nn.Parameter(torch.randn(len(modality_dims) + 1, hidden) * 0.02)
        self.side = nn.Linear(side_dim, hidden)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden) * 0.02)
        self.cross_q, self.cross_kv = nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * hidden)
        self.self_qkv = nn.Linear(hidden, 3 * hidden)
        self.cross_out, self.self_out = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.norm_cross, self.norm_self = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.out = nn.Linear(2 * hidden, hidden)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """q: [N|1, H, Q, d]; k, v: [N, H, T, d]; keep: bool [N, T] -> [N, Q, H*d]."""
        mask = None if keep is None else keep[:, None, None, :]
        x = F.scaled_dot_product_attention(q.expand(len(k), -1, -1, -1), k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return x.transpose(1, 2).flatten(2)

    def forward(self, modalities: dict[str, torch.Tensor], mask: torch.Tensor,
                side: torch.Tensor) -> torch.Tensor:
        """modalities: m -> [N, d_m]; mask: bool [N, M] (True = present); side: [N, S]."""
        n, h = len(side), self.heads
        side_token = self.side(side)
        tokens = torch.stack([self.proj[m](modalities[m]) for m in self.modalities]
                             + [side_token], dim=1) + self.kind
        keep = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
        k, v = self.cross_kv(tokens).unflatten(-1, (2, h, -1)).permute(2, 0, 3, 1, 4)
        q = self.cross_q(self.queries).unflatten(-1, (h, -1)).transpose(0, 1)[None]
        x = self.norm_cross(self.queries + self.cross_out(self._attend(q, k, v, keep)))
        q, k, v = self.self_qkv(x).unflatten(-1, (3, h, -1)).permute(2, 0, 3, 1, 4)
        x = self.norm_self(x + self.self_out(self._attend(q, k, v)))
        return self.out(torch.cat([x.mean(dim=1), side_token], dim=-1))
