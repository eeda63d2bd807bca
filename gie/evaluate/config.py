"""Settings of the evaluation stage (section `evaluate` of the pipeline config)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DownstreamConfig(BaseModel):
    """The DIN-style gift-prediction ablation (history only vs history + GIE sequence)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    sequences: list[str] = Field(default_factory=lambda: ["merged", "U-U-S", "U-S-S"],
                                 description="GIE sequences of the bundle the with_gie model "
                                             "attends over, one attention each")
    train_days: int = Field(3, ge=1, description="days of clicks before D+1 used for training")
    history_days: int = Field(14, ge=1, description="look-back of the own gift-history sequence")
    gift_window_minutes: int = Field(60, ge=1, description="a gift this soon after a click "
                                     "on the same live makes the click positive")
    max_train_samples: int = Field(10_000, ge=100)
    max_test_samples: int = Field(10_000, ge=100)
    max_seq_len: int = Field(50, ge=1)
    embed_dim: int = Field(8, ge=2, description="small on purpose: id embeddings of a few "
                           "thousand clicks overfit, and the seed spread grows with size")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    seeds: int = Field(3, ge=1, description="runs per variant; the spread is taken over them")
    threads: int = Field(1, ge=0, description="torch threads while training (0 = leave as is); "
                         "the model is too small to gain from more, and a shared host loses")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field(default_factory=lambda: [10, 50, 100])
    max_sources: int = Field(10_000, ge=1, description="users (and streamers) scored at most "
                             "per side, a seeded uniform sample of those with next-day gifts: "
                             "retrieval metrics are means over sources; link prediction uses "
                             "every next-day gift")
    regression_tolerance: float = Field(0.1, ge=0, description="relative drop that is flagged")
    new_streamer_days: int = Field(3, ge=1, description="'new streamer' = first seen within "
                                   "this many days before the end of D")
    lp_negatives: int = Field(100, ge=1, description="random streamers per next-day gift edge "
                              "in link-prediction AUC/MRR")
    swing_alpha: float = Field(1.0, gt=0)
    swing_max_items_per_user: int = Field(50, ge=2, description="most-weighted gifts kept per user")
    swing_max_users_per_item: int = Field(200, ge=2, description="most-weighted gifters kept "
                                          "per streamer")
    downstream: DownstreamConfig = DownstreamConfig()
