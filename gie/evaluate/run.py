"""evaluate(): score the bundle of date D against the gifts of D+1, beside the baselines.

Reads <work>/graph/dt=D, <work>/bundle/dt=D and the raw gifts (and clicks) of D+1; writes
<work>/reports/dt=D/ (metrics.json, metadata.json, report.md, PNG plots), staged and
published atomically. Definitions of every figure: docs/EVALUATION.md.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

import gie
from gie import environment
from gie.config import dump_config
from gie.embeddings import read_embeddings
from gie.errors import BadInputError
from gie.evaluate import baselines as bl
from gie.evaluate.config import DownstreamConfig, EvalConfig
from gie.evaluate.downstream import run_downstream
from gie.evaluate.metrics import RankingMetrics, link_prediction
from gie.evaluate.rawdata import (DAY_MS, day_start_ms, has_table, next_date, next_day_available,
                                  read_days, to_node_ids)
from gie.evaluate.oracle import explore_ceiling
from gie.evaluate.report import find_regressions, previous_metrics, write_report
from gie.evaluate.targets import fusion_summary, targets
from gie.layout import WorkLayout, parse_date
from gie.progress import progress
from gie.publish import is_published, staged_output
from graphbuild.dataset import GraphData, load_graph
from graphbuild.schema import MERGED, SEQUENCES, expansion_schema

log = logging.getLogger(__name__)
REPORT_SCHEMA_VERSION = 2
BASELINES = {"user": ("popularity", "history", "swing", "emb_knn"),
             "streamer": ("active_gifters", "history", "user_cf", "emb_knn")}
SEGMENTS = {"user": ("overall", "explore", "new_streamers"), "streamer": ("overall", "explore")}


def read_expansions(bundle: Path, node_type: str = "user", sources: set[int] | None = None
                    ) -> dict[str, dict[int, list[int]]]:
    """metapath -> source raw id -> target raw ids (best first), of `sources` only when given
    (a 1M-user bundle as Python lists would not fit in memory). Every row read has its
    metapath checked."""
    folder = bundle / "expansions" / node_type
    schema = expansion_schema(node_type)
    key = schema.names[0]
    try:
        dataset = pads.dataset(folder, format="parquet")
        missing = [n for n in (key, "metapath", "targets") if n not in dataset.schema.names]
        if missing:
            raise BadInputError(f"expansions {folder} lack columns {missing} "
                                f"(schema: {schema.names})")
        wanted = None if sources is None else \
            pc.field(key).isin(pa.array(sorted(sources), pa.int64()))
        table = dataset.to_table(columns=[key, "metapath", "targets"], filter=wanted)
    except (pa.ArrowInvalid, OSError, FileNotFoundError) as e:
        raise BadInputError(f"cannot read expansions {folder}: {e}") from e
    unknown = sorted(set(pc.unique(table["metapath"]).to_pylist()) - set(SEQUENCES[node_type]))
    if unknown:
        raise BadInputError(f"expansions {folder}: unknown metapath(s) {unknown} for "
                            f"{node_type}s")
    out: dict[str, dict[int, list[int]]] = {}
    cols = table.to_pydict()
    for u, mp, targets in zip(cols[key], cols["metapath"], cols["targets"]):
        out.setdefault(mp, {})[u] = targets or []
    return out


def next_day_labels(raw: str, date: str, graph: GraphData) -> tuple[dict[int, set[int]], dict]:
    """User raw id -> streamer raw ids gifted on D+1, restricted to streamers in the graph."""
    gifts = read_days(raw, "gift", next_date(date), 1, ["user_id", "streamer_id"])
    known_s = to_node_ids(graph.raw_ids["streamer"], gifts["streamer_id"].to_numpy()) >= 0
    known_u = to_node_ids(graph.raw_ids["user"], gifts["user_id"].to_numpy()) >= 0
    kept = gifts[known_s]
    labels = {int(u): set(g.tolist()) for u, g in kept.groupby("user_id")["streamer_id"]}
    counts = {"next_day_gifts": len(gifts), "next_day_gifters": int(gifts["user_id"].nunique()),
              "gifts_to_unknown_streamers": int((~known_s).sum()),
              "gifts_by_unknown_users": int((~known_u).sum()),
              "evaluated_users": len(labels),
              "evaluated_pairs": int(sum(len(v) for v in labels.values()))}
    return labels, counts


def _score_lists(lists: dict[str, list[list[int]]], sources: list[int],
                 labels: dict[int, set[int]], history: dict[int, set[int]],
                 segments: tuple[str, ...], new: set[int], ks: list[int],
                 explore_lists: dict[str, list[list[int]]] | None = None) -> dict:
    """Per segment and method: ranking metrics averaged over sources, plus coverage. The
    explore segment reads `explore_lists[method]` where given (ranked without the history),
    else the method's list with the history removed."""
    kmax = max(ks)
    explore_lists = explore_lists or {}
    out: dict = {seg: {} for seg in segments}
    for method, per_source in progress(lists.items(), desc="retrieval metrics", leave=False):
        acc = {seg: RankingMetrics(ks) for seg in segments}
        covered = 0
        explore = explore_lists.get(method)
        for j, (u, ranked) in enumerate(zip(sources, per_source)):
            rel, hist = labels[u], history.get(u, set())
            covered += bool(len(ranked))
            acc["overall"].update(ranked, rel)
            acc["explore"].update(explore[j] if explore is not None else
                                  [s for s in ranked if s not in hist][:kmax], rel - hist)
            if "new_streamers" in acc:
                acc["new_streamers"].update(ranked, rel & new)
        for seg in segments:
            out[seg][method] = acc[seg].compute()
        out["overall"][method]["coverage"] = covered / len(sources) if sources else 0.0
    return out


