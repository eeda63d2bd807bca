"""A real Spark standalone cluster for tests: one master and N workers, each its own JVM
started with pyspark's `spark-class`, every address on 127.0.0.1.

Everything a test started is stopped by the process ids it started (and the executor JVMs
the workers forked, found through those ids), never by name: other engineers' Spark jobs
may run on the same machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyspark

from tests.train_helpers import free_port

SPARK_HOME = Path(pyspark.__file__).parent
LOCAL = "127.0.0.1"


@dataclass
class Cluster:
    url: str                                   # spark://127.0.0.1:PORT
    ui: str                                    # the master's web UI (JSON at /json/)
    logs: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as r:
            return json.load(r)

    def pids(self) -> list[int]:
        """Our daemons and everything they started (the executor JVMs), still alive."""
        return [pid for p in self.procs for pid in process_tree(p.pid)]

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}"
                         for p in sorted(self.logs.glob("*.log")))


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, those still alive."""
    try:
        proc = psutil.Process(pid)
        return [proc.pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listening(pids: list[int]) -> set[str]:
    """The local addresses these processes listen on (IPv4-mapped IPv6 written as IPv4)."""
    addrs = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        addrs |= {c.laddr.ip.removeprefix("::ffff:") for c in conns
                  if c.status == psutil.CONN_LISTEN}
    return addrs


def process_names(pids: list[int]) -> set[str]:
    names = set()
    for pid in pids:
        try:
            names.add(psutil.Process(pid).name())
        except psutil.NoSuchProcess:
            pass
    return names


def cluster_env() -> dict[str, str]:
    """Environment for the daemons and for spark-submit: loopback only, small daemon heaps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP=LOCAL, SPARK_DAEMON_MEMORY="256m",
               SPARK_NO_DAEMONIZE="1")
    # the tests' JIT setting (tests/conftest.py) for the daemons and spark-submit's driver too
    jvm = os.environ.get("SPARK_SUBMIT_OPTS", "")
    env.update(SPARK_SUBMIT_OPTS=jvm, SPARK_DAEMON_JAVA_OPTS=jvm)
    return env


def _start(cls: str, args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), cls, *args],
                                stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _wait(cluster: Cluster, ready, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in cluster.procs):
            raise RuntimeError(f"a Spark daemon exited while waiting for {what}:\n"
                               f"{cluster.log_tail()}")
        try:
            if ready(cluster.state()):
                return
        except OSError:
            pass                                   # the web UI is not up yet
        time.sleep(0.5)
    raise TimeoutError(f"Spark cluster: no {what} after {timeout_s}s:\n{cluster.log_tail()}")


def stop(cluster: Cluster, grace_s: float = 20) -> None:
    """SIGTERM to the daemons and the executors they forked (by pid), SIGKILL after grace_s."""
    pids = cluster.pids()
    for pid in reversed(pids):                     # workers and executors before the master
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs([p for p in map(_proc, pids) if p], timeout=grace_s)
    for p in alive:
        p.kill()
    for p in cluster.procs:
        p.wait(timeout=10)


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@contextmanager
def standalone_cluster(folder: Path, workers: int = 2, cores: int = 1, memory: str = "1g",
                       timeout_s: float = 120):
    """Master + `workers` workers (`cores` cores, `memory` for executors each), ready when
    every worker is registered with the master; stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    env = cluster_env()
    port, ui_port = free_port(), free_port()
    cluster = Cluster(f"spark://{LOCAL}:{port}", f"http://{LOCAL}:{ui_port}", folder)
    try:
        cluster.procs.append(_start("org.apache.spark.deploy.master.Master",
                                    ["--host", LOCAL, "--port", str(port),
                                     "--webui-port", str(ui_port)], folder / "master.log", env))
        _wait(cluster, lambda s: s.get("status") == "ALIVE", "master", timeout_s)
        for i in range(workers):
            work = folder / f"worker{i}"
            work.mkdir(exist_ok=True)
            cluster.procs.append(_start(
                "org.apache.spark.deploy.worker.Worker",
                ["--host", LOCAL, "--port", str(free_port()), "--webui-port", str(free_port()),
                 "--cores", str(cores), "--memory", memory, "--work-dir", str(work),
                 cluster.url], folder / f"worker{i}.log", env))
        _wait(cluster, lambda s: s.get("aliveworkers") == workers, f"{workers} workers",
              timeout_s)
        yield cluster
    finally:
        stop(cluster)
