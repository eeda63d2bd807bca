"""A night's costly view parts, kept for the next night's fused-ranking learning.

Night D learns from night D-1's graph (gie/expand/learn.py), and before building D-1's
training sets it rebuilt what D-1's own `expand` had built already: the gift and watch
relations (sorts of every edge: 17 s at 1.3M users) and the streamers' content and topic
memberships (the audience vectors' subspace iteration and the k-means: 15 s). Shard 0 of
every run keeps them in `_views/` beside the bundle folders (about 0.6 GB at 1.3M users),
and the next night's learning reads them instead: the same arrays, so the same sets and
bundle bytes. The key holds the graph's and embeddings' file signatures, the settings the
arrays depend on and the source of gie/expand, so a rebuilt input or changed code is a miss,
never a stale hit. Two nights are kept: this one, and the night before for a rerun of this one.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

import gie
from gie.expand import relations as R
from gie.expand.bundle import file_signature, fingerprint
from gie.expand.config import ExpandConfig
from gie.expand.learn import source_code
from gie.expand.sources import BASE_STEPS
from gie.publish import write_npz_atomic

log = logging.getLogger(__name__)
VIEWS_CACHE = "_views"        # beside the bundle folders
REL_FIELDS = ("indptr", "indices", "data")


class ViewCache:
    def __init__(self, folder: Path, cfg: ExpandConfig):
        self.folder = Path(folder)
        f = cfg.fusion
        self.settings = {k: getattr(f, k) for k in (
            "content_smooth_k", "content_reference", "topic_clusters", "topic_temperature",
            "topic_basis", "topic_audience_dim")}

    def _path(self, date: str, graph: Path, embeddings: Path) -> Path:
        key = fingerprint([file_signature(p) for p in (graph, embeddings)], self.settings,
                          gie.__version__, source_code())
        return self.folder / f"dt={date}_{key}.npz"

    def get(self, date: str, graph: Path, embeddings: Path
            ) -> tuple[dict[str, R.Rel], tuple[np.ndarray, np.ndarray]] | None:
        """(base relations, streamer vectors) of this graph and embeddings, or None."""
        path = self._path(date, graph, embeddings)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                base = {s: R.Rel(*(z[f"{s}.{f}"] for f in REL_FIELDS), int(z[f"{s}.n_cols"]))
                        for s in BASE_STEPS}
                vectors = (z["content"], z["member"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            log.warning("night %s's view in %s is unreadable (%s): built again", date, path, e)
            return None
        log.info("night %s's relations and streamer vectors read from %s", date, self.folder)
        return base, vectors

    def put(self, date: str, graph: Path, embeddings: Path, base: dict[str, R.Rel],
            vectors: tuple[np.ndarray, np.ndarray]) -> None:
        """Keep this night's view (written whole, renamed into place); remove this
        night's other keys and the nights before the one before it (a rerun of this night
        reads that one). A failed write only costs the next night the view's time."""
        path = self._path(date, graph, embeddings)
        arrays = {f"{s}.{f}": getattr(base[s], f) for s in BASE_STEPS for f in REL_FIELDS}
        arrays.update({f"{s}.n_cols": np.int64(base[s].n_cols) for s in BASE_STEPS})
        arrays.update(content=vectors[0], member=vectors[1])
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_npz_atomic(path, arrays)
        except OSError as e:
            log.warning("night %s's view not kept in %s: %s", date, self.folder, e)
            return
        older = sorted({_date(p) for p in self.folder.glob("dt=*.npz") if _date(p) < date})
        for other in self.folder.glob("dt=*.npz"):
            if other != path and (_date(other) == date or _date(other) in older[:-1]):
                other.unlink(missing_ok=True)


def _date(path: Path) -> str:
    return path.name[len("dt="):].partition("_")[0]