def _link_prediction(graph: GraphData, labels: dict[int, set[int]], user_emb: np.ndarray,
                     streamer_emb: np.ndarray, n_neg: int, seed: int) -> dict:
    pairs = np.array([(u, s) for u in sorted(labels) for s in sorted(labels[u])], np.int64)
    if not len(pairs):
        return {"all": link_prediction(np.empty(0), np.empty((0, n_neg)))}
    u = to_node_ids(graph.raw_ids["user"], pairs[:, 0])
    s = to_node_ids(graph.raw_ids["streamer"], pairs[:, 1])
    gift = graph.edges["gift"]
    seen = set(zip(gift.src.tolist(), gift.dst.tolist()))
    is_new = np.array([(a, b) not in seen for a, b in zip(u.tolist(), s.tolist())])
    rng = np.random.default_rng(seed)
    neg = rng.integers(0, len(streamer_emb), (len(u), n_neg))
    pos_score = np.einsum("nd,nd->n", user_emb[u], streamer_emb[s])
    neg_score = np.concatenate([
        np.einsum("nmd,nd->nm", streamer_emb[neg[i:i + 1024]], user_emb[u[i:i + 1024]])
        for i in range(0, len(u), 1024)])
    return {"all": link_prediction(pos_score, neg_score),
            "new_edges": link_prediction(pos_score[is_new], neg_score[is_new])}


def _baseline_lists(rankers: dict[str, bl.ScoreFn], target_ids: np.ndarray,
                    source_nodes: np.ndarray, depth: int, history_matrix: sp.csr_matrix
                    ) -> tuple[dict[str, list[list[int]]], dict[str, list[list[int]]]]:
    """Raw target ids per source for every baseline, `depth` deep: ranked over every target,
    and ranked without the source's history (the explore segment)."""
    ranked, explore = {}, {}
    for name, score in rankers.items():
        full, cut = bl.top_k_lists_each(score, source_nodes, depth, len(target_ids),
                                        [None, history_matrix])
        ranked[name] = [target_ids[r].tolist() for r in full]
        explore[name] = [target_ids[r].tolist() for r in cut]
        log.info("baseline %s: %d ranked", name, sum(bool(len(r)) for r in full))
    return ranked, explore


def _histories(graph: GraphData, sources: list[int], ntype: str, history_matrix
               ) -> dict[int, set[int]]:
    """Raw source id -> the raw ids of its history (`history_matrix` rows), known sources."""
    other = "streamer" if ntype == "user" else "user"
    nodes = to_node_ids(graph.raw_ids[ntype], np.array(sources, np.int64))
    target_ids = graph.raw_ids[other]
    return {int(graph.raw_ids[ntype][n]): set(target_ids[history_matrix[n].indices].tolist())
            for n in nodes[nodes >= 0]}


def _side(graph: GraphData, expansions: dict, labels: dict[int, set[int]], ntype: str,
          rankers: dict[str, bl.ScoreFn], history_matrix, history: dict[int, set[int]],
          new: set[int], cfg: EvalConfig) -> dict:
    """Retrieval metrics of one side: every published sequence beside the baselines
    (`history`: the sources' `_histories` of `history_matrix`)."""
    other = "streamer" if ntype == "user" else "user"
    sources = sorted(labels)
    nodes = to_node_ids(graph.raw_ids[ntype], np.array(sources, np.int64))
    target_ids = graph.raw_ids[other]
    lists = {mp: [expansions[mp].get(u, []) for u in sources]
             for mp in SEQUENCES[ntype] if mp in expansions}
    ranked, explore = _baseline_lists(rankers, target_ids, nodes, max(cfg.ks), history_matrix)
    lists.update(ranked)
    return {"retrieval": _score_lists(lists, sources, labels, history, SEGMENTS[ntype], new,
                                      cfg.ks, explore),
            "methods": {"gie": [m for m in lists if m not in BASELINES[ntype]],
                        "baselines": list(BASELINES[ntype])},
            "history": history}


