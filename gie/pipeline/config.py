"""Settings of the nightly orchestrator (section `nightly` of the pipeline config)."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class NightlyConfig(BaseModel):
    """How the chain runs; none of these keys changes what a stage computes.

    `build_command` / `train_command` send a stage out of process (cluster, launcher): a list of
    arguments with placeholders (see docs/OPERATIONS.md); empty runs the stage in this process.
    """

    model_config = ConfigDict(extra="forbid")

    keep_days: int = Field(7, ge=1, description="dated folders older than this are removed")
    warm_start: bool = Field(True, description="start training from the previous date's model")
    evaluate: bool = Field(True, description="evaluate when the next day's data exists")
    backfill: bool = Field(True, description="when the previous nights the fused ranking "
                                             "learns from (expand.fusion.learn.nights) have no "
                                             "graph and model yet, build and train them first "
                                             "(their days must be in --raw)")
    spark_master: Optional[str] = Field(None, description="in-process build: Spark master")
    build_command: list[str] = Field(default_factory=list,
                                     description="e.g. spark-submit ... {cli} build-graph ...")
    train_command: list[str] = Field(default_factory=list,
                                     description="e.g. torchrun ... {cli} train-gie ...")
    command_timeout_s: Optional[float] = Field(None, gt=0, description="kill a stuck command")
