"""Nightly orchestration without the heavy stages: lock, retention, summary, stage state,
external commands and exit codes. Every test uses real processes and real files."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import cli
from gie.config import PipelineConfig, load_config
from gie.errors import BadInputError, GieError, LockedError, QualityFloorError
from gie.layout import WorkLayout
from gie.pipeline.lock import RunLock, read_lock
from gie.pipeline.nightly import run_nightly
from gie.pipeline.latest import latest_date, publish_latest
from gie.pipeline.retention import apply_retention
from gie.pipeline.stages import (
    STAGES, RunContext, expand_command, fingerprint, is_done, record_done, tree_digest,
)
from gie.pipeline.summary import RunSummary, flat_counts
from gie.publish import atomic_symlink, staged_output

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
DATE = "2025-05-03"


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another real process that takes the lock and keeps it."""
    code = ("import sys, time; from gie.pipeline.lock import RunLock; "
            "RunLock(sys.argv[1], 'holder').acquire(); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([PY, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------
# Lock
# ------------------------------------------------------------------------------------------
def test_lock_refuses_a_live_holder_and_takes_over_after_it_is_killed(tmp_path, caplog):
    lock_file = tmp_path / ".lock"
    holder = _hold_lock(lock_file)
    try:
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            RunLock(lock_file, "me").acquire()
        assert read_lock(lock_file)["run_id"] == "holder"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level(logging.WARNING), RunLock(lock_file, "me") as lock:
        assert lock.took_over["pid"] == holder.pid
        assert read_lock(lock_file)["run_id"] == "me"
    assert "stale lock" in caplog.text
    assert not lock_file.exists()


def test_lock_detects_a_reused_pid_and_respects_other_hosts(tmp_path):
    lock_file = tmp_path / ".lock"
    # Our own (live) pid, but the lock claims to predate this process: the pid was reused.
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "created": time.time() - 10 * 86400, "run_id": "old"}))
    with RunLock(lock_file, "me") as lock:
        assert lock.took_over["run_id"] == "old"
    lock_file.write_text(json.dumps({"pid": _dead_pid(), "host": "another-host",
                                     "created": time.time(), "run_id": "remote"}))
    with pytest.raises(LockedError, match="another-host"):
        RunLock(lock_file, "me").acquire()


def test_lock_empty_file_is_stale_only_when_old(tmp_path):
    lock_file = tmp_path / ".lock"
    lock_file.write_text("")
    with pytest.raises(LockedError):
        RunLock(lock_file, "me").acquire()          # its owner may be writing it right now
    old = time.time() - 60
    os.utime(lock_file, (old, old))
    with RunLock(lock_file, "me") as lock:
        assert lock.took_over == {}


# ------------------------------------------------------------------------------------------
# Retention
# ------------------------------------------------------------------------------------------
def test_retention_keeps_the_window_and_latest(tmp_path):
    layout = WorkLayout(tmp_path)
    dates = [f"2025-05-{d:02d}" for d in range(1, 12)]
    for root in ("graph", "model", "bundle", "reports"):
        for d in dates:
            (tmp_path / root / f"dt={d}").mkdir(parents=True)
            (tmp_path / root / f"dt={d}" / "_SUCCESS").write_text("")
    atomic_symlink(layout.latest, Path("bundle") / "dt=2025-05-02")
    removed = apply_retention(tmp_path, "2025-05-10", keep_days=3)
    assert len(removed) == 4 * 6                      # 01, 03..07 in each of four roots
    for root in ("graph", "model", "bundle", "reports"):
        left = sorted(p.name for p in (tmp_path / root).iterdir())
        # 02 is latest's date, 08..10 the window, 11 is after the run date (a backfill).
        assert left == ["dt=2025-05-02", "dt=2025-05-08", "dt=2025-05-09", "dt=2025-05-10",
                        "dt=2025-05-11"]
    assert latest_date(layout) == "2025-05-02" and layout.latest.resolve().is_dir()
    assert apply_retention(tmp_path, "2025-05-10", keep_days=3) == []


def test_latest_moves_atomically_forward_only(tmp_path):
    layout = WorkLayout(tmp_path)
    for d in ("2025-05-01", "2025-05-02"):
        with staged_output(layout.bundle(d)):
            pass
    with pytest.raises(BadInputError, match="not published"):
        publish_latest(layout, "2025-05-03")
    assert publish_latest(layout, "2025-05-02") is None
    assert os.readlink(layout.latest) == "bundle/dt=2025-05-02"      # relative target
    assert "newer date" in publish_latest(layout, "2025-05-01")      # a backfill
    assert "already" in publish_latest(layout, "2025-05-02")
    (tmp_path / ".latest.tmp-dead").symlink_to("bundle/dt=2025-05-01")   # a killed publish
    assert publish_latest(layout, "2025-05-02", force=True) is None
    assert latest_date(layout) == "2025-05-02" and not list(tmp_path.glob(".latest.tmp-*"))
    assert cli.main(["publish", "--work", str(tmp_path), "--date", "2025-05-02",
                     "--keep-days", "1"]) == 0
    assert latest_date(layout) == "2025-05-02" and not layout.bundle("2025-05-01").exists()


