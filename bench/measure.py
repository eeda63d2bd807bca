"""Run a command and measure its wall time and the peak RSS of its whole process tree.

Spark's JVM and torchrun's workers are children of the command, so RSS is summed over the
tree (sampled every 0.2 s), which `resource.getrusage` alone would not give per command. CPU
time (user + system) is the larger of two counts: the command's and its waited-for
descendants' (getrusage of this process's children, before and after: run one measured command
at a time), and the sum of every process's own CPU time last sampled in the tree, which also
counts a child nobody waits for (Spark's JVM) but misses each process's last 0.2 s.
"""
from __future__ import annotations

import resource
import subprocess
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int


def measure(cmd: list[str], cwd: str | None = None, env: dict | None = None,
            interval: float = 0.2) -> Measurement:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    root = psutil.Process(proc.pid)
    peak = 0
    cpu_seen: dict[tuple[int, float], float] = {}       # (pid, create time) -> own CPU s
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            rss = 0
            for p in procs:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu_seen[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(interval)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measurement(wall, max(waited, sum(cpu_seen.values())), peak / 2**20, proc.returncode)
