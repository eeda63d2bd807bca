"""Read the raw gift and click events of given days (KuaiLive layout) with pyarrow.

A table is `<raw>/<table>.parquet`, `<raw>/<table>.csv`, or a folder `<raw>/<table>/` of
part files (CSV or Parquet). Files are read one by one so that a problem is reported with
the file it is in; only the requested time range is materialised.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from gie.errors import BadInputError
from gie.layout import parse_date
from graphbuild.dataset import to_node_ids  # noqa: F401 (re-exported for evaluation)
from graphbuild.schema import RAW_TABLES

DAY_MS = 86_400_000


def day_start_ms(date: str) -> int:
    """Epoch ms of 00:00 UTC of `date`."""
    d = parse_date(date)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


def next_date(date: str, days: int = 1) -> str:
    return (parse_date(date) + dt.timedelta(days=days)).isoformat()


def has_table(raw: str | Path, table: str) -> bool:
    raw = Path(raw)
    return any(p.exists() for p in (raw / f"{table}.parquet", raw / f"{table}.csv", raw / table))


def _table_files(raw: Path, table: str) -> list[Path]:
    for candidate in (raw / f"{table}.parquet", raw / f"{table}.csv"):
        if candidate.is_file():
            return [candidate]
    folder = raw / table
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".csv", ".parquet")
                       and not p.name.startswith((".", "_")))
        if files:
            return files
    raise BadInputError(f"raw table {table!r} not found under {raw} "
                        f"(expected {table}.parquet, {table}.csv or a folder {table}/ of parts)")


def _read_file(path: Path, schema: pa.Schema, columns: list[str], flt: pc.Expression) -> pa.Table:
    if path.suffix == ".csv":
        fmt = pads.CsvFileFormat(convert_options=pacsv.ConvertOptions(
            column_types={n: schema.field(n).type for n in columns}))
    else:
        fmt = pads.ParquetFileFormat()
    try:
        ds = pads.dataset(path, format=fmt)
        missing = [c for c in columns if c not in ds.schema.names]
        if missing:
            raise BadInputError(f"{path}: missing columns {missing} (has {ds.schema.names})")
        table = ds.to_table(columns=columns, filter=flt)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise BadInputError(f"cannot read {path}: {e}") from e
    for name in columns:
        col = table.column(name)
        if col.null_count:
            first = table.filter(pc.is_null(col)).slice(0, 1).to_pylist()[0]
            raise BadInputError(f"{path}: column {name!r} is empty or not a valid "
                                f"{schema.field(name).type} in {col.null_count} rows, e.g. {first}")
        if col.type != schema.field(name).type:
            try:
                table = table.set_column(table.schema.get_field_index(name), name,
                                         col.cast(schema.field(name).type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise BadInputError(f"{path}: column {name!r} has type {col.type}, "
                                    f"expected {schema.field(name).type}") from e
    return table


def read_events(raw: str | Path, table: str, start_ms: int, end_ms: int,
                columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of `table` with start_ms <= timestamp < end_ms (rows with a null timestamp fail)."""
    schema = RAW_TABLES[table]
    columns = columns or schema.names
    if "timestamp" not in columns:
        columns = [*columns, "timestamp"]
    ts = pc.field("timestamp")
    flt = ((ts >= start_ms) & (ts < end_ms)) | ts.is_null()
    parts = [_read_file(p, schema, columns, flt) for p in _table_files(Path(raw), table)]
    return pa.concat_tables(parts).to_pandas() if parts else pd.DataFrame(columns=columns)


def read_days(raw: str | Path, table: str, first_date: str, days: int,
              columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of `days` whole UTC days starting at `first_date`."""
    start = day_start_ms(first_date)
    return read_events(raw, table, start, start + days * DAY_MS, columns)


def next_day_available(raw: str | Path, date: str) -> bool:
    """True when the raw gift table has at least one event on the day after `date`."""
    gifts = read_days(raw, "gift", next_date(date), 1, columns=["timestamp"])
    return bool(len(gifts))
