"""The paper's ablation: does a gift-prediction model gain from the GIE expanded sequences?

Samples are clicks (an impression the user acted on); a click is positive when the same user
gifts the same streamer on the same live within `gift_window_minutes` after it. Two models with
DIN-style target attention (Zhou et al. 2018) are trained on the clicks of the `train_days`
days up to D and tested on the clicks of D+1:
    history_only: target streamer + attention over the user's own gifts before the click;
    with_gie:     the same, plus one attention over each of the user's GIE sequences of date D
                  (`downstream.sequences`, by default `merged` and the paper's `U-U-S`, `U-S-S`).
Beside each attention, both models read where the clicked streamer sits in that sequence (the
"hit" features of production ranking models): whether it is there, and 1 / its position.
No user id embedding: the models must generalise through the sequences.
The bundle of D knows gifts up to the end of D, so for a training click at time t the GIE
sequences drop streamers the user first gifted in [t, end of D): they would leak the label.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from gie.evaluate.config import DownstreamConfig
from gie.evaluate.metrics import auc, gauc
from gie.evaluate.rawdata import DAY_MS, day_start_ms, next_date, read_events
from gie.progress import progress

log = logging.getLogger(__name__)
VARIANTS = ("history_only", "with_gie")


@dataclass
class Samples:
    users: np.ndarray          # raw user id per sample (for GAUC)
    target: np.ndarray         # vocabulary index of the clicked streamer
    history: np.ndarray        # [n, L] vocabulary indexes, 0 = padding
    gie: list[np.ndarray]      # one [n, L] per GIE sequence
    label: np.ndarray          # float32 0/1


def label_clicks(clicks: pd.DataFrame, gifts: pd.DataFrame, window_ms: int) -> np.ndarray:
    """1 where a gift by the same user to the same streamer on the same live follows the click
    within window_ms (inclusive), else 0; aligned with `clicks` rows."""
    keys = ["user_id", "streamer_id", "live_id"]
    c = clicks[keys + ["timestamp"]].reset_index(drop=True).rename_axis("row").reset_index()
    m = c.merge(gifts[keys + ["timestamp"]], on=keys, suffixes=("", "_gift"))
    delay = m["timestamp_gift"] - m["timestamp"]
    positive = m.loc[(delay >= 0) & (delay <= window_ms), "row"].unique()
    label = np.zeros(len(c), np.float32)
    label[positive] = 1.0
    return label


def _sequences(clicks: pd.DataFrame, gifts: pd.DataFrame, gie: list[dict[int, list[int]]],
               horizon_ms: int, max_len: int) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Per click: own gifted streamers before it (latest first) and the leak-free GIE
    sequences (one list of sequences per GIE source)."""
    ordered = gifts.sort_values(["user_id", "timestamp"])
    u_all, ts_all, ss_all = (ordered[c].to_numpy()
                             for c in ("user_id", "timestamp", "streamer_id"))
    bounds = np.r_[0, np.flatnonzero(np.diff(u_all)) + 1, len(u_all)] if len(u_all) else [0]
    by_user = {int(u_all[a]): (ts_all[a:b], ss_all[a:b])    # slices: no pandas group per user
               for a, b in zip(bounds[:-1], bounds[1:])}
    hist_out, gie_out = [], [[] for _ in gie]
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    for u, t in zip(clicks["user_id"].to_numpy(), clicks["timestamp"].to_numpy()):
        ts, ss = by_user.get(u, empty)
        cut = np.searchsorted(ts, t, side="left")
        before = list(dict.fromkeys(ss[:cut][::-1].tolist()))
        future = set(ss[cut:][ts[cut:] < horizon_ms].tolist()) - set(before)
        hist_out.append(before[:max_len])
        for out, seqs in zip(gie_out, gie):
            out.append([s for s in seqs.get(u, []) if s not in future][:max_len])
    return hist_out, gie_out


def build_samples(clicks: pd.DataFrame, gifts: pd.DataFrame, gie: list[dict[int, list[int]]],
                  horizon_ms: int, window_ms: int, vocab: dict[int, int], max_len: int) -> Samples:
    label = label_clicks(clicks, gifts, window_ms)
    hist, gie_seqs = _sequences(clicks, gifts, gie, horizon_ms, max_len)

    def pad(seqs: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(seqs), max_len), np.int64)
        for i, seq in enumerate(seqs):
            out[i, :len(seq)] = [vocab[s] for s in seq]
        return out

    return Samples(clicks["user_id"].to_numpy(), clicks["streamer_id"].map(vocab).to_numpy(),
                   pad(hist), [pad(g) for g in gie_seqs], label)


