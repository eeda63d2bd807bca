"""Single-process training on a planted-topic graph: quality, outputs, resume, warm start."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from gie.errors import BadInputError, QualityFloorError
from gie.publish import is_published
from gie.train.run import train
from tests.train_helpers import (
    ROOT, assert_matches_full_forward, embeddings, graph_for_day, saved_model, small_cfg,
)


SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def day1(tmp_path_factory):
    return graph_for_day(tmp_path_factory.mktemp("graph"), 1)


@pytest.fixture(scope="module")
def trained(day1, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "dt=day1"
    return out, train(day1, out, small_cfg(), seed=7)


def test_outputs_published_and_match_full_forward(day1, trained):
    out, metrics = trained
    assert is_published(out)
    assert_matches_full_forward(out, day1)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["epochs_run"] == 8 and len(on_disk["history"]) == 8
    assert {"auc", "mrr", "recall@50"} <= set(on_disk["valid"])
    assert on_disk["history"][0]["edges_per_s"] > 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["config"]["fanouts"] == [8, 8] and meta["counts"] == {"user": 600, "streamer": 60}
    assert meta["environment"]["kernels"]["torch_cpu_capability"] and \
        meta["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
    ck = torch.load(sorted((out / "checkpoints").glob("epoch-*.pt"))[-1])
    assert ck["state"]["epoch"] == 8 and ck["id_map"] == meta["id_map"]
    assert {"model", "optimizer", "config", "spec"} <= set(ck)


def test_graph_beats_features_only_baseline(day1, tmp_path):
    """Best held-out AUC, averaged over five seeds: on this 130-edge validation set one
    seed's best AUC moves by up to 0.11 with nothing but the random draws changed (default
    mode, seeds 0-4: 0.69-0.80), so a single seed cannot carry a margin of a few points."""
    def mean_auc(name, **kw):
        return float(np.mean([train(day1, tmp_path / f"{name}-{s}", small_cfg(**kw),
                                    seed=s)["valid"]["auc"] for s in SEEDS]))

    graph = mean_auc("default")
    base = mean_auc("base", fanouts=[], user_id_embedding=False)
    exact = mean_auc("exact", layer_history_refreshes=0, fused_cache_age=0)
    fused = mean_auc("fused", layer_history_refreshes=0)
    assert graph > base + 0.03, (graph, base)
    assert min(exact, fused) > base + 0.06, (exact, fused, base)
    # The historical fused MFQ vectors cost no quality against running MFQ on every node.
    assert fused > exact - 0.03, (fused, exact)
    # Layer histories trail sampling every hop on this 600-user graph (means over seeds 0-4:
    # 0.748 vs 0.776; on the `make demo` graph they lead, docs/TRAINING.md): the test bounds
    # the gap so that a regression of the shortcut shows.
    assert graph > exact - 0.07, (graph, exact)


def test_layer_history_forward_equals_full_forward(day1):
    """Right after a snapshot, with every neighbour in the seeds' block, encoding the seeds
    from one hop plus the snapshot gives exactly the full-graph encoding."""
    import dgl

    from gie.model.encoder import GIEModel, gather_inputs
    from gie.train.history import LayerHistory
    from gie.train.inference import full_graph_forward
    from gie.train.run import model_spec
    from graphbuild.dataset import load_graph
    from graphbuild.dgl_graph import to_dgl

    data = load_graph(day1)
    g = to_dgl(data)
    model = GIEModel(model_spec(data, g, small_cfg()))
    history = LayerHistory(g, steps_per_epoch=10, refreshes=4, batch_size=50,
                           device=torch.device("cpu"))
    assert history.every == 3
    for step in range(4):
        history.before_step(model, step)
    assert history.taken == 2 and model.training
    seeds = {"user": torch.tensor([3, 0, 41]), "streamer": torch.tensor([7, 2])}
    block = dgl.to_block(dgl.in_subgraph(g, seeds), dst_nodes=seeds)
    fresh, stale = history.split({t: block.srcnodes[t].data[dgl.NID] for t in g.ntypes}, block)
    assert {t: ids.tolist() for t, ids in fresh.items()} == \
        {t: ids.tolist() for t, ids in seeds.items()}
    mods = list(model.spec.modality_dims)
    model.eval()
    with torch.no_grad():
        got = model([block, block], {t: gather_inputs(g.nodes, t, ids, mods)
                                     for t, ids in fresh.items()}, stale=stale)[0]
    ref = full_graph_forward(model, g)
    for t, ids in seeds.items():
        torch.testing.assert_close(got[t], ref[t][ids], atol=1e-5, rtol=1e-4)


def test_inference_of_some_nodes_equals_their_rows_of_all(day1):
    """Validation's last layer covers only the users it ranks: their rows are those of the
    whole-graph inference, the other users' rows stay zero, every streamer is computed."""
    from gie.model.encoder import GIEModel
    from gie.train.inference import full_inference
    from gie.train.run import model_spec
    from graphbuild.dataset import load_graph
    from graphbuild.dgl_graph import to_dgl

    data = load_graph(day1)
    g = to_dgl(data)
    torch.manual_seed(0)
    model = GIEModel(model_spec(data, g, small_cfg()))
    every = full_inference(model, g, 50, torch.device("cpu"), desc=None)
    users = torch.tensor([0, 5, 41, 42, 43, 599])
    some = full_inference(model, g, 4, torch.device("cpu"), desc=None, only={"user": users})
    torch.testing.assert_close(some["user"][users], every["user"][users], atol=1e-5, rtol=1e-4)
    rest = torch.ones(g.num_nodes("user"), dtype=torch.bool)
    rest[users] = False
    assert not some["user"][rest].any()
    torch.testing.assert_close(some["streamer"], every["streamer"], atol=1e-5, rtol=1e-4)


