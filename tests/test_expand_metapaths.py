"""Every metapath against a plain brute-force reference written with dicts and loops."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest

from gie.embeddings import read_embeddings
from gie.expand.config import ExpandConfig
from gie.expand.run import expand
from graphbuild.dataset import load_graph
from tests.expand_helpers import make_inputs

STEPS = {"U-S": ("US",), "U-U-S": ("UU", "US"), "U-S-S": ("US", "SS"),
         "S-U": ("SU",), "S-S-U": ("SS", "SU"), "S-U-U": ("SU", "UU")}
SOURCE = {"U": "user", "S": "streamer"}


def _normalised(rows):
    return {a: {b: w / sum(nb.values()) for b, w in nb.items()} for a, nb in rows.items() if nb}


def _top(row, k, raw):
    return dict(sorted(row.items(), key=lambda t: (-t[1], raw[t[0]]))[:k])


class Reference:
    """Scores as documented in docs/BUNDLE.md, computed the slow obvious way."""

    def __init__(self, graph_path, emb_path, cfg: ExpandConfig):
        g = load_graph(graph_path)
        self.cfg, self.raw, self.steps = cfg, g.raw_ids, {}
        gift = defaultdict(dict)
        for u, s, w in zip(g.edges["gift"].src, g.edges["gift"].dst, g.edges["gift"].data["weight"]):
            gift[int(u)][int(s)] = float(w)
        received = defaultdict(dict)
        for u, row in gift.items():
            for s, w in row.items():
                received[s][u] = w
        self.rel = {("US", "graph"): _normalised(gift), ("SU", "graph"): _normalised(received)}
        for step, etype, ntype in (("UU", "u2u", "user"), ("SS", "s2s", "streamer")):
            e = g.edges[etype]
            rows = defaultdict(dict)
            for a, b, w in zip(e.src, e.dst, e.data["score"]):
                if a != b and w > 0:
                    rows[int(a)][int(b)] = float(w)
            self.rel[step, "graph"] = _normalised(rows)
            _, vec = read_embeddings(emb_path, ntype)
            vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
            sims = vec @ vec.T
            knn = {}
            for a in range(len(vec)):
                order = [b for b in np.argsort(-sims[a], kind="stable") if b != a]
                knn[a] = {b: float(sims[a, b]) for b in order[: cfg.knn_k] if sims[a, b] > 0}
            self.rel[step, "knn"] = _normalised(knn)
            both = {}
            for a in set(self.rel[step, "graph"]) | set(self.rel[step, "knn"]):
                row = defaultdict(float)
                for b, w in self.rel[step, "graph"].get(a, {}).items():
                    row[b] += cfg.graph_weight * w
                for b, w in self.rel[step, "knn"].get(a, {}).items():
                    row[b] += (1 - cfg.graph_weight) * w
                both[a] = dict(row)
            self.rel[step, "both"] = _normalised(both)

    def step(self, name, hop, fanout, ntype_of_cols):
        """Top-`fanout` neighbours per row, ties broken by node id."""
        key = (name, hop, fanout)
        if key not in self.steps:
            rel = self.rel[name, "graph" if name in ("US", "SU") else hop]
            self.steps[key] = {a: _top(row, fanout, self.raw[ntype_of_cols])
                               for a, row in rel.items()}
        return self.steps[key]

    def candidates(self, mp, node):
        """{target: (score, {via: contribution})} before caps."""
        mcfg = self.cfg.metapaths[mp]
        steps = STEPS[mp]
        kinds = [SOURCE[c] for c in mp.split("-")]
        if len(steps) == 1:
            row = self.rel[steps[0], "graph"].get(node, {})
            return {t: (w, {node: w}) for t, w in row.items()}
        first = self.step(steps[0], mcfg.hop, mcfg.fanout[0], kinds[1])
        second = self.step(steps[1], mcfg.hop, mcfg.fanout[1], kinds[2])
        out = {}
        for mid, a in first.get(node, {}).items():
            for t, b in second.get(mid, {}).items():
                score, vias = out.get(t, (0.0, {}))
                vias[mid] = a * b
                out[t] = (score + a * b, vias)
        if self.cfg.exclude_history:
            own = self.rel["US" if kinds[0] == "user" else "SU", "graph"].get(node, {})
            out = {t: v for t, v in out.items() if t not in own}
        return out

    def best_vias(self, mp, node, vias):
        """Raw ids of the intermediate(s) of the highest-contributing path (several on ties)."""
        kinds = [SOURCE[c] for c in mp.split("-")]
        raw_of = self.raw[kinds[0]] if len(STEPS[mp]) == 1 else self.raw[kinds[1]]
        best = max(vias.values())
        return {int(raw_of[m]) for m, c in vias.items() if c >= best - 1e-12 * best}

    def sequence(self, ntype, mp, node):
        """[(target, (score, allowed via raw ids))], best first, caps applied."""
        mps = [m for m in STEPS if SOURCE[m[0]] == ntype and self.cfg.metapaths[m].enabled]
        target_raw = self.raw["streamer" if ntype == "user" else "user"]
        if mp == "merged":
            cands = {}
            for m in mps:
                w = self.cfg.metapaths[m].weight
                for t, (score, vias) in self.candidates(m, node).items():
                    total, per_mp = cands.get(t, (0.0, {}))
                    per_mp[m] = (w * score, self.best_vias(m, node, vias))
                    cands[t] = (total + w * score, per_mp)
            own = self.rel["US" if ntype == "user" else "SU", "graph"].get(node, {})
            cands = {t: v for t, v in cands.items()
                     if v[0] > 0 and not (self.cfg.exclude_history and t in own)}
            cap = self.cfg.topk
        else:
            cands = {t: (score, {mp: (score, self.best_vias(mp, node, vias))})
                     for t, (score, vias) in self.candidates(mp, node).items()}
            cap = self.cfg.cap(mp)
        kept = [(t, v) for t, v in cands.items() if v[0] >= self.cfg.min_score]
        kept.sort(key=lambda tv: (-np.float32(tv[1][0]), target_raw[tv[0]]))
        return kept[:cap]


def _bundle_rows(bundle, ntype):
    col = "user_id" if ntype == "user" else "streamer_id"
    return {(r[col], r["metapath"]): r
            for r in pq.read_table(bundle / "expansions" / ntype).to_pylist()}


def _check_against_reference(bundle, ref: Reference, cfg: ExpandConfig, graph_path):
    g = load_graph(graph_path)
    checked = 0
    for ntype, offset in (("user", 1000), ("streamer", 10000)):
        rows = _bundle_rows(bundle, ntype)
        target_type = "streamer" if ntype == "user" else "user"
        mps = [m for m in STEPS if SOURCE[m[0]] == ntype and cfg.metapaths[m].enabled]
        for node in range(g.num_nodes(ntype)):
            for mp in mps + ["merged"]:
                want = ref.sequence(ntype, mp, node)
                got = rows.get((node + offset, mp))
                if not want:
                    assert got is None, (ntype, node, mp)
                    continue
                assert got is not None, (ntype, node, mp)
                assert got["targets"] == [int(g.raw_ids[target_type][t]) for t, _ in want], \
                    (ntype, node, mp)
                np.testing.assert_allclose(got["scores"], [v[0] for _, v in want], rtol=1e-5)
                for (t, (_, per_mp)), via in zip(want, got["via"]):
                    best = max(c for c, _ in per_mp.values())
                    allowed = set().union(*(v for c, v in per_mp.values()
                                            if c >= best - 1e-9 * best))
                    assert via in allowed, (ntype, node, mp, t, via, per_mp)
                checked += 1
    assert checked > 500


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("expand-ref"))


CONFIGS = {
    "defaults": {},
    "small-fanout-exclude-caps": {
        "exclude_history": True, "min_score": 0.002, "topk": 7, "knn_k": 6,
        "metapaths": {"U-U-S": {"fanout": (3, 2), "topk": 5}, "U-S-S": {"fanout": (2, 3)},
                      "S-S-U": {"fanout": (4, 3), "hop": "knn"}, "S-U-U": {"fanout": (3, 2),
                                                                            "hop": "graph"},
                      "S-U": {"weight": 0.5}, "U-S": {"enabled": False}}},
    "graph-hops-only": {"graph_weight": 0.3, "metapaths": {
        m: {"hop": "graph"} for m in ("U-U-S", "U-S-S", "S-S-U", "S-U-U")}},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_metapath_matches_reference(inputs, tmp_path, name):
    graph, emb, _ = inputs
    cfg = ExpandConfig.model_validate(CONFIGS[name])
    meta = expand(graph, emb, tmp_path / "bundle", cfg)
    _check_against_reference(tmp_path / "bundle", Reference(graph, emb, cfg), cfg, graph)
    for ntype in ("user", "streamer"):
        for mp, stats in meta["expansions"][ntype].items():
            assert stats["max_length"] <= (cfg.topk if mp == "merged" else cfg.cap(mp))


def test_caps_and_exclusion_hold(inputs, tmp_path):
    graph, emb, _ = inputs
    cfg = ExpandConfig(topk=4, exclude_history=True, min_score=0.01)
    expand(graph, emb, tmp_path / "b", cfg)
    g = load_graph(graph)
    history = defaultdict(set)
    for u, s in zip(g.edges["gift"].src, g.edges["gift"].dst):
        history[int(u) + 1000].add(int(s) + 10000)
    rows = pq.read_table(tmp_path / "b" / "expansions" / "user").to_pylist()
    assert rows
    for r in rows:
        assert 1 <= len(r["targets"]) <= 4 and min(r["scores"]) >= 0.01
        assert r["scores"] == sorted(r["scores"], reverse=True)
        if r["metapath"] != "U-S":
            assert not set(r["targets"]) & history[r["user_id"]], r


def test_nodes_without_history_get_knn_expansions(inputs, tmp_path):
    graph, emb, truth = inputs
    expand(graph, emb, tmp_path / "b", ExpandConfig())
    g = load_graph(graph)
    cold_streamers = np.flatnonzero(g.node_columns["streamer"]["n_gifters"] == 0)
    cold_users = np.setdiff1d(np.arange(g.num_nodes("user")), g.edges["gift"].src)
    assert len(cold_streamers) and len(cold_users)
    s_rows = _bundle_rows(tmp_path / "b", "streamer")
    u_rows = _bundle_rows(tmp_path / "b", "user")
    for s in cold_streamers:
        assert (s + 10000, "S-U") not in s_rows
        assert len(s_rows[s + 10000, "S-S-U"]["targets"]) > 0
    covered = [u for u in cold_users if (u + 1000, "U-U-S") in u_rows]
    assert len(covered) == len(cold_users)
    # kNN neighbours share the planted topic, so do their streamers, mostly
    same = [truth["streamer_topic"][t - 10000] == truth["user_topic"][u]
            for u in covered for t in u_rows[u + 1000, "merged"]["targets"][:5]]
    assert np.mean(same) > 0.6
