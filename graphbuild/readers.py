"""Find and read the raw KuaiLive-layout tables (CSV or Parquet) with Spark.

A table `t` may be `<raw>/t.csv`, `<raw>/t.parquet`, or a folder `<raw>/t/` of CSV or Parquet
part files. Layout problems (missing file or column, wrong column type, unreadable Parquet)
fail at once with BadInputError naming the file. Row-level problems are not handled here:
CSV columns are read as strings so that `validate` can reject unparseable fields row by row
instead of Spark turning them into silent nulls.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gie.errors import BadInputError
from graphbuild.schema import RAW_TABLES, REQUIRED_TABLES

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TableSource:
    name: str
    path: Path                 # a file or a folder of part files
    fmt: str                   # "csv" or "parquet"
    files: tuple[Path, ...]


def _parts(folder: Path) -> tuple[str, tuple[Path, ...]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))
    kinds = {p.suffix.lower() for p in files}
    if not files:
        raise BadInputError(f"table folder {folder} holds no data files")
    if kinds <= {".csv"}:
        return "csv", tuple(files)
    if kinds <= {".parquet"}:
        return "parquet", tuple(files)
    raise BadInputError(f"table folder {folder} mixes file kinds {sorted(kinds)}: "
                        "expected only .csv or only .parquet part files")


def find_table(raw: Path, name: str) -> TableSource | None:
    """Locate table `name` under `raw`; None when absent."""
    found = [p for p in (raw / f"{name}.csv", raw / f"{name}.parquet", raw / name) if p.exists()]
    if not found:
        return None
    if len(found) > 1:
        raise BadInputError(f"table {name!r} is given twice under {raw}: "
                            f"{', '.join(str(p) for p in found)}")
    path = found[0]
    if path.is_dir():
        fmt, files = _parts(path)
    else:
        fmt, files = path.suffix.lower()[1:], (path,)
    return TableSource(name, path, fmt, files)


def _check_csv_header(source: TableSource) -> None:
    expected = RAW_TABLES[source.name].names
    for f in source.files:
        try:
            with open(f, newline="") as fh:
                header = next(csv.reader(fh), None)
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"cannot read CSV file {f}: {e}") from e
        if header is None:
            raise BadInputError(f"CSV file {f} is empty (no header line)")
        missing = [c for c in expected if c not in header]
        if missing:
            raise BadInputError(f"CSV file {f} (table {source.name}) lacks columns {missing}; "
                                f"header is {header}")


def _type_ok(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    if pa.types.is_list(want):
        return ((pa.types.is_list(got) or pa.types.is_large_list(got))
                and pa.types.is_floating(got.value_type))
    return got == want


def _check_parquet_footers(source: TableSource) -> None:
    """Read every footer (cheap): a truncated file or a wrong column type fails here, named."""
    want = RAW_TABLES[source.name]
    for f in source.files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise BadInputError(f"Parquet file {f} (table {source.name}) is unreadable: {e}") from e
        for field in want:
            if field.name not in schema.names:
                raise BadInputError(f"Parquet file {f} (table {source.name}) lacks column "
                                    f"{field.name!r}")
            got = schema.field(field.name).type
            if not _type_ok(got, field.type):
                raise BadInputError(f"Parquet file {f} (table {source.name}) column "
                                    f"{field.name!r} has type {got}, expected {field.type}")


def read_table(spark, source: TableSource):
    """Read one table: CSV as all-string columns, Parquet with its own (checked) types.

    Only the columns of the raw schema are kept, in schema order.
    """
    names = RAW_TABLES[source.name].names
    if source.fmt == "csv":
        _check_csv_header(source)
        reader = spark.read.option("header", True).option("inferSchema", False).option(
            "mode", "PERMISSIVE")
        df = reader.csv([str(f) for f in source.files])
    elif source.fmt == "parquet":
        _check_parquet_footers(source)
        df = spark.read.parquet(*[str(f) for f in source.files])
    else:
        raise BadInputError(f"table file {source.path} is neither .csv nor .parquet")
    log.info("reading table %s from %s (%s, %d file(s))", source.name, source.path, source.fmt,
             len(source.files))
    return df.select(*names)


def find_tables(raw: Path) -> dict[str, TableSource]:
    """All known tables present under `raw`; the required ones must be there."""
    if not raw.is_dir():
        raise BadInputError(f"raw input folder {raw} does not exist")
    tables = {t: s for t in RAW_TABLES if (s := find_table(raw, t)) is not None}
    for t in REQUIRED_TABLES:
        if t not in tables:
            raise BadInputError(f"required table {t!r} is missing under {raw} "
                                f"(expected {t}.csv, {t}.parquet or a {t}/ folder)")
    return tables
