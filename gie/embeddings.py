"""Read and write node embeddings (schema in graphbuild.schema.embedding_schema).

Single-process training writes `<dir>/user.parquet`; distributed trainers write one part per
trainer under `<dir>/user/part-<rank>.parquet`. Readers accept both and re-align by node id.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from gie.errors import BadInputError
from graphbuild.schema import RAW_ID_COLUMN, embedding_schema


def write_embeddings(path: str | Path, node_type: str, node_ids: np.ndarray,
                     raw_ids: np.ndarray, vectors: np.ndarray) -> None:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d).cast(
        pa.list_(pa.float32()))
    table = pa.Table.from_arrays(
        [pa.array(node_ids, pa.int64()), pa.array(raw_ids, pa.int64()), emb],
        schema=embedding_schema(node_type))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_embeddings(folder: str | Path, node_type: str,
                    num_nodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (raw ids, float32 [N, D]) ordered by node id; check every node is present once."""
    folder = Path(folder)
    single, parts = folder / f"{node_type}.parquet", folder / node_type
    source = single if single.is_file() else parts
    if not source.exists():
        raise BadInputError(f"embeddings for {node_type} not found: {single} or {parts}/")
    schema = embedding_schema(node_type)
    try:
        table = pads.dataset(source, format="parquet").to_table().sort_by("node_id")
    except (pa.ArrowInvalid, OSError) as e:
        raise BadInputError(f"cannot read embeddings {source}: {e}") from e
    if table.schema.names[:3] != schema.names and not set(schema.names) <= set(table.column_names):
        raise BadInputError(f"embeddings {source} have columns {table.column_names}, "
                            f"expected {schema.names}")
    node_id = table.column("node_id").to_numpy()
    expected = num_nodes if num_nodes is not None else len(node_id)
    if not np.array_equal(node_id, np.arange(expected)):
        raise BadInputError(f"embeddings {source}: node ids are not exactly 0..{expected - 1} "
                            f"({len(node_id)} rows)")
    arr = table.column("embedding").combine_chunks()
    lengths = np.asarray(arr.value_lengths().fill_null(0))
    if len(lengths) and (lengths != lengths[0]).any():
        raise BadInputError(f"embeddings {source}: vectors of mixed lengths")
    vec = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    vec = vec.reshape(len(node_id), int(lengths[0]) if len(lengths) else 0)
    if not np.isfinite(vec).all():
        raise BadInputError(f"embeddings {source}: NaN or Inf values")
    return table.column(RAW_ID_COLUMN[node_type]).to_numpy(), vec
