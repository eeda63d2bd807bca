"""`cli.py compare A B`: do two outputs hold the same content? Print the first difference.

A and B are two files or two folders of the same kind: graphs, models, bundles, reports or
whole work folders. Folders are walked in sorted path order and compared entry by entry:

* Parquet: one table per `*.parquet` file, except that the `part-*.parquet` files of a
  folder form one table (Spark names its part files with a per-job id, and a table's split
  into parts and its row order are not part of any contract: every reader aligns rows by id).
  Same schema (names, types, nullability), then the same rows once both tables are sorted
  by all their non-nested columns. Values must be equal bit for bit (NaN equals NaN).
* JSON and checkpoints/models (`*.pt`, loaded with torch): the same structure and values,
  tensors and arrays equal bit for bit, except keys that only record how a run went
  (IGNORED_KEYS: timings, host names, creation times, the run id, the environment) and
  strings that are absolute paths (two work folders differ there by construction).
* Markdown (`report.md`): the same text once durations (`41.2s`) are masked.
* Symlinks (`latest`): the same target text. Everything else: the same bytes.
* Skipped: hidden entries (`.staging-*`, `.lock`, temp files), the nightly's bookkeeping
  (`runs/` summaries and `_STAGE.json`, whose fingerprints hold input mtimes) and the
  expand's caches (`bundle/_fusion_sets/`, `bundle/_views/`: their file names hold them too).

When outputs differ, `environment_differences` tells whether the runs' libraries or CPU did
too (gie/environment.py): the usual reason for last-bit differences between hosts.

Exit code 0 when everything matches, EXIT_DIFFERENT (5) at the first difference, 2 when A or
B does not exist. docs/OPERATIONS.md ("Comparing two runs") says what "same" covers.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from gie import environment
from gie.errors import BadInputError

EXIT_DIFFERENT = 5
IGNORED_KEYS = frozenset({
    "seconds", "timings_s", "edges_per_s", "build_s", "exact_search_s", "index_search_s",
    "speedup_vs_exact", "created_at", "host", "hostname", "run_id", "environment",
})
# A duration in a Markdown report ("Code 0.1.0, seed 7, 41.2s."): masked before comparing.
DURATION = re.compile(r"\b\d+(?:\.\d+)?s\b")
SKIPPED_NAMES = frozenset({"runs", "_STAGE.json", "_fusion_sets", "_views"})
PART_PREFIX = "part-"


@dataclass(frozen=True)
class Difference:
    path: str          # relative to A and B
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def first_difference(a: str | os.PathLike, b: str | os.PathLike) -> Difference | None:
    return next(differences(a, b), None)


def differences(a: str | os.PathLike, b: str | os.PathLike) -> Iterator[Difference]:
    """Every difference between A and B, in path order (lazily: take the first and stop)."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.exists() and not p.is_symlink():
            raise BadInputError(f"{p} does not exist")
    if a.is_dir() != b.is_dir():
        yield Difference(".", "a folder on one side, a file on the other")
        return
    if not a.is_dir():
        yield from _compare_entry(_entry(a), _entry(b), a.name)
        return
    ea, eb = _entries(a), _entries(b)
    for rel in sorted(set(ea) | set(eb)):
        if rel not in eb:
            yield Difference(rel, "only in A")
        elif rel not in ea:
            yield Difference(rel, "only in B")
        else:
            yield from _compare_entry(ea[rel], eb[rel], rel)


