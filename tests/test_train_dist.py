"""DGL distributed training: partition, graph servers and trainers started by our launcher."""
from __future__ import annotations

import json
import random
import subprocess
import uuid

import pytest

from gie.embeddings import read_embeddings
from gie.publish import is_published
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


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts(tmp_path):
    """Two emulated hosts: a network namespace each, joined by a veth pair, and a private
    /dev/shm each (DGL names its shared memory without the partition, so two partitions
    must never share one /dev/shm)."""
    tag = uuid.uuid4().hex[:6]
    names = [f"gie-{tag}-h0", f"gie-{tag}-h1"]
    net = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
    try:
        for n in names:
            _sh("ip", "netns", "add", n)
        _sh("ip", "link", "add", f"g{tag}a", "type", "veth", "peer", "name", f"g{tag}b")
        for i, (n, end) in enumerate(zip(names, "ab")):
            _sh("ip", "link", "set", f"g{tag}{end}", "netns", n)
            _sh("ip", "-n", n, "link", "set", f"g{tag}{end}", "name", "gie0")
            _sh("ip", "-n", n, "addr", "add", f"{net}.{i + 1}/24", "dev", "gie0")
            _sh("ip", "-n", n, "link", "set", "gie0", "up")
            _sh("ip", "-n", n, "link", "set", "lo", "up")
            (tmp_path / f"shm{i}").mkdir()
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as e:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        pytest.skip(f"cannot emulate two hosts with network namespaces (needs root and "
                    f"iproute2): {e}")
    remote = (f"ip netns exec {names[0][:-1]}{{machine}} unshare -m sh -c "
              f"'mount --bind {tmp_path}/shm{{machine}} /dev/shm && exec \"$0\" \"$@\"'")
    yield [f"{net}.1", f"{net}.2"], remote
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.mark.slow
@pytest.mark.dist
def test_two_partitions_on_two_emulated_hosts(tmp_path, two_hosts):
    ips, remote = two_hosts
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
