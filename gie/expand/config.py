"""Settings of the expansion and index stage (section `expand` of the pipeline config).

Scoring is documented in docs/BUNDLE.md; in short every score is the probability of a weighted
walk along the metapath, so scores of different metapaths are comparable and can be summed.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

HopKind = Literal["graph", "knn", "both"]


class MetapathConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    fanout: tuple[int, int] = Field((20, 20), description="neighbours kept per node at hop 1, 2")
    topk: Optional[int] = Field(None, ge=1, description="cap of this sequence (default: expand.topk)")
    hop: HopKind = Field("both", description="the 'similar' hop: u2u/s2s edges, Faiss kNN, or both")
    weight: float = Field(1.0, ge=0, description="weight of this metapath in `merged`")

    @model_validator(mode="after")
    def _positive_fanout(self) -> "MetapathConfig":
        if min(self.fanout) < 1:
            raise ValueError("fanout values must be >= 1")
        return self


def _default_metapaths() -> dict[str, MetapathConfig]:
    return {name: MetapathConfig() for name in ("U-S", "U-U-S", "U-S-S", "S-U", "S-S-U", "S-U-U")}


class IndexConfig(BaseModel):
    """Faiss index choice: exact below `exact_below` vectors, approximate above."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"] = "auto"
    factory: Optional[str] = Field(None, description="Faiss index_factory string; overrides kind")
    exact_below: int = Field(50_000, ge=1, description="auto: exact (Flat) index below this size")
    pq_above: int = Field(20_000_000, ge=1, description="auto: IVF-PQ (with exact re-ranking) above")
    recall_k: int = Field(50, ge=1, description="K of the measured recall@K")
    recall_sample: int = Field(1000, ge=10, description="queries used to measure recall")
    recall_target: float = Field(0.95, ge=0, le=1, description="search effort is raised until met")
    train_per_list: int = Field(40, ge=10, description="IVF training vectors per inverted list")
    use_gpu: bool = Field(True, description="use GPUs when a GPU build of Faiss sees one")


class ExpandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topk: int = Field(50, ge=1, description="per-sequence cap")
    recall_floor: float = Field(0.9, ge=0, le=1, description="approximate index recall@K floor")
    metapaths: dict[str, MetapathConfig] = Field(default_factory=_default_metapaths)
    knn_k: int = Field(20, ge=1, description="Faiss neighbours per node for kNN hops")
    graph_weight: float = Field(0.5, ge=0, le=1,
                                description="hop 'both': share of the graph hop (rest is kNN)")
    exclude_history: bool = Field(False, description="drop targets already in the node's history "
                                                     "(every sequence but U-S / S-U)")
    min_score: float = Field(0.0, ge=0, description="drop entries scoring below this")
    batch_size: int = Field(4096, ge=1, description="source nodes expanded per vectorised batch")
    shard_wait_s: int = Field(3600, ge=1, description="how long shards wait for shard 0's indexes")
    index: IndexConfig = IndexConfig()

    @model_validator(mode="after")
    def _complete_metapaths(self) -> "ExpandConfig":
        known = _default_metapaths()
        unknown = sorted(set(self.metapaths) - set(known))
        if unknown:
            raise ValueError(f"unknown metapaths {unknown}; known: {sorted(known)}")
        self.metapaths = {**known, **self.metapaths}
        return self

    def cap(self, metapath: str) -> int:
        return self.metapaths[metapath].topk or self.topk
