"""Read one node's expansions back from a published bundle, with explanations.

Every entry says where it came from: its source (for the fused sequences, the source that
ranked it best) and the node it came through. `--explain` also rebuilds the node's pooled
candidates on the bundle's graph and shows, per fused entry, the features that moved its
score most (LightGBM's per-feature contributions, or each source's reciprocal-rank term
with fixed weights): cheap for one node, but it recomputes every node's kNN neighbours first.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from gie.errors import BadInputError
from gie.publish import is_published
from graphbuild.schema import FUSED, RAW_ID_COLUMN, SEQUENCES

VIA_KIND = {"U-S": "own history", "U-U-S": "similar user", "U-S-S": "gifted streamer",
            "U-W-S": "own watch history", "U-W-S-S": "watched streamer",
            "U-knn-S": "own embedding", "U-s2s-S": "gifted streamer",
            "S-U": "own gifters", "S-S-U": "similar streamer", "S-U-U": "gifter",
            "S-W-U": "own viewers", "S-S-W-U": "similar streamer", "S-knn-U": "own embedding",
            "S-u2u-U": "gifter"}
DIRECT = {"U-S", "S-U", "U-W-S", "S-W-U", "U-knn-S", "S-knn-U"}
PRIOR_KIND = {"POP": "popular streamers", "NEW": "fresh streamers", "ACT": "active gifters"}


def lookup(bundle: str | Path, node_type: str, raw_id: int, metapath: str | None = None) -> list[dict]:
    """Rows of `raw_id` (in sequence order) as dicts of lists."""
    bundle = Path(bundle)
    if not is_published(bundle):
        raise BadInputError(f"bundle {bundle} is not published (no _SUCCESS)")
    known = SEQUENCES[node_type]
    if metapath is not None and metapath not in known:
        raise BadInputError(f"metapath {metapath!r} is not one of {known} for a {node_type}")
    column = RAW_ID_COLUMN[node_type]
    expr = pc.field(column) == raw_id
    if metapath is not None:
        expr &= pc.field("metapath") == metapath
    table = pads.dataset(bundle / "expansions" / node_type, format="parquet").to_table(filter=expr)
    return sorted(table.to_pylist(), key=lambda r: known.index(r["metapath"]))


def contributions(bundle: str | Path, node_type: str, raw_id: int, top: int = 3,
                  graph: str | Path | None = None) -> dict[str, dict[int, list]]:
    """Per fused sequence, per target raw id: the `top` (feature, value, contribution)."""
    from gie.config import load_config
    from gie.expand import run
    from gie.expand.fusion import pooled_table
    from gie.expand.ranker import LEARNED
    from gie.expand.sources import source_candidates
    from graphbuild.dataset import to_node_ids

    bundle = Path(bundle)
    meta = json.loads((bundle / "metadata.json").read_text())
    cfg = load_config(None).expand.model_validate(meta["config"])
    graph = Path(graph or meta["inputs"]["graph"])
    if not graph.is_dir():
        raise BadInputError(f"graph {graph} of the bundle is gone: give --graph")
    fusion = run.load_fusion(bundle, cfg)
    if fusion is None:
        raise BadInputError(f"bundle {bundle} has no fused sequences to explain")
    view = run.load_view(graph, bundle / "embeddings", bundle / "index", cfg, meta["index"])
    node = int(to_node_ids(view.graph.raw_ids[node_type], np.array([raw_id]))[0])
    if node < 0:
        raise BadInputError(f"{node_type} {raw_id} is not in graph {graph}")
    rows = np.array([node])
    table = pooled_table(view, cfg, node_type, rows, source_candidates(view.rels, cfg,
                                                                        node_type, rows))
    targets = view.graph.raw_ids["streamer" if node_type == "user" else "user"][table.target]
    out: dict[str, dict[int, list]] = {}
    for kind in FUSED:
        scorer = fusion.scorers[node_type][kind]
        if scorer.kind == LEARNED:
            contrib = scorer.booster.predict(table.X, pred_contrib=True)[:, :-1]
            if scorer.companion is not None:       # outside the history: the explore model
                outside = ~table.history
                contrib[outside] = scorer.companion.predict(table.X[outside],
                                                            pred_contrib=True)[:, :-1]
        else:   # reciprocal-rank terms of each source (fixed weights) / the one source
            contrib = np.zeros_like(table.X)
            for j, name in enumerate(table.names):
                if name.endswith(".rank"):
                    src = name[: -len(".rank")]
                    w = scorer.weights.get(src, 0.0) if scorer.source is None else \
                        float(src == scorer.source)
                    contrib[:, j] = np.nan_to_num(w / (scorer.rrf_k + table.X[:, j]))
        per = {}
        for i, t in enumerate(targets):
            best = np.argsort(-np.abs(contrib[i]), kind="stable")[:top]
            per[int(t)] = [(table.names[j], float(table.X[i, j]), float(contrib[i, j]))
                           for j in best if contrib[i, j] != 0]
        out[kind] = per
    return out


def explain(node_type: str, raw_id: int, rows: list[dict],
            contrib: dict[str, dict[int, list]] | None = None) -> str:
    """Human-readable listing: one block per sequence, one line per target."""
    if not rows:
        return f"{node_type} {raw_id}: no expansions in this bundle"
    lines = []
    for r in rows:
        mp = r["metapath"]
        lines.append(f"{node_type} {raw_id}  {mp}  ({len(r['targets'])} targets)")
        sources = r.get("source") or [mp] * len(r["targets"])
        for rank, (t, s, v, src) in enumerate(zip(r["targets"], r["scores"], r["via"], sources),
                                              start=1):
            how = f"prior: {PRIOR_KIND[src]}" if src in PRIOR_KIND else "direct" \
                if v == raw_id and src in DIRECT else \
                f"via {VIA_KIND.get(src, 'best path through')} {v}"
            origin = f"  [{src}]" if mp in FUSED else ""
            lines.append(f"  {rank:>3}. {t:<12} score={s:.5f}  {how}{origin}")
            for name, value, c in (contrib or {}).get(mp, {}).get(t, []):
                lines.append(f"         {name}={value:.4g}: {c:+.4f}")
    return "\n".join(lines)
