"""generate -> build -> train -> expand -> evaluate at tiny sizes, through the stage APIs."""
from __future__ import annotations

import json

import pytest

from gie.config import PipelineConfig
from gie.evaluate.rawdata import next_day_available
from gie.layout import WorkLayout

DATE = "2025-05-05"


@pytest.mark.slow
def test_chain_to_report(tmp_path, spark):
    from gie.evaluate.run import evaluate
    from gie.expand.run import expand
    from gie.train.run import train
    from graphbuild.job import run_build
    from graphbuild.synthetic import GenConfig, generate

    raw, work = tmp_path / "raw", WorkLayout(tmp_path / "work")
    generate(raw, GenConfig(users=1500, streamers=150, days=6, seed=0))
    assert next_day_available(raw, DATE) and not next_day_available(raw, "2025-05-06")
    cfg = PipelineConfig.model_validate({
        "build": {"window_days": 5}, "train": {"epochs": 1, "min_valid_auc": 0.0},
        "evaluate": {"downstream": {"seeds": 1, "epochs": 1, "max_train_samples": 1000,
                                    "max_test_samples": 1000}}})
    run_build(raw, work.work / "graph", DATE, cfg.build, spark=spark)
    train(work.graph(DATE), work.model(DATE), cfg.train, seed=0)
    expand(work.graph(DATE), work.model(DATE) / "embeddings", work.bundle(DATE), cfg.expand)
    m = evaluate(raw, work.work, DATE, cfg.evaluate, seed=0)

    saved = json.loads((work.report(DATE) / "metrics.json").read_text())
    assert saved["retrieval"] == m["retrieval"]
    assert m["counts"]["evaluated_users"] > 20
    assert {"U-S", "U-U-S", "U-S-S", "merged"} <= set(m["methods"]["gie"])
    explore, overall = m["retrieval"]["explore"], m["retrieval"]["overall"]
    assert explore["U-S"]["recall@50"] == 0.0 < explore["merged"]["recall@50"]
    # merged holds the own history (U-S) and more
    assert overall["merged"]["recall@50"] >= overall["history"]["recall@50"] > 0
    assert overall["merged"]["coverage"] > 0.5
    assert m["link_prediction"]["all"]["auc"] > 0.5
    assert "with_gie" in m["downstream"], m["downstream"]
