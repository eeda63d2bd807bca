"""One run per work folder: an exclusive lock file that survives `kill -9` safely.

The lock is `<work>/.lock`, created with O_EXCL and holding the owner's pid, host, process start
time and run id. A lock whose owner is dead on this host (or whose pid was reused by a newer
process) is stale: it is taken over with a warning, so a crashed run never blocks the next
night. A lock held from another host cannot be checked and is always respected.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

import psutil

from gie.errors import LockedError

log = logging.getLogger(__name__)

# psutil's create_time and time.time() may differ by clock ticks; a holder must have started
# before it wrote the lock, so anything that started later than this after it is another process.
_START_SLACK_S = 2.0


def _owner_alive(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True                                # cannot check: respect it
    pid = info.get("pid")
    if not isinstance(pid, int) or not psutil.pid_exists(pid):
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return started <= float(info.get("created", 0)) + _START_SLACK_S


def _just_created(path: Path) -> bool:
    """An empty lock file may be one that its owner is writing right now."""
    try:
        return time.time() - path.stat().st_mtime < _START_SLACK_S
    except FileNotFoundError:
        return False


def read_lock(path: str | Path) -> dict | None:
    """The lock's content, {} when unreadable (a crash while writing it), None when absent."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


class RunLock:
    """Context manager: acquire `path` or raise LockedError (exit code 4)."""

    def __init__(self, path: str | Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        self.held = False
        self.took_over: dict | None = None

    def _create(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time(),
                "run_id": self.run_id}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):                         # lost races with another taker: retry
            if self._create():
                self.held = True
                return self
            info = read_lock(self.path)
            if info is None:
                continue                           # released meanwhile
            if (info and _owner_alive(info)) or (not info and _just_created(self.path)):
                raise LockedError(
                    f"work folder is locked by run {info.get('run_id')} (pid {info.get('pid')} "
                    f"on {info.get('host')}, since {time.ctime(info.get('created', 0))}); "
                    f"lock file {self.path}")
            # Stale: move it aside atomically; only one concurrent taker wins the rename.
            aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            log.warning("took over a stale lock %s left by run %s (pid %s on %s, dead)",
                        self.path, info.get("run_id"), info.get("pid"), info.get("host"))
            self.took_over = info
        raise LockedError(f"could not acquire {self.path}: other runs keep taking it")

    def release(self) -> None:
        if self.held:
            info = read_lock(self.path)
            if info and info.get("run_id") == self.run_id and info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
