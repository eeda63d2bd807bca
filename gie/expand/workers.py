"""Local expansion workers: one host's cores expand disjoint shards of the same bundle.

A plain `expand` with `expand.workers = W > 1` is shard 0 of W: once it has prepared the
indexes, kNN tables and fused ranking (gie.expand.bundle), it starts W-1 processes of this
module, one per other shard, which load the same inputs, expand their nodes and mark their
shard done; whichever shard finishes last publishes, exactly as with `--shard I/W` on several
hosts. They are started after the preparation, so that its memory (the fused ranking learns
from previous nights' graphs) is not held twice.
"""
from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from gie import failpoints
from gie.errors import GieError
from gie.procs import PREEXEC

log = logging.getLogger(__name__)


def start(graph: Path, embeddings: Path, out: Path, cfg_dump: dict, seed: int, n: int,
          learn_from: list) -> list[subprocess.Popen]:
    """Start shards 1..n-1 of this run; they inherit stderr (their log lines)."""
    procs = []
    for i in range(1, n):
        spec = {"graph": str(graph), "embeddings": str(embeddings), "out": str(out),
                "cfg": cfg_dump, "seed": seed, "shard": [i, n],
                "learn_from": [[str(p) for p in night] for night in learn_from]}
        procs.append(subprocess.Popen([sys.executable, "-m", "gie.expand.workers"],
                                      stdin=subprocess.PIPE, preexec_fn=PREEXEC,
                                      env={**os.environ, "GIE_EXPAND_LOCAL_WORKER": "1"}))
        procs[-1].stdin.write(json.dumps(spec).encode())
        procs[-1].stdin.close()
    log.info("started %d local expand worker(s) for shards 1..%d of %d", n - 1, n - 1, n)
    return procs


def wait(procs: list[subprocess.Popen]) -> None:
    """Wait for every worker; the first that fails stops the others and fails the run."""
    for i, p in enumerate(procs, start=1):
        if p.wait() != 0:
            stop(procs)
            raise GieError(f"local expand worker of shard {i} exited with {p.returncode} "
                           f"(see its log lines above)")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so that the preparation's
    peak (previous nights' graphs and training sets) is not held beside every worker."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def threads_per_worker(n: int) -> int:
    return max(1, (os.cpu_count() or 1) // n)


def _main() -> int:
    from gie.expand.config import ExpandConfig
    from gie.expand.run import expand
    from gie.logs import setup_logging

    setup_logging()
    spec = json.loads(sys.stdin.read())
    failpoints.reached("expand-local-worker")
    expand(spec["graph"], spec["embeddings"], spec["out"],
           ExpandConfig.model_validate(spec["cfg"]), seed=spec["seed"],
           shard=tuple(spec["shard"]), learn_from=[tuple(x) for x in spec["learn_from"]])
    return 0


if __name__ == "__main__":
    sys.exit(_main())
