"""Write Spark DataFrames in the exact published contract (graphbuild.schema)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, DataFrameWriter
from pyspark.sql import functions as F
from pyspark.sql.types import (ArrayType, BooleanType, DataType, DoubleType, FloatType,
                               IntegerType, LongType, StringType)

_SPARK_TYPES = {pa.int64(): LongType(), pa.int32(): IntegerType(), pa.float64(): DoubleType(),
                pa.float32(): FloatType(), pa.bool_(): BooleanType(), pa.string(): StringType()}


def spark_type(t: pa.DataType) -> DataType:
    if pa.types.is_list(t):
        return ArrayType(spark_type(t.value_type), True)  # nullable elements read as list<float>
    return _SPARK_TYPES[t]


def conform(df: DataFrame, schema: pa.Schema) -> DataFrame:
    """Exactly the schema's columns, in order, cast to its types."""
    return df.select(*[F.col(f.name).cast(spark_type(f.type)).alias(f.name) for f in schema])


def _writer(df: DataFrame) -> DataFrameWriter:
    """Parquet writer without dictionary encoding for vector elements: random floats never
    fit a dictionary, and trying first made writing 1M segments' vectors 4x slower."""
    writer = df.write
    for f in df.schema.fields:
        if isinstance(f.dataType, ArrayType):
            writer = writer.option(f"parquet.enable.dictionary#{f.name}.list.element", "false")
    return writer


def write_table(df: DataFrame, folder: Path, schema: pa.Schema) -> None:
    df = conform(df, schema)
    _writer(df).mode("error").parquet(str(folder))


def count_rows(folder: Path) -> int:
    """Row count from the Parquet footers of a table just written to local staging."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(folder).glob("*.parquet"))


def materialize(spark, df: DataFrame, folder: Path) -> DataFrame:
    """Write an intermediate result as Parquet and read it back.

    This cuts the lineage: otherwise every later action re-plans (and re-describes, for the
    SQL listener) the whole job from the raw files, which grows with each step. Parquet on the
    staging filesystem also works on any cluster and spills nothing into executor memory.
    """
    _writer(df).mode("overwrite").parquet(str(folder))
    return spark.read.parquet(str(folder))
