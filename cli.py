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

COMMANDS = {
    "generate": "graphbuild.commands:generate",
    "build-graph": "graphbuild.commands:build_graph",
    "partition": "gie.train.commands:partition",
    "train-gie": "gie.train.commands:train_gie",
    "expand": "gie.expand.commands:expand",
    "query": "gie.expand.commands:query",
    "evaluate": "gie.evaluate.commands:evaluate",
    "nightly": "gie.pipeline.commands:nightly",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def cli(verbose: bool) -> None:
    """Graph-guided interest expansion for live-streaming gift recommendation."""
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> int:
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
