"""Folder layout of a work directory (shared by the nightly chain and `evaluate`).

    <work>/graph/dt=D/   <work>/model/dt=D/   <work>/bundle/dt=D/   <work>/reports/dt=D/
    <work>/latest -> bundle/dt=D   <work>/runs/<run-id>.json   <work>/.lock
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from gie.errors import BadInputError

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(value: str) -> dt.date:
    if not DATE_RE.match(value or ""):
        raise BadInputError(f"date {value!r} is not YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as e:
        raise BadInputError(f"date {value!r} is not a valid calendar date") from e


def dated(root: str | Path, date: str) -> Path:
    return Path(root) / f"dt={date}"


def dates_under(root: str | Path) -> list[str]:
    """Dates of the dt=YYYY-MM-DD folders under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name[3:] for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("dt=") and DATE_RE.match(p.name[3:]))


@dataclass(frozen=True)
class WorkLayout:
    work: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "work", Path(self.work))

    def graph(self, date: str) -> Path:
        return dated(self.work / "graph", date)

    def model(self, date: str) -> Path:
        return dated(self.work / "model", date)

    def bundle(self, date: str) -> Path:
        return dated(self.work / "bundle", date)

    def report(self, date: str) -> Path:
        return dated(self.work / "reports", date)

    @property
    def latest(self) -> Path:
        return self.work / "latest"

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    @property
    def lock(self) -> Path:
        return self.work / ".lock"
