"""The nightly fit of the fused ranking, on a time split that never sees the day after D.

Features come from previous nights (each night's graph and embeddings: what the pipeline knew
then); labels are the gifts that came after each night's window, read from the next graph (a
gift edge whose last gift is later than that night's window end): for the newest previous
night P that is today's graph D. So the ranker of night D learns "which of a night's
candidates were gifted the next day" and is applied to today's candidates; nothing after D is
read. The newest night is held out to judge the fit (ranker.py). Both sides are learned: users
(which streamers they gift next) and streamers (which users gift them next), each for `merged`
(every gift) and `explore` (first gifts: candidates without a gift edge in that night's graph).
"""
from __future__ import annotations

import json
import logging
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import gie
from gie.config import dump_config
from gie.expand.bundle import file_signature, fingerprint
from gie.expand.config import ExpandConfig
from gie.expand.features import feature_names
from gie.expand.fusion import Fusion, View, pooled_table, fixed_weights, fusion_sources
from gie.expand import ranker
from gie.expand.ranker import Scorer, TrainingSet, concat, fit_fused
from gie.expand.sources import OTHER, source_candidates
from gie.procs import trim_heap
from gie.publish import write_json_atomic, write_npz_atomic
from graphbuild.dataset import GraphData, to_node_ids
from graphbuild.schema import EXPLORE, MERGED, NODE_TYPES

log = logging.getLogger(__name__)


def label_pairs(prev: GraphData, today: GraphData) -> tuple[np.ndarray, np.ndarray]:
    """(user, streamer) node ids of `prev` for every pair gifted after prev's window (per
    today's graph); pairs with a node unknown to `prev` cannot be candidates and are left out."""
    end = int(prev.metadata["window"]["end_ms"])
    gift = today.edges["gift"]
    after = gift.data["last_ts"] >= end
    u = to_node_ids(prev.raw_ids["user"], today.raw_ids["user"][gift.src[after]])
    s = to_node_ids(prev.raw_ids["streamer"], today.raw_ids["streamer"][gift.dst[after]])
    known = (u >= 0) & (s >= 0)
    return u[known], s[known]


def label_groups(users: np.ndarray, streamers: np.ndarray, cfg: ExpandConfig, seed: int
                 ) -> dict[str, np.ndarray]:
    """Per node type, the label nodes learned from: at most `max_groups`, a seeded sample."""
    out = {}
    for ntype, src in (("user", users), ("streamer", streamers)):
        groups = np.unique(src)
        if len(groups) > cfg.fusion.learn.max_groups:
            rng = np.random.default_rng(seed)
            groups = np.sort(rng.choice(groups, cfg.fusion.learn.max_groups, replace=False))
        out[ntype] = groups
    return out


def training_sets(view: View, cfg: ExpandConfig, users: np.ndarray, streamers: np.ndarray,
                  seed: int) -> dict[str, TrainingSet]:
    """Per node type, the candidates of every label node (at most `max_groups`, sampled): the
    merged set, with the explore set's labels (TrainingSet.explore makes that set).

    The two node types are built side by side in two threads: their heavy steps are numpy
    and Faiss calls that release the GIL, and what they share (the relations' caches, the
    users' content tastes) is filled with the same values whichever thread comes first, so
    the sets are the same bytes as one after the other."""
    groups = label_groups(users, streamers, cfg, seed)
    with ThreadPoolExecutor(max_workers=len(NODE_TYPES)) as pool:
        built = {t: pool.submit(_type_sets, view, cfg, t, users, streamers, groups[t])
                 for t in NODE_TYPES}
        return {t: f.result() for t, f in built.items()}


def _type_sets(view: View, cfg: ExpandConfig, ntype: str, users: np.ndarray,
               streamers: np.ndarray, groups: np.ndarray) -> TrainingSet:
    src, tgt = (users, streamers) if ntype == "user" else (streamers, users)
    n_tgt = view.graph.num_nodes(OTHER[ntype])
    label_keys = np.unique(src * n_tgt + tgt)
    names = feature_names(fusion_sources(cfg, ntype))
    X, y, g, h = [], [], [], []                    # per batch
    for lo in range(0, len(groups), cfg.batch_size):
        rows = groups[lo:lo + cfg.batch_size]
        table = pooled_table(view, cfg, ntype, rows, source_candidates(view.rels, cfg, ntype, rows))
        assert table.names == names
        y.append(np.isin(rows[table.row] * n_tgt + table.target, label_keys).astype(np.float32))
        X.append(table.X)
        g.append(table.row + lo)
        h.append(table.history)
        del table
    # Labels per group, also those no source proposed (they count as misses).
    l_src, l_tgt = label_keys // n_tgt, label_keys % n_tgt
    users_, streamers_ = (l_src, l_tgt) if ntype == "user" else (l_tgt, l_src)
    first = ~view.features.in_history(users_, streamers_)
    pos = np.searchsorted(groups, l_src)
    sampled = (pos < len(groups)) & (groups[np.minimum(pos, len(groups) - 1)] == l_src)
    n_labels = {kind: np.bincount(pos[counted], minlength=len(groups)).astype(np.float64)
                for kind, counted in ((MERGED, sampled), (EXPLORE, sampled & first))}
    out = TrainingSet(_stack(X, len(names), np.float32), _stack(y, 0, np.float32),
                      _stack(g, 0, np.int64), n_labels[MERGED], names, _stack(h, 0, bool),
                      explore_labels=n_labels[EXPLORE])
    log.info("fusion training set (%s): %d label nodes, %d labels, %d candidates",
             ntype, len(groups), len(label_keys), len(out.y))
    return out


