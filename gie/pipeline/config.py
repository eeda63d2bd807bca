"""Settings of the nightly orchestrator (section `nightly` of the pipeline config)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NightlyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_days: int = Field(7, ge=1)
