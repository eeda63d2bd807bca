"""Read a published graph dataset (the contract written by the Spark build) into numpy.

Layout of one dataset folder (see docs/GRAPH_FORMAT.md):
    nodes/{user,streamer}/*.parquet   edges/{gift,watch,s2s,u2u}/*.parquet
    rejected/*.parquet   encoders.json   metadata.json   _SUCCESS
Spark writes several part files per table with no row order: everything is re-aligned
here by node id, never by file or row position.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from gie.errors import BadInputError
from gie.publish import is_published
from gie.sorting import stable_argsort
from graphbuild.schema import (
    GRAPH_EDGES, GRAPH_NODES, GRAPH_SCHEMA_VERSION, MODALITIES, RAW_ID_COLUMN, REQUIRED_EDGES,
)


@dataclass
class EdgeSet:
    src: np.ndarray                     # int64 node ids of the source type
    dst: np.ndarray                     # int64 node ids of the destination type
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class GraphData:
    """A graph dataset in memory; arrays are indexed by node id."""

    path: Path
    metadata: dict
    raw_ids: dict[str, np.ndarray]               # node type -> raw id per node id
    features: dict[str, np.ndarray]              # node type -> float32 [N, F] (or none)
    node_columns: dict[str, dict[str, np.ndarray]]   # scalar attributes (active, n_gifts, ...)
    modalities: dict[str, np.ndarray]            # modality -> float32 [num_streamers, dim]
    modality_mask: np.ndarray                    # bool [num_streamers, len(MODALITIES)]
    edges: dict[str, EdgeSet]

    def num_nodes(self, node_type: str) -> int:
        return len(self.raw_ids[node_type])


def _read_table(folder: Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """The table's `columns` (default: all of `schema`), once the whole schema is checked."""
    if not folder.is_dir():
        raise BadInputError(f"graph dataset table {folder} is missing")
    try:
        dataset = pads.dataset(folder, format="parquet")
    except (pa.ArrowInvalid, OSError) as e:
        raise BadInputError(f"cannot read Parquet table {folder}: {e}") from e
    missing = [n for n in schema.names if n not in dataset.schema.names]
    if missing:
        raise BadInputError(f"table {folder} lacks columns {missing}")
    for f in schema:
        got = dataset.schema.field(f.name).type
        if got != f.type:
            raise BadInputError(f"table {folder} column {f.name!r} has type {got}, expected {f.type}")
    try:
        return dataset.to_table(columns=columns or schema.names)
    except (pa.ArrowInvalid, OSError) as e:
        raise BadInputError(f"cannot read Parquet table {folder}: {e}") from e


def _list_to_matrix(col: pa.ChunkedArray, where: str, order: np.ndarray) -> np.ndarray:
    """The vectors as float32 rows, in `order` (row positions)."""
    arr = col.combine_chunks()
    lengths = np.asarray(arr.value_lengths().fill_null(0))
    width = int(lengths.max()) if len(lengths) else 0
    if len(lengths) and (lengths != width).any():
        raise BadInputError(f"{where}: vectors have mixed lengths {sorted(set(lengths.tolist()))[:5]}")
    # Gathering the rows copies them out of Arrow's read-only buffer: torch needs writable
    # memory, and to_dgl would otherwise copy it (the user features twice in training).
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(lengths), width)[order]


def graph_metadata(path: str | Path) -> dict:
    """The metadata of a published graph dataset; fail clearly when it is absent or does not
    match."""
    path = Path(path)
    if not path.is_dir():
        raise BadInputError(f"graph dataset {path} does not exist")
    if not is_published(path):
        raise BadInputError(f"graph dataset {path} has no _SUCCESS marker (unfinished build?)")
    meta_file = path / "metadata.json"
    try:
        metadata = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read {meta_file}: {e}") from e
    if metadata.get("schema_version") != GRAPH_SCHEMA_VERSION:
        raise BadInputError(f"{meta_file}: schema_version {metadata.get('schema_version')} "
                            f"is not {GRAPH_SCHEMA_VERSION}")
    return metadata


