"""The nightly chain end to end, on real processes: SIGKILL in each stage then rerun, corrupt
input, a concurrent run, warm start over two dates, retention, an idempotent rerun.

The data is tiny (a few hundred users, gift/user/streamer tables only) so that a whole run
is mostly Spark and interpreter start-up; every run is a `cli.py nightly` subprocess with
torch pinned to one thread so that outputs are reproducible.
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from gie.config import PipelineConfig
from gie.embeddings import read_embeddings
from gie.errors import BadInputError
from gie.evaluate.rawdata import day_start_ms
from gie.layout import WorkLayout
from gie.pipeline.nightly import run_nightly
from gie.pipeline.latest import latest_date
from graphbuild.schema import GRAPH_EDGES, GRAPH_NODES, NODE_TYPES
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
              "batch_size": 256, "num_threads": 1, "min_valid_auc": 0.0},
    "expand": {"topk": 20, "knn_k": 10},
    "nightly": {"spark_master": "local[2]"},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
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


def start(raw: Path, work: Path, date: str, config: Path, *extra: str) -> subprocess.Popen:
    log = work.parent / f"{work.name}-{date}-{time.time_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "cli.py", "nightly", "--raw", str(raw), "--work", str(work),
             "--date", date, "--config", str(config), *extra],
            cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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


def _table(folder: Path, keys: list[str]) -> pa.Table:
    return pads.dataset(folder, format="parquet").to_table().sort_by([(k, "ascending")
                                                                      for k in keys])


def assert_tables_equal(a: pa.Table, b: pa.Table, where: str, rtol: float = 1e-9) -> None:
    assert a.column_names == b.column_names and a.num_rows == b.num_rows, where
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        t = x.type
        if pa.types.is_list(t) and pa.types.is_floating(t.value_type):
            x, y = pc.list_flatten(x), pc.list_flatten(y)
            t = t.value_type
        if pa.types.is_floating(t):
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=rtol, atol=rtol * 1e-3,
                                       err_msg=f"{where}.{name}")
        else:
            assert x.equals(y), f"{where}.{name} differs"


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def assert_same_outputs(a: Path, b: Path, date: str, evaluated: bool = True) -> None:
    la, lb = WorkLayout(a), WorkLayout(b)
    for t, schema in GRAPH_NODES.items():
        assert_tables_equal(_table(la.graph(date) / "nodes" / t, ["node_id"]),
                            _table(lb.graph(date) / "nodes" / t, ["node_id"]), f"nodes/{t}")
    for e in GRAPH_EDGES:
        if (la.graph(date) / "edges" / e).is_dir():
            assert_tables_equal(_table(la.graph(date) / "edges" / e, ["src", "dst"]),
                                _table(lb.graph(date) / "edges" / e, ["src", "dst"]), f"edges/{e}")
    for t in NODE_TYPES:
        ra, va = read_embeddings(la.model(date) / "embeddings", t)
        rb, vb = read_embeddings(lb.model(date) / "embeddings", t)
        np.testing.assert_array_equal(ra, rb)
        # Two processes agree to float32 rounding (1e-7), not bit for bit (BLAS code paths).
        np.testing.assert_allclose(va, vb, atol=1e-5, err_msg=f"{t} embeddings")
        key = "user_id" if t == "user" else "streamer_id"
        assert_tables_equal(_table(la.bundle(date) / "expansions" / t, [key, "metapath"]),
                            _table(lb.bundle(date) / "expansions" / t, [key, "metapath"]),
                            f"expansions/{t}", rtol=1e-4)
    if evaluated:
        ma = json.loads((la.report(date) / "metrics.json").read_text())
        mb = json.loads((lb.report(date) / "metrics.json").read_text())
        assert _leaves(ma["retrieval"]) == pytest.approx(_leaves(mb["retrieval"]))


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


def test_sigkill_in_each_stage_then_rerun_equals_uninterrupted(raw, config_file, baseline,
                                                               tmp_path):
    work = tmp_path / "work"
    took = summaries(baseline)[0]["stages"]
    for i, stage in enumerate(("build", "train", "expand", "evaluate")):
        proc = start(raw, work, D, config_file)
        wait_for_stage(work, stage, proc, runs_before=i)
        if stage == "build":
            # A second run on the same work folder is refused while this one is alive.
            second = subprocess.run(
                [sys.executable, "cli.py", "nightly", "--raw", str(raw), "--work", str(work),
                 "--date", D, "--config", str(config_file)],
                cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
            assert second.returncode == 4, second.stderr[-2000:]
            assert "locked by run" in second.stderr
        kill_mid_stage(proc, work, stage, took[stage]["seconds"])
        killed = summaries(work)[-1]
        assert killed["status"] == "running"          # what a killed run leaves: the truth
        assert killed["stages"][stage]["status"] == "running", f"kill missed stage {stage}"
        assert (work / ".lock").exists() and not (work / "latest").exists()

    assert finish(start(raw, work, D, config_file)) == 0
    final = summaries(work)[-1]
    assert final["lock_taken_over"]["run_id"] == summaries(work)[-2]["run_id"]
    assert [final["stages"][s]["status"] for s in ("build", "train", "expand", "evaluate")] == [
        "skipped", "skipped", "skipped", "done"]
    assert os.readlink(work / "latest") == f"bundle/dt={D}"
    assert not list(work.glob("*/.staging-*")) and not list(work.glob("*/.trash-*"))
    assert_same_outputs(baseline, work, D)


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
