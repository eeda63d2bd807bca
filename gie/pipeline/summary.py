"""The run summary: `<work>/runs/<run-id>.json`, rewritten atomically at every stage transition.

Because it is rewritten before and after each stage, a run killed with SIGKILL still leaves a
truthful file: the interrupted stage reads `running` and the run's status `running`, with the
pid that no longer exists.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import time
from pathlib import Path
from typing import Any

import gie
from gie import environment
from gie.publish import write_json_atomic

STATUSES = ("not-run", "running", "done", "skipped", "failed")


def new_run_id(date: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{date}_{now}_{os.getpid()}"


def flat_counts(meta: Any) -> dict[str, int | float]:
    """Numeric leaves of a stage result's `counts` (or of the whole result): {'edges.gift': 12}."""
    source = meta.get("counts", meta) if isinstance(meta, dict) else {}
    return _numeric_leaves(source, "", depth=2)


def _numeric_leaves(tree: dict, prefix: str, depth: int) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for k, v in tree.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + str(k)] = v
        elif isinstance(v, dict) and depth > 1:
            out.update(_numeric_leaves(v, f"{prefix}{k}.", depth - 1))
    return out


class RunSummary:
    """Mutable record of one run; every change is written to disk before the run goes on."""

    def __init__(self, path: str | Path, run_id: str, date: str, args: dict, stages: list[str]):
        self.path = Path(path)
        self.data: dict[str, Any] = {
            "run_id": run_id, "date": date, "args": args, "status": "running",
            "exit_code": None, "error": None, "pid": os.getpid(), "host": socket.gethostname(),
            "code_version": gie.__version__, "environment": environment.describe(),
            "started": _now(), "finished": None,
            "seconds": None, "latest_before": None, "latest_after": None,
            "stages": {s: {"status": "not-run"} for s in stages},
        }
        self._t0 = time.monotonic()
        self._stage_t0: dict[str, float] = {}
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)

    def set(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def stage(self, name: str) -> dict:
        return self.data["stages"][name]

    def start(self, name: str, **info: Any) -> None:
        self._stage_t0[name] = time.monotonic()
        self.data["stages"][name] = {"status": "running", "started": _now(), **info}
        self.write()

    def end(self, name: str, status: str, **info: Any) -> None:
        assert status in STATUSES, status
        entry = self.data["stages"].setdefault(name, {})      # backfill stages: added on use
        entry.update(status=status, **info)
        if name in self._stage_t0:
            entry["finished"] = _now()
            entry["seconds"] = round(time.monotonic() - self._stage_t0.pop(name), 3)
        self.write()

    def finish(self, exit_code: int, error: str | None = None) -> None:
        self.data.update(status="succeeded" if exit_code == 0 else "failed",
                         exit_code=exit_code, error=error, finished=_now(),
                         seconds=round(time.monotonic() - self._t0, 3))
        self.write()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