def environment_differences(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """Where the two runs' recorded environments differ (library versions, CPU: the
    `environment` of every JSON file present in both), each difference once, with the first
    file that shows it. Not a difference of outputs: a likely reason for one."""
    a, b = Path(a), Path(b)
    if a.is_dir() and b.is_dir():
        ea, eb = _entries(a), _entries(b)
        pairs = [(rel, ea[rel].paths[0], eb[rel].paths[0]) for rel in sorted(set(ea) & set(eb))
                 if ea[rel].kind == eb[rel].kind == "json"]
    else:
        pairs = [(a.name, a, b)] if a.suffix == b.suffix == ".json" else []
    found: dict[str, str] = {}
    for rel, pa_, pb in pairs:
        try:
            va, vb = (json.loads(p.read_text()).get("environment") for p in (pa_, pb))
        except (ValueError, AttributeError):
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            for line in environment.differences(va, vb):
                found.setdefault(line, rel)
    return [f"{line} (first in {rel})" for line, rel in found.items()]


# ------------------------------------------------------------------------------------------
# What is an entry
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    kind: str                   # "table", "json", "torch", "markdown", "link", "bytes"
    paths: tuple[Path, ...]     # one path, or the part files of a table


def _entry(path: Path) -> _Entry:
    if path.is_symlink():
        return _Entry("link", (path,))
    kind = {".parquet": "table", ".json": "json", ".pt": "torch",
            ".md": "markdown"}.get(path.suffix, "bytes")
    return _Entry(kind, (path,))


def _entries(root: Path) -> dict[str, _Entry]:
    """Relative path -> entry; a folder's part files are one table keyed by the folder."""
    out: dict[str, _Entry] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not _skipped(d) and not (here / d).is_symlink())
        links = [d for d in os.listdir(here) if (here / d).is_symlink() and not _skipped(d)]
        parts = sorted(f for f in files if f.startswith(PART_PREFIX) and f.endswith(".parquet"))
        if parts:
            out[_rel(here, root) or "."] = _Entry("table", tuple(here / f for f in parts))
        for name in sorted(set(files) | set(links)):
            if _skipped(name) or name in parts:
                continue
            out[_rel(here / name, root)] = _entry(here / name)
    return out


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_NAMES or name.endswith(".crc")


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return "" if rel == "." else rel


def _compare_entry(ea: _Entry, eb: _Entry, rel: str) -> Iterator[Difference]:
    if ea.kind != eb.kind:
        yield Difference(rel, f"a {ea.kind} in A, a {eb.kind} in B")
        return
    compare = {"table": _compare_tables, "json": _compare_json, "torch": _compare_torch,
               "markdown": _compare_markdown, "link": _compare_links,
               "bytes": _compare_bytes}[ea.kind]
    what = compare(ea.paths, eb.paths)
    if what:
        yield Difference(rel, what)


# ------------------------------------------------------------------------------------------
# Comparers: each returns None when equal, else what differs
# ------------------------------------------------------------------------------------------
def _compare_links(pa_: tuple[Path, ...], pb: tuple[Path, ...]) -> str | None:
    ta, tb = os.readlink(pa_[0]), os.readlink(pb[0])
    return None if ta == tb else f"link to {ta!r} in A, {tb!r} in B"


def _compare_bytes(pa_: tuple[Path, ...], pb: tuple[Path, ...]) -> str | None:
    da, db = pa_[0].read_bytes(), pb[0].read_bytes()
    if da == db:
        return None
    at = next((i for i, (x, y) in enumerate(zip(da, db)) if x != y), min(len(da), len(db)))
    try:
        line = da[:at].decode().count("\n") + 1
        la = da.decode().splitlines()[line - 1:line] or [""]
        lb = db.decode().splitlines()[line - 1:line] or [""]
        return f"line {line} differs: {la[0][:120]!r} vs {lb[0][:120]!r}"
    except UnicodeDecodeError:
        return f"bytes differ from offset {at} (sizes {len(da)} and {len(db)})"


def _compare_markdown(pa_: tuple[Path, ...], pb: tuple[Path, ...]) -> str | None:
    la, lb = (DURATION.sub("<duration>", p[0].read_text()).splitlines() for p in (pa_, pb))
    for i, (x, y) in enumerate(zip(la, lb), start=1):
        if x != y:
            return f"line {i} differs: {x[:120]!r} vs {y[:120]!r}"
    return None if len(la) == len(lb) else f"{len(la)} lines in A, {len(lb)} in B"


def _compare_json(pa_: tuple[Path, ...], pb: tuple[Path, ...]) -> str | None:
    try:
        va, vb = (json.loads(p[0].read_text()) for p in (pa_, pb))
    except ValueError as e:
        return _compare_bytes(pa_, pb) or f"unreadable JSON ({e})"
    return _compare_values(va, vb, "")


