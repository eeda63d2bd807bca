"""Per-epoch checkpoints (written atomically, so a crash never leaves a torn one), resuming
from them, and the final model file that warm starts read."""
from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import torch

from gie.errors import BadInputError
from gie.publish import SUCCESS

log = logging.getLogger(__name__)

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


def resume_point(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from: the newest under out/checkpoints with --resume."""
    last = latest(out / "checkpoints") if resume else None
    if resume and last is None:
        log.warning("--resume: no checkpoint under %s, starting from scratch", out / "checkpoints")
    return last


def unpublish(out: Path, keep_checkpoints: bool) -> None:
    """A run starts by withdrawing `_SUCCESS` (and, unless resuming, older checkpoints)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / SUCCESS).unlink(missing_ok=True)
    if not keep_checkpoints:
        for e in epochs_saved(out / "checkpoints"):
            (out / "checkpoints" / f"epoch-{e:04d}.pt").unlink()


def restore(path: Path, model: torch.nn.Module, opt, spec: dict,
            idmap: dict) -> dict:
    """Load model and optimizer from checkpoint `path`; returns the saved training state."""
    ck = load(path)
    if ck["spec"] != spec or ck["id_map"] != idmap:
        raise BadInputError(f"cannot resume from {path}: it was trained with another model "
                            "spec or on another graph (id map differs); rerun without --resume")
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:                 # same settings, older model layout
        raise BadInputError(f"cannot resume from {path}: its weights do not fit this "
                            "version's model; rerun without --resume") from e
    try:
        opt.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError) as e:       # written by an older version's optimizer
        raise BadInputError(f"cannot resume from {path}: its optimizer state does not fit "
                            f"this version ({e}); rerun without --resume") from e
    log.info("resuming after epoch %d from %s", ck["state"]["epoch"], path)
    return ck["state"]