def target_in_sequence(s: Samples, names: list[str]) -> dict:
    """How much a sequence can tell about a click, before any model: among the clicks of users
    with a gift history, the positive rate when the clicked streamer is in the user's sequence
    and when it is not. Rates that barely differ (or favour the clicks outside) bound what the
    with_gie model can gain over history_only, whatever the sequences' recall of next gifts."""
    with_history = (s.history > 0).any(axis=1)
    out = {"clicks": int(with_history.sum()),
           "positive_rate": float(s.label[with_history].mean()) if with_history.any() else None,
           "positive_rate_without_history": float(s.label[~with_history].mean())
           if (~with_history).any() else None, "sequences": {}}
    for name, seq in zip(["history", *names], [s.history, *s.gie]):
        inside = (seq == s.target[:, None]).any(axis=1) & with_history
        outside = ~inside & with_history
        out["sequences"][name] = {
            "clicks_in": int(inside.sum()),
            "positive_rate_in": float(s.label[inside].mean()) if inside.any() else None,
            "positive_rate_out": float(s.label[outside].mean()) if outside.any() else None}
    return out


class TargetAttention(nn.Module):
    """DIN activation unit: weight of each sequence item from an MLP over [q, k, q-k, q*k];
    weighted sum (no softmax, so the pooled vector also carries how much of the sequence
    matches). The first layer is applied per part (q once per sample, q-k folded into the q
    and k terms): the same function as on the concatenation, without building it."""

    def __init__(self, dim: int, hidden: int = 16):
        super().__init__()
        self.q, self.k = nn.Linear(dim, hidden), nn.Linear(dim, hidden, bias=False)
        self.qk = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.q(query).unsqueeze(1) + self.k(keys) + self.qk(query.unsqueeze(1) * keys)
        w = self.out(torch.relu(h)).squeeze(-1)
        return ((w * mask).unsqueeze(-1) * keys).sum(dim=1)


