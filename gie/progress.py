"""Progress of long loops, fit for a terminal and for a log file alike.

On a terminal (stderr is a TTY) this is a tqdm bar. Anywhere else (cron, a scheduler, a
file) a bar's redraws would pile up as one line of carriage returns per loop, so the loop
instead logs one line at most every `every_s` seconds (GIE_PROGRESS_EVERY_S, default 30):

    epoch 2: 1200/4800 batch (25%), 3.1 batch/s, ETA 19m21s, loss=0.4213

and a closing line (`done in ...`). Loops shorter than `every_s` log nothing: the stages
log their own summary lines.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator

log = logging.getLogger(__name__)


def every_s_default() -> float:
    return float(os.environ.get("GIE_PROGRESS_EVERY_S", "30"))


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(iterable: Iterable, desc: str, total: int | None = None, unit: str = "it",
             disable: bool = False, every_s: float | None = None, **tqdm_options):
    """`iterable`, reporting its progress; supports `set_postfix(**values)` like tqdm.
    `tqdm_options` (e.g. mininterval) apply to the terminal bar only."""
    if on_terminal():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable,
                    **{"leave": False, **tqdm_options})
    return LogProgress(iterable, desc, total, unit, disable,
                       every_s_default() if every_s is None else every_s)


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LogProgress:
    """Iterates `iterable`, logging done / total, rate and ETA at most every `every_s`."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None, unit: str,
                 disable: bool, every_s: float):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else getattr(iterable, "__len__", lambda: None)()
        self.disable, self.every_s = disable, every_s
        self.postfix: dict = {}

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values):
        self.postfix = {**(ordered_dict or {}), **values}

    def __len__(self) -> int:
        return len(self.iterable)

    def line(self, done: int, seconds: float, final: bool = False) -> str:
        rate = done / seconds if seconds > 0 else 0.0
        parts = [f"{self.desc}: {done}" + (f"/{self.total}" if self.total else "")
                 + f" {self.unit}" + (f" ({done / self.total:.0%})" if self.total else "")]
        parts.append(f"{rate:.3g} {self.unit}/s")
        if final:
            parts.append(f"done in {duration(seconds)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - done) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def __iter__(self) -> Iterator:
        start = last = time.monotonic()
        done, logged = 0, False
        for item in self.iterable:
            yield item
            done += 1
            now = time.monotonic()
            if not self.disable and now - last >= self.every_s and done != self.total:
                log.info("%s", self.line(done, now - start))
                last, logged = now, True
        seconds = time.monotonic() - start
        if not self.disable and (logged or seconds >= self.every_s):
            log.info("%s", self.line(done, seconds, final=True))
