"""gie/expand/once.py: pieces that the processes of one run build once between them."""
from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gie.expand import once

NAMES = ["a", "b", "c", "d"]


def _pieces(folder: Path, log: Path) -> list[once.Piece]:
    def build(name: str, tmp: Path) -> str:
        (log / f"{name}-{os.getpid()}").touch()         # who built what
        time.sleep(0.3)
        tmp.write_text(f"value {name}")
        return f"value {name}"

    return [once.Piece(folder / f"{n}.txt", lambda tmp, n=n: build(n, tmp),
                       lambda path: path.read_text(), n) for n in NAMES]


def _shard(folder: str, shard: int, n: int, out: multiprocessing.Queue) -> None:
    folder = Path(folder)
    pieces = once.in_turn(_pieces(folder / "pieces", folder / "log"), shard, n)
    values = once.build_once(pieces, folder / "claims", wait_s=60)
    out.put((shard, dict(zip([p.name for p in pieces], values))))


def test_each_piece_is_built_by_one_process_and_read_by_the_others(tmp_path):
    for sub in ("pieces", "log"):
        (tmp_path / sub).mkdir()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_shard, args=(str(tmp_path), i, 2, out)) for i in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected = {n: f"value {n}" for n in NAMES}
    assert results == {0: expected, 1: expected}
    builders = sorted(p.name.split("-")[0] for p in (tmp_path / "log").iterdir())
    assert builders == NAMES                              # each once, whoever built it
    assert not list((tmp_path / "claims").iterdir())      # claims released
    assert not [p for p in (tmp_path / "pieces").iterdir() if p.name.startswith(".")]
    # Built already: read, nothing built again.
    assert once.build_once(_pieces(tmp_path / "pieces", tmp_path / "log"), tmp_path / "claims",
                           60) == [expected[n] for n in NAMES]
    assert len(list((tmp_path / "log").iterdir())) == len(NAMES)


def test_shards_start_on_different_shares():
    assert once.in_turn(NAMES, 0, 2) == ["a", "b", "c", "d"]
    assert once.in_turn(NAMES, 1, 2) == ["c", "d", "a", "b"]
    assert once.in_turn(["x", "y"], 1, 2) == ["y", "x"]
    assert once.in_turn(NAMES, 0, 1) == NAMES


@pytest.mark.parametrize("claimant", ["dead", "zombie", "gave-up", "other-host"])
def test_a_claim_that_no_longer_promises_the_piece_does_not_hold_a_waiter_up(
        tmp_path, claimant, caplog):
    """A dead claimant on this host (reaped, or a zombie: a worker that died while shard 0
    waits here), a claim removed without the piece, or one from another host that outlasts
    the wait: the waiter builds the piece itself."""
    import threading

    (tmp_path / "log").mkdir()
    claims = tmp_path / "claims"
    claims.mkdir()
    pieces = _pieces(tmp_path, tmp_path / "log")[:1]
    claim = claims / "a.txt.claim"
    gone = None
    if claimant in ("dead", "zombie"):
        gone = subprocess.Popen(["true"])
        if claimant == "dead":
            gone.wait()
        else:                                   # exited, not reaped
            stat = Path(f"/proc/{gone.pid}/stat")
            while stat.read_text().rpartition(")")[2].split()[0] != "Z":
                time.sleep(0.05)
        claim.write_text(f"{socket.gethostname()} {gone.pid}")
    else:
        claim.write_text(f"{'elsewhere' if claimant == 'other-host' else socket.gethostname()} "
                         f"{os.getpid()}")
    if claimant == "gave-up":
        threading.Timer(0.5, claim.unlink).start()
    with caplog.at_level("WARNING", logger="gie.expand.once"):
        assert once.build_once(pieces, claims, wait_s=1.0) == ["value a"]
    if gone is not None:
        gone.wait()
    why = {"dead": "has died", "zombie": "has died", "gave-up": "gave it up",
           "other-host": "within 1s"}[claimant]
    assert why in caplog.text and "built here" in caplog.text
    assert (tmp_path / "a.txt").read_text() == "value a"
