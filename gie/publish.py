"""Write to staging, publish atomically: consumers never see a partial output.

A published folder always contains `_SUCCESS` (written last, inside staging). Publishing is a
rename within one parent folder, which is atomic on POSIX filesystems; outputs must therefore
live on a local or shared POSIX filesystem (NFS, Lustre, a FUSE mount of object storage that
supports rename), not on a bare HDFS/S3 URI.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

SUCCESS = "_SUCCESS"
STAGING_PREFIX = ".staging-"


def is_published(path: str | os.PathLike) -> bool:
    return (Path(path) / SUCCESS).is_file()


def staging_path(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.parent / f"{STAGING_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def staged_output(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh staging folder; on clean exit mark it done and swap it into `final`.

    On an exception the staging folder is removed and `final` is left exactly as it was.
    A previous `final` (a forced rerun) is replaced, never merged with.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = staging_path(final)
    stage.mkdir()
    try:
        yield stage
        (stage / SUCCESS).write_text("")
        publish_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def publish_dir(stage: Path, final: Path) -> None:
    """Move a finished staging folder to `final`, replacing an older `final` if present."""
    if final.exists():
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(stage, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(stage, final)


def clean_staging(parent: str | os.PathLike) -> list[Path]:
    """Remove leftovers of crashed runs (staging and trash folders) under `parent`."""
    parent = Path(parent)
    removed = []
    if parent.is_dir():
        for p in parent.iterdir():
            if p.name.startswith((STAGING_PREFIX, ".trash-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def atomic_symlink(link: str | os.PathLike, target: str | os.PathLike) -> None:
    """Point `link` at `target` (relative targets allowed) with one atomic rename."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Arrays as one uncompressed .npz, written whole, then renamed into place (a reader
    never sees half a file; a failed write leaves none)."""
    import numpy as np
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
