"""A night's costly view parts, built once per run and kept for the next night's learning.

Two parts of a graph's view cost most to build, and every process that expands the night
would build the same bytes: the gift and watch relations (sorts of every edge: 17 s at 1.3M
users) and the streamers' content and topic memberships (the audience vectors' subspace
iteration and the k-means: 15 s). Each is one file in `_views/` beside the bundle folders
(about 0.6 GB together at 1.3M users), built once among the run's shards (gie/expand/once.py:
with two local workers, one builds each) and read by the others; and night D's learning,
which works on night D-1's graph, reads D-1's files instead of building them again: the same
arrays, so the same sets and bundle bytes. The key holds the graph's and embeddings' file
signatures, the settings the arrays depend on and the source of gie/expand, so a rebuilt
input or changed code is a miss, never a stale hit. Two nights are kept: this one, and the
night before for a rerun of this one.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

import gie
from gie.expand import once
from gie.expand import relations as R
from gie.expand.bundle import file_signature, fingerprint
from gie.expand.config import ExpandConfig
from gie.expand.features import streamer_vectors_of
from gie.expand.learn import source_code
from gie.expand.sources import BASE_STEPS, base_relations
from graphbuild.dataset import GraphData

log = logging.getLogger(__name__)
VIEWS_CACHE = "_views"        # beside the bundle folders
REL_FIELDS = ("indptr", "indices", "data")
PARTS = ("relations", "vectors")
Base = dict[str, R.Rel]
Vectors = tuple[np.ndarray, np.ndarray]


class ViewCache:
    def __init__(self, folder: Path, cfg: ExpandConfig):
        self.folder = Path(folder)
        f = cfg.fusion
        self.settings = {k: getattr(f, k) for k in (
            "content_smooth_k", "content_reference", "topic_clusters", "topic_temperature",
            "topic_basis", "topic_audience_dim")}

    def _paths(self, date: str, graph: Path, embeddings: Path) -> dict[str, Path]:
        """Each part's file (the key read from the inputs' file signatures once)."""
        key = fingerprint([file_signature(p) for p in (graph, embeddings)], self.settings,
                          gie.__version__, source_code())
        return {part: self.folder / f"dt={date}_{key}.{part}.npz" for part in PARTS}

    def get(self, date: str, graph: Path, embeddings: Path) -> tuple[Base | None, Vectors | None]:
        """(base relations, streamer vectors) of this graph and embeddings, each None when
        not kept (or unreadable)."""
        found = []
        for part, path in self._paths(date, graph, embeddings).items():
            try:
                found.append(_LOAD[part](path) if path.is_file() else None)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                log.warning("night %s's %s in %s is unreadable (%s): built again", date, part,
                            path, e)
                found.append(None)
        if any(x is not None for x in found):
            log.info("night %s's %s read from %s", date, " and ".join(
                p for p, x in zip(PARTS, found) if x is not None), self.folder)
        return found[0], found[1]

    def shared(self, date: str, data: GraphData, graph: Path, embeddings: Path,
               cfg: ExpandConfig, claims: Path, shard: int, n: int, wait_s: float
               ) -> tuple[Base, Vectors]:
        """(base relations, streamer vectors) of the night being expanded: built once among
        the run's `n` shards (`claims`: the run's claim folder), kept for the next night."""
        f = cfg.fusion
        build = {"relations": lambda: base_relations(data),
                 "vectors": lambda: streamer_vectors_of(
                     data, f.content_smooth_k, f.content_reference, f.topic_clusters,
                     f.topic_temperature, f.topic_basis, f.topic_audience_dim)}

        paths = self._paths(date, graph, embeddings)

        def piece(part: str) -> once.Piece:
            def make(tmp: Path):
                value = build[part]()
                with open(tmp, "wb") as fh:          # (once.py renames it into place)
                    np.savez(fh, **_ARRAYS[part](value))
                return value
            return once.Piece(paths[part], make, _LOAD[part], f"night {date}'s {part}")

        parts = once.in_turn(list(PARTS), shard, n)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            got = dict(zip(parts, once.build_once([piece(p) for p in parts], claims, wait_s)))
        except OSError as e:          # costs the time of a view, never the run
            log.warning("night %s's view not shared or kept in %s (%s): built here", date,
                        self.folder, e)
            return build["relations"](), build["vectors"]()
        if shard == 0:
            self._prune(date, list(paths.values()))
        return got["relations"], got["vectors"]

    def _prune(self, date: str, keep: list[Path]) -> None:
        """Remove this night's files of other keys and the nights before the one before it
        (a rerun of this night reads that one)."""
        older = sorted({_date(p) for p in self.folder.glob("dt=*.npz") if _date(p) < date})
        for other in self.folder.glob("dt=*.npz"):
            if other not in keep and (_date(other) == date or _date(other) in older[:-1]):
                other.unlink(missing_ok=True)


def _rel_arrays(base: Base) -> dict[str, np.ndarray]:
    arrays = {f"{s}.{f}": getattr(base[s], f) for s in BASE_STEPS for f in REL_FIELDS}
    arrays.update({f"{s}.n_cols": np.int64(base[s].n_cols) for s in BASE_STEPS})
    return arrays


def _load_rels(path: Path) -> Base:
    with np.load(path) as z:
        return {s: R.Rel(*(z[f"{s}.{f}"] for f in REL_FIELDS), int(z[f"{s}.n_cols"]))
                for s in BASE_STEPS}


def _load_vectors(path: Path) -> Vectors:
    with np.load(path) as z:
        return z["content"], z["member"]


_ARRAYS = {"relations": _rel_arrays,
           "vectors": lambda v: {"content": v[0], "member": v[1]}}
_LOAD = {"relations": _load_rels, "vectors": _load_vectors}


def _date(path: Path) -> str:
    return path.name[len("dt="):].partition("_")[0]
