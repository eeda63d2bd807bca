"""gie/train/sampler.py: the blocks DGL's NeighborSampler would give (structure, fan-outs,
target-edge exclusion, weighted draws without replacement), drawn reproducibly."""
from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch

from gie.train.sampler import GIFT, GIFTED_BY, EdgeBatches, InEdges, full_neighbour_blocks
from graphbuild.dataset import load_graph
from graphbuild.dgl_graph import holdout_mask, to_dgl
from tests.train_helpers import graph_for_day


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    data = load_graph(graph_for_day(tmp_path_factory.mktemp("graph"), 1, n_users=300))
    return to_dgl(data, drop_gift=holdout_mask(data))


def _batches(g, epoch=1, rank=0, world=1, fanouts=(4, 4)):
    return EdgeBatches(InEdges(g, "w"), torch.arange(g.num_edges(GIFT)), 64, list(fanouts),
                       16, seed=7, epoch=epoch, rank=rank, world=world)


def test_blocks_hold_graph_edges_with_fanouts_and_no_target_edges(g):
    for batch in _batches(g):
        seeds = batch.blocks[-1].dstdata[dgl.NID]
        assert torch.equal(seeds["user"][batch.pos_src], g.find_edges(batch.eids, etype=GIFT)[0])
        assert torch.equal(seeds["streamer"][batch.pos_dst],
                           g.find_edges(batch.eids, etype=GIFT)[1])
        for block in batch.blocks:
            for t in block.ntypes:                    # destination nodes lead the sources
                n = block.num_dst_nodes(t)
                assert torch.equal(block.srcnodes[t].data[dgl.NID][:n],
                                   block.dstnodes[t].data[dgl.NID])
            for et in block.canonical_etypes:
                src, dst = block.edges(etype=et)
                eid = block.edges[et].data[dgl.EID]
                gs, gd = g.find_edges(eid, etype=et)
                assert torch.equal(block.srcnodes[et[0]].data[dgl.NID][src], gs)
                assert torch.equal(block.dstnodes[et[2]].data[dgl.NID][dst], gd)
                assert len(eid.unique()) == len(eid)          # without replacement
                if et in (GIFT, GIFTED_BY):
                    assert not torch.isin(eid, batch.eids).any(), et
                # min(fan-out, in-degree without the batch's target edges) per node
                seeds_et = block.dstnodes[et[2]].data[dgl.NID]
                deg = g.in_degrees(seeds_et, etype=et)
                if et in (GIFT, GIFTED_BY):
                    _, tgt = g.find_edges(batch.eids, etype=et)
                    deg = deg - (seeds_et[:, None] == tgt[None, :]).sum(1)
                got = torch.bincount(dst, minlength=len(seeds_et))
                assert torch.equal(got, deg.clamp(max=4)), et


def test_same_seed_and_epoch_same_batches_other_epoch_other_batches(g):
    def digest(batches):
        return [torch.cat([b.eids] + [blk.edges[et].data[dgl.EID] for blk in b.blocks
                                      for et in blk.canonical_etypes]) for b in batches]
    a, b, c = digest(_batches(g)), digest(_batches(g)), digest(_batches(g, epoch=2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_ranks_split_the_epoch_evenly(g):
    shares = [_batches(g, rank=r, world=3) for r in range(3)]
    assert len({len(s.eids) for s in shares}) == 1 and len({len(s) for s in shares}) == 1
    covered = torch.cat([s.eids for s in shares]).unique()
    assert torch.equal(covered, torch.arange(g.num_edges(GIFT)))


def test_weighted_draws_match_dgl_inclusion_frequencies():
    """One node with in-edges weighted 1, 2, 3, 4, 10 and a fan-out of 2: how often each edge
    is drawn by ours and by DGL's sample_neighbors (4000 draws each, standard error < 0.008),
    against the exact inclusion probabilities (0.795 for the weight-10 edge)."""
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    g = dgl.heterograph({("a", "r", "b"): (torch.arange(5), torch.zeros(5, dtype=torch.long))})
    g.edata["w"] = w
    index, gen, n = InEdges(g, "w"), torch.Generator().manual_seed(0), 4000
    ours = torch.zeros(5)
    for _ in range(n):
        ours[index.sample(("a", "r", "b"), torch.tensor([0]), 2, gen)[2]] += 1
    dgl.seed(0)
    theirs = torch.zeros(5)
    for _ in range(n):
        theirs[dgl.sampling.sample_neighbors(g, {"b": [0]}, 2, prob="w").edata[dgl.EID]] += 1
    # exact inclusion probability of edge i in 2 draws without replacement by weight:
    # p_i + sum over j != i of p_j * p_i / (1 - p_j)
    p = (w / w.sum()).double()
    exact = torch.stack([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(5) if j != i)
                         for i in range(5)])
    assert ours.sum() == theirs.sum() == 2 * n
    np.testing.assert_allclose(ours / n, exact, atol=0.03)
    np.testing.assert_allclose(theirs / n, exact, atol=0.03)


def test_full_neighbour_blocks_cover_every_in_edge_once(g):
    index = InEdges(g)
    seen = {et: [] for et in g.canonical_etypes}
    outputs = {t: [] for t in g.ntypes}
    for inputs, t, ids, block in full_neighbour_blocks(index, 50):
        outputs[t].append(ids)
        for et in block.canonical_etypes:
            seen[et].append(block.edges[et].data[dgl.EID])
    for t in g.ntypes:
        assert torch.equal(torch.cat(outputs[t]), torch.arange(g.num_nodes(t)))
    for et, parts in seen.items():
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(g.num_edges(et)))


