"""Options shared by every stage command."""
from __future__ import annotations

import click

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    help="pipeline YAML config (one section per stage)")
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
    help="override a config key, e.g. --set train.epochs=3 (repeatable)")
