"""Two-process DDP training (gloo on CPU) started with torchrun, as on a multi-GPU host."""
from __future__ import annotations

import json
import time

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


def _collectives_then_teardown(rank: int, folder: str, rounds: int) -> None:
    import torch
    import torch.distributed as dist

    from gie.train import ddp
    for i in range(rounds):
        dist.init_process_group("gloo", init_method=f"file://{folder}/store-{i}", rank=rank,
                                world_size=2)
        ctx = ddp.Ctx(rank, 2, torch.device("cpu"))
        ddp.broadcast(ctx, [1.0, 2.0])
        ddp.all_mean(ctx, float(rank))
        ddp.all_min(ctx, rank)
        ddp.barrier(ctx)
        ddp.teardown(ctx)


@pytest.mark.slow
def test_teardown_right_after_collectives_never_hangs(tmp_path):
    """gloo's worker thread may drop the last reference to a finished collective's tensor
    while destroy_process_group holds the GIL and joins it: without ddp's kept references,
    two ranks hang within about 50 rounds (the CI run that hung at a torchrun's exit)."""
    import torch.multiprocessing as mp

    procs = mp.start_processes(_collectives_then_teardown, args=(str(tmp_path), 60), nprocs=2,
                               join=False, start_method="spawn")
    deadline = time.monotonic() + 90
    try:
        while not procs.join(timeout=5):
            assert time.monotonic() < deadline, "ranks hung in teardown"
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.kill()
