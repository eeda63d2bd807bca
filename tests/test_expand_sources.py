"""Every candidate source and the first-night fused sequences against a plain brute-force
reference written with dicts and loops (docs/BUNDLE.md "Scoring" and "Fusion")."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest

from gie.embeddings import read_embeddings
from gie.expand.config import ExpandConfig
from gie.expand import relations as R
from gie.expand.features import TOPIC_SEED, topic_clusters, streamer_content, topic_vectors
from gie.expand.run import KNN_STEP, _load_inputs, _neighbours, expand
from gie.expand.sources import Relations, knn_relation
from graphbuild.dataset import load_graph
from tests.expand_helpers import make_inputs

STEPS = {"U-S": ("US",), "U-U-S": ("UU", "US"), "U-S-S": ("US", "SS"), "U-W-S": ("UW",),
         "U-W-S-S": ("UW", "SS"), "U-s2s-S": ("US", "SS"),
         "S-U": ("SU",), "S-S-U": ("SS", "SU"), "S-U-U": ("SU", "UU"), "S-W-U": ("WU",),
         "S-S-W-U": ("SS", "WU"), "S-u2u-U": ("SU", "UU")}
CROSS = {"U-knn-S": "user", "S-knn-U": "streamer"}
ALL = {"user": ["U-S", "U-U-S", "U-S-S", "U-W-S", "U-W-S-S", "U-knn-S", "U-s2s-S"],
       "streamer": ["S-U", "S-S-U", "S-U-U", "S-W-U", "S-S-W-U", "S-knn-U", "S-u2u-U"]}
PRIORS = {"user": ["POP", "NEW"], "streamer": ["ACT"]}
OTHER = {"user": "streamer", "streamer": "user"}
STEP_COLS = {"US": "streamer", "SU": "user", "UW": "streamer", "WU": "user", "UU": "user",
             "SS": "streamer"}


def _normalised(rows):
    return {a: {b: w / sum(nb.values()) for b, w in nb.items()} for a, nb in rows.items() if nb}


def _top(row, k, raw):
    return dict(sorted(row.items(), key=lambda t: (-t[1], raw[t[0]]))[:k])


class Reference:
    """Scores as documented in docs/BUNDLE.md, computed the slow obvious way."""

    def __init__(self, graph_path, emb_path, cfg: ExpandConfig):
        g = load_graph(graph_path)
        self.g, self.cfg, self.raw, self.steps = g, cfg, g.raw_ids, {}
        self.rel = {}
        for fwd, back, etype in (("US", "SU", "gift"), ("UW", "WU", "watch")):
            rows, rev = defaultdict(dict), defaultdict(dict)
            e = g.edges[etype]
            for u, s, w in zip(e.src, e.dst, e.data["weight"]):
                rows[int(u)][int(s)] = float(w)
                rev[int(s)][int(u)] = float(w)
            self.rel[fwd, "graph"], self.rel[back, "graph"] = _normalised(rows), _normalised(rev)
        self.history = {"user": {u: set(r) for u, r in self.rel["US", "graph"].items()},
                        "streamer": {s: set(r) for s, r in self.rel["SU", "graph"].items()}}
        self.vec = {}
        for step, etype, ntype in (("UU", "u2u", "user"), ("SS", "s2s", "streamer")):
            e = g.edges[etype]
            rows = defaultdict(dict)
            for a, b, w in zip(e.src, e.dst, e.data["score"]):
                if a != b and w > 0:
                    rows[int(a)][int(b)] = float(w)
            self.rel[step, "graph"] = _normalised(rows)
            _, vec = read_embeddings(emb_path, ntype)
            self.vec[ntype] = vec / np.linalg.norm(vec, axis=1, keepdims=True)
            sims = self.vec[ntype] @ self.vec[ntype].T
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

        self._topics()

    def _topics(self):
        """TOPIC: a user's soft share of each topic cluster (their distinct gifted streamers'
        memberships summed, pseudo-count 0.5 spread evenly), a streamer's share of each
        cluster's daily audience; lists by cluster, candidates rescored with the whole sum."""
        g, f = self.g, self.cfg.fusion
        basis = topic_vectors(g, streamer_content(g, f.content_smooth_k, f.content_reference),
                              f.topic_basis, f.topic_audience_dim)
        member = topic_clusters(basis, f.topic_clusters, f.topic_temperature, TOPIC_SEED)
        n = member.shape[1]
        win = g.metadata["window"]
        sc = g.node_columns["streamer"]
        audience = []
        for s in range(len(member)):
            days = (win["end_ms"] - sc["first_seen_ts"][s]) / 86_400_000
            days = min(max(days, 1.0), max((win["end_ms"] - win["start_ms"]) / 86_400_000, 1.0))
            audience.append((float(sc["n_clicks"][s]) + float(sc["n_gifts"][s])) / days)
        mass = [sum(float(member[s, c]) * audience[s] for s in range(len(member)))
                for c in range(n)]
        # stored as float32, like the features
        aud = {s: [float(np.float32(float(member[s, c]) * (audience[s] / mass[c])))
                   for c in range(n)] for s in range(len(member)) if member[s].any()}

        counts = {}          # per user: soft counts per cluster, held as float32 (as the code)
        for u in range(g.num_nodes("user")):
            own = sorted(self.history["user"].get(u, set()))
            counts[u] = np.array([sum(float(member[s, c]) for s in own) for c in range(n)],
                                 np.float32)

        def share(u, c):
            return (float(counts[u][c]) + 0.5 / n) / (float(counts[u].sum()) + 0.5)

        def score(u, s):
            return sum(share(u, c) * aud[s][c] for c in range(n))

        self.topic_lists = {"user": {}, "streamer": {}}
        raw_s, raw_u = self.raw["streamer"], self.raw["user"]
        gifts = g.node_columns["user"]["n_gifts"]
        hist_len = {t: lambda x, t=t: len(self.history[t].get(x, set())) for t in self.history}
        for u in range(g.num_nodes("user")):
            likeliest = sorted(range(n), key=lambda c: (-np.float64(share(u, c)), -mass[c], c))
            cands = set()
            for c in likeliest[:f.topic_source_clusters]:
                by = sorted(aud, key=lambda s: (-np.float32(aud[s][c]), raw_s[s]))
                cands |= set(by[:f.depth + hist_len["user"](u)])
            ranked = sorted(cands, key=lambda s: (-np.float32(score(u, s)), raw_s[s]))
            self.topic_lists["user"][u] = ranked
        for s in aud:
            c = int(np.argmax(member[s]))
            by = sorted([u for u in range(g.num_nodes("user")) if gifts[u] > 0],
                        key=lambda u: (-np.float64(share(u, c) * gifts[u]), raw_u[u]))
            cands = by[:f.depth + hist_len["streamer"](s)]
            self.topic_lists["streamer"][s] = sorted(
                cands, key=lambda u: (-np.float32(score(u, s) * gifts[u]), raw_u[u]))

    def step(self, name, hop, fanout):
        """Top-`fanout` neighbours per row, ties broken by raw id."""
        key = (name, hop, fanout)
        if key not in self.steps:
            rel = self.rel[name, hop if name in ("UU", "SS") else "graph"]
            self.steps[key] = {a: _top(row, fanout, self.raw[STEP_COLS[name]])
                               for a, row in rel.items()}
        return self.steps[key]

    def candidates(self, mp, ntype, node):
        """{target: (score, {via: contribution})} before caps."""
        mcfg = self.cfg.metapaths[mp]
        if mp in CROSS:
            other = OTHER[ntype]
            sims = self.vec[other] @ self.vec[ntype][node]
            k = max(self.cfg.fusion.depth, self.cfg.cap("U-knn-S"), self.cfg.cap("S-knn-U"))
            k += min(len(self.history[ntype].get(node, set())), self.cfg.fusion.depth)
            order = sorted(range(len(sims)), key=lambda t: (-np.float32(sims[t]),
                                                            self.raw[other][t]))[:k]
            own = self.history[ntype].get(node, set()) if self.cfg.exclude_history else set()
            return {t: (float(sims[t]), {node: float(sims[t])}) for t in order
                    if sims[t] > 0 and t not in own}
        steps = STEPS[mp]
        own = self.history[ntype].get(node, set())
        if len(steps) == 1:
            row = self.rel[steps[0], "graph"].get(node, {})
            out = {t: (w, {node: w}) for t, w in row.items()}
            return {t: v for t, v in out.items() if t not in own} if "-W-" in mp else out
        hop = "graph" if mp in ("U-s2s-S", "S-u2u-U") else mcfg.hop
        first = self.step(steps[0], hop, mcfg.fanout[0])
        second = self.step(steps[1], hop, mcfg.fanout[1])
        out = {}
        for mid, a in first.get(node, {}).items():
            for t, b in second.get(mid, {}).items():
                score, vias = out.get(t, (0.0, {}))
                vias[mid] = a * b
                out[t] = (score + a * b, vias)
        if self.cfg.exclude_history:
            out = {t: v for t, v in out.items() if t not in own}
        return out

    def via_raw(self, mp, ntype, m):
        steps = STEPS.get(mp, ())
        kind = ntype if len(steps) != 2 else STEP_COLS[steps[0]]
        return int(self.raw[kind][m])

    def best_vias(self, mp, ntype, vias):
        """Raw ids of the intermediate(s) of the highest-contributing path (several on ties)."""
        best = max(vias.values())
        return {self.via_raw(mp, ntype, m) for m, c in vias.items() if c >= best - 1e-12 * best}

    def ranked(self, mp, ntype, node, cap):
        """[(target, score, allowed via raw ids)] best first (float32 score, raw id)."""
        target_raw = self.raw[OTHER[ntype]]
        cands = [(t, s, self.best_vias(mp, ntype, v))
                 for t, (s, v) in self.candidates(mp, ntype, node).items()
                 if s >= self.cfg.min_score]
        cands.sort(key=lambda x: (-np.float32(x[1]), target_raw[x[0]]))
        return cands[:cap]

    def prior(self, name):
        g, raw = self.g, self.raw
        gift = g.edges["gift"]
        if name == "ACT":
            score = np.bincount(gift.src, weights=gift.data["count"], minlength=len(raw["user"]))
            ids = raw["user"]
        else:
            n = len(raw["streamer"])
            if name == "POP":
                score = np.bincount(gift.dst, weights=gift.data["count"], minlength=n)
            else:
                reach = np.bincount(gift.dst, minlength=n) + np.bincount(
                    g.edges["watch"].dst, minlength=n)
                end = g.metadata["window"]["end_ms"]
                fresh = g.node_columns["streamer"]["first_seen_ts"] >= \
                    end - self.cfg.fusion.fresh_days * 86_400_000
                score = np.where(fresh, reach, 0)
            ids = raw["streamer"]
        return sorted(np.flatnonzero(score > 0), key=lambda t: (-score[t], ids[t]))

    def fused(self, kind, ntype, node):
        """Fixed-weight fusion: sum over sources of w / (rrf_k + rank); [(target, score,
        source, allowed vias)] best first, with the history rules of each sequence."""
        cfg, f = self.cfg, self.cfg.fusion
        pool = {}
        own = self.history[ntype].get(node, set())
        enabled = [s for s in ALL[ntype] if cfg.metapaths[s].enabled]
        for src in enabled + PRIORS[ntype] + ["TOPIC"]:
            if src in PRIORS[ntype] or src == "TOPIC":
                lst = self.prior(src) if src != "TOPIC" else self.topic_lists[ntype].get(node, [])
                lst = [(t, None, {int(self.raw[ntype][node])}) for t in lst]
                w = f.prior_weight
            else:
                lst = self.ranked(src, ntype, node, 10**9)
                w = cfg.metapaths[src].weight
            if src not in ("U-S", "S-U"):       # every source but the history: outside it
                lst = [x for x in lst if x[0] not in own]
            for rank, (t, _, vias) in enumerate(lst[: f.depth], start=1):
                total, best = pool.get(t, (0.0, None))
                total += w / (f.rrf_k + rank) if w > 0 else 0.0
                if best is None or rank < best[0]:
                    best = (rank, src, vias)
                pool[t] = (total, best)
        target_raw = self.raw[OTHER[ntype]]
        items = [(t, s, b[1], b[2]) for t, (s, b) in pool.items() if s > 0
                 and not (kind == "explore" and t in own)]
        items.sort(key=lambda x: (-np.float32(x[1]), target_raw[x[0]]))
        out, n_hist = [], 0
        for item in items:
            if item[0] in own:
                n_hist += 1
                if n_hist > f.max_history:
                    continue
            out.append(item)
        return out[: cfg.topk]


