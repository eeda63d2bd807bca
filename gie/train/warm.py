"""Warm start: yesterday's model continues on today's graph.

Node ids are stable across dates (raw ids that existed keep their node id, new ones are
appended), so yesterday's per-user id vectors are copied row by row and new users start
fresh. Feature scaling is kept from yesterday, so both days encode inputs the same way.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gie.errors import BadInputError
from gie.model.encoder import GIEModel, ModelSpec
from gie.publish import is_published
from gie.train import checkpoint
from graphbuild.schema import NODE_TYPES

log = logging.getLogger(__name__)
MODEL_FILE = "model.pt"


def load_warm_start(model: GIEModel, folder: str | Path, raw_ids: dict[str, np.ndarray],
                    graph: str) -> dict:
    """Load yesterday's weights into `model`; `raw_ids[t]` are today's raw ids in node id
    order (they must extend yesterday's), `graph` names today's graph in errors."""
    folder = Path(folder)
    if not is_published(folder):
        raise BadInputError(f"warm start model {folder} is missing or has no _SUCCESS")
    saved = checkpoint.load(folder / MODEL_FILE)
    for t in NODE_TYPES:
        old, new = np.asarray(saved["raw_ids"][t]), np.asarray(raw_ids[t])
        if len(new) < len(old) or not np.array_equal(new[:len(old)], old):
            raise BadInputError(
                f"warm start {folder}: the {t} id map of graph {graph} does not extend "
                f"yesterday's ({len(old)} ids); node ids must be stable across dates")
    old_spec = ModelSpec.from_dict(saved["spec"]).to_dict()
    new_spec = model.spec.to_dict()
    changed = [k for k in new_spec if k != "num_users" and old_spec[k] != new_spec[k]]
    if changed:
        raise BadInputError(f"warm start {folder}: model settings differ from today's: "
                            + ", ".join(f"{k} {old_spec[k]!r} -> {new_spec[k]!r}" for k in changed))
    state = dict(saved["state_dict"])
    n_old = len(saved["raw_ids"]["user"])
    if "user_id.weight" in state:
        grown = model.user_id.weight.detach().clone()
        grown[:n_old] = state["user_id.weight"]
        state["user_id.weight"] = grown
    try:
        model.load_state_dict(state)
    except RuntimeError as e:                 # same settings, older model layout
        raise BadInputError(f"warm start {folder}: its weights do not fit this version's "
                            f"model ({str(e).splitlines()[0]}); train without --warm-start") from e
    info = {"from": str(folder), "users_kept": n_old,
            "users_new": len(raw_ids["user"]) - n_old,
            "streamers_new": len(raw_ids["streamer"]) - len(saved["raw_ids"]["streamer"])}
    log.info("warm start from %s: %d users kept, %d new users, %d new streamers",
             folder, info["users_kept"], info["users_new"], info["streamers_new"])
    return info
