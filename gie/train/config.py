"""Settings of the training stage (section `train` of the pipeline config)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    hidden_dim: int = Field(64, ge=4)
    embed_dim: int = Field(64, ge=4)
    fanouts: list[int] = Field(
        default_factory=lambda: [10, 10],
        description="neighbours sampled per layer; one entry per GraphSAGE layer, "
                    "[] trains the features-only baseline (no graph)")
    batch_size: int = Field(1024, ge=1, description="positive gift edges per step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")

    # model
    num_queries: int = Field(2, ge=1, description="MFQ learnable query tokens (cost grows with it)")
    num_heads: int = Field(2, ge=1, description="attention heads in MFQ (divides hidden_dim)")
    user_id_embedding: bool = Field(True, description="learnable per-user id vector")
    dropout: float = Field(0.1, ge=0, lt=1)

    # objective
    num_negatives: int = Field(256, ge=0, description="uniform streamers shared by a batch")
    in_batch_negatives: bool = Field(True, description="other positives of the batch as negatives")
    temperature: float = Field(0.1, gt=0, description="softmax temperature on cosine scores")
    logq_correction: float = Field(0.5, ge=0, le=1, description="share of log(sampling "
                                   "probability) subtracted from each in-batch candidate's "
                                   "logit (popularity-corrected negatives); 0 = off")
    amount_weighting: Literal["log", "none"] = Field(
        "log", description="loss weight of a gift edge: log1p(total_price), mean 1")
    weighted_sampling: bool = Field(True, description="sample neighbours by edge weight")
    contrastive_weight: float = Field(
        0.0, ge=0, description="weight of the graph-contrastive term; 0 switches it off")
    contrastive_temperature: float = Field(0.2, gt=0)
    augment_drop: float = Field(0.2, ge=0, lt=1, description="feature drop rate of each view")

    # validation and stopping
    patience: int = Field(3, ge=1, description="epochs without better valid AUC before stopping")
    min_valid_auc: float = Field(0.55, ge=0, le=1, description="quality floor; 0 switches it off")
    valid_max_edges: int = Field(20_000, ge=1, description="held-out edges ranked per epoch")
    recall_k: int = Field(50, ge=1)

    keep_checkpoints: int = Field(2, ge=1, description="newest epoch checkpoints kept")

    # performance
    num_threads: int = Field(1, ge=0, description="intra-op threads of a training process "
                             "(torch and DGL share them); always set for the run and restored "
                             "after it. Outputs are bit-identical only between runs with the "
                             "same value; 0 = every core of this host (then only on hosts "
                             "with the same core count). gie/train/threads.py")
    infer_batch_size: int = Field(8192, ge=1, description="nodes per step of full inference")
    layer_history_refreshes: int = Field(
        4, ge=0, description="snapshots of every node's layer vectors per epoch when training "
                             "on one sampled hop (gie/train/history.py); 0 samples all "
                             "len(fanouts) hops at every step. Single-process and DDP only")
    fused_cache_age: int = Field(
        8, ge=0, description="with layer histories off (and in --dist mode): steps a "
                             "non-seed streamer's fused MFQ vector is reused before it is "
                             "recomputed without gradients; 0 runs MFQ with gradients on "
                             "every sampled streamer (gie/train/fused_cache.py)")

    @model_validator(mode="after")
    def _has_negatives(self) -> "TrainConfig":
        if not self.in_batch_negatives and self.num_negatives == 0:
            raise ValueError("no negatives: set num_negatives > 0 or in_batch_negatives: true")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by "
                             f"num_heads {self.num_heads}")
        return self
