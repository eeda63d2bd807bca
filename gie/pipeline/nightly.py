"""run_nightly: build -> train -> expand -> evaluate -> publish for one date, safe to rerun.

Every stage publishes its dated folder atomically and is skipped on rerun when it is done
(see stages.py); an interrupted stage is cleaned up and redone from its start. `latest` moves
only after expand succeeded and evaluate succeeded or was skipped, so a failed run leaves it
on the previous good bundle. Evaluation regressions are recorded in the run summary but do not
fail the run; a quality floor (QualityFloorError) does, with exit code 3.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import yaml

from gie import environment
from gie.config import PipelineConfig, dump_config
from gie.errors import EXIT_INTERNAL, BadInputError, GieError
from gie.layout import WorkLayout, parse_date
from gie.pipeline.lock import RunLock
from gie.pipeline.latest import latest_date, publish_latest
from gie.pipeline.retention import apply_retention
from gie.pipeline.stages import (
    STAGE_NAMES, STAGES, RunContext, Stage, fingerprint, is_done, read_state, record_done,
)
from gie.pipeline.summary import RunSummary, flat_counts, new_run_id
from gie.publish import clean_staging, is_published

log = logging.getLogger(__name__)


class Terminated(GieError):
    """The run received SIGTERM (a scheduler timeout, a shutdown): it stopped cleanly."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception so that the lock and the summary are settled."""
    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:                       # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(counts: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in list(counts.items())[:12])


def _run_stage(stage: Stage, ctx: RunContext, summary: RunSummary, forced: bool,
               name: str | None = None) -> None:
    """Run one stage unless it is done; `name` labels it in the summary and the log."""
    name = name or stage.name
    out = stage.output(ctx)
    reason = stage.skip_reason(ctx)
    if reason:
        summary.end(name, "skipped", reason=reason)
        log.info("stage %s: skipped, %s", name, reason)
        return
    inputs = stage.inputs(ctx)
    fp = fingerprint(stage, ctx, inputs)
    if not forced and is_done(out, fp):
        counts = (read_state(out) or {}).get("counts", {})
        summary.end(name, "skipped", reason="already done", output=str(out), counts=counts)
        log.info("stage %s: skipped, already done with the same inputs (%s)", name, out)
        return
    summary.start(name, output=str(out),
                  inputs={k: str(p) if p else None for k, p in inputs.items()})
    leftovers = clean_staging(out.parent) + clean_staging(out)   # train stages inside `out`
    if leftovers:
        log.warning("stage %s: removed %d leftovers of an interrupted run under %s",
                    name, len(leftovers), out.parent)
    try:
        result = stage.run(ctx, inputs) or {}
        if not is_published(out):
            raise GieError(f"stage {stage.name} returned but {out} is not published (no _SUCCESS)")
    except BaseException as e:
        summary.end(name, "failed", error=f"{type(e).__name__}: {e}")
        log.error("stage %s: failed after %ss: %s", name, summary.stage(name).get("seconds"), e)
        raise
    counts = flat_counts(result)
    record_done(out, stage.name, fp, ctx.run_id, counts, inputs)
    extra = {"regressions": result["regressions"]} if result.get("regressions") else {}
    summary.end(name, "done", counts=counts, **extra)
    log.info("stage %s: done in %.1fs (%s)", name, summary.stage(name)["seconds"],
             _describe(counts))
    if extra:
        log.warning("stage %s: regressions flagged (the run goes on): %s", name,
                    extra["regressions"])


def _publish(ctx: RunContext, summary: RunSummary, keep_days: int, forced: bool) -> None:
    layout, date = ctx.layout, ctx.date
    summary.start("publish")
    previous = latest_date(layout)
    reason = publish_latest(layout, date, force=forced)
    if reason:
        summary.end("publish", "skipped", reason=reason)
        log.info("stage publish: skipped, %s", reason)
    else:
        summary.end("publish", "done", latest=f"bundle/dt={date}", previous=previous)
        log.info("stage publish: latest -> bundle/dt=%s (was %s)", date, previous or "none")
    removed = apply_retention(layout.work, date, keep_days)
    summary.stage("publish")["retention_removed"] = [str(p) for p in removed]
    summary.set(latest_after=latest_date(layout))


