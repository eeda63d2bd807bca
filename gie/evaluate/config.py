"""Settings of the evaluation stage (section `evaluate` of the pipeline config)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field(default_factory=lambda: [10, 50, 100])
    regression_tolerance: float = Field(0.1, ge=0, description="relative drop that is flagged")
