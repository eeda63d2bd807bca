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
    once with a stable sort, so the edges of a node stay in edge-id order), with the running
    sum of their weights (for draws by weight)."""

    def __init__(self, g: dgl.DGLGraph, weight: str | None = None):
        self.ntypes = list(g.ntypes)
        self.etypes: list[EType] = list(g.canonical_etypes)
        self.ptr, self.src, self.eid, self.w, self.cw = {}, {}, {}, {}, {}
        for et in self.etypes:
            src, dst = g.edges(etype=et, order="eid")
            order = torch.argsort(dst, stable=True)
            counts = torch.bincount(dst, minlength=g.num_nodes(et[2]))
            self.ptr[et] = torch.cat([torch.zeros(1, dtype=_LONG), counts.cumsum(0)])
            self.src[et], self.eid[et] = src[order], order
            if weight is not None:
                self.w[et] = g.edges[et].data[weight][order]
                self.cw[et] = self.w[et].double().cumsum(0)
        self.gift = g.edges(etype=GIFT, order="eid") if GIFT in self.etypes else None
        self.num_nodes = {t: g.num_nodes(t) for t in self.ntypes}
        self._position: dict[EType, torch.Tensor] = {}     # edge id -> CSC position, lazily

    def sample(self, et: EType, seeds: torch.Tensor, fanout: int,
               gen: torch.Generator | None, exclude: torch.Tensor | None = None) -> Picked:
        """`fanout` in-edges of each seed node (all of them with fanout < 0), never one of
        the `exclude` edge ids. Seeds are distinct nodes.

        Nodes with at most `fanout` usable in-edges keep them all, without a draw (most
        nodes of a hop). Up to DRAW_ABOVE in-edges, every candidate gets an exponential key
        and the best `fanout` are kept; above, `draw_without_replacement` draws `fanout`
        edges by weight in time independent of the degree: a popular streamer's tens of
        thousands of watchers were most of a training step at 1M gifts."""
        start = self.ptr[et][seeds]
        deg = self.ptr[et][seeds + 1] - start
        excluded = self._positions(et, exclude)
        if fanout < 0:
            seg, pos = _ranges(start, deg)
            return self._picked(et, *_without(seg, pos, excluded))
        usable = deg - (torch.searchsorted(excluded, start + deg)
                        - torch.searchsorted(excluded, start))
        every = torch.nonzero(usable <= fanout).squeeze(1)
        keyed = torch.nonzero((usable > fanout) & (deg <= DRAW_ABOVE * fanout)).squeeze(1)
        drawn = torch.nonzero(deg > DRAW_ABOVE * fanout).squeeze(1)
        seg, pos = _without(*_ranges(start[every], deg[every], every), excluded)
        segs, poss = [seg], [pos]
        if len(keyed):
            seg, pos = _without(*_ranges(start[keyed], deg[keyed], keyed), excluded)
            top = _top_per_segment(self._keys(et, pos, gen), seg, len(seeds), fanout)
            segs.append(seg[top]), poss.append(pos[top])
        if len(drawn):
            seg, pos = self._draw(et, start[drawn], deg[drawn], fanout, gen, excluded)
            segs.append(drawn[seg]), poss.append(pos)
        return self._picked(et, torch.cat(segs), torch.cat(poss))

    def _picked(self, et: EType, seg: torch.Tensor, pos: torch.Tensor) -> Picked:
        return self.src[et][pos], seg, self.eid[et][pos]

    def _positions(self, et: EType, eids: torch.Tensor | None) -> torch.Tensor:
        """Sorted CSC positions of the edges `eids` of `et` (empty for None)."""
        if eids is None or not len(eids):
            return torch.zeros(0, dtype=_LONG)
        if et not in self._position:
            where = torch.empty_like(self.eid[et])
            where[self.eid[et]] = torch.arange(len(where))
            self._position[et] = where
        return torch.sort(self._position[et][eids]).values

    def _keys(self, et: EType, pos: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(len(pos), generator=gen, dtype=torch.float64)
        if et not in self.w:
            return u
        return torch.log(u) / self.w[et][pos].double()      # weights are > 0 (to_dgl clips)

    def _draw(self, et: EType, start: torch.Tensor, deg: torch.Tensor, fanout: int,
              gen: torch.Generator | None, excluded: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """`fanout` distinct usable in-edges of each node (local index, CSC position),
        by successive sampling: draws with replacement, in proportion to the weight, where a
        repeat or an excluded edge is skipped. Each accepted draw is then proportional to
        the weight among the edges not yet taken, which is the distribution of the
        exponential keys' top `fanout` (Efraimidis & Spirakis 2006) and of DGL's
        NeighborSampler. Draws come in rounds of 2 * fanout per unfinished node; the few
        nodes still short after DRAW_ROUNDS rounds (one dominant weight) finish with keys
        over the rest of their edges, which continues the same successive sampling."""
        n = len(start)
        cw = self.cw.get(et)
        acc_seg, acc_pos = torch.zeros(0, dtype=_LONG), torch.zeros(0, dtype=_LONG)
        todo = torch.arange(n)
        for _ in range(DRAW_ROUNDS):
            seg = todo.repeat_interleave(2 * fanout)
            u = torch.rand(len(seg), generator=gen, dtype=torch.float64)
            lo, d = start[seg], deg[seg]
            if cw is None:
                pos = lo + torch.minimum((u * d).long(), d - 1)
            else:
                base = torch.where(lo > 0, cw[(lo - 1).clamp(min=0)], 0.0)
                x = base + u * (cw[lo + d - 1] - base)
                pos = torch.searchsorted(cw, x, right=True).clamp(lo, lo + d - 1)
            seg, pos = _without(seg, pos, excluded)
            acc_seg, acc_pos = _first_per_node(torch.cat([acc_seg, seg]),
                                               torch.cat([acc_pos, pos]), n, fanout)
            todo = torch.nonzero(torch.bincount(acc_seg, minlength=n) < fanout).squeeze(1)
            if not len(todo):
                return acc_seg, acc_pos
        # finish the stragglers: keys over their edges not taken yet
        seg, pos = _without(*_ranges(start[todo], deg[todo], todo),
                            torch.sort(torch.cat([excluded, acc_pos])).values)
        need = fanout - torch.bincount(acc_seg, minlength=n)
        top = _top_per_segment(self._keys(et, pos, gen), seg, n, need)
        seg, pos = torch.cat([acc_seg, seg[top]]), torch.cat([acc_pos, pos[top]])
        order = torch.argsort(seg, stable=True)
        return seg[order], pos[order]


DRAW_ABOVE = 4      # nodes with more than DRAW_ABOVE * fanout in-edges are drawn, not keyed
DRAW_ROUNDS = 4


def _ranges(start: torch.Tensor, deg: torch.Tensor, nodes: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(node, CSC position) of every in-edge of the nodes whose edges are at
    [start, start + deg); node = index into `nodes` (or 0..len-1)."""
    local = torch.repeat_interleave(torch.arange(len(start)), deg)
    pos = start[local] + torch.arange(len(local)) - (deg.cumsum(0) - deg)[local]
    return (local if nodes is None else nodes[local]), pos


