#!/usr/bin/env python
"""gie command line: one command per pipeline stage, plus the nightly chain.

Commands are loaded lazily so that `generate` does not import torch and `train-gie` does
not start a JVM. Exit codes: 0 ok, 1 internal error, 2 bad input, 3 quality floor failed,
4 work folder locked (see docs/OPERATIONS.md).
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from gie.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, GieError
from gie.logs import setup_logging
from gie.procs import keep_freed_heap

# name -> (module:attr, one-line help shown by --help without importing the module)
COMMANDS = {
    "generate": ("graphbuild.commands:generate", "Write a synthetic KuaiLive-layout dataset."),
    "build-graph": ("graphbuild.commands:build_graph", "Build the gifting graph for a date (Spark)."),
    "partition": ("gie.train.commands:partition", "Partition a graph for DGL distributed training."),
    "train-gie": ("gie.train.commands:train_gie", "Train user and streamer embeddings (DGL)."),
    "expand": ("gie.expand.commands:expand", "Expand behaviour sequences, build Faiss indexes."),
    "query": ("gie.expand.commands:query", "Show one node's expansions with explanations."),
    "evaluate": ("gie.evaluate.commands:evaluate", "Evaluate a bundle on the next day's gifts."),
    "nightly": ("gie.pipeline.commands:nightly", "Run the whole chain for one date (cron)."),
    "publish": ("gie.pipeline.commands:publish", "Point <work>/latest at a dated bundle."),
    "compare": ("gie.pipeline.commands:compare", "Compare two runs' outputs, print the first difference."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def cli(verbose: bool) -> None:
    """Graph-guided interest expansion for live-streaming gift recommendation."""
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> int:
    keep_freed_heap()
    log = logging.getLogger("gie")
    try:
        cli.main(args=argv, prog_name="cli.py", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return EXIT_BAD_INPUT
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_INTERNAL
    except GieError as e:
        log.error("%s: %s", type(e).__name__, e)
        return e.exit_code
    except Exception:  # noqa: BLE001 - the last line of defence maps to a documented code
        log.exception("internal error")
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
