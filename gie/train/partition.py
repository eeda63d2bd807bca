"""Partition a graph dataset for DGL distributed training (`cli.py partition`).

The partitioned graph is the training graph: validation gift edges (first seen on the last
day) are removed like in single-process training. Node data carries `nid` (our stable node
id) and `raw_id`, so trainers can write embeddings without DGL's reshuffled ids.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import dgl
import torch

import gie
from gie.publish import staged_output
from graphbuild.dataset import load_graph
from graphbuild.dgl_graph import (
    DGL_EDGE_COLUMNS, holdout_mask, id_map_version, modality_dims, to_dgl,
)
from graphbuild.schema import NODE_TYPES

log = logging.getLogger(__name__)
PART_META = "partition.json"


def partition(graph: str | Path, out: str | Path, parts: int, method: str = "metis",
              graph_name: str | None = None) -> dict:
    t0 = time.time()
    data = load_graph(graph, edge_columns=DGL_EDGE_COLUMNS)
    holdout = holdout_mask(data)
    g = to_dgl(data, drop_gift=holdout)
    g.nodes["streamer"].data["mask"] = g.nodes["streamer"].data["mask"].to(torch.uint8)
    for t in NODE_TYPES:
        g.nodes[t].data["nid"] = torch.arange(g.num_nodes(t))
        g.nodes[t].data["raw_id"] = torch.from_numpy(data.raw_ids[t].copy())
    idmap = id_map_version(data)
    name = graph_name or f"gie-{idmap['sha1'][:10]}-p{parts}"
    with staged_output(out) as stage:
        dgl.distributed.partition_graph(g, name, parts, str(stage), part_method=method,
                                        balance_edges=True)
        meta = {"graph": str(graph), "graph_name": name, "parts": parts, "method": method,
                "part_config": f"{name}.json", "id_map": idmap,
                "modality_dims": modality_dims(data),
                "feature_dims": {t: int(data.features[t].shape[1]) for t in NODE_TYPES},
                "counts": {"nodes": {t: g.num_nodes(t) for t in g.ntypes},
                           "edges": {e: g.num_edges(e) for e in g.etypes}},
                "held_out_gift_edges": int(holdout.sum()), "version": gie.__version__,
                "seconds": round(time.time() - t0, 2)}
        (stage / PART_META).write_text(json.dumps(meta, indent=2, default=str))
    log.info("partitioned %s into %d part(s) (%s) as graph %r in %s", graph, parts, method,
             name, out)
    return meta
