"""The machine's pace: seconds a fixed one-thread workload takes now.

The host's speed has varied by up to 3x between hours and hosts with the same code (the
unchanged 1M build took 189 s in one hour and 583 s in another), so a wall time means little
without the pace at which it was taken. bench_nightly runs this before every measured stage
and keeps the figures beside the stage's: divide two runs' stage times by their paces to
compare them. Three parts, like the stages' work: a float32 matrix product (Faiss, torch), a
sort of random int64 keys (numpy, memory-bound) and a Python loop over a dict (the
interpreter). Each part is the best of three tries, so a passing hiccup does not count.
Example: .venv/bin/python bench/pace.py (one thread as well, so its figures match the bench's;
before 2026-12-06 it ran the product on every core: 0.47 s where the bench read 0.55 s).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _best_of(fn, tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def _parts() -> dict[str, float]:
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    keys = rng.integers(0, 2**62, 4_000_000)

    def loop() -> None:
        d: dict[int, int] = {}
        for i in range(1_000_000):
            d[i % 1000] = d.get(i % 1000, 0) + i

    parts = {"matmul_s": _best_of(lambda: [a @ a for _ in range(8)]),
             "sort_s": _best_of(lambda: np.sort(keys)),
             "python_s": _best_of(loop)}
    return {**parts, "pace_s": round(sum(parts.values()), 3)}


def pace() -> dict[str, float]:
    """The parts' seconds and their sum (`pace_s`), run in a fresh one-thread process."""
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    os.environ.update(ONE_THREAD)     # before numpy loads
    print(json.dumps(_parts()))
