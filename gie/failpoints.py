"""Failpoints: let a test SIGKILL a run at an exact point, to prove that a rerun recovers.

`GIE_FAILPOINT=NAME[:N]` in the environment makes the N-th (default first) call of
`reached(NAME)` in a process SIGKILL the whole process group when the process leads it (as
`kill -9 -PGID` from an operator, or a killed container, would), else the process alone (so a
test that forgot `start_new_session` does not kill itself). Timing-based kills cannot land reliably inside a
training epoch that takes a tenth of a second, or between two statements of the publish
step. Without the variable, `reached` only counts.

Names: `train-step` (after an optimizer step), `train-epoch-end` (after an epoch's
checkpoint is written), `publish-before-switch` and `publish-after-switch` (around the
switch of `latest`), `expand-prepared` (shard 0 of `expand`, once its preparation is marked),
`expand-local-worker` (a local expand worker, before it starts).
"""
from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def reached(name: str) -> None:
    _hits[name] += 1
    spec = os.environ.get("GIE_FAILPOINT")
    if not spec:
        return
    want, _, count = spec.partition(":")
    if want == name and _hits[name] == int(count or 1):
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
