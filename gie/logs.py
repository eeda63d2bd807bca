"""Logging set-up shared by every command: one line per event, with counts.

The log is read by people in a terminal and by cron and schedulers in a file, so everything
goes through one format on stderr: progress as log lines when stderr is not a terminal
(gie.progress), Python warnings as log records, and third-party libraries only from WARNING
up (Faiss' loader, for one, logs its instruction-set probing, failed imports included, at
INFO on every start).
"""
from __future__ import annotations

import logging
import sys
import warnings

THIRD_PARTY = ("py4j", "faiss", "matplotlib", "PIL", "dgl", "torch", "urllib3", "fsspec")

# Known, harmless warnings that every run would otherwise repeat.
IGNORED_WARNINGS = (
    # DGL's dataloader suggests CPU affinity; ours run with num_workers=0, where it cannot apply
    "Dataloader CPU affinity opt is not enabled",
)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{message}")
    logging.captureWarnings(True)      # warnings.warn(...) as one log line, not two raw ones
