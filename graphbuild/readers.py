"""Find and read the raw KuaiLive-layout tables (CSV or Parquet) with Spark.

A table `t` may be `<raw>/t.csv`, `<raw>/t.parquet`, or a folder `<raw>/t/` of CSV or Parquet
part files. Layout problems (missing file or required column, wrong column type, unreadable
Parquet, part files with different columns) fail at once with BadInputError naming the file.
Profile tables may lack their optional columns (schema.REQUIRED_COLUMNS): those are read as
nulls and listed in `TableSource.absent`. Row-level problems are not handled here: CSV
columns are read as strings so that `validate` can reject unparseable fields row by row
instead of Spark turning them into silent nulls.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F

from gie.errors import BadInputError
from graphbuild.config import ExtraFeatures
from graphbuild.output import spark_type
from graphbuild.schema import RAW_TABLES, REQUIRED_TABLES, required_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableSource:
    name: str
    path: Path                 # a file or a folder of part files
    fmt: str                   # "csv" or "parquet"
    files: tuple[Path, ...]
    schema: pa.Schema          # the columns the build reads: KuaiLive's, then declared extras
    absent: tuple[str, ...]    # columns of `schema` the files do not have (read as nulls)


def table_schema(name: str, extra: ExtraFeatures | None = None) -> pa.Schema:
    """The raw schema of `name` plus its declared extra columns (categorical as strings,
    numeric as float64)."""
    schema = RAW_TABLES[name]
    if extra is None:
        return schema
    return pa.schema(list(schema) + [pa.field(c, pa.string()) for c in extra.categorical]
                     + [pa.field(c, pa.float64()) for c in extra.numeric])


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


def find_table(raw: Path, name: str, extra: ExtraFeatures | None = None) -> TableSource | None:
    """Locate table `name` under `raw` and check its layout; None when absent."""
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
    if fmt not in ("csv", "parquet"):
        raise BadInputError(f"table file {path} is neither .csv nor .parquet")
    schema = table_schema(name, extra)
    present = (_csv_columns if fmt == "csv" else _parquet_columns)(name, files, schema)
    return TableSource(name, path, fmt, files, schema,
                       tuple(c for c in schema.names if c not in present))


def _same_in_every_part(name: str, columns: dict[Path, list[str]]) -> list[str]:
    """The columns of the first part file, which every other part file must repeat (Spark
    takes one file's columns for all: CSV positionally, Parquet by name)."""
    (first, cols), *rest = columns.items()
    for f, other in rest:
        if other != cols:
            raise BadInputError(f"part files of table {name} differ in columns: {first} has "
                                f"{cols}, {f} has {other}")
    return cols


def _csv_columns(name: str, files: tuple[Path, ...], schema: pa.Schema) -> set[str]:
    headers = {}
    for f in files:
        try:
            with open(f, newline="") as fh:
                header = next(csv.reader(fh), None)
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"cannot read CSV file {f}: {e}") from e
        if header is None:
            raise BadInputError(f"CSV file {f} is empty (no header line)")
        missing = [c for c in required_columns(name) if c not in header]
        if missing:
            raise BadInputError(f"CSV file {f} (table {name}) lacks columns {missing}; "
                                f"header is {header}")
        headers[f] = header
    return set(_same_in_every_part(name, headers)) & set(schema.names)


def _type_ok(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_floating(want):
        return pa.types.is_integer(got) or pa.types.is_floating(got)
    if pa.types.is_string(want):       # categories: integer codes read as their text
        return (pa.types.is_string(got) or pa.types.is_large_string(got)
                or pa.types.is_integer(got) or pa.types.is_boolean(got))
    if pa.types.is_list(want):
        return ((pa.types.is_list(got) or pa.types.is_large_list(got))
                and pa.types.is_floating(got.value_type))
    return got == want


def _parquet_columns(name: str, files: tuple[Path, ...], schema: pa.Schema) -> set[str]:
    """Read every footer (cheap): a truncated file, a missing required column or a wrong
    column type fails here, named."""
    found = {}
    for f in files:
        try:
            file_schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise BadInputError(f"Parquet file {f} (table {name}) is unreadable: {e}") from e
        for c in required_columns(name):
            if c not in file_schema.names:
                raise BadInputError(f"Parquet file {f} (table {name}) lacks column {c!r}")
        for field in schema:
            if field.name in file_schema.names:
                got = file_schema.field(field.name).type
                if not _type_ok(got, field.type):
                    raise BadInputError(f"Parquet file {f} (table {name}) column "
                                        f"{field.name!r} has type {got}, expected {field.type}")
        found[f] = [c for c in schema.names if c in file_schema.names]
    return set(_same_in_every_part(name, found))


def read_table(spark, source: TableSource):
    """Read one table: CSV as all-string columns, Parquet with its own (checked) types.

    Exactly the columns of `source.schema`, in that order; absent ones are nulls (strings for
    CSV, typed for Parquet, like the columns read).
    """
    if source.fmt == "csv":
        reader = spark.read.option("header", True).option("inferSchema", False).option(
            "mode", "PERMISSIVE")
        df = reader.csv([str(f) for f in source.files])
    else:
        df = spark.read.parquet(*[str(f) for f in source.files])
    log.info("reading table %s from %s (%s, %d file(s))", source.name, source.path, source.fmt,
             len(source.files))
    def absent(field: pa.Field):
        kind = "string" if source.fmt == "csv" else spark_type(field.type)
        return F.lit(None).cast(kind).alias(field.name)

    return df.select(*[absent(f) if f.name in source.absent else F.col(f.name)
                       for f in source.schema])


def find_tables(raw: Path, extra_features: dict[str, ExtraFeatures] | None = None
                ) -> dict[str, TableSource]:
    """All known tables present under `raw`; the required ones must be there. Absent
    optional columns are logged once per table (declared extra ones as a warning)."""
    if not raw.is_dir():
        raise BadInputError(f"raw input folder {raw} does not exist")
    extra_features = extra_features or {}
    tables = {t: s for t in RAW_TABLES
              if (s := find_table(raw, t, extra_features.get(t))) is not None}
    for t in REQUIRED_TABLES:
        if t not in tables:
            raise BadInputError(f"required table {t!r} is missing under {raw} "
                                f"(expected {t}.csv, {t}.parquet or a {t}/ folder)")
    for t, source in tables.items():
        declared = extra_features[t].columns() if t in extra_features else []
        known = [c for c in source.absent if c not in declared]
        missing_extra = [c for c in source.absent if c in declared]
        if known:
            log.info("table %s (%s) has no columns %s: read as empty, their features are zeros",
                     t, source.path, known)
        if missing_extra:
            log.warning("table %s (%s) lacks the extra feature columns %s declared in "
                        "build.extra_features: their features are zeros", t, source.path,
                        missing_extra)
    return tables
