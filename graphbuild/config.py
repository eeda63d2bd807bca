"""Settings of the graph build stage (section `build` of the pipeline config)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    broadcast_max_rows: int = Field(
        5_000_000, ge=0, description="joins whose small side (profile ids, id maps, user pairs "
                                     "sharing 2+ streamers) has at most this many rows are "
                                     "broadcast, so the large side is not shuffled")