def _streamer_labels(labels: dict[int, set[int]]) -> dict[int, set[int]]:
    """Streamer raw id -> users who gifted it on D+1 (known users only)."""
    out: dict[int, set[int]] = {}
    for u, streamers in labels.items():
        for s in streamers:
            out.setdefault(s, set()).add(u)
    return out


def sample_sources(labels: dict[int, set[int]], cap: int, seed: int) -> dict[int, set[int]]:
    """At most `cap` of the labelled sources (a seeded uniform sample, ids in order): the
    metrics are means over sources, so a sample bounds the cost at any scale."""
    if len(labels) <= cap:
        return labels
    keys = np.array(sorted(labels), np.int64)
    picked = np.sort(np.random.default_rng(seed).choice(len(keys), cap, replace=False))
    return {int(u): labels[int(u)] for u in keys[picked]}


def _oracle_and_downstream(raw: str, date: str, bundle: str, labels: dict[int, set[int]],
                           history: dict[int, set[int]], k: int, cfg: DownstreamConfig | None,
                           seed: int) -> tuple[dict | None, float, dict | None, float]:
    """The oracle's exploration ceiling and the downstream ablation (None: skipped), each
    with its seconds: what runs in a process of its own beside the baselines."""
    t = time.time()
    oracle = explore_ceiling(raw, date, labels, history, k)
    t_oracle = time.time() - t

    def sequences_of(users: set[int]) -> list[dict[int, list[int]]]:
        found = read_expansions(Path(bundle), sources=users)
        return [found.get(q, {}) for q in cfg.sequences]

    t = time.time()
    downstream = None if cfg is None else run_downstream(raw, date, sequences_of, cfg, seed)
    return oracle, t_oracle, downstream, time.time() - t


def _child_setup(level: int) -> None:
    from gie.logs import setup_logging
    from gie.procs import die_with_parent, keep_freed_heap

    die_with_parent()
    keep_freed_heap()
    setup_logging(level <= logging.DEBUG)


