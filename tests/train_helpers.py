"""Shared helpers of the training tests: small configs, a graph per date, embedding checks."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from gie.embeddings import read_embeddings
from gie.model.encoder import GIEModel, ModelSpec
from gie.train.config import TrainConfig
from graphbuild.dataset import load_graph
from graphbuild.dgl_graph import to_dgl
from tests.graph_fixtures import DAY_MS, make_graph_dataset

ROOT = Path(__file__).resolve().parents[1]
END_MS = 1_747_008_000_000


def small_cfg(**kw) -> TrainConfig:
    base = dict(epochs=8, batch_size=128, hidden_dim=32, embed_dim=32, fanouts=[8, 8],
                lr=5e-3, num_negatives=64, num_threads=1, min_valid_auc=0.0, patience=8)
    return TrainConfig(**{**base, **kw})


def graph_for_day(root: Path, day: int, n_users: int = 600, seed: int = 0) -> Path:
    """Day `day` of a growing graph: raw ids stay put, later days append users."""
    path, _ = make_graph_dataset(root / f"dt=day{day}", n_users=n_users, seed=seed + day,
                                 end_ms=END_MS + day * DAY_MS)
    return path


def saved_model(model_dir: Path) -> GIEModel:
    saved = torch.load(model_dir / "model.pt", map_location="cpu")
    model = GIEModel(ModelSpec.from_dict(saved["spec"]))
    model.load_state_dict(saved["state_dict"])
    return model


def embeddings(model_dir: Path) -> dict[str, np.ndarray]:
    return {t: read_embeddings(model_dir / "embeddings", t)[1] for t in ("user", "streamer")}


def assert_matches_full_forward(model_dir: Path, graph: Path, atol: float = 1e-4,
                                training_graph: bool = False) -> None:
    """Written embeddings == one plain full-graph forward pass of the saved model (on the
    training graph, without held-out edges, for distributed runs)."""
    from gie.train.inference import full_graph_forward
    from graphbuild.dgl_graph import holdout_mask

    data = load_graph(graph)
    g = to_dgl(data, holdout_mask(data) if training_graph else None)
    ref = full_graph_forward(saved_model(model_dir), g)
    for t, got in embeddings(model_dir).items():
        raw, _ = read_embeddings(model_dir / "embeddings", t, num_nodes=data.num_nodes(t))
        np.testing.assert_array_equal(raw, data.raw_ids[t])
        np.testing.assert_allclose(got, ref[t].numpy(), atol=atol, err_msg=t)


def clean_shm(graph_name: str) -> None:
    """Remove shared-memory segments a killed DGL job left behind (only this job's)."""
    for p in Path("/dev/shm").glob(f"*{graph_name}*"):
        p.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, timeout: float = 240, extra_env: dict | None = None,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, *prefix, str(ROOT / "cli.py"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
