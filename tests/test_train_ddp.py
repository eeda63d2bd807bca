"""Two-process DDP training (gloo on CPU) started with torchrun, as on a multi-GPU host."""
from __future__ import annotations

import json

import pytest

from gie.publish import is_published
from tests.train_helpers import assert_matches_full_forward, cli, free_port, graph_for_day


def _torchrun(graph, out):
    return cli("train-gie", "--graph", str(graph), "--out", str(out), "--epochs", "2",
               "--set", "train.batch_size=128", "--set", "train.hidden_dim=32",
               "--set", "train.embed_dim=32", "--set", "train.fanouts=[8,8]",
               "--set", "train.num_threads=1", "--set", "train.min_valid_auc=0",
               prefix=("-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                       "--master-addr", "127.0.0.1", "--master-port", str(free_port())),
               extra_env={"GLOO_SOCKET_IFNAME": "lo"}, timeout=300)


@pytest.mark.slow
def test_torchrun_two_process_gloo(tmp_path):
    """Two ranks train, then a second identical run writes the same bytes (DDP on CPU is
    exact for a given world size: docs/TRAINING.md, "Determinism")."""
    from gie.pipeline.compare import first_difference

    graph = graph_for_day(tmp_path / "graph", 1, n_users=300)
    out = tmp_path / "model"
    run = _torchrun(graph, out)
    assert run.returncode == 0, run.stderr[-4000:]
    assert is_published(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 2
    # Each rank trains on its half of the edges; steps are equal on both ranks.
    assert metrics["history"][0]["steps"] == -(-metrics["train_edges"] // (2 * 128))
    assert_matches_full_forward(out, graph)
    again = _torchrun(graph, tmp_path / "again")
    assert again.returncode == 0, again.stderr[-4000:]
    assert first_difference(out, tmp_path / "again") is None