# ------------------------------------------------------------------------------------------
# Summary and stage state
# ------------------------------------------------------------------------------------------
def test_summary_is_on_disk_at_every_transition(tmp_path):
    s = RunSummary(tmp_path / "r.json", "r1", DATE, {"force": False}, ["a", "b"])
    on_disk = lambda: json.loads((tmp_path / "r.json").read_text())   # noqa: E731
    assert on_disk()["stages"] == {"a": {"status": "not-run"}, "b": {"status": "not-run"}}
    s.start("a")
    assert on_disk()["stages"]["a"]["status"] == "running" and on_disk()["status"] == "running"
    s.end("a", "done", counts={"rows": 3})
    s.end("b", "skipped", reason="already done")
    s.finish(0)
    data = on_disk()
    assert data["status"] == "succeeded" and data["exit_code"] == 0
    assert data["stages"]["a"]["counts"] == {"rows": 3} and data["stages"]["a"]["seconds"] >= 0
    assert data["stages"]["b"] == {"status": "skipped", "reason": "already done"}
    assert flat_counts({"counts": {"nodes": {"user": 5}, "edges": 7, "ok": True},
                        "seconds": 2.0}) == {"nodes.user": 5, "edges": 7}


def test_stage_state_follows_config_and_upstream(tmp_path):
    cfg = load_config(None, ["train.epochs=2"])
    layout = WorkLayout(tmp_path / "work")
    ctx = RunContext(tmp_path, layout, DATE, cfg, tmp_path / "c.yaml", "r1")
    train = next(s for s in STAGES if s.name == "train")
    graph = layout.graph(DATE)
    with staged_output(graph) as stage:
        (stage / "edges.parquet").write_text("x")
    inputs = train.inputs(ctx)
    assert inputs == {"graph": graph, "warm_start": None}
    fp = fingerprint(train, ctx, inputs)
    out = layout.model(DATE)
    with staged_output(out) as stage:
        (stage / "metrics.json").write_text("{}")
    assert not is_done(out, fp)                          # published but never recorded
    record_done(out, "train", fp, "r1", {}, inputs)
    assert is_done(out, fp) and fingerprint(train, ctx, inputs) == fp
    other = RunContext(tmp_path, layout, DATE, load_config(None, ["train.epochs=3"]),
                       tmp_path / "c.yaml", "r1")
    assert fingerprint(train, other, inputs) != fp       # config changed
    digest = tree_digest(graph)
    with staged_output(graph) as stage:                  # upstream republished
        (stage / "edges.parquet").write_text("x")
    assert tree_digest(graph) != digest and fingerprint(train, ctx, inputs) != fp
    with staged_output(layout.model("2025-05-02")) as stage:
        pass
    assert train.inputs(ctx)["warm_start"] == layout.model("2025-05-02")


def test_expand_command_fills_and_drops_optional_placeholders():
    tmpl = ["torchrun", "{cli}", "train-gie", "--out", "{out}", "--warm-start", "{warm_start}"]
    assert expand_command(tmpl, {"cli": "c.py", "out": "/m", "warm_start": ""}) == [
        "torchrun", "c.py", "train-gie", "--out", "/m"]
    assert expand_command(tmpl, {"cli": "c.py", "out": "/m", "warm_start": "/p"})[-2:] == [
        "--warm-start", "/p"]
    with pytest.raises(BadInputError, match="unknown placeholder"):
        expand_command(["{nope}"], {})


# ------------------------------------------------------------------------------------------
# run_nightly with external stage commands (real subprocesses, no Spark/DGL needed)
# ------------------------------------------------------------------------------------------
FAKE_STAGE = textwrap.dedent("""
    import os, shutil, sys, time
    sys.path.insert(0, os.getcwd())          # commands run in the repository root
    from gie.publish import staged_output, write_json_atomic
    out, code, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if code == 99:
        time.sleep(120)
    if code:
        sys.exit(code)
    with staged_output(out) as stage:
        shutil.copy(config, stage / "config.yaml")
        write_json_atomic(stage / "metadata.json", {"counts": {"rows": 5}})
""")


@pytest.fixture()
def fake(tmp_path):
    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "gift.csv").write_text("user_id\n")
    return script


def _cmd(script: Path, code: int) -> list[str]:
    return ["{python}", str(script), "{out}", str(code), "{config}"]


