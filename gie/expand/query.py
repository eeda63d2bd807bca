"""Read one node's expansions back from a published bundle, with explanations."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads

from gie.errors import BadInputError
from gie.publish import is_published
from graphbuild.schema import MERGED, METAPATHS, RAW_ID_COLUMN

VIA_KIND = {"U-S": "own history", "U-U-S": "similar user", "U-S-S": "gifted streamer",
            "S-U": "own gifters", "S-S-U": "similar streamer", "S-U-U": "gifter"}


def lookup(bundle: str | Path, node_type: str, raw_id: int, metapath: str | None = None) -> list[dict]:
    """Rows of `raw_id` (best first within each metapath) as dicts of lists."""
    bundle = Path(bundle)
    if not is_published(bundle):
        raise BadInputError(f"bundle {bundle} is not published (no _SUCCESS)")
    known = (*METAPATHS[node_type], MERGED)
    if metapath is not None and metapath not in known:
        raise BadInputError(f"metapath {metapath!r} is not one of {known} for a {node_type}")
    column = RAW_ID_COLUMN[node_type]
    expr = pc.field(column) == raw_id
    if metapath is not None:
        expr &= pc.field("metapath") == metapath
    table = pads.dataset(bundle / "expansions" / node_type, format="parquet").to_table(filter=expr)
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: known.index(r["metapath"]))


def explain(node_type: str, raw_id: int, rows: list[dict]) -> str:
    """Human-readable listing: one block per metapath, one line per target."""
    if not rows:
        return f"{node_type} {raw_id}: no expansions in this bundle"
    lines = []
    for r in rows:
        mp = r["metapath"]
        lines.append(f"{node_type} {raw_id}  {mp}  ({len(r['targets'])} targets)")
        for rank, (t, s, v) in enumerate(zip(r["targets"], r["scores"], r["via"]), start=1):
            how = ("direct" if v == raw_id and mp in ("U-S", "S-U", MERGED)
                   else f"via {VIA_KIND.get(mp, 'best path through')} {v}")
            lines.append(f"  {rank:>3}. {t:<12} score={s:.5f}  {how}")
    return "\n".join(lines)
