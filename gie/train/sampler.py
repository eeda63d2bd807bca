"""Deterministic neighbour sampling and blocks: the same seed gives the same mini-batches
whatever the thread count, the machine load or what ran earlier in the process.

Why not DGL's DataLoader + NeighborSampler (measured on the test graph; docs/TRAINING.md,
"Determinism"):
  * DGL draws neighbours from one random engine per OS thread, and each engine's stream is
    the order in which threads first touched DGL's RNG: a race. With 2 threads two fresh
    processes drew one of two different samples; after any multi-threaded DGL sampling in a
    process, even a 1-thread run drew from another stream than a fresh process would.
  * With more than one thread, DGL's block construction (to_block, the fused sampler) put a
    block's source nodes in a different order from run to run (4 orders in 4 runs), and
    full-neighbour inference gave different float bits from run to run.
Here every random number comes from a torch.Generator seeded from (seed, epoch, rank) and is
drawn in batch order on the calling thread (torch's CPU random fills are serial), and blocks
are built with an explicit node order: destination nodes first, then the other source nodes
by ascending id. Only order-stable torch operations (stable sorts, unique, gathers) run on
the indices, so any thread count gives the same batches.

The sampling is DGL NeighborSampler's (replace=False): per destination node and edge type,
`fanout` in-edges drawn without replacement, in proportion to the edge weight when weighted
(exponential keys, Efraimidis & Spirakis 2006: the `fanout` largest u^(1/w), compared as
log(u)/w), every in-edge when there are at most `fanout`; excluded edges (a batch's target
gift edges and their reverses) are never drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import dgl
import numpy as np
import torch

from graphbuild.dgl_graph import REVERSE

GIFT = ("user", "gift", "streamer")
GIFTED_BY = ("streamer", REVERSE["gift"], "user")
EType = tuple[str, str, str]
Picked = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # source ids, local dst index, edge ids
_LONG = torch.long


def derive_seed(*parts: int) -> int:
    """One well-mixed 63-bit seed from several integers (seed, epoch, rank, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


class InEdges:
    """Every node's in-edges per edge type, grouped by destination node (a CSC index built
    once with a stable sort, so the edges of a node stay in edge-id order)."""

    def __init__(self, g: dgl.DGLGraph, weight: str | None = None):
        self.ntypes = list(g.ntypes)
        self.etypes: list[EType] = list(g.canonical_etypes)
        self.ptr, self.src, self.eid, self.w = {}, {}, {}, {}
        for et in self.etypes:
            src, dst = g.edges(etype=et, order="eid")
            order = torch.argsort(dst, stable=True)
            counts = torch.bincount(dst, minlength=g.num_nodes(et[2]))
            self.ptr[et] = torch.cat([torch.zeros(1, dtype=_LONG), counts.cumsum(0)])
            self.src[et], self.eid[et] = src[order], order
            if weight is not None:
                self.w[et] = g.edges[et].data[weight][order]
        self.gift = g.edges(etype=GIFT, order="eid") if GIFT in self.etypes else None
        self.num_nodes = {t: g.num_nodes(t) for t in self.ntypes}

    def sample(self, et: EType, seeds: torch.Tensor, fanout: int,
               gen: torch.Generator | None, exclude: torch.Tensor | None = None) -> Picked:
        """`fanout` in-edges of each seed node (all of them with fanout < 0)."""
        start = self.ptr[et][seeds]
        deg = self.ptr[et][seeds + 1] - start
        seg = torch.repeat_interleave(torch.arange(len(seeds)), deg)
        pos = start[seg] + torch.arange(len(seg)) - (deg.cumsum(0) - deg)[seg]
        if exclude is not None and len(exclude) and len(pos):
            keep = ~torch.isin(self.eid[et][pos], exclude)
            seg, pos = seg[keep], pos[keep]
        if fanout >= 0 and len(pos):
            # Nodes with at most `fanout` in-edges keep them all, without a draw; only the
            # others' candidates are keyed and sorted (most nodes of a hop are small).
            big = torch.bincount(seg, minlength=len(seeds))[seg] > fanout
            if big.any():
                keep = torch.nonzero(~big).squeeze(1)
                rest = torch.nonzero(big).squeeze(1)
                pick = rest[_top_per_segment(self._keys(et, pos[rest], gen), seg[rest],
                                             len(seeds), fanout)]
                order = torch.cat([keep, pick])
                seg, pos = seg[order], pos[order]
        return self.src[et][pos], seg, self.eid[et][pos]

    def _keys(self, et: EType, pos: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(len(pos), generator=gen, dtype=torch.float64)
        if et not in self.w:
            return u
        return torch.log(u) / self.w[et][pos].double()      # weights are > 0 (to_dgl clips)


def _top_per_segment(key: torch.Tensor, seg: torch.Tensor, n_segments: int,
                     k: int) -> torch.Tensor:
    """Positions of the `k` largest keys of each segment, grouped by segment (two stable
    sorts: ties resolve by position, never by thread timing)."""
    by_key = torch.argsort(key, descending=True, stable=True)
    order = by_key[torch.argsort(seg[by_key], stable=True)]
    counts = torch.bincount(seg, minlength=n_segments)
    first = counts.cumsum(0) - counts
    rank = torch.arange(len(order)) - first[seg[order]]
    return order[rank < k]


def make_block(index: InEdges, seeds: dict[str, torch.Tensor],
               picked: dict[EType, Picked]) -> dgl.DGLGraph:
    """A block whose destination nodes are `seeds` (each type's ids unique, kept in order)
    and whose source nodes are the seeds followed by the other picked sources by ascending
    id, as DGL's to_block lays them out but in an order that does not depend on threads."""
    empty = torch.zeros(0, dtype=_LONG)
    src_nodes, src_local = {}, {}
    for t in index.ntypes:
        dst = seeds.get(t, empty)
        rels = [et for et in index.etypes if et[0] == t]
        uniq, inv = torch.unique(torch.cat([dst] + [picked[et][0] for et in rels]),
                                 return_inverse=True)
        local = torch.empty(len(uniq), dtype=_LONG)
        is_new = torch.ones(len(uniq), dtype=torch.bool)
        local[inv[:len(dst)]] = torch.arange(len(dst))
        is_new[inv[:len(dst)]] = False
        local[is_new] = len(dst) + torch.arange(int(is_new.sum()))
        src_nodes[t] = torch.cat([dst, uniq[is_new]])
        parts = local[inv[len(dst):]].split([len(picked[et][0]) for et in rels])
        src_local.update(zip(rels, parts))
    block = dgl.create_block({et: (src_local[et], picked[et][1]) for et in index.etypes},
                             num_src_nodes={t: len(v) for t, v in src_nodes.items()},
                             num_dst_nodes={t: len(seeds.get(t, empty)) for t in index.ntypes})
    for t in index.ntypes:
        block.srcnodes[t].data[dgl.NID] = src_nodes[t]
        block.dstnodes[t].data[dgl.NID] = seeds.get(t, empty)
    for et in index.etypes:
        block.edges[et].data[dgl.EID] = picked[et][2]
    return block


def sample_blocks(index: InEdges, seeds: dict[str, torch.Tensor], fanouts: list[int],
                  gen: torch.Generator | None, exclude: dict[EType, torch.Tensor] | None = None
                  ) -> tuple[dict[str, torch.Tensor], list[dgl.DGLGraph]]:
    """(input nodes, blocks) for `seeds`, one block per fan-out, innermost hop last."""
    blocks = []
    for fanout in reversed(fanouts):
        picked = {et: index.sample(et, seeds.get(et[2], torch.zeros(0, dtype=_LONG)), fanout,
                                   gen, (exclude or {}).get(et))
                  for et in index.etypes}
        block = make_block(index, seeds, picked)
        seeds = {t: block.srcnodes[t].data[dgl.NID] for t in index.ntypes}
        blocks.insert(0, block)
    return seeds, blocks


def full_neighbour_blocks(index: InEdges, batch_size: int
                          ) -> Iterator[tuple[dict[str, torch.Tensor], str, torch.Tensor,
                                              dgl.DGLGraph]]:
    """Layer-wise inference batches: (input nodes, node type, output ids, block with every
    in-edge of the output nodes), `batch_size` output nodes of one type at a time."""
    for t in index.ntypes:
        for lo in range(0, index.num_nodes[t], batch_size):
            ids = torch.arange(lo, min(lo + batch_size, index.num_nodes[t]))
            inputs, (block,) = sample_blocks(index, {t: ids}, [-1], None)
            yield inputs, t, ids, block


@dataclass
class EdgeBatch:
    """One training step: positive gift edges, shared negatives, and the sampled blocks.
    `pos_src`/`pos_dst`/`negatives` index the seeds (the last block's destination nodes)."""

    input_nodes: dict[str, torch.Tensor]
    blocks: list
    pos_src: torch.Tensor
    pos_dst: torch.Tensor
    eids: torch.Tensor
    negatives: torch.Tensor | None
    seed_streamers: torch.Tensor        # node id of each seed streamer (for the log-Q term)


class EdgeBatches:
    """One epoch of shuffled gift-edge batches (what DGL's DataLoader with
    as_edge_prediction_sampler gave): target edges and their reverses excluded from message
    passing, `num_negatives` uniform streamers shared by each batch.

    The order is one permutation of the edges per (seed, epoch), cut into `world` equal
    shares (padded by wrapping around) so DDP ranks run equal step counts; each rank draws
    neighbours and negatives from its own generator, seeded from (seed, epoch, rank)."""

    def __init__(self, index: InEdges, eids: torch.Tensor, batch_size: int,
                 fanouts: list[int], num_negatives: int, seed: int, epoch: int,
                 rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.index, self.batch_size, self.fanouts = index, batch_size, list(fanouts)
        self.num_negatives, self.device = num_negatives, device
        perm = eids[torch.randperm(len(eids), generator=_generator(seed, epoch, 0, 0))]
        share = math.ceil(len(perm) / world) if len(perm) else 0
        if share * world > len(perm):
            perm = torch.cat([perm, perm[:share * world - len(perm)]])
        self.eids = perm[rank * share:(rank + 1) * share]
        self.gen = _generator(seed, epoch, rank, 1)

    def __len__(self) -> int:
        return math.ceil(len(self.eids) / self.batch_size)

    def __iter__(self) -> Iterator[EdgeBatch]:
        for lo in range(0, len(self.eids), self.batch_size):
            yield self.batch(self.eids[lo:lo + self.batch_size])

    def batch(self, eids: torch.Tensor) -> EdgeBatch:
        src, dst = self.index.gift[0][eids], self.index.gift[1][eids]
        neg = torch.randint(self.index.num_nodes["streamer"], (self.num_negatives,),
                            generator=self.gen)
        users, pos_src = torch.unique(src, return_inverse=True)
        streamers, s_inv = torch.unique(torch.cat([dst, neg]), return_inverse=True)
        seeds = {"user": users, "streamer": streamers}
        exclude = {GIFT: eids, GIFTED_BY: eids}
        input_nodes, blocks = sample_blocks(self.index, seeds, self.fanouts, self.gen, exclude)
        if self.device is not None and self.device.type != "cpu":
            blocks = [b.to(self.device) for b in blocks]
        negatives = s_inv[len(dst):].unique() if self.num_negatives else None
        return EdgeBatch(input_nodes, blocks, pos_src, s_inv[:len(dst)], eids, negatives,
                         streamers)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))