def load_graph(path: str | Path, edge_types: tuple[str, ...] | None = None,
               edge_columns: dict[str, tuple[str, ...]] | None = None,
               node_features: bool = True) -> GraphData:
    """Load a published graph dataset; fail clearly when it is absent or does not match.
    A caller that needs little of it does not hold the rest: `edge_columns`, per edge type,
    the attribute columns to read (default: all; training reads one of the watch edges' six:
    0.5 GB less at 1.3M users); `node_features` False leaves `features` empty (the expand
    never reads the model's input features: 1.8 GB at 3.9M users)."""
    path = Path(path)
    metadata = graph_metadata(path)
    raw_ids, features, columns = {}, {}, {}
    modalities: dict[str, np.ndarray] = {}
    modality_mask = np.zeros((0, len(MODALITIES)), dtype=bool)
    for ntype, schema in GRAPH_NODES.items():
        folder = path / "nodes" / ntype
        read = [n for n in schema.names if node_features or n != "features"]
        table = _read_table(folder, schema, read)
        node_id = table.column("node_id").to_numpy()
        order = stable_argsort(node_id)
        if len(node_id) and not np.array_equal(node_id[order], np.arange(len(node_id))):
            raise BadInputError(f"{folder}: node_id is not contiguous 0..{len(node_id) - 1}")
        raw_ids[ntype] = table.column(RAW_ID_COLUMN[ntype]).to_numpy()[order]
        if node_features:
            features[ntype] = _list_to_matrix(table.column("features"), f"{folder} features",
                                              order)
        columns[ntype] = {
            f.name: table.column(f.name).to_numpy(zero_copy_only=False)[order]
            for f in schema if not pa.types.is_list(f.type) and f.name != "node_id"
        }
        if ntype == "streamer":
            for m in MODALITIES:
                modalities[m] = _list_to_matrix(table.column(f"{m}_emb"), f"{folder} {m}_emb",
                                                order)
            modality_mask = np.stack([columns[ntype][f"has_{m}"] for m in MODALITIES], axis=1)

    return GraphData(path, metadata, raw_ids, features, columns, modalities, modality_mask,
                     _load_edges(path, raw_ids, edge_types, edge_columns))


def add_edges(data: GraphData, edge_types: tuple[str, ...]) -> None:
    """Read more of the graph's edge types into `data` (a caller that needs some edges
    early and the rest later, and not all of them at once)."""
    data.edges.update(_load_edges(data.path, data.raw_ids, edge_types, None))


def _load_edges(path: Path, raw_ids: dict[str, np.ndarray], edge_types: tuple[str, ...] | None,
                edge_columns: dict[str, tuple[str, ...]] | None) -> dict[str, EdgeSet]:
    edges = {}
    for etype in edge_types or tuple(GRAPH_EDGES):
        stype, dtype_, schema = GRAPH_EDGES[etype]
        folder = path / "edges" / etype
        if not folder.is_dir():
            if etype in REQUIRED_EDGES:
                raise BadInputError(f"graph dataset table {folder} is missing")
            continue
        wanted = (edge_columns or {}).get(etype)
        read = None if wanted is None else ["src", "dst", *wanted]
        table = _read_table(folder, schema, read)
        src, dst = table.column("src").to_numpy(), table.column("dst").to_numpy()
        for ids, t in ((src, stype), (dst, dtype_)):
            if len(ids) and (ids.min() < 0 or ids.max() >= len(raw_ids[t])):
                raise BadInputError(f"{folder}: node id out of range for node type {t}")
        # Ordered by (src, dst): one int64 key, below 2^63 for any graph of up to 3e9
        # nodes of each type.
        order = stable_argsort(src * len(raw_ids[dtype_]) + dst)
        edges[etype] = EdgeSet(src[order], dst[order], {
            n: table.column(n).to_numpy()[order] for n in table.column_names
            if n not in ("src", "dst")})
    return edges


def to_node_ids(raw_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map raw ids to node ids through the graph's id map; -1 where unknown."""
    if len(raw_ids) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(raw_ids, kind="stable")
    pos = np.clip(np.searchsorted(raw_ids[order], values), 0, len(raw_ids) - 1)
    return np.where(raw_ids[order][pos] == values, order[pos], -1).astype(np.int64)