def _without(seg: torch.Tensor, pos: torch.Tensor, excluded: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    if not len(excluded) or not len(pos):
        return seg, pos
    keep = ~torch.isin(pos, excluded)
    return seg[keep], pos[keep]


def _first_per_node(seg: torch.Tensor, pos: torch.Tensor, n: int, k: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `k` distinct positions of each node in the given order, grouped by node
    (stable: each node's in the order they came)."""
    key = seg * (int(pos.max()) + 1 if len(pos) else 1) + pos
    uniq, inv = torch.unique(key, return_inverse=True)
    first = torch.full((len(uniq),), len(key), dtype=_LONG).scatter_reduce(
        0, inv, torch.arange(len(key)), "amin")
    first = torch.sort(first).values                       # in the order they came
    seg, pos = seg[first], pos[first]
    order = torch.argsort(seg, stable=True)
    seg, pos = seg[order], pos[order]
    counts = torch.bincount(seg, minlength=n)
    rank = torch.arange(len(seg)) - (counts.cumsum(0) - counts)[seg]
    keep = rank < k
    return seg[keep], pos[keep]


def _top_per_segment(key: torch.Tensor, seg: torch.Tensor, n_segments: int,
                     k: int | torch.Tensor) -> torch.Tensor:
    """Positions of the `k` largest keys of each segment (`k` per segment when a tensor),
    grouped by segment, each segment's best first.

    Segments of similar length are padded into one matrix per power of two of the length
    and cut with `topk` row by row: no sort of all candidates. `topk` runs each row alone,
    so the thread count cannot change its result; keys are continuous random draws, so
    ties have probability ~0."""
    if not len(key):
        return torch.zeros(0, dtype=_LONG)
    if len(seg) > 1 and bool((seg[1:] < seg[:-1]).any()):   # group by segment (stable)
        order = torch.argsort(seg, stable=True)
        return order[_top_per_segment(key[order], seg[order], n_segments, k)]
    counts = torch.bincount(seg, minlength=n_segments)
    first = counts.cumsum(0) - counts
    limit = k if isinstance(k, torch.Tensor) else torch.full((n_segments,), k, dtype=_LONG)
    present = torch.nonzero(counts).squeeze(1)
    bucket = torch.ceil(torch.log2(counts[present].double())).long()
    segs, picks = [], []
    for b in torch.unique(bucket).tolist():
        rows = present[bucket == b]
        n, start = counts[rows], first[rows]
        width = int(n.max())
        cols = torch.arange(width)
        valid = cols < n[:, None]
        mat = torch.full((len(rows), width), float("-inf"), dtype=key.dtype)
        mat[valid] = key[(start[:, None] + cols)[valid]]
        top = torch.topk(mat, min(int(limit[rows].max()), width), dim=1).indices  # best first
        keep = (top < n[:, None]) & (torch.arange(top.shape[1]) < limit[rows][:, None])
        segs.append(rows[:, None].expand_as(top)[keep])
        picks.append((start[:, None] + top)[keep])
    return torch.cat(picks)[torch.argsort(torch.cat(segs), stable=True)]


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


def full_neighbour_blocks(index: InEdges, batch_size: int,
                          only: dict[str, torch.Tensor] | None = None
                          ) -> Iterator[tuple[dict[str, torch.Tensor], str, torch.Tensor,
                                              dgl.DGLGraph]]:
    """Layer-wise inference batches: (input nodes, node type, output ids, block with every
    in-edge of the output nodes), `batch_size` output nodes of one type at a time; `only`:
    these output nodes of each type (sorted ids), not all."""
    for t in index.ntypes:
        nodes = (only or {}).get(t)
        n = index.num_nodes[t] if nodes is None else len(nodes)
        for lo in range(0, n, batch_size):
            ids = torch.arange(lo, min(lo + batch_size, n)) if nodes is None \
                else nodes[lo:lo + batch_size]
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