def _bundle_rows(bundle, ntype):
    col = "user_id" if ntype == "user" else "streamer_id"
    return {(r[col], r["metapath"]): r
            for r in pq.read_table(bundle / "expansions" / ntype).to_pylist()}


def _check_against_reference(bundle, ref: Reference, cfg: ExpandConfig):
    g = ref.g
    checked = 0
    for ntype in ("user", "streamer"):
        rows = _bundle_rows(bundle, ntype)
        target_raw = g.raw_ids[OTHER[ntype]]
        for node in range(g.num_nodes(ntype)):
            raw_node = int(g.raw_ids[ntype][node])
            for mp in [s for s in ALL[ntype] if cfg.metapaths[s].enabled] + ["merged", "explore"]:
                if mp in ("merged", "explore"):
                    want = [(t, s, {src}, v) for t, s, src, v in ref.fused(mp, ntype, node)]
                else:
                    want = [(t, s, {mp}, v) for t, s, v in ref.ranked(mp, ntype, node,
                                                                     cfg.cap(mp))]
                got = rows.get((raw_node, mp))
                if not want:
                    assert got is None, (ntype, node, mp)
                    continue
                assert got is not None, (ntype, node, mp)
                assert got["targets"] == [int(target_raw[t]) for t, *_ in want], (ntype, node, mp)
                np.testing.assert_allclose(got["scores"], [w[1] for w in want], rtol=1e-5, atol=1e-6)
                for (t, _, sources, vias), via, source in zip(want, got["via"], got["source"]):
                    assert source in sources and via in vias, (ntype, node, mp, t, via, vias)
                checked += 1
    assert checked > 1000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("expand-ref"))