def backfill_dates(ctx: RunContext) -> list[str]:
    """The previous nights the fused ranking of `ctx.date` learns from that have no graph or
    model yet but whose gifts are in the raw folder, oldest first. A night needs the day
    before it too: training holds out the edges first seen on the night's own day."""
    learn = ctx.cfg.expand.fusion
    if not (ctx.cfg.nightly.backfill and learn.enabled and learn.learn.enabled):
        return []
    from gie.evaluate.rawdata import read_days

    def has_gifts(day: dt.date) -> bool:
        return bool(len(read_days(ctx.raw, "gift", day.isoformat(), 1, columns=["timestamp"])))

    out = []
    for back in range(learn.learn.nights, 0, -1):
        day = parse_date(ctx.date) - dt.timedelta(days=back)
        if is_published(ctx.layout.graph(day.isoformat())) and \
                is_published(ctx.layout.model(day.isoformat())):
            continue
        if has_gifts(day) and has_gifts(day - dt.timedelta(days=1)):
            out.append(day.isoformat())
    return out


def run_nightly(raw: str | Path, work: str | Path, date: str, cfg: PipelineConfig,
                force: bool = False, from_stage: str | None = None,
                keep_days: int | None = None) -> dict:
    """Run (or finish) the chain for `date`; return the run summary (also in runs/<id>.json)."""
    parse_date(date)
    raw = Path(raw).resolve()
    if not raw.is_dir():
        raise BadInputError(f"raw input folder {raw} does not exist")
    if from_stage is not None and from_stage not in STAGE_NAMES:
        raise BadInputError(f"--from-stage {from_stage!r} is not one of {', '.join(STAGE_NAMES)}")
    keep_days = keep_days or cfg.nightly.keep_days
    if keep_days < 1:
        raise BadInputError(f"--keep-days must be at least 1, got {keep_days}")
    layout = WorkLayout(Path(work).resolve())
    layout.work.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id(date)
    first_forced = 0 if force else STAGE_NAMES.index(from_stage) if from_stage else len(STAGE_NAMES)

    with RunLock(layout.lock, run_id) as lock, _sigterm_raises():
        summary = RunSummary(layout.runs / f"{run_id}.json", run_id, date, {
            "raw": str(raw), "work": str(layout.work), "date": date, "force": force,
            "from_stage": from_stage, "keep_days": keep_days}, list(STAGE_NAMES))
        config_file = layout.runs / f"{run_id}.config.yaml"
        config_file.write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
        summary.set(config=dump_config(cfg), config_file=str(config_file),
                    latest_before=latest_date(layout), lock_taken_over=lock.took_over)
        log.info("nightly %s: run %s on %s (summary %s)", date, run_id, layout.work, summary.path)
        log.info("nightly %s: %s", date, environment.one_line(summary.data["environment"]))
        ctx = RunContext(raw, layout, date, cfg, config_file, run_id)
        try:
            for day in backfill_dates(ctx):     # a first night: the nights it learns from
                log.info("nightly %s: backfilling the graph and model of %s", date, day)
                for stage in STAGES[:2]:
                    _run_stage(stage, replace(ctx, date=day), summary, forced=False,
                               name=f"{stage.name}@{day}")
            for i, stage in enumerate(STAGES):
                _run_stage(stage, ctx, summary, forced=i >= first_forced)
            _publish(ctx, summary, keep_days, forced=len(STAGES) >= first_forced)
        except BaseException as e:
            code = e.exit_code if isinstance(e, GieError) else EXIT_INTERNAL
            summary.data["latest_after"] = latest_date(layout)
            summary.finish(code, f"{type(e).__name__}: {e}")
            raise
        summary.finish(0)
        log.info("nightly %s: succeeded in %.1fs, latest -> %s", date, summary.data["seconds"],
                 summary.data["latest_after"])
        return summary.data
