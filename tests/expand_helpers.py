"""Shared set-up of the expansion tests: a fixture graph plus topic-structured embeddings."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gie.embeddings import write_embeddings
from tests.graph_fixtures import make_graph_dataset


def make_inputs(root: Path, n_users: int = 400, n_streamers: int = 60, dim: int = 8,
                seed: int = 0) -> tuple[Path, Path, dict]:
    """Graph at root/graph, embeddings at root/emb: vectors = topic centroid + noise."""
    graph, truth = make_graph_dataset(root / "graph", n_users=n_users, n_streamers=n_streamers,
                                      seed=seed)
    rng = np.random.default_rng(seed + 1)
    centroids = rng.normal(size=(4, dim))
    for ntype, n, offset, topic in (("user", n_users, 1000, truth["user_topic"]),
                                    ("streamer", n_streamers, 10000, truth["streamer_topic"])):
        vectors = centroids[topic] + 0.7 * rng.normal(size=(n, dim))
        write_embeddings(root / "emb" / f"{ntype}.parquet", ntype, np.arange(n),
                         np.arange(n) + offset, vectors)
    return graph, root / "emb", truth
