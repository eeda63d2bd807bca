"""Per-epoch checkpoints (written atomically, so a crash never leaves a torn one) and the
final model file that warm starts read."""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import torch

from gie.errors import BadInputError

_NAME = re.compile(r"^epoch-(\d+)\.pt$")


def save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu")
    except (OSError, RuntimeError, EOFError) as e:
        raise BadInputError(f"cannot read checkpoint {path}: {e}") from e


def epochs_saved(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def save_epoch(folder: Path, epoch: int, state: dict, keep: int) -> Path:
    """Write checkpoint `epoch`, then drop all but the newest `keep`."""
    path = folder / f"epoch-{epoch:04d}.pt"
    save_atomic(state, path)
    for old in epochs_saved(folder)[:-keep]:
        (folder / f"epoch-{old:04d}.pt").unlink(missing_ok=True)
    return path


def latest(folder: Path) -> Path | None:
    saved = epochs_saved(folder)
    return folder / f"epoch-{saved[-1]:04d}.pt" if saved else None