def test_top_per_segment_equals_sorting_every_key():
    """The bucketed top-k picks what two stable sorts of all keys picked, in the same order
    (segments grouped, best key first), also for segments given out of order."""
    from gie.train.sampler import _top_per_segment

    def by_sorting(key, seg, n_segments, k):
        by_key = torch.argsort(key, descending=True, stable=True)
        order = by_key[torch.argsort(seg[by_key], stable=True)]
        counts = torch.bincount(seg, minlength=n_segments)
        rank = torch.arange(len(order)) - (counts.cumsum(0) - counts)[seg[order]]
        return order[rank < k]

    gen = torch.Generator().manual_seed(1)
    for trial in range(200):
        n_seg = int(torch.randint(1, 40, (1,), generator=gen))
        seg = torch.repeat_interleave(torch.arange(n_seg),
                                      torch.randint(0, 300, (n_seg,), generator=gen))
        if trial % 2:
            seg = seg[torch.randperm(len(seg), generator=gen)]
        key = torch.log(torch.rand(len(seg), generator=gen, dtype=torch.float64))
        k = int(torch.randint(1, 15, (1,), generator=gen))
        assert torch.equal(_top_per_segment(key, seg, n_seg, k), by_sorting(key, seg, n_seg, k))


def _inclusion(weights: torch.Tensor, fanout: int, n: int, exclude=None):
    """How often each in-edge of one node is drawn: ours and DGL's sample_neighbors."""
    g = dgl.heterograph({("a", "r", "b"): (torch.arange(len(weights)),
                                           torch.zeros(len(weights), dtype=torch.long))})
    g.edata["w"] = weights
    index, gen = InEdges(g, "w"), torch.Generator().manual_seed(0)
    ours = torch.zeros(len(weights))
    for _ in range(n):
        picked = index.sample(("a", "r", "b"), torch.tensor([0]), fanout, gen, exclude)[2]
        assert len(picked) == len(set(picked.tolist())) == fanout       # distinct edges
        ours[picked] += 1
    dgl.seed(0)
    theirs = torch.zeros(len(weights))
    for _ in range(n):
        theirs[dgl.sampling.sample_neighbors(g, {"b": [0]}, fanout, prob="w",
                                             exclude_edges=exclude).edata[dgl.EID]] += 1
    return ours / n, theirs / n


def test_high_degree_nodes_are_drawn_like_dgl():
    """Above DRAW_ABOVE x fan-out in-edges, edges are drawn by successive sampling instead of
    keyed: the inclusion frequencies still match DGL's (3000 draws each), excluded edges are
    never drawn, and a dominant weight (the straggler path) changes nothing."""
    gen = torch.Generator().manual_seed(3)
    weights = torch.rand(40, generator=gen) * 5 + 0.1
    ours, theirs = _inclusion(weights, 3, 3000)
    np.testing.assert_allclose(ours, theirs, atol=0.035)
    excluded = torch.tensor([0, 7, 19])
    ours, theirs = _inclusion(weights, 3, 3000, exclude=excluded)
    assert ours[excluded].sum() == 0
    np.testing.assert_allclose(ours, theirs, atol=0.035)
    dominant = torch.ones(30)
    dominant[4], dominant[9] = 500.0, 200.0
    ours, theirs = _inclusion(dominant, 3, 3000)
    assert ours[4] > 0.98 and ours[9] > 0.9
    np.testing.assert_allclose(ours, theirs, atol=0.035)