CONFIGS = {
    "defaults": {},
    "small-fanout-exclude-caps": {
        "exclude_history": True, "min_score": 0.002, "topk": 7, "knn_k": 6,
        "fusion": {"depth": 9, "max_history": 2, "rrf_k": 5.0, "prior_weight": 2.0},
        "metapaths": {"U-U-S": {"fanout": (3, 2), "topk": 5}, "U-S-S": {"fanout": (2, 3)},
                      "S-S-U": {"fanout": (4, 3), "hop": "knn"}, "S-U-U": {"fanout": (3, 2),
                                                                            "hop": "graph"},
                      "U-W-S-S": {"fanout": (2, 2), "weight": 3.0},
                      "S-U": {"weight": 0.5}, "U-S": {"enabled": False},
                      "U-knn-S": {"topk": 3, "weight": 0.0}}},
    "graph-hops-only-no-topics": {
        "graph_weight": 0.3, "fusion": {"topic_clusters": 0},
        "metapaths": {m: {"hop": "graph"} for m in ("U-U-S", "U-S-S", "S-S-U", "S-U-U",
                                                    "U-W-S-S", "S-S-W-U")}},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_source_and_the_fixed_fusion_match_the_reference(inputs, tmp_path, name,
                                                              monkeypatch):
    from gie.expand import features
    graph, emb, _ = inputs
    monkeypatch.setattr(features, "FILL_BLOCK", 7)     # the candidate table's block fill too
    cfg = ExpandConfig.model_validate(CONFIGS[name])
    meta = expand(graph, emb, tmp_path / "bundle", cfg)
    _check_against_reference(tmp_path / "bundle", Reference(graph, emb, cfg), cfg)
    assert meta["fusion"]["learned"] is False and "first night" in meta["fusion"]["reason"]
    for ntype in ("user", "streamer"):
        for mp, stats in meta["expansions"][ntype].items():
            assert stats["max_length"] <= (cfg.topk if mp in ("merged", "explore")
                                           else cfg.cap(mp))


def test_caps_history_rules_and_explore(inputs, tmp_path):
    graph, emb, _ = inputs
    cfg = ExpandConfig(topk=6, exclude_history=True, min_score=0.01,
                       fusion={"max_history": 1})
    expand(graph, emb, tmp_path / "b", cfg)
    g = load_graph(graph)
    history = defaultdict(set)
    for u, s in zip(g.edges["gift"].src, g.edges["gift"].dst):
        history[int(g.raw_ids["user"][u])].add(int(g.raw_ids["streamer"][s]))
    rows = pq.read_table(tmp_path / "b" / "expansions" / "user").to_pylist()
    assert rows
    for r in rows:
        hist = history[r["user_id"]]
        assert 1 <= len(r["targets"]) <= 6
        if r["metapath"] in ("merged", "explore"):
            assert r["scores"] == sorted(r["scores"], reverse=True)
            n_hist = len(set(r["targets"]) & hist)
            assert n_hist == 0 if r["metapath"] == "explore" else n_hist <= 1, r
            continue
        assert min(r["scores"]) >= 0.01 and r["scores"] == sorted(r["scores"], reverse=True)
        if r["metapath"] != "U-S":
            assert not set(r["targets"]) & hist, r


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
            for u in covered for t in u_rows[u + 1000, "explore"]["targets"][:5]]
    assert np.mean(same) > 0.6


