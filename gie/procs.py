"""Child processes that never outlive the process that started them."""
from __future__ import annotations

import ctypes
import signal
import sys


def die_with_parent() -> None:
    """Linux: the child gets SIGKILL if its parent dies (even by kill -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


PREEXEC = die_with_parent if sys.platform == "linux" else None
