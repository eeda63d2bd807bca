"""Our launcher for DGL distributed training (DGL's pip package has no launch.py).

For every machine listed in the ip config ("IP [PORT]" per line, the first machine is the
torch.distributed master) it starts `num_servers` graph servers and then `num_trainers`
trainers, each re-running the same command with the role in its environment. Processes
run locally when the machine is 127.0.0.1, otherwise through `remote`, a command prefix
with {host} and {machine} placeholders (default `ssh {host}`; tests emulate hosts with
`ip netns exec gie-h{machine}`). The job ends when every
trainer has exited (servers shut down by themselves); on a failure or a timeout every
process we started is killed.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gie.errors import BadInputError, GieError

log = logging.getLogger(__name__)
DEFAULT_PORT = 30050
LOCAL = {"127.0.0.1", "localhost"}


@dataclass(frozen=True)
class Machine:
    ip: str
    port: int


def read_ip_config(path: str | Path) -> list[Machine]:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"ip config {path} does not exist")
    machines = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            machines.append(Machine(parts[0], int(parts[1]) if len(parts) > 1 else DEFAULT_PORT))
        except ValueError as e:
            raise BadInputError(f"{path} line {n}: expected 'IP [PORT]', got {line!r}") from e
    if not machines:
        raise BadInputError(f"ip config {path} lists no machine")
    return machines


def role_envs(machines: list[Machine], part_config: str, ip_config: str, num_servers: int,
              num_trainers: int, master_port: int, max_try: int) -> list[tuple[int, dict]]:
    """(machine index, environment) of every process, servers first (DGL's launch order)."""
    common = {
        "DGL_NUM_SERVER": str(num_servers), "DGL_NUM_SAMPLER": "0",
        "DGL_NUM_CLIENT": str(num_trainers * len(machines)), "DGL_IP_CONFIG": ip_config,
        "DGL_CONF_PATH": part_config, "DGL_GRAPH_FORMAT": "csc",
        "DGL_DIST_MAX_TRY_TIMES": str(max_try),
    }
    envs = []
    for m in range(len(machines)):
        for s in range(num_servers):
            envs.append((m, {**common, "DGL_ROLE": "server", "DGL_SERVER_ID": str(m * num_servers + s),
                             "OMP_NUM_THREADS": "1"}))
    world = num_trainers * len(machines)
    for m in range(len(machines)):
        for t in range(num_trainers):
            envs.append((m, {**common, "DGL_ROLE": "client", "DGL_DIST_MODE": "distributed",
                             "DGL_GROUP_ID": "0", "MASTER_ADDR": machines[0].ip,
                             "MASTER_PORT": str(master_port), "RANK": str(m * num_trainers + t),
                             "WORLD_SIZE": str(world), "LOCAL_RANK": str(t),
                             "LOCAL_WORLD_SIZE": str(num_trainers)}))
    return envs


def launch(command: list[str], part_config: str | Path, ip_config: str | Path,
           num_servers: int = 1, num_trainers: int = 1, master_port: int = 29500,
           remote: str = "ssh {host}", timeout_s: float | None = None, max_try: int = 100,
           cwd: str | Path | None = None) -> None:
    """Run `command` as servers and trainers on every machine; raise if a trainer fails."""
    machines = read_ip_config(ip_config)
    part_config, ip_config = str(Path(part_config).resolve()), str(Path(ip_config).resolve())
    cwd = str(Path(cwd or os.getcwd()).resolve())
    servers, trainers = [], []
    try:
        for m, env in role_envs(machines, part_config, ip_config, num_servers, num_trainers,
                                master_port, max_try):
            if machines[m].ip in LOCAL:
                argv, proc_env = command, {**os.environ, **env}
            else:
                exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                inner = f"cd {shlex.quote(cwd)} && env {exports} {shlex.join(command)}"
                argv = shlex.split(remote.format(host=machines[m].ip, machine=m))
                argv, proc_env = argv + ["bash", "-c", inner], os.environ.copy()
            proc = subprocess.Popen(argv, env=proc_env, cwd=cwd, start_new_session=True)
            (servers if env["DGL_ROLE"] == "server" else trainers).append(proc)
        log.info("launched %d graph servers and %d trainers on %d machine(s)",
                 len(servers), len(trainers), len(machines))
        _wait(trainers, timeout_s)
        for p in servers:                          # servers exit once all trainers are gone
            p.wait(timeout=60)
    finally:
        for p in servers + trainers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _wait(trainers: list[subprocess.Popen], timeout_s: float | None) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while any(p.poll() is None for p in trainers):
        failed = [p for p in trainers if p.poll() not in (None, 0)]
        if failed:
            raise GieError(f"a trainer exited with code {failed[0].returncode}; stopping the job")
        if deadline is not None and time.monotonic() > deadline:
            raise GieError(f"distributed job still running after {timeout_s:.0f}s; stopped")
        time.sleep(0.5)
    codes = [p.returncode for p in trainers]
    if any(codes):
        raise GieError(f"trainers exited with codes {codes}")
