"""Settings of the expansion and index stage (section `expand` of the pipeline config)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ExpandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topk: int = Field(50, ge=1, description="per-sequence cap")
    recall_floor: float = Field(0.9, ge=0, le=1, description="approximate index recall@K floor")
