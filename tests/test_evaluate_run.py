"""evaluate() and the `evaluate` command on a hand-made work folder: report, baselines,
regression flags, bad input."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli import main
from gie.errors import BadInputError
from gie.evaluate.config import DownstreamConfig, EvalConfig
from gie.evaluate.rawdata import day_start_ms
from gie.evaluate.run import evaluate, read_expansions, sample_sources
from gie.layout import WorkLayout
from graphbuild.schema import expansion_schema
from tests.evaluate_fixtures import DATE, make_work

SMALL = EvalConfig(ks=[5, 10, 20], downstream=DownstreamConfig(
    seeds=1, epochs=1, max_train_samples=300, max_test_samples=200))
NO_DS = SMALL.model_copy(update={"downstream": DownstreamConfig(enabled=False)})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    raw, work = make_work(tmp_path_factory.mktemp("run"))
    return raw, work, evaluate(raw, work, DATE, SMALL, seed=0)


def test_report_folder_is_published_with_all_files(evaluated):
    _, work, metrics = evaluated
    folder = WorkLayout(work).report(DATE)
    names = {p.name for p in folder.iterdir()}
    assert {"_SUCCESS", "metrics.json", "metadata.json", "report.md", "recall_at_k.png",
            "lift_over_baselines.png", "downstream_auc.png"} <= names
    for png in ("recall_at_k.png", "lift_over_baselines.png", "downstream_auc.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["date"] == DATE and saved["label_date"] == "2025-05-12"
    assert saved["schema_version"] == 2 and saved["config"]["ks"] == [5, 10, 20]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["code_version"] and meta["counts"]["evaluated_users"] > 0
    assert meta["environment"] == saved["environment"] and meta["environment"]["packages"]
    md = (folder / "report.md").read_text()
    assert "## Retrieval: Streamers the user never gifted before" in md
    assert "| swing (baseline) |" in md and "| merged |" in md
    assert "## Downstream gift prediction" in md and "with_gie" in md
    assert "| sequence | clicks in it | positive rate in | positive rate out |" in md
    assert "Regressions" not in md


def test_gie_beats_baselines_on_planted_topics_and_history_cannot_explore(evaluated):
    raw, work, m = evaluated
    explore, overall = m["retrieval"]["explore"], m["retrieval"]["overall"]
    assert explore["history"]["recall@20"] == 0.0 and explore["U-S"]["recall@20"] == 0.0
    assert explore["merged"]["recall@5"] > explore["popularity"]["recall@5"]
    assert explore["merged"]["recall@5"] > explore["swing"]["recall@5"]
    assert overall["merged"]["recall@20"] >= overall["U-S"]["recall@20"]
    assert overall["popularity"]["coverage"] == 1.0
    gifts = pd.read_parquet(raw / "gift.parquet")
    gifters = set(gifts.loc[gifts["timestamp"] >= day_start_ms("2025-05-12"), "user_id"])
    merged = read_expansions(WorkLayout(work).bundle(DATE))["merged"]
    assert read_expansions(WorkLayout(work).bundle(DATE), sources=gifters)["merged"] == {
        u: v for u, v in merged.items() if u in gifters}
    assert m["counts"]["evaluated_users"] == len(gifters)
    assert overall["merged"]["coverage"] == pytest.approx(
        sum(bool(merged.get(u)) for u in gifters) / len(gifters))
    assert 0.5 < m["link_prediction"]["all"]["auc"] <= 1.0
    assert m["targets"]["explore_recall"]["k"] == 20


def test_rerun_replaces_the_report_and_flags_drops_against_the_previous_date(evaluated):
    raw, work, metrics = evaluated
    layout = WorkLayout(work)
    prev = layout.report("2025-05-10")
    shutil.copytree(layout.report(DATE), prev)
    inflated = json.loads((prev / "metrics.json").read_text())
    inflated["date"] = "2025-05-10"
    inflated["retrieval"]["explore"]["merged"]["recall@10"] *= 2
    (prev / "metrics.json").write_text(json.dumps(inflated))
    try:
        again = evaluate(raw, work, DATE, NO_DS, seed=0)
    finally:
        shutil.rmtree(prev)
    assert again["previous_date"] == "2025-05-10"
    assert [r["metric"] for r in again["regressions"]] == ["retrieval.explore.merged.recall@10"]
    assert again["regressions"][0]["drop"] == pytest.approx(0.5)
    # deterministic: the same figures as the first run
    assert again["retrieval"] == metrics["retrieval"]
    assert again["link_prediction"] == metrics["link_prediction"]
    md = (layout.report(DATE) / "report.md").read_text()
    assert "## ⚠ Regressions" in md and "report of 2025-05-10" in md
    assert "downstream_auc.png" not in {p.name for p in layout.report(DATE).iterdir()}
    assert not [p for p in (work / "reports").iterdir() if p.name.startswith(".")]


def test_cli_exit_codes(evaluated):
    raw, work, _ = evaluated
    base = ["evaluate", "--raw", str(raw), "--work", str(work)]
    off = ["--set", "evaluate.downstream.enabled=false"]
    assert main(base + ["--date", DATE, "--k", "10,5"] + off) == 0
    saved = json.loads((WorkLayout(work).report(DATE) / "metrics.json").read_text())
    assert saved["config"]["ks"] == [5, 10]
    assert main(base + ["--date", "2025-05-12"] + off) == 2          # no bundle
    assert main(base + ["--date", DATE, "--k", "10,x"]) == 2
    assert main(base + ["--date", "2025-13-01"]) == 2


def test_missing_next_day_and_bad_expansions_are_bad_input(tmp_path):
    raw, work = make_work(tmp_path, n_users=60, n_streamers=12)
    gifts = pd.read_parquet(raw / "gift.parquet")
    gifts[gifts["timestamp"] < day_start_ms("2025-05-12")].to_parquet(raw / "gift.parquet")
    with pytest.raises(BadInputError, match="no gifts on 2025-05-12"):
        evaluate(raw, work, DATE, NO_DS)
    bundle = WorkLayout(work).bundle(DATE)
    table = pa.Table.from_pydict({"user_id": [1000], "metapath": ["U-X-S"], "targets": [[10000]],
                                  "scores": [[1.0]], "via": [[10000]], "source": [["U-X-S"]]},
                                 schema=expansion_schema("user"))
    pq.write_table(table, bundle / "expansions" / "user" / "part-00001.parquet")
    with pytest.raises(BadInputError, match=r"unknown metapath\(s\) \['U-X-S'\] for users"):
        read_expansions(bundle)
    assert not WorkLayout(work).report(DATE).exists()


def test_a_sample_of_sources_is_seeded_and_evaluated(evaluated, tmp_path):
    labels = {u: {u + 1} for u in range(100)}
    a, b = sample_sources(labels, 30, seed=3), sample_sources(labels, 30, seed=3)
    assert a == b and len(a) == 30 and list(a) == sorted(a) and set(a) <= set(labels)
    assert sample_sources(labels, 100, seed=3) is labels
    raw, work, full = evaluated
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    shutil.rmtree(WorkLayout(copy).report(DATE))
    m = evaluate(raw, copy, DATE, NO_DS.model_copy(update={"max_sources": 7}), seed=0)
    assert m["counts"]["evaluated_users"] == 7
    assert m["counts"]["users_sampled_from"] == full["counts"]["evaluated_users"]
    assert m["counts"]["evaluated_streamers"] == 7
    assert m["link_prediction"]["all"]["edges"] == full["link_prediction"]["all"]["edges"]
