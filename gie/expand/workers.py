"""Local workers: one host's cores share the work of one `expand` run.

A plain `expand` with `expand.workers = W > 1` is shard 0 of W: once it has prepared the
indexes, kNN tables and fused ranking (gie.expand.bundle), it starts W-1 processes of this
module, one per other shard, which load the same inputs, expand their nodes and mark their
shard done; whichever shard finishes last publishes, exactly as with `--shard I/W` on several
hosts. They are started after the preparation, so that its memory (the fused ranking learns
from previous nights' graphs) is not held twice.

During the preparation, with `expand.fusion.learn.workers` > 1, the previous nights' training
sets of the fused ranking are built by one process of this module per night, that many side by
side (each loads one previous graph), and handed back as files in the staging folder. With
`expand.fusion.learn.fit_processes` 2, the streamer side's fit runs in one process of this
module while the run fits the user side (gie.expand.learn.fit_fusion).
"""
from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from gie import failpoints
from gie.errors import GieError
from gie.procs import PREEXEC, keep_freed_heap, trim_heap

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]     # the folder that holds the `gie` package


def _spawn(spec: dict) -> subprocess.Popen:
    """A worker process of this module; it inherits stderr (its log lines). It finds the
    package where this process found it, whatever the working folder (`python
    /opt/gie/cli.py` run from elsewhere, as a cron line may); `-P` keeps the working folder
    off its module path, so a `gie` folder there cannot stand in for the package."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-P", "-m", "gie.expand.workers"],
                            stdin=subprocess.PIPE,
                            preexec_fn=PREEXEC, env={**os.environ, "PYTHONPATH": path,
                                                     "GIE_EXPAND_LOCAL_WORKER": "1"})
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    return proc


def start(graph: Path, embeddings: Path, out: Path, cfg_dump: dict, seed: int, n: int,
          learn_from: list) -> list[subprocess.Popen]:
    """Start shards 1..n-1 of this run."""
    procs = [_spawn({"graph": str(graph), "embeddings": str(embeddings), "out": str(out),
                     "cfg": cfg_dump, "seed": seed, "shard": [i, n],
                     "learn_from": [[str(p) for p in night] for night in learn_from]})
             for i in range(1, n)]
    log.info("started %d local expand worker(s) for shards 1..%d of %d", n - 1, n - 1, n)
    return procs


def nights(plan: list[tuple[Path, Path, Path, float]], cfg_dump: dict, seed: int,
           work: Path, parallel: int, views: Path | None = None) -> list[Path]:
    """The training sets of every night of `plan` ((graph, embeddings, later graph, gap),
    newest first), one process per night, `parallel` at a time (each reading the nights'
    kept views in `views`, gie.expand.viewcache); returns their files, in `plan` order."""
    files = [work / f"night-{i}.npz" for i in range(len(plan))]
    log.info("building the training sets of %d previous nights, %d local workers at a time",
             len(plan), parallel)
    for lo in range(0, len(plan), parallel):
        procs = [_spawn({"night": i, "nights": min(parallel, len(plan)), "graph": str(g),
                         "embeddings": str(e), "later": str(later), "gap": gap,
                         "cfg": cfg_dump, "seed": seed, "out": str(files[i]),
                         "views": str(views) if views else None})
                 for i, (g, e, later, gap) in enumerate(plan) if lo <= i < lo + parallel]
        try:
            wait(procs, "night", first=lo)
        except BaseException:
            stop(procs)
            raise
    return files


@contextmanager
def fit_in_process(ntype: str, sets: Path, cfg_dump: dict, seed: int, out: Path):
    """Fit one node type's fused rankings (training sets in file `sets`) in a local process
    while the body runs; yields a function that waits for it and returns its scorers."""
    from gie.expand import ranker
    proc = _spawn({"fit": ntype, "sets": str(sets), "cfg": cfg_dump, "seed": seed,
                   "out": str(out)})

    def result() -> dict:
        if proc.wait() != 0:
            raise GieError(f"local fit process of the {ntype} side exited with "
                           f"{proc.returncode} (see its log lines above)")
        descs = json.loads((out / "scorers.json").read_text())
        scorers = {k: ranker.load(d, out) for k, d in descs.items()}
        ranker.link(scorers, descs)
        sets.unlink(missing_ok=True)
        return scorers

    try:
        yield result
    except BaseException:
        stop([proc])
        raise


def wait(procs: list[subprocess.Popen], what: str = "shard", first: int = 1) -> None:
    """Wait for every worker (of shards or nights `first`, `first` + 1, ...); the first that
    fails stops the others and fails the run."""
    for i, p in enumerate(procs, start=first):
        if p.wait() != 0:
            stop(procs)
            raise GieError(f"local expand worker of {what} {i} exited with {p.returncode} "
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
    trim_heap()


def threads_per_worker(n: int) -> int:
    return max(1, (os.cpu_count() or 1) // n)


def _night(spec: dict, cfg) -> None:
    from gie.expand import index as ix
    from gie.expand.learn import save_sets
    from gie.expand.run import night_sets
    from gie.expand.viewcache import ViewCache
    from gie.publish import write_json_atomic
    from graphbuild.dataset import load_graph

    later = load_graph(spec["later"], edge_types=("gift",), node_features=False)  # its labels
    with ix.omp_threads(threads_per_worker(spec["nights"])):
        sets, info, _ = night_sets(Path(spec["graph"]), Path(spec["embeddings"]), later,
                                   spec["gap"], cfg, spec["seed"],
                                   ViewCache(Path(spec["views"]), cfg) if spec["views"] else None)
    out = Path(spec["out"])
    save_sets(sets, out)
    write_json_atomic(out.with_suffix(".json"), info)


def _main() -> int:
    from gie.expand.config import ExpandConfig
    from gie.expand.run import expand
    from gie.logs import setup_logging

    keep_freed_heap()
    setup_logging()
    spec = json.loads(sys.stdin.read())
    failpoints.reached("expand-local-worker")
    cfg = ExpandConfig.model_validate(spec["cfg"])
    if "night" in spec:
        _night(spec, cfg)
    elif "fit" in spec:
        from gie.expand.learn import fit_node_type
        fit_node_type(spec["fit"], Path(spec["sets"]), cfg, spec["seed"], Path(spec["out"]))
    else:
        expand(spec["graph"], spec["embeddings"], spec["out"], cfg, seed=spec["seed"],
               shard=tuple(spec["shard"]), learn_from=[tuple(x) for x in spec["learn_from"]])
    return 0


if __name__ == "__main__":
    sys.exit(_main())
