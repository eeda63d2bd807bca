"""Settings of the graph build stage (section `build` of the pipeline config)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graphbuild.schema import GRAPH_NODES, RAW_TABLES

COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class ExtraFeatures(BaseModel):
    """Profile columns beyond the KuaiLive layout that become node features."""

    model_config = ConfigDict(extra="forbid")

    categorical: list[str] = Field(
        default_factory=list, description="one-hot, `vocab_slots` positions each, vocabulary "
                                          "persisted in encoders.json like the KuaiLive columns")
    numeric: list[str] = Field(
        default_factory=list, description="encoded as sign(x) * log1p(|x|) (no state to persist; "
                                          "training standardises features); null gives 0")

    def columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_days: int = Field(14, ge=1, description="days of events ending at --date")
    half_life_days: float = Field(7.0, gt=0, description="time decay of gift/watch edge weights")
    max_rejected_share: float = Field(0.01, ge=0, le=1, description="fail above this share")
    max_gift_price: int = Field(1_000_000, gt=0, description="prices above are 'absurd'")
    min_last_day_gifts: int = Field(
        1, ge=0, description="fewer valid gift events on --date itself is upstream log loss")
    similarity: Literal["swing", "cosine"] = "swing"
    swing_alpha: float = Field(1.0, gt=0)
    s2s_topk: int = Field(20, ge=1)
    u2u_topk: int = Field(20, ge=1)
    max_items_per_user: int = Field(50, ge=2, description="cap per user in pair generation")
    max_users_per_item: int = Field(200, ge=2, description="cap per streamer in pair generation")
    modality_dims: dict[str, int] = Field(
        default_factory=lambda: {"image": 32, "speech": 16, "comment": 16})
    vocab_slots: int = Field(
        16, ge=2, description="one-hot slots per categorical profile column, the last is 'other'; "
                              "fixed so the feature width never changes across dates")
    watch_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "comment": 2.0, "like": 1.0},
        description="per-event weight of the watch edge (before time decay)")
    shuffle_partitions: int = Field(8, ge=1)
    extra_features: dict[Literal["user", "streamer"], ExtraFeatures] = Field(
        default_factory=dict,
        description="extra columns of the user / streamer profile tables used as features, "
                    "e.g. {user: {categorical: [city_tier], numeric: [account_age_days]}}; "
                    "they are appended to the feature vector (changing them changes its width)")
    broadcast_max_rows: int = Field(
        5_000_000, ge=0, description="joins whose small side (profile ids, id maps, user pairs "
                                     "sharing 2+ streamers) has at most this many rows are "
                                     "broadcast, so the large side is not shuffled")

    @model_validator(mode="after")
    def _extra_columns_are_new_names(self) -> "BuildConfig":
        for table, extra in self.extra_features.items():
            names = extra.columns()
            bad = [c for c in names if not COLUMN_NAME.fullmatch(c)]
            known = [c for c in names
                     if c in RAW_TABLES[table].names or c in GRAPH_NODES[table].names]
            twice = sorted({c for c in names if names.count(c) > 1})
            if bad or known or twice:
                raise ValueError(
                    f"build.extra_features.{table}: "
                    + "; ".join(m for m in (
                        bad and f"{bad} are not plain column names (letters, digits, _)",
                        known and f"{known} are KuaiLive or graph node columns already",
                        twice and f"{twice} are declared twice") if m))
        return self
