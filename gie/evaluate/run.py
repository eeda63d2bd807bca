"""evaluate(): score the bundle of date D against the gifts of D+1, beside the baselines.

Reads <work>/graph/dt=D, <work>/bundle/dt=D and the raw gifts (and clicks) of D+1; writes
<work>/reports/dt=D/ (metrics.json, metadata.json, report.md, PNG plots), staged and
published atomically. Definitions of every figure: docs/EVALUATION.md.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

import gie
from gie.config import dump_config
from gie.embeddings import read_embeddings
from gie.errors import BadInputError
from gie.evaluate import baselines as bl
from gie.evaluate.config import EvalConfig
from gie.evaluate.downstream import run_downstream
from gie.evaluate.metrics import RankingMetrics, link_prediction
from gie.evaluate.rawdata import (DAY_MS, day_start_ms, has_table, next_date, next_day_available,
                                  read_days, to_node_ids)
from gie.evaluate.report import find_regressions, previous_metrics, write_report
from gie.layout import WorkLayout, parse_date
from gie.progress import progress
from gie.publish import is_published, staged_output
from graphbuild.dataset import GraphData, load_graph
from graphbuild.schema import MERGED, METAPATHS, expansion_schema

log = logging.getLogger(__name__)
REPORT_SCHEMA_VERSION = 1
BASELINES = ("popularity", "history", "swing", "emb_knn")
SEGMENTS = ("overall", "explore", "new_streamers")


def read_expansions(bundle: Path) -> dict[str, dict[int, list[int]]]:
    """metapath -> user raw id -> target streamer raw ids (best first)."""
    folder = bundle / "expansions" / "user"
    schema = expansion_schema("user")
    try:
        table = pads.dataset(folder, format="parquet").to_table()
    except (pa.ArrowInvalid, OSError, FileNotFoundError) as e:
        raise BadInputError(f"cannot read expansions {folder}: {e}") from e
    missing = [n for n in ("user_id", "metapath", "targets") if n not in table.column_names]
    if missing:
        raise BadInputError(f"expansions {folder} lack columns {missing} (schema: {schema.names})")
    out: dict[str, dict[int, list[int]]] = {}
    cols = table.select(["user_id", "metapath", "targets"]).to_pydict()
    for u, mp, targets in zip(cols["user_id"], cols["metapath"], cols["targets"]):
        if mp not in (*METAPATHS["user"], MERGED):
            raise BadInputError(f"expansions {folder}: unknown metapath {mp!r} for user {u}")
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


def _score_lists(lists: dict[str, list[list[int]]], users: list[int], labels: dict[int, set[int]],
                 history: dict[int, set[int]], new: set[int], ks: list[int]) -> dict:
    """Per segment and method: ranking metrics averaged over users, plus coverage."""
    kmax = max(ks)
    out: dict = {seg: {} for seg in SEGMENTS}
    for method, per_user in progress(lists.items(), desc="retrieval metrics", leave=False):
        acc = {seg: RankingMetrics(ks) for seg in SEGMENTS}
        covered = 0
        for u, ranked in zip(users, per_user):
            rel, hist = labels[u], history.get(u, set())
            covered += bool(len(ranked))
            acc["overall"].update(ranked, rel)
            acc["explore"].update([s for s in ranked if s not in hist][:kmax], rel - hist)
            acc["new_streamers"].update(ranked, rel & new)
        for seg in SEGMENTS:
            out[seg][method] = acc[seg].compute()
        out["overall"][method]["coverage"] = covered / len(users) if users else 0.0
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


def _baseline_lists(graph: GraphData, weights, user_emb: np.ndarray, streamer_emb: np.ndarray,
                    user_nodes: np.ndarray, depth: int, cfg: EvalConfig) -> dict[str, list[list[int]]]:
    """Raw streamer ids per user for every baseline, `depth` deep: max(K) plus the longest
    history, so that the exploration cut (history removed) still has max(K) entries."""
    similarity = bl.swing_similarity(weights, cfg.swing_alpha, cfg.swing_max_items_per_user,
                                     cfg.swing_max_users_per_item)
    rankers = {"popularity": bl.popularity_scores(graph), "history": bl.history_scores(weights),
               "swing": bl.swing_scores(weights, similarity),
               "emb_knn": bl.embedding_scores(user_emb, streamer_emb)}
    s_ids = graph.raw_ids["streamer"]
    out = {}
    for name in BASELINES:
        ranked = bl.top_k_lists(rankers[name], user_nodes, depth, len(s_ids))
        out[name] = [s_ids[r].tolist() for r in ranked]
        log.info("baseline %s: %d users ranked", name, sum(bool(len(r)) for r in ranked))
    return out


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
    graph = load_graph(layout.graph(date), edge_types=("gift",))
    expansions = read_expansions(bundle)
    u_raw, user_emb = read_embeddings(bundle / "embeddings", "user", graph.num_nodes("user"))
    s_raw, streamer_emb = read_embeddings(bundle / "embeddings", "streamer",
                                          graph.num_nodes("streamer"))
    if not (np.array_equal(u_raw, graph.raw_ids["user"])
            and np.array_equal(s_raw, graph.raw_ids["streamer"])):
        raise BadInputError(f"embeddings in {bundle} do not match the id map of "
                            f"{layout.graph(date)} (different raw ids per node id)")
    labels, counts = next_day_labels(str(raw), date, graph)
    timings["load"] = time.time() - t
    log.info("evaluating %s on %s: %s", date, next_date(date), counts)

    t = time.time()
    users = sorted(labels)
    user_nodes = to_node_ids(graph.raw_ids["user"], np.array(users, np.int64))
    weights = bl.gift_weights(graph)
    s_ids = graph.raw_ids["streamer"]
    history = {int(graph.raw_ids["user"][n]): set(s_ids[weights[n].indices].tolist())
               for n in user_nodes[user_nodes >= 0]}
    horizon = day_start_ms(date) + DAY_MS
    first_seen = graph.node_columns["streamer"]["first_seen_ts"]
    new = set(s_ids[first_seen >= horizon - cfg.new_streamer_days * DAY_MS].tolist())

    kmax = max(cfg.ks)
    lists: dict[str, list[list[int]]] = {
        mp: [expansions[mp].get(u, []) for u in users]
        for mp in (*METAPATHS["user"], MERGED) if mp in expansions}
    if MERGED not in lists:
        raise BadInputError(f"expansions in {bundle} have no {MERGED!r} sequences")
    lists.update(_baseline_lists(graph, weights, user_emb, streamer_emb, user_nodes,
                                 kmax + max((len(h) for h in history.values()), default=0), cfg))
    timings["baselines"] = time.time() - t

    t = time.time()
    retrieval = _score_lists(lists, users, labels, history, new, cfg.ks)
    lp = _link_prediction(graph, labels, user_emb, streamer_emb, cfg.lp_negatives, seed)
    timings["metrics"] = time.time() - t

    t = time.time()
    if not cfg.downstream.enabled:
        downstream = {"skipped": "disabled in config"}
    elif not has_table(raw, "click"):
        downstream = {"skipped": f"no click table in {raw}"}
    else:
        downstream = run_downstream(str(raw), date, expansions[MERGED], cfg.downstream, seed)
    timings["downstream"] = time.time() - t

    metrics = {
        "schema_version": REPORT_SCHEMA_VERSION, "date": date, "label_date": next_date(date),
        "code_version": gie.__version__, "seed": seed, "config": dump_config(cfg),
        "inputs": {"graph": str(layout.graph(date)), "bundle": str(bundle), "raw": str(raw)},
        "counts": {**counts, "new_streamers": len(new),
                   "users_with_history": sum(bool(h) for h in history.values())},
        "methods": {"gie": [m for m in lists if m not in BASELINES], "baselines": list(BASELINES)},
        "retrieval": retrieval, "link_prediction": lp, "downstream": downstream,
        "targets": _targets(retrieval, downstream, 50 if 50 in cfg.ks else kmax),
    }
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


def _targets(retrieval: dict, downstream: dict, k: int) -> dict:
    """The two acceptance targets of docs/EVALUATION.md, as measured in this run."""
    key = f"recall@{k}"
    explore = retrieval["explore"]
    best = max(BASELINES, key=lambda b: explore[b][key])
    base, gie_value = explore[best][key], explore[MERGED][key]
    ratio = gie_value / base if base > 0 else None
    out = {"explore_recall": {"k": k, "merged": gie_value, "best_baseline": best,
                              "best_baseline_value": base, "ratio": ratio,
                              "met": bool(gie_value >= 2.0 * base and gie_value > 0)}}
    if "auc_margin" in downstream:
        out["downstream_auc"] = {"margin": downstream["auc_margin"],
                                 "spread": downstream["auc_spread"],
                                 "met": downstream["margin_exceeds_spread"]}
    return out
