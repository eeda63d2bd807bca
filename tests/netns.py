"""Two emulated hosts for multi-host tests: a network namespace each, joined by a veth pair
on a private /24, loopback up inside each. Needs root and iproute2; the fixture skips with
the reason where namespaces cannot be created."""
from __future__ import annotations

import random
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Hosts:
    ips: list[str]            # host i listens on ips[i] (device gie0)
    names: list[str]          # host i's network namespace
    shm: list[Path]           # a private /dev/shm per host, for DGL (see `remote`)

    def run_on(self, i: int) -> list[str]:
        """Command prefix that runs a program on host i."""
        return ["ip", "netns", "exec", self.names[i]]

    @property
    def remote(self) -> str:
        """`train-gie --dist --remote` template: host {machine} with its own /dev/shm (DGL
        names its shared memory without the partition, so two partitions must never share
        one /dev/shm)."""
        prefix = self.names[0][:-1]
        return (f"ip netns exec {prefix}{{machine}} unshare -m sh -c "
                f"'mount --bind {self.shm[0].parent}/shm{{machine}} /dev/shm && "
                "exec \"$0\" \"$@\"'")


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts(tmp_path):
    tag = uuid.uuid4().hex[:6]
    names = [f"gie-{tag}-h0", f"gie-{tag}-h1"]
    net = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
    shm = [tmp_path / f"shm{i}" for i in range(2)]
    try:
        for n in names:
            _sh("ip", "netns", "add", n)
        _sh("ip", "link", "add", f"g{tag}a", "type", "veth", "peer", "name", f"g{tag}b")
        for i, (n, end) in enumerate(zip(names, "ab")):
            _sh("ip", "link", "set", f"g{tag}{end}", "netns", n)
            _sh("ip", "-n", n, "link", "set", f"g{tag}{end}", "name", "gie0")
            _sh("ip", "-n", n, "addr", "add", f"{net}.{i + 1}/24", "dev", "gie0")
            _sh("ip", "-n", n, "link", "set", "gie0", "up")
            _sh("ip", "-n", n, "link", "set", "lo", "up")
            shm[i].mkdir()
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as e:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        pytest.skip(f"cannot emulate two hosts with network namespaces (needs root and "
                    f"iproute2): {e}")
    yield Hosts([f"{net}.1", f"{net}.2"], names, shm)
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
