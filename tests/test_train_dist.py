"""DGL distributed training: partition, graph servers and trainers started by our launcher."""
from __future__ import annotations

import json
import uuid

import pytest

from gie.embeddings import read_embeddings
from gie.publish import is_published
from tests.netns import two_hosts  # noqa: F401 - fixture
from tests.train_helpers import (
    assert_matches_full_forward, clean_shm, cli, free_port, graph_for_day,
)

SMALL = ["--set", "train.batch_size=128", "--set", "train.hidden_dim=32",
         "--set", "train.embed_dim=32", "--set", "train.fanouts=[8,8]",
         "--set", "train.num_threads=1"]


def test_partition_keeps_features_and_ids(tmp_path):
    import dgl

    graph = graph_for_day(tmp_path / "graph", 1, n_users=300)
    run = cli("partition", "--graph", str(graph), "--out", str(tmp_path / "part"), "--parts", "2",
              "--method", "metis", "--graph-name", "gie-test-part")
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads((tmp_path / "part" / "partition.json").read_text())
    assert meta["parts"] == 2 and meta["counts"]["nodes"] == {"user": 300, "streamer": 60}
    seen = {"user": [], "streamer": []}
    for part in range(2):
        _, node_feats, edge_feats, book, *_ = dgl.distributed.load_partition(
            str(tmp_path / "part" / "gie-test-part.json"), part)
        assert {"user/feat", "streamer/feat", "streamer/image", "streamer/mask"} <= set(node_feats)
        assert "user:gift:streamer/w" in edge_feats or "gift/w" in edge_feats
        for t in seen:
            seen[t].extend(node_feats[f"{t}/nid"].tolist())
    assert sorted(seen["user"]) == list(range(300)) and sorted(seen["streamer"]) == list(range(60))


@pytest.mark.slow
@pytest.mark.dist
def test_one_partition_two_servers_two_trainers(tmp_path):
    """Warm-started from a single-process model of the same graph, then resumed for a third
    epoch from the second epoch's checkpoint."""
    graph = graph_for_day(tmp_path / "graph", 1, n_users=300)
    name = f"gie-test-{uuid.uuid4().hex[:8]}"
    yesterday = tmp_path / "yesterday"
    run = cli("train-gie", "--graph", str(graph), "--out", str(yesterday), "--epochs", "1",
              "--set", "train.min_valid_auc=0", *SMALL)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "model"

    def dist_run(*args: str):
        (tmp_path / "ip.txt").write_text(f"127.0.0.1 {free_port()}\n")
        return cli("train-gie", "--dist", "--part-config", str(tmp_path / "part" / f"{name}.json"),
                   "--ip-config", str(tmp_path / "ip.txt"), "--out", str(out),
                   "--num-servers", "2", "--num-trainers", "2", "--master-port", str(free_port()),
                   "--dist-timeout", "200", *args, *SMALL,
                   extra_env={"GLOO_SOCKET_IFNAME": "lo", "DGL_DIST_MAX_TRY_TIMES": "20"},
                   timeout=260)
    try:
        run = cli("partition", "--graph", str(graph), "--out", str(tmp_path / "part"),
                  "--parts", "1", "--method", "random", "--graph-name", name)
        assert run.returncode == 0, run.stderr[-3000:]
        run = dist_run("--epochs", "2", "--warm-start", str(yesterday))
        assert run.returncode == 0, run.stderr[-4000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["warm_start"]["users_kept"] == 300 and metrics["resumed_from"] is None
        run = dist_run("--epochs", "3", "--resume")
        assert run.returncode == 0, run.stderr[-4000:]
    finally:
        clean_shm(name)
    assert is_published(out)
    assert sorted(p.name for p in (out / "embeddings" / "user").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 3
    assert metrics["resumed_from"] == 2 and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    read_embeddings(out / "embeddings", "user", num_nodes=300)     # every node exactly once
    assert_matches_full_forward(out, graph, training_graph=True)


@pytest.mark.slow
@pytest.mark.dist
def test_two_partitions_on_two_emulated_hosts(tmp_path, two_hosts):
    ips, remote = two_hosts.ips, two_hosts.remote
    graph = graph_for_day(tmp_path / "graph", 1, n_users=300)
    name = f"gie-test-{uuid.uuid4().hex[:8]}"
    run = cli("partition", "--graph", str(graph), "--out", str(tmp_path / "part"),
              "--parts", "2", "--method", "metis", "--graph-name", name)
    assert run.returncode == 0, run.stderr[-3000:]
    (tmp_path / "ip.txt").write_text(f"{ips[0]} 30050\n{ips[1]} 30050\n")
    out = tmp_path / "model"
    run = cli("train-gie", "--dist", "--part-config", str(tmp_path / "part" / f"{name}.json"),
              "--ip-config", str(tmp_path / "ip.txt"), "--out", str(out), "--remote", remote,
              "--num-servers", "1", "--num-trainers", "1", "--master-port", "29611",
              "--dist-timeout", "200", "--epochs", "2", *SMALL,
              extra_env={"GLOO_SOCKET_IFNAME": "gie0", "DGL_DIST_MAX_TRY_TIMES": "20"},
              timeout=260)
    assert run.returncode == 0, run.stderr[-4000:]
    assert is_published(out)
    read_embeddings(out / "embeddings", "user", num_nodes=300)
    read_embeddings(out / "embeddings", "streamer", num_nodes=60)
    assert_matches_full_forward(out, graph, training_graph=True)
