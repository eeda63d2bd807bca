"""generate -> three nights of build -> train -> expand (the fused ranking learned from the
previous nights) -> evaluate, at tiny sizes, through the stage APIs; and day D+1 never
reaches the bundle of D."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from gie.config import PipelineConfig
from gie.evaluate.rawdata import day_start_ms, next_day_available
from gie.layout import WorkLayout
from graphbuild.dataset import load_graph

NIGHTS = ("2025-05-03", "2025-05-04", "2025-05-05")
D, LABEL_DAY = NIGHTS[-1], "2025-05-06"
CFG = {"build": {"window_days": 5}, "train": {"epochs": 1, "min_valid_auc": 0.0},
       "evaluate": {"downstream": {"seeds": 1, "epochs": 1, "max_train_samples": 1000,
                                   "max_test_samples": 1000}}}


def _same_bundle(a, b) -> None:
    for ntype in ("user", "streamer"):
        ta, tb = (pq.read_table(x / "expansions" / ntype) for x in (a, b))
        assert ta.equals(tb), ntype
    for f in sorted(p.name for p in (a / "ranker").iterdir()):
        assert (a / "ranker" / f).read_bytes() == (b / "ranker" / f).read_bytes(), f


@pytest.fixture(scope="module")
def chain(tmp_path_factory, spark):
    from gie.expand.run import expand
    from gie.train.run import train
    from graphbuild.job import run_build
    from graphbuild.synthetic import GenConfig, generate

    tmp = tmp_path_factory.mktemp("e2e")
    raw, work = tmp / "raw", WorkLayout(tmp / "work")
    generate(raw, GenConfig(users=1500, streamers=150, days=6, seed=0))
    cfg = PipelineConfig.model_validate(CFG)
    metas = {}
    for i, date in enumerate(NIGHTS):
        run_build(raw, work.work / "graph", date, cfg.build, spark=spark)
        train(work.graph(date), work.model(date), cfg.train, seed=0)
        previous = [(work.graph(d), work.model(d) / "embeddings") for d in reversed(NIGHTS[:i])]
        metas[date] = expand(work.graph(date), work.model(date) / "embeddings",
                             work.bundle(date), cfg.expand, learn_from=previous)
    return raw, work, cfg, metas


@pytest.mark.slow
def test_three_nights_learn_the_fused_ranking_and_the_report_judges_it(chain):
    from gie.evaluate.run import evaluate

    raw, work, cfg, metas = chain
    first, second, third = (metas[d]["fusion"] for d in NIGHTS)
    assert first["learned"] is False and "first night" in first["reason"]
    assert first["user"]["explore"]["kind"] == "fixed"
    assert second["learned"] and "of the label nodes" in second["held_out"]
    assert third["learned"] and third["held_out"] == "newest night"
    assert [n["date"] for n in third["learned_from"]] == [NIGHTS[1], NIGHTS[0]]
    for ntype in ("user", "streamer"):
        for kind in ("merged", "explore"):
            desc = third[ntype][kind]
            assert desc["kind"] in ("learned", "source", "fixed"), desc
            if desc["kind"] != "fixed":
                held = desc["held_out"]["recall@50"]
                published = held["fused"] if desc["kind"] == "learned" else held[desc["source"]]
                assert published >= held[desc["best_source"]]

    assert next_day_available(raw, D)
    m = evaluate(raw, work.work, D, cfg.evaluate, seed=0)
    saved = json.loads((work.report(D) / "metrics.json").read_text())
    assert saved["retrieval"] == m["retrieval"]
    assert m["counts"]["evaluated_users"] > 20 and m["counts"]["evaluated_streamers"] > 5
    assert {"U-S", "U-U-S", "U-S-S", "U-W-S", "U-knn-S", "merged", "explore"} \
        <= set(m["methods"]["gie"])
    assert {"S-U", "S-W-U", "merged", "explore"} <= set(m["streamer_methods"]["gie"])
    explore, overall = m["retrieval"]["explore"], m["retrieval"]["overall"]
    assert explore["U-S"]["recall@50"] == 0.0 < explore["explore"]["recall@50"]
    assert overall["merged"]["recall@50"] >= overall["history"]["recall@50"] > 0
    assert m["oracle"]["recall@50"] > 0 and m["fusion"]["learned"]
    assert set(m["targets"]) >= {"explore_recall", "new_streamer_recall", "merged_recall",
                                 "fused_vs_sources", "embeddings_vs_popularity"}
    assert m["targets"]["fused_vs_sources"]["met"] is True
    assert m["link_prediction"]["all"]["auc"] > 0.5
    md = (work.report(D) / "report.md").read_text()
    assert "## Fused ranking" in md and "Streamer side: first-time gifters" in md


@pytest.mark.slow
def test_explore_holds_no_history_and_merged_caps_it(chain):
    _, work, cfg, _ = chain
    g = load_graph(work.graph(D), edge_types=("gift",))
    history: dict[int, set[int]] = {}
    for u, s in zip(g.edges["gift"].src, g.edges["gift"].dst):
        history.setdefault(int(g.raw_ids["user"][u]), set()).add(int(g.raw_ids["streamer"][s]))
    rows = pq.read_table(work.bundle(D) / "expansions" / "user").to_pylist()
    fused = [r for r in rows if r["metapath"] in ("merged", "explore")]
    assert len(fused) == 2 * g.num_nodes("user")
    for r in fused:
        n_own = len(set(r["targets"]) & history.get(r["user_id"], set()))
        assert n_own <= (0 if r["metapath"] == "explore" else cfg.expand.fusion.max_history)


@pytest.mark.slow
def test_local_workers_learn_and_publish_the_same_bundle(chain, tmp_path, monkeypatch, capfd,
                                                       caplog):
    """The nights' training sets in two processes, two shards, the fits one after the other:
    the same bundle. The two shards build today's view parts and compile the models once
    between them. A worker or fit process that dies fails the run."""
    import re

    from gie.errors import GieError
    from gie.expand.run import expand

    raw, work, cfg, metas = chain
    previous = [(work.graph(d), work.model(d) / "embeddings") for d in reversed(NIGHTS[:2])]
    two = cfg.expand.model_copy(deep=True, update={"workers": 2})
    two.fusion.learn.workers = 2
    two.fusion.learn.fit_processes = 1         # the chain's bundle fitted in two processes
    two.fusion.compile_above = 0               # (compiled code: the same scores)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="gie.expand.once"):
        expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "w2", two,
               learn_from=previous)
    logs = {"shard 0": caplog.text, "shard 1": capfd.readouterr().err}
    piece = r"(night \S+'s \w+|model \S+)"
    built = [x for text in logs.values() for x in re.findall(piece + " built in", text)]
    pieces = {f"night {D}'s relations", f"night {D}'s vectors"} | {
        f"model {t}-{k}" for t in ("user", "streamer") for k in ("merged", "explore")}
    assert sorted(built) == sorted(pieces)     # each once, by one shard or the other
    for text in logs.values():                 # and every shard has every piece
        assert len(re.findall(piece + " (built in|read, built by another)", text)) == 6
    a, b = work.bundle(D), tmp_path / "w2"
    for f in sorted(p.name for p in (a / "ranker").iterdir()):
        assert (a / "ranker" / f).read_bytes() == (b / "ranker" / f).read_bytes(), f
    for ntype, key in (("user", "user_id"), ("streamer", "streamer_id")):
        ta, tb = (pq.read_table(x / "expansions" / ntype).sort_by(
            [(key, "ascending"), ("metapath", "ascending")]) for x in (a, b))
        assert ta.equals(tb), ntype
    # A night's worker that dies fails the run: nothing is published. (Its own folder: the
    # training sets cached beside w2 would spare it the workers.)
    monkeypatch.setenv("GIE_FAILPOINT", "expand-local-worker")
    with pytest.raises(GieError, match="worker of night 0 exited with -9"):
        expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "fail" / "b", two,
               learn_from=previous)
    assert not (tmp_path / "fail" / "b").exists()
    assert not [p for p in (tmp_path / "fail").iterdir() if p.name.startswith(".staging-")]
    # So does the streamer side's fit process (the sets now come from w2's cache).
    two.fusion.learn.fit_processes = 2
    with pytest.raises(GieError, match="fit process of the streamer side exited with -9"):
        expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "w3", two,
               learn_from=previous)
    assert not (tmp_path / "w3").exists()


@pytest.mark.slow
def test_older_nights_are_learned_from_while_label_nodes_are_few(chain, tmp_path, spark):
    """`learn.nights` at least, then older nights up to `max_nights` until each node type has
    `min_label_nodes`; the same bundle when the first nights are built by local workers."""
    from gie.expand.run import expand
    from gie.train.run import train
    from graphbuild.job import run_build

    raw, work, cfg, _ = chain
    older = "2025-05-02"                # built and trained only, as a backfill would
    run_build(raw, work.work / "graph", older, cfg.build, spark=spark)
    train(work.graph(older), work.model(older), cfg.train, seed=0)
    previous = [(work.graph(d), work.model(d) / "embeddings")
                for d in (NIGHTS[1], NIGHTS[0], older)]

    def run(name: str, **learn) -> list[str]:
        c = cfg.expand.model_copy(deep=True)
        c.fusion.learn = c.fusion.learn.model_copy(update=learn)
        meta = expand(work.graph(D), work.model(D) / "embeddings", tmp_path / name / "b", c,
                      learn_from=previous)      # a folder each: no training sets cached
        return [n["date"] for n in meta["fusion"]["learned_from"]]

    every = [NIGHTS[1], NIGHTS[0], older]
    assert run("few", nights=1, min_label_nodes=10**9) == every
    assert run("enough", nights=1, min_label_nodes=0) == [NIGHTS[1]]
    assert run("capped", nights=1, max_nights=2, min_label_nodes=10**9) == every[:2]
    assert run("workers", nights=2, workers=2, min_label_nodes=10**9) == every
    _same_bundle(tmp_path / "few" / "b", tmp_path / "workers" / "b")


@pytest.mark.slow
def test_learned_nights_come_from_the_cache_with_the_same_bundle(chain, tmp_path, caplog):
    """The chain ran its nights in order, so night D read the training sets that night D-1
    had built for D-2, and built only D-1's, from the relations and streamer vectors that
    D-1's own run kept in `_views/`; without either cache (and with compiled models,
    which these sizes do not compile by default, and learned before the kNN search instead
    of beside it) the bundle is the same. A changed input of a night is a miss: built again,
    and its older file removed."""
    from gie.expand.run import SETS_CACHE, expand
    from gie.expand.viewcache import VIEWS_CACHE

    _, work, cfg, metas = chain
    cache = work.work / "bundle" / SETS_CACHE
    assert sorted(p.name[3:13] for p in cache.glob("*.npz")) == [NIGHTS[0], NIGHTS[1]]
    views = work.work / "bundle" / VIEWS_CACHE
    assert sorted(p.name[3:13] for p in views.glob("*.npz")) == [NIGHTS[1]] * 2 + [D] * 2
    assert [n["date"] for n in metas[D]["fusion"]["learned_from"]] == [NIGHTS[1], NIGHTS[0]]
    previous = [(work.graph(d), work.model(d) / "embeddings") for d in (NIGHTS[1], NIGHTS[0])]
    off = cfg.expand.model_copy(deep=True)
    off.fusion.learn.cache = off.fusion.learn.cache_views = False
    off.fusion.compile_above = 0
    off.fusion.learn.beside_knn = False                 # learned before the kNN: the same
    expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "off" / "b", off,
           learn_from=previous)
    _same_bundle(work.bundle(D), tmp_path / "off" / "b")
    assert not (tmp_path / "off" / SETS_CACHE).exists()
    assert not (tmp_path / "off" / VIEWS_CACHE).exists()

    # Night D-1's sets built again, from the view its own run kept: the same bundle.
    shutil.copytree(views, tmp_path / "views" / VIEWS_CACHE)
    sets_off = cfg.expand.model_copy(deep=True)
    sets_off.fusion.learn.cache = False
    with caplog.at_level(logging.INFO, logger="gie.expand.viewcache"):
        expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "views" / "b",
               sets_off, learn_from=previous)
    assert f"night {NIGHTS[1]}'s relations and vectors read" in caplog.text
    _same_bundle(work.bundle(D), tmp_path / "views" / "b")
    caplog.clear()

    mine = tmp_path / "on" / SETS_CACHE
    shutil.copytree(cache, mine)                        # (copy2 keeps the mtimes: still hits)
    emb0 = tmp_path / "emb0"                            # same vectors, new files: a miss
    shutil.copytree(work.model(NIGHTS[0]) / "embeddings", emb0, copy_function=shutil.copy)
    before = {p.name: p.stat().st_mtime_ns for p in mine.glob("*.npz")}
    expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "on" / "b", cfg.expand,
           learn_from=[previous[0], (work.graph(NIGHTS[0]), emb0)])
    after = {p.name: p.stat().st_mtime_ns for p in mine.glob("*.npz")}
    kept = [f for f in before if f[3:13] == NIGHTS[1]]
    assert after[kept[0]] == before[kept[0]]            # read, not built again
    new = set(after) - set(before)
    assert len(after) == 2 and len(new) == 1 and next(iter(new))[3:13] == NIGHTS[0]
    assert len(list(mine.glob("*.json"))) == 2
    _same_bundle(work.bundle(D), tmp_path / "on" / "b")

    # A cached file whose rows no longer read back (its label counts still do, so it is
    # found, then fails when the fit reads it) is built again: the same bundle.
    bad = mine / kept[0]
    raw = bytearray(bad.read_bytes())
    middle = len(raw) // 2                              # inside the feature rows
    raw[middle:middle + 64] = bytes(64)
    bad.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="gie.expand.run"):
        expand(work.graph(D), work.model(D) / "embeddings", tmp_path / "on" / "b2",
               cfg.expand, learn_from=[previous[0], (work.graph(NIGHTS[0]), emb0)])
    assert "cached training sets are unreadable" in caplog.text
    assert bad.read_bytes() != bytes(raw)               # rebuilt in place
    _same_bundle(work.bundle(D), tmp_path / "on" / "b2")


@pytest.mark.slow
def test_day_after_d_never_reaches_the_bundle(chain, tmp_path, spark):
    """Change the gifts of D+1: the graph of D, and so the bundle of D, do not change."""
    from gie.expand.run import expand
    from graphbuild.job import run_build

    raw, work, cfg, _ = chain
    other_raw = tmp_path / "raw"
    shutil.copytree(raw, other_raw)
    gifts = pq.read_table(other_raw / "gift.parquet").to_pandas()
    after = gifts["timestamp"] >= day_start_ms(LABEL_DAY)
    assert after.any()
    changed = gifts[~after | (np.arange(len(gifts)) % 3 == 0)].copy()
    changed.loc[changed["timestamp"] >= day_start_ms(LABEL_DAY), "streamer_id"] = \
        int(gifts["streamer_id"].min())
    changed.to_parquet(other_raw / "gift.parquet", index=False)

    other = WorkLayout(tmp_path / "work")
    shutil.copytree(work.graph(NIGHTS[1]), other.graph(NIGHTS[1]))   # the id map to extend
    run_build(other_raw, other.work / "graph", D, cfg.build, spark=spark)
    for part in ("nodes/user", "nodes/streamer", "edges/gift", "edges/watch", "edges/s2s",
                 "edges/u2u"):
        a = pads.dataset(work.graph(D) / part).to_table()
        b = pads.dataset(other.graph(D) / part).to_table()
        keys = [("node_id", "ascending")] if part.startswith("nodes") else \
            [("src", "ascending"), ("dst", "ascending")]
        assert a.sort_by(keys).equals(b.sort_by(keys)), part
    previous = [(work.graph(d), work.model(d) / "embeddings") for d in reversed(NIGHTS[:2])]
    expand(other.graph(D), work.model(D) / "embeddings", other.bundle(D), cfg.expand,
           learn_from=previous)
    _same_bundle(work.bundle(D), other.bundle(D))
