"""Logs fit for cron and schedulers: progress as a few log lines when stderr is a file, a
tqdm bar only on a terminal, no third-party noise."""
from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from gie.progress import LogProgress, duration
from graphbuild.schema import RAW_TABLES
from graphbuild.synthetic import GenConfig, generate

ROOT = Path(__file__).resolve().parents[1]
# "<desc>: <done>/<total> <unit> (<pct>), <rate> <unit>/s, ETA ..." as gie.progress writes it
USER_COLUMNS = ["user_id", "age", "gender", "country", "device_brand"]
PROGRESS_LINE = re.compile(r"INFO gie\.progress: .+: \d+(/\d+)? \S+( \(\d+%\))?, [\d.e+]+ \S+/s")


def _slow(n: int, pause_s: float):
    for i in range(n):
        time.sleep(pause_s)
        yield i


def test_log_progress_reports_at_most_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="gie.progress")
    bar = LogProgress(_slow(30, 0.02), "work", total=30, unit="batch", disable=False,
                      every_s=0.15)
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.2f}")
    lines = [r.getMessage() for r in caplog.records]
    # 30 x 20 ms = 0.6 s: one line per 0.15 s at most (plus the closing line), not one per item
    assert 2 <= len(lines) <= 0.6 / 0.15 + 2, lines
    assert re.fullmatch(r"work: \d+/30 batch \(\d+%\), [\d.]+ batch/s, ETA \d+s, loss=[\d.]+",
                        lines[0]), lines[0]
    assert lines[-1].startswith("work: 30/30 batch (100%)") and "done in" in lines[-1]


def test_short_loop_logs_nothing_and_disabled_loop_still_iterates(caplog):
    caplog.set_level(logging.INFO, logger="gie.progress")
    assert list(LogProgress(range(5), "quick", None, "it", False, every_s=60)) == list(range(5))
    assert list(LogProgress(_slow(3, 0.01), "off", None, "it", True, every_s=0)) == [0, 1, 2]
    assert caplog.records == []
    assert (duration(42), duration(125), duration(7260)) == ("42s", "2m05s", "2h01m")


def test_progress_is_a_bar_only_on_a_terminal():
    code = ("from gie.progress import progress\n"
            "print(type(progress(range(3), 'x')).__name__)")
    plain = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert plain.stdout.strip() == "LogProgress"
    leader, follower = pty.openpty()                       # a real terminal on stderr
    try:
        tty = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=follower, text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert tty.stdout.strip() == "tqdm"


@pytest.mark.slow
def test_nightly_log_in_a_file_has_no_bars_and_no_noise(tmp_path):
    """One real `cli.py nightly` (Spark build, training, expansion, evaluation) on a raw folder
    whose user table has only five KuaiLive columns, with stderr sent to a file, as cron does: no carriage return, no Spark stage bar, no Faiss loader
    or DGL lines, and progress lines bounded by time (every 0.5 s here), not by steps."""
    raw = tmp_path / "raw"
    generate(raw, GenConfig(users=300, streamers=40, days=3, seed=5, gifts_per_day=400))
    # the user table as real platforms give it: five of KuaiLive's columns, as CSV
    users = pq.read_table(raw / "user.parquet").select(USER_COLUMNS)
    (raw / "user.parquet").unlink()
    pacsv.write_csv(users, raw / "user.csv")
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({
        "build": {"window_days": 2, "shuffle_partitions": 2},
        "train": {"epochs": 2, "hidden_dim": 16, "embed_dim": 16, "batch_size": 2,
                  "num_negatives": 16, "num_threads": 1, "min_valid_auc": 0.0},
        "nightly": {"spark_master": "local[2]", "backfill": False},
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIE_PROGRESS_EVERY_S": "0.5",
           "GIE_SPARK_DRIVER_MEMORY": "1g"}
    log = tmp_path / "nightly.log"
    t0 = time.monotonic()
    with open(log, "wb") as err:
        run = subprocess.run([sys.executable, "cli.py", "nightly", "--raw", str(raw), "--work",
                              str(tmp_path / "work"), "--date", "2025-05-02", "--config",
                              str(config)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=err, timeout=900)
    wall = time.monotonic() - t0
    text = log.read_text()
    assert run.returncode == 0, text[-4000:]
    assert "\r" not in text
    assert re.search(r"nightly 2025-05-02: Python [\d.]+, numpy [\d.]+, .*; CPU .+", text)
    for noise in ("[Stage ", "ModuleNotFoundError", "faiss.loader", "DGLWarning",
                  "CPU affinity"):
        assert noise not in text, noise
    epochs = [line for line in text.splitlines() if "gie.train.run: epoch " in line]
    assert len(epochs) == 2
    steps = sum(int(re.search(r"(\d+) steps", line).group(1)) for line in epochs)
    progress = [line for line in text.splitlines() if "gie.progress" in line]
    loops = {line.split(": ")[1] for line in progress}
    assert progress and all(PROGRESS_LINE.search(line) for line in progress), progress[:5]
    assert len(progress) <= wall / 0.5 + len(loops), (len(progress), wall)
    assert len(progress) < steps, (len(progress), steps)   # not one line per step
    graph = json.loads((tmp_path / "work" / "graph" / "dt=2025-05-02" / "metadata.json")
                       .read_text())
    assert graph["inputs"]["user"]["absent_columns"] == [
        c for c in RAW_TABLES["user"].names if c not in USER_COLUMNS]
    assert [line for line in text.splitlines() if "table user " in line and "no columns" in line]