def test_a_batch_mixes_its_own_rows_into_the_same_bits_as_the_whole_relation(inputs):
    graph, emb_dir, _ = inputs
    data, emb = _load_inputs(graph, emb_dir)
    cfg = ExpandConfig()
    _, knn = _neighbours(data, emb, cfg, 0, {})
    knn = {KNN_STEP[t]: knn_relation(*knn[t], cfg.knn_k) for t in knn}
    whole = Relations(data, knn, cfg.graph_weight)
    rng = np.random.default_rng(3)
    for step in ("UU", "SS"):
        n = whole.get(step, "graph").n_rows
        for k in (2, 5, 50):
            rows = rng.integers(0, n, 40)                # repeats, any order
            batch = Relations(data, knn, cfg.graph_weight).gather(step, "both", k, rows)
            full = R.gather(whole.truncated(step, "both", k), rows)
            assert len(full[0]) > len(rows)
            for got, want in zip(batch, full):
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_row_pairs_drop_exactly_the_pairs_of_the_batch_rows():
    rng = np.random.default_rng(5)
    n_rows, n_cols = 300, 40
    src = rng.integers(0, n_rows, 2000)
    dst = rng.integers(0, n_cols, 2000)
    rel = R.from_pairs(src, dst, np.ones(len(src)), n_rows, n_cols)
    rows = rng.integers(0, n_rows, 64)                  # repeats, any order
    entries = {(i, int(c)) for i, r in enumerate(rows) for c in R.gather(rel, np.array([r]))[1]}
    row = rng.integers(0, len(rows), 5000)
    target = rng.integers(0, n_cols, 5000)
    c = R.Candidates(row, target, rng.random(5000), target)
    kept = R.drop_pairs(c, R.RowPairs.of(rel, rows))
    want = [(r, t) not in entries for r, t in zip(row.tolist(), target.tolist())]
    assert 0 < sum(want) < len(want)
    assert kept.row.tolist() == row[want].tolist() and kept.target.tolist() == target[want].tolist()
    # No entries in the batch's rows: nothing is dropped.
    assert len(R.drop_pairs(c, R.RowPairs.of(rel, rows[:0])).row) == len(row)