def evaluate(raw: str | Path, work: str | Path, date: str, cfg: EvalConfig, seed: int = 0) -> dict:
    """Evaluate the bundle of `date`; publish and return the report's metrics."""
    parse_date(date)
    t_start = time.time()
    timings: dict[str, float] = {}
    layout = WorkLayout(work)
    bundle = layout.bundle(date)
    if not is_published(bundle):
        raise BadInputError(f"bundle {bundle} is not published (no _SUCCESS): run expand first")
    if not next_day_available(raw, date):
        raise BadInputError(f"no gifts on {next_date(date)} in {raw}: nothing to evaluate against")

    t = time.time()
    graph = load_graph(layout.graph(date), edge_types=("gift",), node_features=False)
    all_labels, counts = next_day_labels(str(raw), date, graph)
    labels = sample_sources(all_labels, cfg.max_sources, seed)
    counts.update(evaluated_users=len(labels), users_sampled_from=len(all_labels))
    expansions = read_expansions(bundle, sources=set(labels))
    if MERGED not in expansions:
        raise BadInputError(f"expansions in {bundle} have no {MERGED!r} sequences for the "
                            f"users who gift on {next_date(date)}")
    u_raw, user_emb = read_embeddings(bundle / "embeddings", "user", graph.num_nodes("user"))
    s_raw, streamer_emb = read_embeddings(bundle / "embeddings", "streamer",
                                          graph.num_nodes("streamer"))
    if not (np.array_equal(u_raw, graph.raw_ids["user"])
            and np.array_equal(s_raw, graph.raw_ids["streamer"])):
        raise BadInputError(f"embeddings in {bundle} do not match the id map of "
                            f"{layout.graph(date)} (different raw ids per node id)")
    bundle_meta = _read_json(bundle / "metadata.json")
    timings["load"] = time.time() - t
    log.info("evaluating %s on %s: %s", date, next_date(date), counts)
    if not cfg.downstream.enabled:
        downstream: dict | None = {"skipped": "disabled in config"}
    elif not has_table(raw, "click"):
        downstream = {"skipped": f"no click table in {raw}"}
    else:
        missing = [q for q in cfg.downstream.sequences if q not in expansions]
        if missing:
            raise BadInputError(f"evaluate.downstream.sequences {missing} are not in {bundle}")
        downstream = None
    # The oracle and the downstream ablation read the raw tables, the bundle and the user
    # side's histories: they run in a process of their own beside the baselines, both
    # mostly single-threaded (at 1.3M users the evaluation took 94 s instead of 119 s, the
    # same report), started before the user side's baselines rather than after them.
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), _child_setup,
                             (logging.getLogger().level,)) as pool:
        t = time.time()
        weights = bl.gift_weights(graph)
        history = _histories(graph, sorted(labels), "user", weights)
        k = 50 if 50 in cfg.ks else max(cfg.ks)
        job = pool.submit(_oracle_and_downstream, str(raw), date, str(bundle), labels,
                          history, k, None if downstream else cfg.downstream, seed)
        s_ids = graph.raw_ids["streamer"]
        horizon = day_start_ms(date) + DAY_MS
        first_seen = graph.node_columns["streamer"]["first_seen_ts"]
        new = set(s_ids[first_seen >= horizon - cfg.new_streamer_days * DAY_MS].tolist())
        swing = bl.swing_similarity(weights, cfg.swing_alpha, cfg.swing_max_items_per_user,
                                    cfg.swing_max_users_per_item)
        users = _side(graph, expansions, labels, "user", {
            "popularity": bl.popularity_scores(graph), "history": bl.history_scores(weights),
            "swing": bl.swing_scores(weights, swing),
            "emb_knn": bl.embedding_scores(user_emb, streamer_emb)}, weights, history, new, cfg)
        every_streamer = _streamer_labels(all_labels)
        streamer_labels = sample_sources(every_streamer, cfg.max_sources, seed)
        streamer_expansions = read_expansions(bundle, "streamer", set(streamer_labels)) \
            if (bundle / "expansions" / "streamer").is_dir() else {}
        by_streamer = weights.T.tocsr()
        streamers = _side(graph, streamer_expansions, streamer_labels, "streamer", {
            "active_gifters": bl.active_gifter_scores(graph),
            "history": bl.history_scores(by_streamer),
            "user_cf": bl.user_cf_scores(weights),
            "emb_knn": bl.embedding_scores(streamer_emb, user_emb)}, by_streamer,
            _histories(graph, sorted(streamer_labels), "streamer", by_streamer), set(), cfg)
        timings["baselines_and_metrics"] = time.time() - t

        t = time.time()
        lp = _link_prediction(graph, all_labels, user_emb, streamer_emb, cfg.lp_negatives, seed)
        timings["link_prediction"] = time.time() - t
        oracle, timings["oracle"], ran, timings["downstream"] = job.result()
        downstream = downstream or ran

    metrics = {
        "schema_version": REPORT_SCHEMA_VERSION, "date": date, "label_date": next_date(date),
        "code_version": gie.__version__, "environment": environment.describe(),
        "seed": seed, "config": dump_config(cfg),
        "inputs": {"graph": str(layout.graph(date)), "bundle": str(bundle), "raw": str(raw)},
        "counts": {**counts, "new_streamers": len(new),
                   "users_with_history": sum(bool(h) for h in users["history"].values()),
                   "evaluated_streamers": len(streamers["history"]),
                   "streamers_sampled_from": len(every_streamer)},
        "methods": users["methods"], "retrieval": users["retrieval"],
        "streamer_methods": streamers["methods"], "streamer_retrieval": streamers["retrieval"],
        "oracle": oracle, "fusion": fusion_summary(bundle_meta.get("fusion")),
        "link_prediction": lp, "downstream": downstream,
    }
    metrics["targets"] = targets(metrics, k)
    prev_date, prev = previous_metrics(layout, date)
    metrics["previous_date"] = prev_date
    metrics["regressions"] = find_regressions(metrics, prev, cfg.regression_tolerance)
    for r in metrics["regressions"]:
        log.warning("regression against %s: %s dropped %.1f%% (%.4f -> %.4f)",
                    prev_date, r["metric"], 100 * r["drop"], r["previous"], r["current"])
    timings["total"] = time.time() - t_start
    metrics["timings_s"] = timings
    with staged_output(layout.report(date)) as stage:
        write_report(stage, metrics, prev)
    log.info("report published to %s (%d regressions, %.1fs)", layout.report(date),
             len(metrics["regressions"]), timings["total"])
    return metrics


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