TRIM_EVERY = 256 << 20       # bytes of batches released between two heap trims


def _stack(parts: list[np.ndarray], columns: int, dtype) -> np.ndarray:
    """The batches' rows as one array (columns 0: a vector), each batch released as it is
    copied in, and the freed heap handed back every TRIM_EVERY bytes: a process that keeps
    its freed heap (gie.procs) would otherwise hold the batches beside the array (at 3.87M
    users the learning peaked at 21.1 GB, 5 GB above its view, while stacking)."""
    out = np.empty((sum(len(p) for p in parts), *([columns] if columns else [])),
                   parts[0].dtype if parts else dtype)
    at = freed = 0
    while parts:
        part = parts.pop(0)
        out[at:at + len(part)] = part
        at += len(part)
        freed += part.nbytes
        del part
        if freed >= TRIM_EVERY:
            trim_heap()
            freed = 0
    return out


SET_FIELDS = ("X", "y", "group", "n_labels", "history")


def save_sets(sets: dict[str, TrainingSet], path: Path) -> None:
    """One night's training sets as one .npz (written whole, then renamed into place): the
    merged rows and the explore set's labels (its rows are the merged rows without a gift
    edge)."""
    arrays = {f"{t}.{MERGED}.{f}": getattr(ts, f) for t, ts in sets.items() for f in SET_FIELDS}
    arrays.update({f"{t}.{EXPLORE}.n_labels": ts.explore_labels for t, ts in sets.items()})
    arrays.update({f"{t}.names": np.array(ts.names) for t, ts in sets.items()})
    write_npz_atomic(path, arrays)


def load_sets(path: Path) -> dict[str, TrainingSet]:
    with np.load(path) as z:
        return {t: TrainingSet(names=z[f"{t}.names"].tolist(),
                               explore_labels=z[f"{t}.{EXPLORE}.n_labels"],
                               **{f: z[f"{t}.{MERGED}.{f}"] for f in SET_FIELDS})
                for t in NODE_TYPES}


def save_fit_input(merged: TrainingSet, path: Path) -> None:
    """One node type's joined sets (held-out flags included), for a fit in another process."""
    np.savez(path, names=np.array(merged.names), held_out=merged.held_out,
             explore_labels=merged.explore_labels, **{f: getattr(merged, f) for f in SET_FIELDS})


def load_fit_input(path: Path) -> TrainingSet:
    with np.load(path) as z:
        return TrainingSet(names=z["names"].tolist(), held_out=z["held_out"],
                           explore_labels=z["explore_labels"], **{f: z[f] for f in SET_FIELDS})


class CachedSets:
    """A night's training sets in the cache file `path`: their label-node counts are read
    now (which also checks the file), the rows by load()."""

    def __init__(self, path: Path):
        self.path = path
        with np.load(path) as z:
            self.n_groups = {t: len(z[f"{t}.{MERGED}.n_labels"]) for t in NODE_TYPES}

    def load(self) -> dict[str, TrainingSet]:
        return load_sets(self.path)


def source_code() -> str:
    """Fingerprint of this package's source: sets built by other code are a miss."""
    return fingerprint([(f.name, f.read_bytes().decode()) for f in
                        sorted(Path(__file__).parent.glob("*.py"))])


