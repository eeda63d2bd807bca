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
