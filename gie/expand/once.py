"""Work that every process of one run needs, done by one of them.

The local workers of an expand (gie/expand/workers.py) start together, and each needs the
same pieces before its first batch: today's gift and watch relations and the streamers'
content and topic vectors (about 17 s of one core each at 1.3M users), and each learned
ranker compiled to native code (about 4.5 s a model): the same bytes in every process. So
each piece is a file. A process takes the pieces in its own turn (shard i starts i/n of the
way along the list, so two shards start on different halves), builds those it can claim (an
exclusive claim file) and renames each into place, then reads the others' once they appear.

A claim whose process has died (on this host), that was given up without the file, or that
outlasts `wait_s` does not hold a waiter up: it builds the piece itself. Whoever builds a
piece, its bytes are the same, so this only ever changes who spends the time.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)
POLL_S = 0.2


@dataclass
class Piece:
    path: Path                            # where the piece's file lives once built
    build: Callable[[Path], Any]          # writes the file at the given path, returns the value
    load: Callable[[Path], Any]           # reads the value from a built file
    name: str = ""                        # for the log (default: the file name)

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name


def in_turn(items: list, shard: int, n: int) -> list:
    """`items` starting from shard `shard`'s share of them (of `n` shards)."""
    k = shard * len(items) // max(n, 1)
    return items[k:] + items[:k]


def build_once(pieces: list[Piece], claims: Path, wait_s: float) -> list:
    """The value of every piece, in order: read when built already, built when this process
    claims it first (claim files in `claims`), otherwise read once another process has
    built it."""
    claims.mkdir(parents=True, exist_ok=True)
    values: dict[int, Any] = {}
    for i, piece in enumerate(pieces):
        if piece.path.is_file() or not _claim(_claim_path(claims, piece)):
            continue
        values[i] = _build(piece, _claim_path(claims, piece))
    for i, piece in enumerate(pieces):
        if i not in values:
            values[i] = _wait(piece, _claim_path(claims, piece), wait_s)
    return [values[i] for i in range(len(pieces))]


def _claim_path(claims: Path, piece: Piece) -> Path:
    return claims / f"{piece.path.name}.claim"


def _claim(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{socket.gethostname()} {os.getpid()}")
    return True


def _build(piece: Piece, claim: Path | None) -> Any:
    t0 = time.perf_counter()
    tmp = piece.path.with_name(f".{piece.path.name}.{os.getpid()}.tmp")
    try:
        value = piece.build(tmp)
        os.replace(tmp, piece.path)
    finally:
        tmp.unlink(missing_ok=True)
        if claim is not None:
            claim.unlink(missing_ok=True)
    log.info("%s built in %.1fs (for every process of this run)", piece.name,
             time.perf_counter() - t0)
    return value


def _wait(piece: Piece, claim: Path, wait_s: float) -> Any:
    t0 = time.monotonic()
    while not piece.path.is_file():
        why = _abandoned(claim)
        if why is None and time.monotonic() - t0 > wait_s:
            why = f"did not build it within {wait_s:.0f}s"
        if why is not None and not piece.path.is_file():   # (renamed, then unclaimed)
            log.warning("%s: its builder %s; built here", piece.name, why)
            return _build(piece, None)
        time.sleep(POLL_S)
    value = piece.load(piece.path)
    log.info("%s read, built by another process (waited %.1fs)", piece.name,
             time.monotonic() - t0)
    return value


def _abandoned(claim: Path) -> str | None:
    """Why a claim no longer promises the piece, or None while it does."""
    try:
        host, pid = claim.read_text().split()
    except FileNotFoundError:
        return "gave it up"
    except ValueError:                    # being written: the claimant is alive
        return None
    if host == socket.gethostname() and not _alive(int(pid)):
        return f"(process {pid}) has died"
    return None


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host is running: a zombie (dead, not yet reaped, as a
    worker is until shard 0, waiting here, reaps it) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):        # gone meanwhile (Linux), or no /proc to ask
        return not Path("/proc").is_dir()