@pytest.mark.parametrize("shape", ["repeats", "graph edges", "transpose"])
def test_relations_order_each_row_by_weight_then_column_as_a_lexsort_does(shape):
    rng = np.random.default_rng(6)
    n_rows, n_cols = 500, 80
    src, dst = rng.integers(0, n_rows, 6000), rng.integers(0, n_cols, 6000)
    w = rng.choice([0.0, 0.25, 0.5, 1.0, 2.0], 6000)        # many ties, some dropped
    if shape != "repeats":                                  # distinct pairs in key order
        key = np.unique(src * n_cols + dst)
        src, dst, w = key // n_cols, key % n_cols, w[:len(key)]
    rel = R.from_pairs(src, dst, w, n_rows, n_cols)
    if shape == "transpose":
        rel, (src, dst) = R.transpose(rel), (dst, src)
        n_rows, n_cols = n_cols, n_rows
    sums = defaultdict(float)
    for s, d, x in zip(src.tolist(), dst.tolist(), w.tolist()):
        sums[s, d] += x
    want = sorted(((s, -x, d) for (s, d), x in sums.items() if x > 0))
    got = [(s, -x, d) for s, (d, x) in zip(np.repeat(np.arange(n_rows), rel.row_lengths()),
                                           zip(rel.indices, rel.data))]
    assert got == want