def _compare_torch(pa_: tuple[Path, ...], pb: tuple[Path, ...]) -> str | None:
    import torch

    # Our own checkpoints and model files hold numpy arrays and plain dicts, so full
    # unpickling is needed: compare only outputs you trust, as for any checkpoint.
    va, vb = (torch.load(p[0], map_location="cpu", weights_only=False) for p in (pa_, pb))
    return _compare_values(va, vb, "")


def _compare_values(a: Any, b: Any, where: str) -> str | None:
    """Recursive equality of JSON-like values, tensors and arrays (bit for bit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(set(a) | set(b), key=str) if k not in IGNORED_KEYS]
        for k in keys:
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'A' if k in a else 'B'}"
            diff = _compare_values(a[k], b[k], f"{where}.{k}")
            if diff:
                return diff
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where or '.'}: {len(a)} items in A, {len(b)} in B"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _compare_values(x, y, f"{where}[{i}]")
            if diff:
                return diff
        return None
    arrays = _as_arrays(a, b)
    if arrays is not None:
        return _compare_arrays(*arrays, where or ".")
    if isinstance(a, str) and isinstance(b, str) and os.path.isabs(a) and os.path.isabs(b):
        return None                                    # where a run wrote, not what
    if type(a) is not type(b) or not _same_scalar(a, b):
        return f"{where or '.'}: {a!r:.120} in A, {b!r:.120} in B"
    return None


def _as_arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray] | None:
    def conv(x):
        if isinstance(x, np.ndarray):
            return x
        if type(x).__module__.startswith("torch") and hasattr(x, "numpy"):
            return x.detach().cpu().numpy()
        return None
    xa, xb = conv(a), conv(b)
    return None if xa is None or xb is None else (xa, xb)


def _compare_arrays(a: np.ndarray, b: np.ndarray, where: str) -> str | None:
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{where}: {a.dtype}{list(a.shape)} in A, {b.dtype}{list(b.shape)} in B"
    if a.dtype.kind in "fc":
        same = (a == b) | (np.isnan(a) & np.isnan(b))
    else:
        same = a == b
    if np.all(same):
        return None
    i = np.unravel_index(int(np.argmin(same)), a.shape) if a.ndim else ()
    return (f"{where}{list(i) if a.ndim else ''}: {a[i]!r} in A, {b[i]!r} in B "
            f"({int(np.size(same) - np.count_nonzero(same))} of {np.size(same)} values differ)")


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _compare_tables(pa_: tuple[Path, ...], pb: tuple[Path, ...]) -> str | None:
    ta, tb = (pads.dataset([str(p) for p in ps], format="parquet").to_table() for ps in (pa_, pb))
    fa = [(f.name, str(f.type), f.nullable) for f in ta.schema]
    fb = [(f.name, str(f.type), f.nullable) for f in tb.schema]
    if fa != fb:
        return f"schemas differ: {fa} in A, {fb} in B"
    if ta.num_rows != tb.num_rows:
        return f"{ta.num_rows} rows in A, {tb.num_rows} in B"
    keys = [(f.name, "ascending") for f in ta.schema if not pa.types.is_nested(f.type)]
    if keys:
        ta, tb = ta.sort_by(keys), tb.sort_by(keys)
    for name in ta.column_names:
        diff = _compare_columns(ta.column(name), tb.column(name))
        if diff:
            return f"column {name!r}, {diff} (rows sorted by {[k for k, _ in keys]})"
    return None


def _compare_columns(a: pa.ChunkedArray, b: pa.ChunkedArray, chunk: int = 65536) -> str | None:
    if a.equals(b):
        return None
    for lo in range(0, len(a), chunk):                 # equal but for NaNs, or a real change
        xa, xb = a.slice(lo, chunk).to_pylist(), b.slice(lo, chunk).to_pylist()
        for i, (x, y) in enumerate(zip(xa, xb)):
            if not _same_value(x, y):
                return f"row {lo + i}: {x!r:.120} in A, {y!r:.120} in B"
    return None


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return _same_scalar(a, b)
