"""Compare two published graph datasets table by table, at the Parquet level.

Spark writes part files in no particular row order, so each table is sorted by its keys
first. Integers, booleans and strings must be equal; floats (sums that another partitioning
may add in another order) equal to 1e-9 relative.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from graphbuild.schema import GRAPH_EDGES, GRAPH_NODES

KEYS = {**{f"nodes/{t}": ["node_id"] for t in GRAPH_NODES},
        **{f"edges/{e}": ["src", "dst"] for e in GRAPH_EDGES},
        "rejected": ["table", "reason", "record"]}


def read_sorted(folder: Path, keys: list[str]) -> pd.DataFrame:
    df = pads.dataset(folder, format="parquet").to_table().to_pandas()
    return df.sort_values(keys).reset_index(drop=True)


def _assert_column_equal(a: pd.Series, b: pd.Series, what: str) -> None:
    first = next((v for v in a if v is not None), None)
    if isinstance(first, np.ndarray):                       # list<float> vectors
        np.testing.assert_allclose(np.stack(a), np.stack(b), rtol=1e-9, err_msg=what)
    elif pd.api.types.is_float_dtype(a):
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, err_msg=what)
    else:
        assert a.tolist() == b.tolist(), what


def assert_same_graph(a: Path, b: Path) -> None:
    """Same tables with the same rows, same counts, features and encoders in metadata."""
    for table, keys in KEYS.items():
        assert (a / table).is_dir() == (b / table).is_dir(), table
        if not (a / table).is_dir():
            continue
        x, y = read_sorted(a / table, keys), read_sorted(b / table, keys)
        assert list(x.columns) == list(y.columns) and len(x) == len(y), table
        for c in x.columns:
            _assert_column_equal(x[c], y[c], f"{table}.{c}")
    ma, mb = (json.loads((p / "metadata.json").read_text()) for p in (a, b))
    for key in ("counts", "validation", "features", "window", "schema_version"):
        assert ma[key] == mb[key], key
    assert json.loads((a / "encoders.json").read_text()) == \
        json.loads((b / "encoders.json").read_text())
