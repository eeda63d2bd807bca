"""GraphData -> a DGL heterograph carrying the model inputs, and the held-out validation split.

Edge types: `gift` and `watch` (user->streamer) with reverses `gifted_by` / `watched_by`, plus
`s2s` and `u2u`. Every edge type carries `w` (positive float32), used as the sampling
probability; gift edges also carry `amount` (total price) for the loss weight.
"""
from __future__ import annotations

import hashlib

import dgl
import numpy as np
import torch

from gie.errors import BadInputError
from graphbuild.dataset import GraphData
from graphbuild.schema import MODALITIES, NODE_TYPES

DAY_MS = 86_400_000
REVERSE = {"gift": "gifted_by", "watch": "watched_by"}
CANONICAL = {
    "gift": ("user", "gift", "streamer"),
    "gifted_by": ("streamer", "gifted_by", "user"),
    "watch": ("user", "watch", "streamer"),
    "watched_by": ("streamer", "watched_by", "user"),
    "s2s": ("streamer", "s2s", "streamer"),
    "u2u": ("user", "u2u", "user"),
}
_WEIGHT_COLUMN = {"gift": "weight", "watch": "weight", "s2s": "score", "u2u": "score"}
# The edge columns to_dgl and holdout_mask read: what training loads (load_graph's edge_columns).
DGL_EDGE_COLUMNS = {**{e: (c,) for e, c in _WEIGHT_COLUMN.items()},
                    "gift": ("weight", "total_price", "first_ts")}


def holdout_mask(graph: GraphData) -> np.ndarray:
    """Gift edges first seen on the last day of the window: the validation set."""
    try:
        end_ms = int(graph.metadata["window"]["end_ms"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadInputError(f"{graph.path}/metadata.json lacks window.end_ms") from e
    return graph.edges["gift"].data["first_ts"] >= end_ms - DAY_MS


def id_map_version(graph: GraphData) -> dict:
    """Node counts and a hash of raw ids: two graphs with equal versions share node ids."""
    digest = hashlib.sha1()
    for t in NODE_TYPES:
        digest.update(np.ascontiguousarray(graph.raw_ids[t], dtype=np.int64).tobytes())
    return {"num_nodes": {t: graph.num_nodes(t) for t in NODE_TYPES}, "sha1": digest.hexdigest()}


def modality_dims(graph: GraphData) -> dict[str, int]:
    return {m: int(graph.modalities[m].shape[1]) for m in MODALITIES
            if m in graph.modalities and graph.modalities[m].shape[1] > 0}


def to_dgl(graph: GraphData, drop_gift: np.ndarray | None = None) -> dgl.DGLGraph:
    """Build the heterograph; `drop_gift` removes those gift edges, their reverses and the watch
    edges of the same pairs (watching precedes gifting, so it would leak the held-out pair)."""
    data, weights = {}, {}
    n_streamers = graph.num_nodes("streamer")
    dropped_pairs = np.zeros(0, dtype=np.int64)
    for etype in ("gift", "watch", "s2s", "u2u"):
        edges = graph.edges.get(etype)
        if edges is None:
            continue
        keep = np.ones(len(edges), dtype=bool)
        if etype == "gift" and drop_gift is not None:
            keep = ~drop_gift
            dropped_pairs = edges.src[drop_gift] * n_streamers + edges.dst[drop_gift]
        if etype == "watch" and len(dropped_pairs):
            keep = ~np.isin(edges.src * n_streamers + edges.dst, dropped_pairs)
        src, dst = torch.from_numpy(edges.src[keep]), torch.from_numpy(edges.dst[keep])
        w = np.asarray(edges.data[_WEIGHT_COLUMN[etype]][keep], dtype=np.float32)
        w = torch.from_numpy(np.clip(np.nan_to_num(w), 1e-6, None))
        data[CANONICAL[etype]], weights[etype] = (src, dst), w
        if etype in REVERSE:
            data[CANONICAL[REVERSE[etype]]], weights[REVERSE[etype]] = (dst, src), w
    g = dgl.heterograph(data, num_nodes_dict={t: graph.num_nodes(t) for t in NODE_TYPES})
    for etype, w in weights.items():
        g.edges[etype].data["w"] = w
    gift = graph.edges["gift"]
    keep = slice(None) if drop_gift is None else ~drop_gift
    g.edges["gift"].data["amount"] = torch.from_numpy(
        np.asarray(gift.data["total_price"][keep], dtype=np.float32))
    for t in NODE_TYPES:      # Arrow buffers are read-only; torch wants writable memory
        g.nodes[t].data["feat"] = torch.from_numpy(np.require(graph.features[t], requirements="W"))
    present = modality_dims(graph)
    for m in present:
        g.nodes["streamer"].data[m] = torch.from_numpy(
            np.require(graph.modalities[m], requirements="W"))
    columns = [MODALITIES.index(m) for m in present]
    g.nodes["streamer"].data["mask"] = torch.from_numpy(
        np.asarray(graph.modality_mask, dtype=bool)[:, columns])
    return g