def hits(target: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """[n, 2]: whether the target is in the (left-aligned, distinct) sequence, and 1 / its
    1-based position there (0 when absent).

    The attention can only match the target through its id embedding, and a few thousand
    clicks train most streamers' embeddings little: on long histories (tens of gifted
    streamers a user) neither model told a click on a sequence's streamer from another, and
    the sequences' margin stayed inside the seed spread (docs/EVALUATION.md)."""
    match = (seq == target[:, None]) & (seq > 0)
    position = torch.arange(1, seq.shape[1] + 1, dtype=torch.float32)
    return torch.stack([match.any(dim=1).float(), (match.float() / position).amax(dim=1)], dim=1)


class GiftDIN(nn.Module):
    def __init__(self, vocab_size: int, dim: int, n_sequences: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.attn = nn.ModuleList(TargetAttention(dim) for _ in range(n_sequences))
        self.head = nn.Sequential(nn.Linear((dim + 2) * n_sequences + dim, 64), nn.ReLU(),
                                  nn.Linear(64, 1))

    def forward(self, target: torch.Tensor, sequences: list[torch.Tensor]) -> torch.Tensor:
        q = self.emb(target)
        pooled = [att(q, self.emb(seq), (seq > 0).float()) for att, seq in zip(self.attn, sequences)]
        return self.head(torch.cat([q, *pooled, *(hits(target, seq) for seq in sequences)],
                                   dim=-1)).squeeze(-1)


def _tensors(s: Samples, variant: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    seqs = [torch.from_numpy(s.history)] + \
        ([torch.from_numpy(g) for g in s.gie] if variant == "with_gie" else [])
    return torch.from_numpy(s.target), seqs


def _trim(seq: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding tail of a batch (sequences are left-aligned): most are short."""
    return seq[:, :max(1, int((seq > 0).sum(dim=1).max()))]


def train_and_score(train: Samples, test: Samples, variant: str, vocab_size: int,
                    cfg: DownstreamConfig, seed: int) -> np.ndarray:
    """Train one model from scratch under `seed`; return its test scores."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = GiftDIN(vocab_size, cfg.embed_dim, 1 + (len(train.gie) if variant == "with_gie" else 0))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    target, seqs = _tensors(train, variant)
    label = torch.from_numpy(train.label)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(label), generator=gen).split(cfg.batch_size):
            opt.zero_grad()
            loss_fn(model(target[idx], [_trim(s[idx]) for s in seqs]), label[idx]).backward()
            opt.step()
    model.eval()
    target, seqs = _tensors(test, variant)
    with torch.no_grad():
        return model(target, seqs).numpy()


def _sample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(df) <= n:
        return df.reset_index(drop=True)
    return df.iloc[np.sort(rng.choice(len(df), n, replace=False))].reset_index(drop=True)


def run_downstream(raw: str, date: str,
                   sequences_of: Callable[[set[int]], list[dict[int, list[int]]]],
                   cfg: DownstreamConfig, seed: int = 0) -> dict:
    """Train/test both variants over `cfg.seeds` seeds; AUC and GAUC means, spreads, margin.
    `sequences_of(users)` gives the GIE sequences of the sampled users (raw id -> targets, one
    dict per sequence): a bundle's are too many to hold whole at 1M users."""
    test_start = day_start_ms(next_date(date))
    train_start = test_start - cfg.train_days * DAY_MS
    clicks = read_events(raw, "click", train_start, test_start + DAY_MS,
                         ["user_id", "live_id", "streamer_id", "timestamp"])
    gifts = read_events(raw, "gift", train_start - cfg.history_days * DAY_MS,
                        test_start + DAY_MS, ["user_id", "live_id", "streamer_id", "timestamp"])
    rng = np.random.default_rng(seed)
    train_clicks = _sample(clicks[clicks["timestamp"] < test_start], cfg.max_train_samples, rng)
    test_clicks = _sample(clicks[clicks["timestamp"] >= test_start], cfg.max_test_samples, rng)

    sampled = set(train_clicks["user_id"]) | set(test_clicks["user_id"])
    gie = [{u: seqs[u] for u in sampled if u in seqs} for seqs in sequences_of(sampled)]
    ids = np.unique(np.concatenate([clicks["streamer_id"].to_numpy(), gifts["streamer_id"].to_numpy(),
                                    np.fromiter((s for seqs in gie for v in seqs.values()
                                                 for s in v), np.int64)]))
    vocab = {int(s): i + 1 for i, s in enumerate(ids)}
    window_ms = cfg.gift_window_minutes * 60_000
    train = build_samples(train_clicks, gifts, gie, test_start, window_ms, vocab, cfg.max_seq_len)
    test = build_samples(test_clicks, gifts, gie, test_start, window_ms, vocab, cfg.max_seq_len)
    counts = {"train": len(train.label), "train_positive": int(train.label.sum()),
              "test": len(test.label), "test_positive": int(test.label.sum()),
              "vocabulary": len(vocab)}
    log.info("downstream samples: %s", counts)
    for name, s in (("train", train), ("test", test)):
        if not 0 < s.label.sum() < len(s.label):
            log.warning("downstream ablation skipped: %s clicks lack one of the two classes", name)
            return {"skipped": f"{name} clicks lack positives or negatives", "samples": counts}

    runs = {v: [] for v in VARIANTS}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    try:
        for i in progress(range(cfg.seeds), desc="downstream seeds", leave=False):
            for v in VARIANTS:
                scores = train_and_score(train, test, v, len(vocab) + 1, cfg, seed + i)
                runs[v].append({"seed": seed + i, "auc": auc(test.label, scores),
                                "gauc": gauc(test.users, test.label, scores)})
    finally:
        torch.set_num_threads(threads)
    out: dict = {"samples": counts,
                 "target_in_sequence": target_in_sequence(test, list(cfg.sequences))}
    for v in VARIANTS:
        a = np.array([r["auc"] for r in runs[v]]); g = np.array([r["gauc"] for r in runs[v]])
        out[v] = {"auc": float(a.mean()), "auc_std": float(a.std()), "auc_range": float(np.ptp(a)),
                  "gauc": float(np.nanmean(g)) if np.isfinite(g).any() else float("nan"),
                  "runs": runs[v]}
    out["auc_margin"] = out["with_gie"]["auc"] - out["history_only"]["auc"]
    out["auc_spread"] = max(out[v]["auc_range"] for v in VARIANTS)
    out["margin_exceeds_spread"] = bool(out["auc_margin"] > out["auc_spread"])
    log.info("downstream AUC history_only %.4f, with_gie %.4f (margin %+.4f, spread %.4f)",
             out["history_only"]["auc"], out["with_gie"]["auc"], out["auc_margin"], out["auc_spread"])
    return out
