"""MFQ-style fusion (MMBee): learnable query tokens attend over a streamer's modality vectors.

Each modality vector and the side features become one token; a few learnable queries read
them by cross-attention (absent modalities masked out), talk to each other by self-attention,
and are pooled. The side-feature token is never masked, so a streamer without any modality
still gets a representation.
"""
from __future__ import annotations

import torch
from torch import nn


class MFQFusion(nn.Module):
    def __init__(self, modality_dims: dict[str, int], side_dim: int, hidden: int,
                 num_queries: int = 4, num_heads: int = 2, dropout: float = 0.1):
        super().__init__()
        self.modalities = list(modality_dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in modality_dims.items()})
        self.kind = nn.Parameter(torch.randn(len(modality_dims) + 1, hidden) * 0.02)
        self.side = nn.Linear(side_dim, hidden)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden) * 0.02)
        self.cross = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.norm_cross, self.norm_self = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.out = nn.Linear(2 * hidden, hidden)

    def forward(self, modalities: dict[str, torch.Tensor], mask: torch.Tensor,
                side: torch.Tensor) -> torch.Tensor:
        """modalities: m -> [N, d_m]; mask: bool [N, M] (True = present); side: [N, S]."""
        side_token = self.side(side)
        if len(side) == 0:                     # attention cannot reshape an empty batch
            return self.out(torch.cat([side_token, side_token], dim=-1))
        tokens = torch.stack([self.proj[m](modalities[m]) for m in self.modalities]
                             + [side_token], dim=1) + self.kind
        ignore = torch.cat([~mask, mask.new_zeros(len(mask), 1)], dim=1)
        q = self.queries.expand(len(side), -1, -1)
        x, _ = self.cross(q, tokens, tokens, key_padding_mask=ignore, need_weights=False)
        x = self.norm_cross(q + x)
        y, _ = self.self_attn(x, x, x, need_weights=False)
        x = self.norm_self(x + y)
        return self.out(torch.cat([x.mean(dim=1), side_token], dim=-1))
