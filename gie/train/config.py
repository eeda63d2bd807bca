"""Settings of the training stage (section `train` of the pipeline config)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    hidden_dim: int = Field(64, ge=4)
    embed_dim: int = Field(64, ge=4)
    fanouts: list[int] = Field(default_factory=lambda: [10, 10])
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    device: str = "cpu"
