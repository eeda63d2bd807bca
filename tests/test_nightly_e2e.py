"""The nightly chain end to end, on real processes: SIGKILL of the whole process group at
each kill point (build mid-way, train mid-epoch and between epochs, expand mid-shard,
evaluate, publish before and after the switch of `latest`) then a plain rerun, which must
publish the same bytes as an uninterrupted run in another work folder; corrupt input, a
concurrent run, warm start over two dates, retention, an idempotent rerun.

The data is tiny (a few hundred users, gift/user/streamer tables only) so that a whole run
is mostly Spark and interpreter start-up; every run is a `cli.py nightly` subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from gie.config import PipelineConfig
from gie.errors import BadInputError
from gie.evaluate.rawdata import day_start_ms
from gie.layout import WorkLayout
from gie.pipeline.nightly import run_nightly
from gie.pipeline.latest import latest_date
from graphbuild.synthetic import GenConfig, generate

# Each test runs one to five nightly subprocesses (Spark start-up dominates on a busy host).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
D, D1 = "2025-05-03", "2025-05-04"          # raw holds 05-01..05-04: D is evaluated on D1
KEEP_TABLES = ("gift", "user", "streamer")
CONFIG = {
    "seed": 7,
    "build": {"window_days": 3, "shuffle_partitions": 2},
    "train": {"epochs": 2, "hidden_dim": 16, "embed_dim": 16, "num_negatives": 32,
              "batch_size": 64, "num_threads": 1, "min_valid_auc": 0.0},   # 3 steps an epoch
    "expand": {"topk": 20, "knn_k": 10},
    "nightly": {"spark_master": "local[2]", "backfill": False},
}
# No thread or hash-seed pinning: equal outputs must not depend on them (issue 14).
ENV = {**{k: v for k, v in os.environ.items()
          if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED")},
       "GIE_SPARK_DRIVER_MEMORY": "1g"}


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    full = tmp_path_factory.mktemp("gen") / "raw"
    generate(full, GenConfig(users=400, streamers=60, days=4, start="2025-05-01", seed=3,
                             gifts_per_day=150))
    raw = full.parent / "tables"
    raw.mkdir()
    for t in KEEP_TABLES:
        shutil.copy2(full / f"{t}.parquet", raw / f"{t}.parquet")
    return raw


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "nightly.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def start(raw: Path, work: Path, date: str, config: Path, *extra: str,
          failpoint: str | None = None) -> subprocess.Popen:
    """`cli.py nightly` in its own process group; `failpoint` (gie/failpoints.py) makes it
    SIGKILL its group at that point."""
    log = work.parent / f"{work.name}-{date}-{time.time_ns()}.log"
    env = {**ENV, "GIE_FAILPOINT": failpoint} if failpoint else ENV
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "cli.py", "nightly", "--raw", str(raw), "--work", str(work),
             "--date", date, "--config", str(config), *extra],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = 900) -> int:
    rc = proc.wait(timeout=timeout)
    if rc != 0:
        print(proc.log.read_text()[-6000:])
    return rc


def summaries(work: Path) -> list[dict]:
    files = sorted((work / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(p.read_text()) for p in files]


def wait_for_stage(work: Path, stage: str, proc: subprocess.Popen, runs_before: int) -> None:
    deadline = time.time() + 1800
    while time.time() < deadline:
        runs = summaries(work) if (work / "runs").is_dir() else []
        if len(runs) > runs_before and runs[-1]["stages"][stage]["status"] == "running":
            return
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before {stage} started"
        time.sleep(0.05)
    raise AssertionError(f"stage {stage} did not start")


# Where each stage shows that it is writing: the kill waits for it (or for a share of the
# stage's usual time), so that it lands mid-write even in stages that take a second.
WRITING = {"build": ("graph/.staging-*", 0.25), "train": ("model/dt=*/checkpoints/*", 0.9),
           "expand": ("bundle/.staging-*/*", 0.9), "evaluate": ("reports/.staging-*", 0.25)}


def kill_mid_stage(proc: subprocess.Popen, work: Path, stage: str, usual_s: float) -> None:
    pattern, share = WRITING[stage]
    deadline = time.time() + share * usual_s
    while time.time() < deadline and not list(work.glob(pattern)):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_latest_whole(work: Path) -> None:
    """`latest` is absent or points at a published bundle, never at a partial one."""
    if (work / "latest").is_symlink():
        assert (work / "latest" / "_SUCCESS").is_file(), os.readlink(work / "latest")


# ------------------------------------------------------------------------------------------
# One uninterrupted run, shared by the tests below
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline(raw, config_file, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("baseline") / "work"
    work.parent.mkdir(exist_ok=True)
    assert finish(start(raw, work, D, config_file)) == 0
    (summary,) = summaries(work)
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0
    assert {s: v["status"] for s, v in summary["stages"].items()} == {
        "build": "done", "train": "done", "expand": "done", "evaluate": "done", "publish": "done"}
    assert os.readlink(work / "latest") == f"bundle/dt={D}"
    return work


def test_rerun_of_a_finished_date_does_nothing(raw, config_file, baseline):
    success = {p: p.stat().st_mtime_ns for p in baseline.glob("*/dt=*/_SUCCESS")}
    assert finish(start(raw, baseline, D, config_file)) == 0
    summary = summaries(baseline)[-1]
    assert {s: v["status"] for s, v in summary["stages"].items()} == {
        "build": "skipped", "train": "skipped", "expand": "skipped", "evaluate": "skipped",
        "publish": "skipped"}
    assert summary["stages"]["build"]["counts"]            # counts survive from the first run
    assert {p: p.stat().st_mtime_ns for p in baseline.glob("*/dt=*/_SUCCESS")} == success


# Kill points, in chain order: (stage, failpoint). Without a failpoint the run is killed from
# outside once the stage writes (WRITING). Each run after a kill is the same command, so it
# recovers from the previous kill before it reaches the next one.
KILLS = (("build", None), ("train", "train-step:2"), ("train", "train-epoch-end:1"),
         ("expand", None), ("evaluate", None), ("publish", "publish-before-switch"),
         ("publish", "publish-after-switch"))


def test_sigkill_anywhere_then_rerun_equals_uninterrupted(raw, config_file, baseline, tmp_path):
    from gie.pipeline.compare import first_difference

    work = tmp_path / "work"
    took = summaries(baseline)[0]["stages"]
    for i, (stage, failpoint) in enumerate(KILLS):
        proc = start(raw, work, D, config_file, failpoint=failpoint)
        if failpoint:
            assert proc.wait(timeout=900) == -signal.SIGKILL, proc.log.read_text()[-4000:]
        else:
            wait_for_stage(work, stage, proc, runs_before=i)
            if stage == "build":
                # A second run on the same work folder is refused while this one is alive.
                second = subprocess.run(
                    [sys.executable, "cli.py", "nightly", "--raw", str(raw), "--work",
                     str(work), "--date", D, "--config", str(config_file)],
                    cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
                assert second.returncode == 4, second.stderr[-2000:]
                assert "locked by run" in second.stderr
            kill_mid_stage(proc, work, stage, took[stage]["seconds"])
        killed = summaries(work)[-1]
        assert killed["status"] == "running"          # what a killed run leaves: the truth
        assert killed["stages"][stage]["status"] == "running", f"kill {i} missed {stage}"
        assert (work / ".lock").exists()
        assert_latest_whole(work)
        if i and KILLS[i - 1][0] != stage:              # the stage killed before was redone
            assert killed["stages"][KILLS[i - 1][0]]["status"] == "done", (i, killed["stages"])

    assert finish(start(raw, work, D, config_file)) == 0
    final = summaries(work)[-1]
    assert final["lock_taken_over"]["run_id"] == summaries(work)[-2]["run_id"]
    assert {s: v["status"] for s, v in final["stages"].items()} == dict.fromkeys(
        ("build", "train", "expand", "evaluate", "publish"), "skipped")
    assert os.readlink(work / "latest") == f"bundle/dt={D}"
    assert not list(work.glob("*/.staging-*")) and not list(work.glob("*/.trash-*"))
    assert not list(work.glob("model/*/.staging-*")) and not list(work.glob(".latest.tmp-*"))
    # Graph, model (checkpoints included), bundle, report and `latest`: the same bytes as
    # the uninterrupted run (timings, run ids and absolute paths aside; gie/pipeline/compare).
    assert first_difference(baseline, work) is None


@pytest.mark.parametrize("case", ["truncated_parquet", "csv_wrong_column", "day_without_events"])
def test_corrupt_input_fails_with_exit_2_and_keeps_latest(raw, baseline, tmp_path, case, spark):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    gift = bad / "gift.parquet"
    if case == "truncated_parquet":
        data = gift.read_bytes()
        gift.write_bytes(data[: len(data) // 2])
        named = [str(gift)]
    elif case == "csv_wrong_column":
        table = pq.read_table(gift)
        table = table.rename_columns(["price" if c == "gift_price" else c
                                      for c in table.column_names])
        pacsv.write_csv(table, bad / "gift.csv")
        gift.unlink()
        named = [str(bad / "gift.csv"), "gift_price"]
    else:
        table = pq.read_table(gift)
        ts = table.column("timestamp")
        keep = pc.invert(pc.and_(pc.greater_equal(ts, day_start_ms(D1)),
                                 pc.less(ts, day_start_ms(D1) + 86_400_000)))
        pq.write_table(table.filter(keep), gift)
        named = [str(gift), D1]
    work = tmp_path / "work"
    shutil.copytree(baseline, work, symlinks=True)
    cfg = PipelineConfig.model_validate(CONFIG)
    with pytest.raises(BadInputError) as err:
        run_nightly(bad, work, D1, cfg)
    assert err.value.exit_code == 2
    assert all(n in str(err.value) for n in named), str(err.value)
    summary = summaries(work)[-1]
    assert summary["exit_code"] == 2 and summary["stages"]["build"]["status"] == "failed"
    assert os.readlink(work / "latest") == f"bundle/dt={D}"
    assert not (work / "bundle" / f"dt={D1}").exists() and not (work / ".lock").exists()


def test_next_date_warm_starts_and_retention_keeps_latest(raw, config_file, baseline, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(baseline, work, symlinks=True)
    assert finish(start(raw, work, D1, config_file, "--keep-days", "1")) == 0
    summary = summaries(work)[-1]
    assert summary["stages"]["train"]["inputs"]["warm_start"] == str(work / "model" / f"dt={D}")
    assert summary["stages"]["build"]["inputs"]["prev"] == str(work / "graph" / f"dt={D}")
    assert summary["stages"]["evaluate"]["status"] == "skipped"      # no day after D1 yet
    assert json.loads((work / "model" / f"dt={D1}" / "metrics.json").read_text())["warm_start"]
    assert latest_date(WorkLayout(work)) == D1
    # keep-days 1: D's folders went after the publish, D1 (latest) stayed.
    for root in ("graph", "model", "bundle", "reports"):
        assert not (work / root / f"dt={D}").exists()
    for root in ("graph", "model", "bundle"):
        assert (work / root / f"dt={D1}" / "_SUCCESS").is_file()


def test_a_first_night_backfills_the_nights_its_fused_ranking_learns_from(raw, tmp_path):
    config = tmp_path / "backfill.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "nightly": {**CONFIG["nightly"],
                                                             "backfill": True}}))
    work = tmp_path / "work"
    assert finish(start(raw, work, D, config)) == 0
    stages = summaries(work)[-1]["stages"]
    # 05-02 is backfilled; 05-01, the first day of the raw data, cannot be trained on
    # (training holds out the edges first seen on the last day: all of them)
    assert [s for s in stages if "@" in s] == ["build@2025-05-02", "train@2025-05-02"]
    assert all(stages[s]["status"] == "done" for s in ("build@2025-05-02", "train@2025-05-02"))
    assert not (work / "bundle" / "dt=2025-05-02").exists()       # learned from, not served
    assert stages["expand"]["inputs"]["prev_graph_1"] == str(work / "graph" / "dt=2025-05-02")
    fusion = json.loads((work / "bundle" / f"dt={D}" / "metadata.json").read_text())["fusion"]
    assert [n["date"] for n in fusion["learned_from"]] == ["2025-05-02"]
    # a rerun has nothing left to backfill
    assert finish(start(raw, work, D, config)) == 0
    assert not [s for s in summaries(work)[-1]["stages"] if "@" in s]
