"""Dense node features: one-hot profile categories with persisted vocabularies + log activity
(+ declared numeric profile columns on a signed log scale).

Width is fixed across dates so a model can be warm-started: every categorical column gets
exactly `vocab_slots` positions, the last one being 'other', whether the column is in
today's table or not. A vocabulary (encoders.json) is
re-applied the next day and only grows by appending values into free slots, so a value never
moves; once full, new values go to 'other'. A null or missing profile gives all zeros.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

OTHER = "<other>"


def fit_vocabularies(profiles: DataFrame | None, columns: list[str], slots: int,
                     previous: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Extend the previous vocabularies with today's values, most frequent first (ties by value)."""
    vocab = {c: list((previous or {}).get(c, [])) for c in columns}
    if profiles is None:
        return vocab
    pairs = profiles.select(F.explode(F.array(*[
        F.struct(F.lit(c).alias("col"), F.col(c).cast("string").alias("val")) for c in columns
    ])).alias("p")).select("p.col", "p.val").filter(F.col("val").isNotNull())
    rows = pairs.groupBy("col", "val").count().collect()
    for c in columns:
        seen = set(vocab[c])
        fresh = sorted(((-r["count"], r["val"]) for r in rows if r["col"] == c and r["val"]
                        not in seen))
        vocab[c] += [v for _, v in fresh][:max(0, slots - 1 - len(vocab[c]))]
    return vocab


def slot_columns(vocab: dict[str, list[str]], slots: int) -> list[Column]:
    """`_slot_<column>`: the one-hot position of each profile value, its place in the
    vocabulary, else the last ('other'); null for a null value (all zeros).

    Computed once per row on the profile table, before it is joined to the nodes: inside the
    one-hot lambda it was looked up again for every position, in interpreted code."""
    out = []
    for c, values in vocab.items():
        value = F.col(c).cast("string")
        # an empty vocabulary (the column is absent or all null) still maps null to null
        pos = F.array_position(F.array(*[F.lit(v) for v in values]), value) if values \
            else F.when(value.isNotNull(), F.lit(0))
        out.append(F.when(pos == 0, F.lit(slots - 1)).otherwise(pos - 1).cast("int")
                   .alias(f"_slot_{c}"))
    return out


def one_hot(index: Column, slots: int) -> Column:
    """`slots` floats with 1.0 at `index` (all zeros for null). `index` must be a column,
    not an expression: it is read once per position."""
    return F.transform(F.sequence(F.lit(0), F.lit(slots - 1)),
                       lambda i: F.when(i == index, 1.0).otherwise(0.0))


def signed_log1p(c: Column) -> Column:
    """sign(x) * log1p(|x|), 0 for null: heavy-tailed values of either sign on a log scale,
    with no fitted state, so every date encodes a value the same way."""
    x = F.coalesce(c.cast("double"), F.lit(0.0))
    return F.signum(x) * F.log1p(F.abs(x))


def feature_vector(vocab: dict[str, list[str]], slots: int, numeric: list[str],
                   signed: list[str] = ()) -> Column:
    """One-hot blocks in vocabulary order (from the slot_columns), log1p of each `numeric`
    column (counts), then signed_log1p of each `signed` column, as array<float>."""
    parts = [one_hot(F.col(f"_slot_{c}"), slots) for c in vocab]
    parts.append(F.array(*[F.log1p(F.greatest(F.col(c).cast("double"), F.lit(0.0)))
                           for c in numeric], *[signed_log1p(F.col(c)) for c in signed]))
    return F.concat(*parts).cast(ArrayType(FloatType(), True))


def feature_names(vocab: dict[str, list[str]], slots: int, numeric: list[str],
                  signed: list[str] = ()) -> list[str]:
    names = []
    for c, values in vocab.items():
        names += [f"{c}={v}" for v in values]
        names += [f"{c}=<free{k}>" for k in range(slots - 1 - len(values))]
        names.append(f"{c}={OTHER}")
    return names + [f"log1p({c})" for c in numeric] + [f"signed_log1p({c})" for c in signed]
