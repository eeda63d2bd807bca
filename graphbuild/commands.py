"""Click commands of the graph build package: `generate` and `build-graph`."""
from __future__ import annotations

import click

from gie.cliopts import config_option, set_option


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--profile", type=click.Choice(["default", "long_history", "weak_clicks",
                                                "no_content", "few_users"]),
              default="default", show_default=True,
              help="shape of the data (docs/DATA_FORMAT.md); the options below override it")
@click.option("--users", type=click.IntRange(1), default=None, help="[default: 20000]")
@click.option("--streamers", type=click.IntRange(1), default=None, help="[default: 2000]")
@click.option("--days", default=15, show_default=True, type=click.IntRange(1))
@click.option("--start", default="2025-05-01", show_default=True, help="first day, YYYY-MM-DD")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="parquet",
              show_default=True)
@click.option("--gifts-per-day", type=click.IntRange(1), default=None,
              help="target gift events per day (default: from the number of users)")
def generate(out, profile, users, streamers, days, start, seed, fmt, gifts_per_day):
    """Write a synthetic KuaiLive-layout dataset (plus segments and truth/)."""
    from graphbuild.synthetic import GenConfig, generate as run

    given = {"users": users, "streamers": streamers, "gifts_per_day": gifts_per_day}
    cfg = GenConfig(profile=profile, days=days, start=start, seed=seed, format=fmt,
                    **{k: v for k, v in given.items() if v is not None})
    run(out, cfg)


@click.command("build-graph")
@click.option("--raw", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="graph root: the dataset is published to <out>/dt=<date>/")
@click.option("--date", required=True, help="last day of the window (UTC), YYYY-MM-DD")
@click.option("--window-days", type=click.IntRange(1), default=None)
@click.option("--prev", type=click.Path(file_okay=False), default=None,
              help="previous dataset whose id map is kept (default: latest earlier date under --out)")
@click.option("--master", default=None, help="Spark master (default local[*])")
@config_option
@set_option
def build_graph(raw, out, date, window_days, prev, master, config_path, overrides):
    """Build the validated, id-mapped gifting graph for one date with Spark."""
    from gie.config import load_config
    from graphbuild.job import run_build

    cfg = load_config(config_path, overrides)
    if window_days is not None:
        cfg.build.window_days = window_days
    run_build(raw=raw, out=out, date=date, cfg=cfg.build, prev=prev, master=master)