def test_fused_cache_reuses_vectors_until_they_age(day1):
    """Cached vectors equal a fresh eval-mode MFQ pass, are reused for max_age - 1 steps
    although the weights moved, and are recomputed after that."""
    from gie.model.encoder import GIEModel, gather_inputs
    from gie.train.fused_cache import FusedCache
    from gie.train.run import model_spec
    from graphbuild.dataset import load_graph
    from graphbuild.dgl_graph import to_dgl

    data = load_graph(day1)
    g = to_dgl(data)
    model = GIEModel(model_spec(data, g, small_cfg())).train()
    mods = list(model.spec.modality_dims)

    def fresh(ids):
        model.eval()
        with torch.no_grad():
            out = model.input_layer({"streamer": gather_inputs(g.nodes, "streamer", ids, mods)})
        model.train()
        return out["streamer"]

    cache = FusedCache(g.num_nodes("streamer"), model.spec.hidden_dim, max_age=2, chunk=3,
                       device=torch.device("cpu"))
    ids = torch.tensor([5, 0, 17, 5])
    first = cache.lookup(model, g, ids, mods)
    torch.testing.assert_close(first, fresh(ids))
    assert model.training and cache.recomputed == 4
    with torch.no_grad():
        model.streamer_fusion.out.bias.add_(1.0)
    cache.tick()
    torch.testing.assert_close(cache.lookup(model, g, ids, mods), first)     # age 1: reused
    cache.tick()
    again = cache.lookup(model, g, ids[:2], mods)                            # age 2: recomputed
    torch.testing.assert_close(again, fresh(ids[:2]))
    assert not torch.allclose(again, first[:2])


