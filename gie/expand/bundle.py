"""The bundle folder: shared staging for N shard workers, part files, and the atomic publish.

All workers of one run write into one staging folder next to the bundle, named after the
bundle and the shard count, so workers started independently (torchrun ranks, several hosts
on a shared POSIX filesystem, or plain processes) find it without talking to each other:

    .staging-<bundle>-of-<N>/
        _prepared.json   shard 0: indexes and embeddings are written, kNN tables saved
        _failed.json     shard 0 could not prepare: the others stop with its message
        _done-<I>.json   shard I wrote its parts (with its statistics)
        _publishing      taken (O_EXCL) by the one worker that publishes

Every marker carries the run's input fingerprint, so markers left by a crashed run on other
inputs are never mistaken for this run's. The worker whose done-marker completes the set
writes metadata.json and _SUCCESS and renames the folder into place (gie.publish.publish_dir).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from gie.errors import BadInputError, GieError
from gie.publish import STAGING_PREFIX, SUCCESS, publish_dir, write_json_atomic
from graphbuild.schema import RAW_ID_COLUMN, expansion_schema

log = logging.getLogger(__name__)
PREPARED, FAILED, PUBLISHING = "_prepared.json", "_failed.json", "_publishing"


def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None or isinstance(value, tuple):
        shard = value
    else:
        i, sep, n = str(value).partition("/")
        if not sep or not i.strip().isdigit() or not n.strip().isdigit():
            raise BadInputError(f"--shard {value!r} is not of the form I/N, e.g. 0/4")
        shard = (int(i), int(n))
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise BadInputError(f"shard {shard[0]}/{shard[1]}: need 0 <= I < N")
    return shard


def shard_from_env() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when started by torchrun (or any launcher that sets both)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return parse_shard(f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}")
    return None


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_signature(folder: Path) -> list:
    """(name, size, mtime) of every file under `folder`: cheap change detection of an input."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in Path(folder).rglob("*") if p.is_file())


class ShardedStage:
    def __init__(self, final: Path, shard: int, n_shards: int, token: str):
        self.final, self.shard, self.n, self.token = Path(final), shard, n_shards, token
        self.path = self.final.parent / f"{STAGING_PREFIX}{self.final.name}-of-{n_shards}"

    def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.shard == 0:                     # forget markers of an earlier, different run
            for p in self.path.glob("_*"):      # (_work/ is a folder shard 0 rewrites)
                if p.is_file() and p.name != PUBLISHING and \
                        self._marker(p).get("token") != self.token:
                    p.unlink(missing_ok=True)
            (self.path / PUBLISHING).unlink(missing_ok=True)

    @staticmethod
    def _marker(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def mark(self, name: str, info: dict) -> None:
        write_json_atomic(self.path / name, {"token": self.token, **info})

    def wait_prepared(self, timeout_s: int) -> dict:
        """Block until shard 0 has written indexes and kNN tables for this same run."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            failed = self._marker(self.path / FAILED)
            if failed.get("token") == self.token:
                raise GieError(f"shard 0 failed to prepare the bundle: {failed.get('error')}")
            prepared = self._marker(self.path / PREPARED)
            if prepared.get("token") == self.token:
                return prepared
            time.sleep(1.0)
        raise GieError(f"shard {self.shard}/{self.n}: shard 0 did not prepare {self.path} "
                       f"within {timeout_s}s (is shard 0 running?)")

    def done_markers(self) -> list[dict]:
        found = [self._marker(self.path / f"_done-{i}.json") for i in range(self.n)]
        return [m for m in found if m.get("token") == self.token]

    def try_publish(self, metadata_for) -> dict | None:
        """Publish when every shard is done and no other worker is publishing; else None."""
        done = self.done_markers()
        if len(done) < self.n:
            log.info("shard %d/%d done; %d of %d shards finished, bundle not yet published",
                     self.shard, self.n, len(done), self.n)
            return None
        try:
            os.close(os.open(self.path / PUBLISHING, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None
        metadata = metadata_for(self._marker(self.path / PREPARED), done)
        write_json_atomic(self.path / "metadata.json", metadata)
        for p in self.path.glob("_*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        (self.path / SUCCESS).write_text("")
        publish_dir(self.path, self.final)
        return metadata

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def part_path(stage: Path, node_type: str, shard: int, n_shards: int) -> Path:
    return stage / "expansions" / node_type / f"part-{shard}-of-{n_shards}.parquet"


def batch_table(node_type: str, rows: np.ndarray, raw_src: np.ndarray, raw_tgt: np.ndarray,
                results: dict, metapath_order: list[str]) -> pa.Table:
    """One batch's rows in the bundle schema, ordered by node id then metapath."""
    tables = []
    for mp, c in results.items():
        counts = np.bincount(c.row, minlength=len(rows))
        has = np.flatnonzero(counts)
        offsets = pa.array(np.r_[0, np.cumsum(counts[has])], pa.int32())
        tables.append(pa.table({
            "_node": pa.array(rows[has], pa.int64()),
            "_mp": pa.array(np.full(len(has), metapath_order.index(mp)), pa.int8()),
            RAW_ID_COLUMN[node_type]: pa.array(raw_src[rows[has]], pa.int64()),
            "metapath": pa.array([mp] * len(has), pa.string()),
            "targets": pa.ListArray.from_arrays(offsets, pa.array(raw_tgt[c.target], pa.int64())),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(c.score, pa.float32())),
            "via": pa.ListArray.from_arrays(offsets, pa.array(c.via, pa.int64())),
            "source": pa.ListArray.from_arrays(offsets, pa.array(
                c.source if c.source is not None else np.full(len(c.row), mp, object),
                pa.string())),
        }))
    table = pa.concat_tables(tables).sort_by([("_node", "ascending"), ("_mp", "ascending")])
    return table.select(expansion_schema(node_type).names).cast(expansion_schema(node_type))
