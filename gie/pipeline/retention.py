"""Remove dated folders that fell out of the retention window (after a successful publish only).

A date is kept when it is among the last `keep_days` calendar days ending at the run's date.
The date `latest` points to is always kept in every stage folder (its bundle is what consumers
read; its graph and model are the next night's id map and warm start). Dates after the run's
date (a backfill of an older date) are never touched.
"""
from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

from gie.layout import WorkLayout, dated, dates_under, parse_date
from gie.pipeline.latest import latest_date

log = logging.getLogger(__name__)

STAGE_ROOTS = ("graph", "model", "bundle", "reports")


def expired(dates: list[str], run_date: str, keep_days: int, protect: set[str]) -> list[str]:
    """Dates strictly older than the window of `keep_days` days ending at `run_date`."""
    cutoff = parse_date(run_date) - dt.timedelta(days=keep_days - 1)
    return [d for d in dates if parse_date(d) < cutoff and d not in protect]


def apply_retention(work: str | Path, run_date: str, keep_days: int) -> list[Path]:
    """Delete expired dated folders under each stage root; return them."""
    layout = WorkLayout(work)
    protect = {d for d in [latest_date(layout)] if d}
    removed: list[Path] = []
    for name in STAGE_ROOTS:
        root = layout.work / name
        for d in expired(dates_under(root), run_date, keep_days, protect):
            folder = dated(root, d)
            shutil.rmtree(folder)
            removed.append(folder)
    if removed:
        log.info("retention: removed %d folders older than %d days before %s (kept latest=%s)",
                 len(removed), keep_days, run_date, ", ".join(sorted(protect)) or "none")
    return removed