def _cfg(script: Path, build: int, train: int):
    # the fake raw folder has no real gifts: no backfill of previous nights to look for
    cfg = load_config(None, ["train.epochs=4", "nightly.backfill=false"])
    cfg.nightly.build_command = _cmd(script, build)
    cfg.nightly.train_command = _cmd(script, train)
    return cfg


def _summaries(work: Path) -> list[dict]:
    files = sorted((work / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(p.read_text()) for p in files]


def test_external_commands_exit_codes_and_rerun(tmp_path, fake):
    raw, work = tmp_path / "raw", tmp_path / "work"
    layout = WorkLayout(work)
    with staged_output(layout.bundle("2025-05-01")):
        pass
    atomic_symlink(layout.latest, "bundle/dt=2025-05-01")

    with pytest.raises(BadInputError, match="build command exited with code 2"):
        run_nightly(raw, work, DATE, _cfg(fake, build=2, train=0))
    (first,) = _summaries(work)
    assert first["exit_code"] == 2 and first["stages"]["build"]["status"] == "failed"
    assert first["stages"]["train"]["status"] == "not-run"

    with pytest.raises(QualityFloorError, match="train command exited with code 3"):
        run_nightly(raw, work, DATE, _cfg(fake, build=0, train=3))
    second = _summaries(work)[-1]
    assert second["exit_code"] == 3 and second["stages"]["build"]["status"] == "done"
    assert second["stages"]["build"]["counts"] == {"rows": 5}
    # The command got the resolved config of this run.
    assert "epochs: 4" in (layout.graph(DATE) / "config.yaml").read_text()
    assert not (work / ".lock").exists() and latest_date(layout) == "2025-05-01"

    with pytest.raises(GieError, match="train command exited with code 7"):
        run_nightly(raw, work, DATE, _cfg(fake, build=0, train=7))
    third = _summaries(work)[-1]
    assert third["stages"]["build"] == {"status": "skipped", "reason": "already done",
                                        "output": str(layout.graph(DATE)),
                                        "counts": {"rows": 5}}
    assert third["exit_code"] == 1 and latest_date(layout) == "2025-05-01"

    success = layout.graph(DATE) / "_SUCCESS"
    before = success.stat().st_mtime_ns
    with pytest.raises(QualityFloorError):
        run_nightly(raw, work, DATE, _cfg(fake, build=0, train=3), from_stage="build")
    assert _summaries(work)[-1]["stages"]["build"]["status"] == "done"
    assert success.stat().st_mtime_ns != before          # redone, not skipped


def test_cli_exit_codes_for_bad_arguments(tmp_path, fake):
    raw, work = str(tmp_path / "raw"), str(tmp_path / "work")
    assert cli.main(["nightly", "--raw", raw, "--work", work, "--date", "2025-13-01"]) == 2
    assert cli.main(["nightly", "--raw", raw, "--work", work, "--date", DATE,
                     "--from-stage", "nope"]) == 2
    assert cli.main(["nightly", "--raw", raw, "--work", work, "--date", DATE,
                     "--set", "nightly.keep_days=0"]) == 2
    holder = _hold_lock(Path(work) / ".lock")
    try:
        assert cli.main(["nightly", "--raw", raw, "--work", work, "--date", DATE]) == 4
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_stops_the_command_releases_the_lock_and_records_it(tmp_path, fake):
    work = tmp_path / "work"
    cmd = json.dumps(_cmd(fake, 99))
    proc = subprocess.Popen(
        [PY, "cli.py", "nightly", "--raw", str(tmp_path / "raw"), "--work", str(work),
         "--date", DATE, "--set", f"nightly.build_command={cmd}",
         "--set", "nightly.backfill=false"], cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = _summaries(work) if (work / "runs").is_dir() else []
        if runs and runs[0]["stages"]["build"]["status"] == "running":
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1
    (summary,) = _summaries(work)
    assert summary["status"] == "failed" and "Terminated" in summary["error"]
    assert summary["stages"]["build"]["status"] == "failed"
    assert not (work / ".lock").exists()
    sleeper = subprocess.run(["pgrep", "-f", f"{fake} .* 99 "], capture_output=True)
    assert sleeper.returncode == 1, "the stage command outlived the run"


def test_documented_command_configs_are_valid():
    """Every YAML example in docs/OPERATIONS.md loads and fills its placeholders."""
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```yaml\n")[1:]]
    assert len(blocks) >= 5
    values = {k: f"<{k}>" for k in ("python", "cli", "raw", "work", "date", "config", "seed",
                                    "out", "graph_root", "graph", "model", "bundle", "prev",
                                    "warm_start")}
    for block in blocks:
        cfg = PipelineConfig.model_validate(yaml.safe_load(block))
        for cmd in (cfg.nightly.build_command, cfg.nightly.train_command):
            if cmd:
                assert "{" not in " ".join(expand_command(cmd, values))