class SetCache:
    """A night's training sets depend only on its graph and embeddings, the graph after it
    (the labels), the gap between them, the seed and the settings that shape candidates and
    features; so the sets night D builds for night D-1 are what nights D+1 .. D+5 would build
    again. One .npz (and its `learned_from` record) per night and key; the key holds the
    inputs' file signatures (name, size, mtime), so a rebuilt input is a miss, never a stale
    hit; and the source of gie/expand, so sets built by other code are a miss too. Files of
    nights no later run reads, and older keys of a night read now, are removed."""

    # Settings that do not change a night's sets (fit, night choice, execution).
    IGNORED = {"workers", "fit_processes", "beside_knn", "shard_wait_s", "predict_threads",
               "compile_above", "threads", "cache", "cache_views", "nights", "max_nights",
               "min_label_nodes", "max_gap_days", "valid_share", "negative_share", "objective",
               "rounds", "early_stopping", "learning_rate", "num_leaves", "min_data_in_leaf",
               "feature_fraction"}

    def __init__(self, folder: Path, cfg: ExpandConfig, seed: int):
        self.folder = folder
        self.settings = self._strip(dump_config(cfg))
        self.seed = seed

    @classmethod
    def _strip(cls, tree):
        if not isinstance(tree, dict):
            return tree
        return {k: cls._strip(v) for k, v in tree.items() if k not in cls.IGNORED}

    def key(self, graph: Path, embeddings: Path, later: Path, gap: float) -> str:
        return fingerprint([file_signature(p) for p in (graph, embeddings, later)], gap,
                           self.settings, self.seed, gie.__version__, source_code())

    def _path(self, date: str, key: str) -> Path:
        return self.folder / f"dt={date}_{key}.npz"

    def get(self, date: str, key: str) -> tuple[CachedSets, dict] | None:
        """(the night's sets, learned_from record), or None. The sets are read when the fit
        joins them, not while another night's sets are built."""
        path = self._path(date, key)
        try:
            return CachedSets(path), json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None

    def put(self, date: str, key: str, sets: dict, info: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(date, key)
        write_json_atomic(path.with_suffix(".json"), info)   # the record first: a set
        save_sets(sets, path)                                 # without it is never read

    def prune(self, read: dict[str, str], oldest: str) -> None:
        """Keep the nights `read` (date -> key) and nights from `oldest` on."""
        for path in self.folder.glob("dt=*.npz"):
            date, _, key = path.stem[len("dt="):].partition("_")
            if date < oldest or (date in read and read[date] != key):
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)


def fit_fusion(nights: list[dict[str, TrainingSet]], cfg: ExpandConfig, seed: int,
               info: dict, work: Path | None = None) -> Fusion:
    """Fit the fused rankings on the training sets of several nights, newest first; the
    newest is held out when there are older ones. The nights' sets are released as they
    are joined.

    With `learn.fit_processes` 2 (and a `work` folder), the streamer side is fitted in a
    local process (gie.expand.workers) while this one fits the user side: the same models,
    sooner (the four fits at 1.29M users: 150 s against 230 s). Never in two threads of one
    process: that once crashed it (SIGSEGV in LightGBM, weak_clicks seed 2, 2026-12-03, not
    reproduced: its native code is not safe for concurrent boosters and predictors in one
    process)."""
    sets: dict[str, TrainingSet] = {}
    for t in NODE_TYPES:
        per_night = [n.pop(t) for n in nights]
        for i, ts in enumerate(per_night):
            ts.held_out = np.full(ts.n_groups, i == 0 and len(per_night) > 1)
        sets[t] = concat(per_night)
        del per_night

    def fit(t: str) -> dict[str, Scorer]:
        return fit_fused(sets[t], fusion_sources(cfg, t), fixed_weights(cfg, t), cfg.fusion,
                         cfg.topk, seed, t)

    scorers: dict[str, dict[str, Scorer]] = {}
    if cfg.fusion.learn.fit_processes > 1 and work is not None:
        from gie.expand import workers             # it imports this module
        path = work / "fit-streamer.npz"
        save_fit_input(sets["streamer"], path)
        del sets["streamer"]
        with workers.fit_in_process("streamer", path, dump_config(cfg), seed,
                                    work / "fit-streamer") as result:
            scorers["user"] = fit("user")
        scorers["streamer"] = result()
    else:
        scorers = {t: fit(t) for t in NODE_TYPES}
    return Fusion({t: scorers[t] for t in NODE_TYPES}, {"learned": True, **info})


def fit_node_type(ntype: str, path: Path, cfg: ExpandConfig, seed: int, out: Path) -> None:
    """A local fit process: one node type's fused rankings from `path`, saved in `out`."""
    merged = load_fit_input(path)
    scorers = fit_fused(merged, fusion_sources(cfg, ntype), fixed_weights(cfg, ntype),
                        cfg.fusion, cfg.topk, seed, ntype)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "scorers.json",
                      {k: ranker.save(s, out, f"{ntype}-{k}") for k, s in scorers.items()})
