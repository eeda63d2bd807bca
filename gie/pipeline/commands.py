"""The `nightly` command: the whole chain for one date, for cron or one scheduler task."""
from __future__ import annotations

import click

from gie.cliopts import config_option, set_option
from gie.pipeline.stages import STAGE_NAMES


@click.command()
@click.option("--raw", required=True, type=click.Path(file_okay=False),
              help="raw KuaiLive-layout input folder")
@click.option("--work", required=True, type=click.Path(file_okay=False),
              help="work folder: graph/ model/ bundle/ reports/ latest runs/")
@click.option("--date", required=True, help="the day to process (UTC), YYYY-MM-DD")
@config_option
@set_option
@click.option("--force", is_flag=True, help="redo every stage even when it is done")
@click.option("--from-stage", type=click.Choice(STAGE_NAMES), default=None,
              help="redo this stage and the ones after it; earlier ones run only if not done")
@click.option("--keep-days", type=click.IntRange(1), default=None,
              help="retention in days (default: nightly.keep_days of the config)")
def nightly(raw, work, date, config_path, overrides, force, from_stage, keep_days):
    """Build, train, expand, evaluate and publish one date; exit codes in docs/OPERATIONS.md."""
    from gie.config import load_config
    from gie.pipeline.nightly import run_nightly

    cfg = load_config(config_path, overrides)
    run_nightly(raw, work, date, cfg, force=force, from_stage=from_stage, keep_days=keep_days)


@click.command()
@click.option("--work", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--date", required=True, help="the bundle date, YYYY-MM-DD")
@click.option("--force", is_flag=True, help="re-point latest even when it already points there")
@click.option("--keep-days", type=click.IntRange(1), default=None,
              help="then remove dated folders older than this (never latest's)")
def publish(work, date, force, keep_days):
    """Point <work>/latest at bundle/dt=DATE atomically (never backwards): the last task when a
    scheduler runs the stage commands one by one."""
    import logging

    from gie.layout import WorkLayout, parse_date
    from gie.pipeline.latest import publish_latest
    from gie.pipeline.lock import RunLock
    from gie.pipeline.retention import apply_retention
    from gie.pipeline.summary import new_run_id

    parse_date(date)
    layout = WorkLayout(work)
    log = logging.getLogger("gie.pipeline")
    with RunLock(layout.lock, new_run_id(date)):
        reason = publish_latest(layout, date, force=force)
        log.info("latest %s", f"left alone: {reason}" if reason else f"-> bundle/dt={date}")
        if keep_days:
            apply_retention(layout.work, date, keep_days)


@click.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--all", "show_all", is_flag=True, help="list every difference, not the first")
def compare(a, b, show_all):
    """Compare two graphs, models, bundles, reports or work folders; print the first
    difference, and where the runs' recorded environments differ if they do. Timings, host
    names, run ids, environments and absolute paths are ignored (see docs/OPERATIONS.md).
    Exit code 0 when the same, 5 when they differ."""
    import sys

    from gie.pipeline.compare import EXIT_DIFFERENT, differences, environment_differences

    found = 0
    for diff in differences(a, b):
        found += 1
        click.echo(f"differ: {diff}")
        if not show_all:
            break
    if found:
        env = environment_differences(a, b)
        if env:
            click.echo("note: the runs' environments differ too (other libraries or CPU "
                       "round the last bits otherwise; see docs/OPERATIONS.md):")
            for line in env:
                click.echo(f"  {line}")
        sys.exit(EXIT_DIFFERENT)   # SystemExit passes through cli.main: 5 = "they differ"
    click.echo(f"same: {a} and {b} hold the same outputs")
