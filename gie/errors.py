"""Errors that map to documented process exit codes (see docs/OPERATIONS.md)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1       # a bug or an environment failure: look at the traceback
EXIT_BAD_INPUT = 2      # input data or arguments are wrong: fix the input, rerun
EXIT_QUALITY = 3        # a quality floor failed (index recall, validation AUC, ...): inspect
EXIT_LOCKED = 4         # another run holds the lock on this work folder


class GieError(Exception):
    """Base class: an expected failure with a message meant for the operator."""

    exit_code = EXIT_INTERNAL


class BadInputError(GieError):
    """Input is missing or malformed; the message names file, column or row."""

    exit_code = EXIT_BAD_INPUT


class QualityFloorError(GieError):
    """A measured quality figure fell below its configured floor."""

    exit_code = EXIT_QUALITY


class LockedError(GieError):
    """Another live process holds the run lock."""

    exit_code = EXIT_LOCKED
