"""Run a command and measure its wall time and the peak RSS of its whole process tree.

Spark's JVM and torchrun's workers are children of the command, so RSS is summed over the
tree (sampled every 0.2 s), which `resource.getrusage` alone would not give per command. CPU
time is the command's and its waited-for descendants' (user + system), from getrusage of the
children of this process before and after: run one measured command at a time.
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
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(interval)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measurement(wall, cpu, peak / 2**20, proc.returncode)