def test_quality_floor_blocks_publication(day1, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(QualityFloorError, match="min_valid_auc"):
        train(day1, out, small_cfg(epochs=1, min_valid_auc=0.999), seed=7)
    assert not is_published(out) and (out / "metrics.json").is_file()
    assert not (out / "embeddings").exists()


def test_interrupted_run_resumes_to_the_same_result(day1, tmp_path):
    """SIGKILL a CLI run in the middle of epoch 3 of 4 (failpoint after its 17th step, 7
    steps an epoch); `--resume` must end on the same bytes as an uninterrupted run with the
    same seed, run while two other processes keep both cores busy."""
    from gie.pipeline.compare import first_difference
    from tests.test_determinism import busy_cores

    out, ref_out = tmp_path / "m", tmp_path / "ref"
    sets = [f"--set=train.{k}={json.dumps(v)}"
            for k, v in small_cfg(epochs=4).model_dump().items()]

    def cli(target, *extra):
        return [sys.executable, str(ROOT / "cli.py"), "train-gie", "--graph", str(day1),
                "--out", str(target), "--seed", "7", *sets, *extra]

    with busy_cores():
        subprocess.run(cli(ref_out), cwd=ROOT, check=True, capture_output=True, timeout=600)
    killed = subprocess.run(cli(out), cwd=ROOT, capture_output=True, timeout=300,
                            env={**os.environ, "GIE_FAILPOINT": "train-step:17"},
                            start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    assert not is_published(out)
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch-*.pt")) == [
        "epoch-0001.pt", "epoch-0002.pt"]

    subprocess.run(cli(out, "--resume"), cwd=ROOT, check=True, capture_output=True, timeout=300)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == 2 and metrics["epochs_run"] == 4
    assert is_published(out)
    for part in ("embeddings", "model.pt"):
        assert first_difference(ref_out / part, out / part) is None, part
    ref = json.loads((ref_out / "metrics.json").read_text())
    assert [(h["loss"], h["valid"]) for h in metrics["history"]] == \
        [(h["loss"], h["valid"]) for h in ref["history"]]


def test_warm_start_on_the_next_date(trained, tmp_path):
    day2 = graph_for_day(tmp_path / "graph", 2, n_users=650)
    out = tmp_path / "dt=day2"
    metrics = train(day2, out, small_cfg(epochs=1, lr=1e-7), seed=7, warm_start=trained[0])
    assert metrics["warm_start"]["users_kept"] == 600
    assert metrics["warm_start"]["users_new"] == 50
    old, new = saved_model(trained[0]), saved_model(out)
    # With a vanishing learning rate the old users' id vectors are yesterday's.
    np.testing.assert_allclose(new.user_id.weight[:600].detach(), old.user_id.weight.detach(),
                               atol=1e-4)
    assert new.user_id.weight.shape[0] == 650
    assert_matches_full_forward(out, day2)


def test_warm_start_refuses_an_unstable_id_map(trained, tmp_path):
    from tests.graph_fixtures import make_graph_dataset

    other, _ = make_graph_dataset(tmp_path / "g", raw_offset=5000)
    with pytest.raises(BadInputError, match="id map"):
        train(other, tmp_path / "m", small_cfg(epochs=1), warm_start=trained[0])


def test_graph_without_window_is_bad_input(day1, tmp_path):
    import shutil

    bad = tmp_path / "g"
    shutil.copytree(day1, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    del meta["window"]
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="window.end_ms"):
        train(bad, tmp_path / "m", small_cfg(epochs=1))


def test_contrastive_term_trains_and_publishes(day1, tmp_path):
    out = tmp_path / "m"
    metrics = train(day1, out, small_cfg(epochs=1, contrastive_weight=0.5), seed=7)
    plain = train(day1, tmp_path / "p", small_cfg(epochs=1), seed=7)
    assert is_published(out) and np.isfinite(metrics["history"][0]["loss"])
    # The extra InfoNCE term is added to the same link loss, so the total is larger.
    assert metrics["history"][0]["loss"] > plain["history"][0]["loss"]


def test_rank_metrics_equal_ranking_each_edge_by_hand():
    """Validation's filtered ranking, computed in chunks side by side, equals ranking each
    held-out edge on its own (known gifts not counted as negatives, ties counted half)."""
    from gie.train.metrics import known_pairs, rank_metrics

    rng = np.random.default_rng(0)
    n_users, n_streamers = 50, 1 << 17                  # 128 edges a chunk: three chunks
    users = torch.from_numpy(rng.normal(size=(n_users, 8)).astype(np.float32))
    streamers = torch.from_numpy(rng.normal(size=(n_streamers, 8)).astype(np.float32))
    streamers[7] = streamers[3]                          # a tie with a held-out streamer
    src, dst = rng.integers(0, n_users, 300), rng.integers(0, n_streamers, 300)
    dst[:5] = 3
    known = known_pairs(np.r_[src, rng.integers(0, n_users, 2000)],
                        np.r_[dst, rng.integers(0, n_streamers, 2000)], n_users, n_streamers)
    auc, rr, hit = [], [], []
    for u, s in zip(src, dst):
        scores = (users[u] @ streamers.T).numpy()
        negative = np.ones(n_streamers, bool)
        negative[known[u].indices] = False
        higher = np.count_nonzero(scores[negative] > scores[s])
        ties = np.count_nonzero(scores[negative] == scores[s])
        auc.append(1 - (higher + 0.5 * ties) / negative.sum())
        rr.append(1 / (higher + 1))
        hit.append(higher + 1 <= 50)
    got = rank_metrics(users, streamers, src, dst, known, 50)
    assert got["edges"] == 300 and got["recall@50"] == pytest.approx(np.mean(hit))
    assert got["auc"] == pytest.approx(np.mean(auc)) and got["mrr"] == pytest.approx(np.mean(rr))
