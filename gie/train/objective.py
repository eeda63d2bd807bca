"""Training loss: gift link prediction against shared negatives, plus optional contrast."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def amount_weights(amount: torch.Tensor, mode: str, scale: float | None = None) -> torch.Tensor:
    """Per-edge loss weight log1p(price), mean 1 over `amount` (or divided by `scale`):
    big spenders count more but, through the log, do not dominate."""
    if mode == "none":
        return torch.ones_like(amount)
    w = torch.log1p(amount.clamp_min(0))
    return w / (w.mean().clamp_min(1e-6) if scale is None else max(scale, 1e-6))


def sampling_log_q(streamer_degree: torch.Tensor, batch_size: int,
                   num_negatives: int) -> torch.Tensor:
    """log of how often each streamer is a candidate of a batch, in expectation: as the
    streamer of one of its `batch_size` edges (drawn uniformly, so with probability
    degree / edges each) or as one of the `num_negatives` uniform negatives."""
    p = streamer_degree.double() / max(float(streamer_degree.sum()), 1.0)
    return torch.log(batch_size * p + num_negatives / len(streamer_degree)).float()


def link_loss(h_user: torch.Tensor, h_streamer: torch.Tensor, pos_src: torch.Tensor,
              pos_dst: torch.Tensor, negatives: torch.Tensor, weight: torch.Tensor,
              temperature: float, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sampled softmax: each positive against every negative streamer of the batch.

    `negatives` are local streamer indices (in-batch positives and/or shared uniform ones);
    candidates that are themselves positives of the same user in this batch are masked out.
    `log_q` (per local streamer, see sampling_log_q) is subtracted from every logit: in-batch
    negatives are drawn by popularity, and without the correction the model learns to rank
    popular streamers too low (Yi et al., RecSys 2019).
    """
    u = h_user[pos_src]
    pos = (u * h_streamer[pos_dst]).sum(-1, keepdim=True) / temperature
    neg = u @ h_streamer[negatives].T / temperature
    if log_q is not None:
        pos = pos - log_q[pos_dst, None]
        neg = neg - log_q[negatives][None, :]
    is_pos = torch.zeros(len(h_user), len(h_streamer), dtype=torch.bool, device=u.device)
    is_pos[pos_src, pos_dst] = True          # a dense local table: cheaper than torch.isin
    neg = neg.masked_fill(is_pos[pos_src][:, negatives], float("-inf"))
    ce = -F.log_softmax(torch.cat([pos, neg], dim=1), dim=1)[:, 0]
    return (weight * ce).sum() / weight.sum()


def contrastive_loss(view_a: dict[str, torch.Tensor], view_b: dict[str, torch.Tensor],
                     temperature: float, max_nodes: int = 2048) -> torch.Tensor:
    """InfoNCE between two augmented encodings of the same seed nodes (GRACE-style)."""
    total = 0.0
    for t in view_a:
        a = F.normalize(view_a[t][:max_nodes], dim=-1)
        b = F.normalize(view_b[t][:max_nodes], dim=-1)
        logits = a @ b.T / temperature
        target = torch.arange(len(a), device=a.device)
        total = total + 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    return total / len(view_a)
