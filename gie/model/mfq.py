"""MFQ-style fusion (MMBee): learnable query tokens attend over a streamer's modality vectors.

Each modality vector and the side features become one token; a few learnable queries read
them by cross-attention (absent modalities masked out), talk to each other by self-attention,
and are pooled. The side-feature token is never masked, so a streamer without any modality
still gets a representation.

Every sampled streamer of every step goes through this module, so it is written for many
nodes with tiny token sets (a handful of queries and tokens), where generic attention
kernels spend their time on reshapes and tiny batched matmuls:
- the queries are shared by all nodes, so cross-attention folds them into the key
  projection: the logits are one [N*T, hidden] x [hidden, heads*queries] matmul (a key bias
  would add the same constant to every token of a query, which softmax cancels: none);
- attention-weighted sums over the few tokens are broadcast multiply-adds, not bmm.
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
        self.cross_q = nn.Linear(hidden, hidden)
        self.cross_k = nn.Linear(hidden, hidden, bias=False)
        self.cross_v = nn.Linear(hidden, hidden)
        self.self_qkv = nn.Linear(hidden, 3 * hidden)
        self.cross_out, self.self_out = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.norm_cross, self.norm_self = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.out = nn.Linear(2 * hidden, hidden)

    def _weights(self, logits: torch.Tensor, dim: int) -> torch.Tensor:
        a = logits.softmax(dim)
        return F.dropout(a, self.dropout, self.training) if self.dropout else a

    def forward(self, modalities: dict[str, torch.Tensor], mask: torch.Tensor,
                side: torch.Tensor) -> torch.Tensor:
        """modalities: m -> [N, d_m]; mask: bool [N, M] (True = present); side: [N, S]."""
        n, h = len(side), self.heads
        hidden = self.queries.shape[1]
        nq, dh = len(self.queries), hidden // h
        side_token = self.side(side)
        tokens = torch.stack([self.proj[m](modalities[m]) for m in self.modalities]
                             + [side_token], dim=1) + self.kind                  # [N, T, D]
        # Cross-attention: logits[n, t, h, q] = q_hq . (W_k token_nt) / sqrt(dh).
        q = self.cross_q(self.queries).view(nq, h, dh)
        fold = torch.einsum("qhd,hde->ehq", q, self.cross_k.weight.view(h, dh, hidden))
        logits = (tokens @ fold.reshape(hidden, h * nq)).view(n, -1, h, nq) / math.sqrt(dh)
        absent = torch.cat([~mask, mask.new_zeros(n, 1)], dim=1)
        a = self._weights(logits.masked_fill(absent[:, :, None, None], float("-inf")), dim=1)
        v = self.cross_v(tokens).view(n, -1, h, 1, dh)                          # [N, T, H, 1, dh]
        x = (a.unsqueeze(-1) * v).sum(1).transpose(1, 2).reshape(n, nq, hidden)  # [N, Q, D]
        x = self.norm_cross(self.queries + self.cross_out(x))
        # Self-attention among the queries of each node.
        q, k, v = self.self_qkv(x).view(n, nq, 3, h, dh).unbind(2)               # [N, Q, H, dh]
        logits = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) / math.sqrt(dh)       # [N, Q, K, H]
        a = self._weights(logits, dim=2)
        y = (a.unsqueeze(-1) * v.unsqueeze(1)).sum(2).reshape(n, nq, hidden)
        x = self.norm_self(x + self.self_out(y))
        return self.out(torch.cat([x.mean(dim=1), side_token], dim=-1))
