"""Settings of the expansion and index stage (section `expand` of the pipeline config).

Scoring is documented in docs/BUNDLE.md. In short: every source (metapath walk, kNN hop or
prior) proposes candidates with its own score; the fused sequences `merged` and `explore` rank
the union of all sources' candidates with a learning-to-rank model fitted every night on the
previous night's sources against the gifts that followed (fixed weights on the first night).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graphbuild.schema import SOURCES

HopKind = Literal["graph", "knn", "both"]


class MetapathConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    fanout: tuple[int, int] = Field((20, 20), description="neighbours kept per node at hop 1, 2")
    topk: Optional[int] = Field(None, ge=1, description="cap of this sequence (default: expand.topk)")
    hop: HopKind = Field("both", description="the 'similar' hop: u2u/s2s edges, Faiss kNN, or "
                                             "both (U-s2s-S and S-u2u-U: always the edges)")
    weight: float = Field(1.0, ge=0, description="weight of this source in the fixed-weight "
                                                 "fusion (first night, docs/BUNDLE.md)")

    @model_validator(mode="after")
    def _positive_fanout(self) -> "MetapathConfig":
        if min(self.fanout) < 1:
            raise ValueError("fanout values must be >= 1")
        return self


def _default_metapaths() -> dict[str, MetapathConfig]:
    return {name: MetapathConfig() for t in ("user", "streamer") for name in SOURCES[t]}


class IndexConfig(BaseModel):
    """Faiss index choice: exact below `exact_below` vectors, approximate above."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"] = "auto"
    factory: Optional[str] = Field(None, description="Faiss index_factory string; overrides kind")
    exact_below: int = Field(50_000, ge=1, description="auto: exact (Flat) index below this size")
    pq_above: int = Field(20_000_000, ge=1, description="auto: IVF-PQ (with exact re-ranking) above")
    recall_k: int = Field(50, ge=1, description="K of the measured recall@K")
    recall_sample: int = Field(1000, ge=10, description="queries used to measure recall")
    recall_target: float = Field(0.95, ge=0, le=1, description="search effort is raised until "
                                 "met, for own-type and for cross-type queries separately")
    recall_epsilon: float = Field(0.01, ge=0, description="own-type searches: a found "
                                  "neighbour counts towards the recall when its distance is "
                                  "within (1 + epsilon) of the exact K-th's (0: only the exact "
                                  "K count; docs/BUNDLE.md)")
    train_per_list: int = Field(40, ge=10, description="IVF training vectors per inverted list")
    list_size: Optional[int] = Field(256, ge=16, description="CPU IVF: about this many "
                                     "vectors per inverted list (n / list_size lists), so a "
                                     "probe costs the same at every size; None, and on a GPU: "
                                     "about 2*sqrt(n) lists (docs/BUNDLE.md)")
    quantizer: Literal["flat", "hnsw"] = Field("hnsw", description="how a query finds its "
                                               "nearest IVF lists on a CPU: in an HNSW graph of "
                                               "the centroids, or by comparing every one "
                                               "(docs/BUNDLE.md)")
    use_gpu: bool = Field(True, description="use GPUs when a GPU build of Faiss sees one")


class LearnConfig(BaseModel):
    """The nightly fit of the fused ranking (LightGBM), see docs/BUNDLE.md "Fusion"."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="learn the ranker from the previous night when one "
                                            "exists; otherwise (and when off) fixed weights")
    nights: int = Field(2, ge=1, description="previous nights learned from, at least (where "
                                             "they exist); with two or more, the newest is "
                                             "held out to judge the fit")
    max_nights: int = Field(6, ge=1, description="older nights are added, up to this many in "
                            "all, while the nights so far hold fewer than `min_label_nodes` "
                            "label nodes of either node type (a small population's next-day "
                            "gifters are too few to fit on)")
    min_label_nodes: int = Field(5000, ge=0, description="label nodes of each node type "
                                 "(summed over nights, each night at most `max_groups`) that "
                                 "stop adding older nights")
    max_gap_days: int = Field(3, ge=1, description="learn only from nights at most this many "
                                                   "days before the next one")
    valid_share: float = Field(0.2, gt=0, lt=1, description="share of label nodes held out "
                                                            "(early stopping, fused vs sources)")
    max_groups: int = Field(20_000, ge=10, description="label nodes used at most (sampled)")
    negative_share: float = Field(0.1, gt=0, le=1, description="share of the non-gifted "
                                  "candidates the models are fitted on (a seeded sample; the "
                                  "held-out judgement sees them all)")
    objective: Literal["binary", "lambdarank"] = Field(
        "binary", description="LightGBM objective: pointwise log loss (steadier from one night "
                              "to the next in our measurements) or listwise lambdarank")
    rounds: int = Field(400, ge=1, description="boosting rounds at most")
    early_stopping: int = Field(40, ge=1, description="rounds without held-out gain to stop")
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(7, ge=2)
    min_data_in_leaf: int = Field(100, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    threads: int = Field(1, ge=1, description="LightGBM threads; a fit is reproduced bit for "
                                              "bit with the same value")
    fit_processes: int = Field(2, ge=1, le=2, description="2: the streamer side is fitted "
                               "in a local process beside the user side's fit (at 1.29M users "
                               "the four fits took 150 s against 230 s); 1: one after the "
                               "other in the run's process. The models are the same bytes")
    workers: int = Field(1, ge=1, description="local processes that build the previous "
                         "nights' training sets side by side (1: one after the other, in the "
                         "run's own process). Each holds one previous graph, its view and "
                         "sets: about 10 GB at 1.3M users, so two ran out of memory on a "
                         "24 GB host there. The sets are the same bytes either way")
    beside_knn: bool = Field(True, description="build the previous nights' training sets in a "
                             "thread beside this night's kNN search (at 1.3M users the expand "
                             "reached its workers 41 s sooner), or before it: the peak is then "
                             "lower by this night's vectors, indexes and neighbour tables "
                             "(about 4 GB at 3.9M users). The bundle is the same bytes")
    cache: bool = Field(True, description="keep each previous night's training sets in "
                        "`_fusion_sets/` beside the bundle folder (keyed by its inputs and "
                        "settings) so the next nights read them instead of building them again: "
                        "a steady-state night builds one night's sets, not every night's")
    cache_views: bool = Field(True, description="keep this night's gift and watch relations "
                              "and streamer content and topic vectors in `_views/` beside the "
                              "bundle folder, so the next night's learning reads them instead "
                              "of building them again from this night's graph (about 30 s and "
                              "0.6 GB a night at 1.3M users; the newest two nights are kept)")


class FusionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    depth: int = Field(50, ge=1, description="best candidates of each source that enter the "
                                              "fused ranking")
    max_history: int = Field(20, ge=0, description="at most this many of the node's own "
                                                   "history entries in `merged`")
    fresh_days: int = Field(3, ge=1, description="NEW prior: streamers first seen within this "
                                                 "many days of the window's end")
    rrf_k: float = Field(60.0, gt=0, description="fixed weights: reciprocal-rank constant")
    prior_weight: float = Field(0.5, ge=0, description="fixed weights: weight of each prior "
                                                       "(POP, NEW, ACT)")
    content_smooth_k: int = Field(
        30, ge=1, description="content features: each streamer's content vector is the mean "
                              "of its this many nearest reference streamers' (1 = its own)")
    content_reference: int = Field(
        5_000, ge=1, description="content features: the most gifted streamers that the "
                                  "smoothing searches (bounds its cost at any size)")
    topic_clusters: int = Field(
        12, ge=0, description="topic features: clusters of the streamers' topic vectors "
                              "(`topic_basis`; spherical k-means); about the number of "
                              "kinds of streamer the audience chooses between (0: no topic "
                              "features and no TOPIC candidates)")
    topic_basis: Literal["both", "content", "audience"] = Field(
        "both", description="topic features: what the clusters are fitted on: the streamers' "
                            "smoothed content, their audience (the leading singular vectors "
                            "of who gifted or watched them), or both side by side (the "
                            "audience alone when the log has no content)")
    topic_audience_dim: int = Field(
        16, ge=1, description="topic features: dimensions of a streamer's audience vector")
    topic_temperature: float = Field(
        0.1, gt=0, description="topic features: a streamer's membership of each cluster is "
                                "the softmax of its topic vector's cosines to the centroids over "
                                "this (smaller: closer to one cluster each)")
    topic_source_clusters: int = Field(
        3, ge=1, description="TOPIC source: a user's candidates come from this many of their "
                             "likeliest clusters")
    compile_above: int = Field(100_000, ge=0, description="compile the learned models "
                               "to native code (lleaves) when scoring a node type with at "
                               "least this many nodes: the same scores, several times faster; "
                               "below it the compilation (seconds per model) costs more than "
                               "it saves")
    predict_threads: int = Field(0, ge=0, description="LightGBM threads when scoring "
                                                      "candidates (0 = every core; the scores "
                                                      "are the same at any count)")
    learn: LearnConfig = LearnConfig()


class ExpandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topk: int = Field(50, ge=1, description="per-sequence cap")
    recall_floor: float = Field(0.9, ge=0, le=1, description="approximate index recall@K floor")
    metapaths: dict[str, MetapathConfig] = Field(default_factory=_default_metapaths)
    knn_k: int = Field(20, ge=1, description="Faiss neighbours per node for kNN hops")
    graph_weight: float = Field(0.5, ge=0, le=1,
                                description="hop 'both': share of the graph hop (rest is kNN)")
    exclude_history: bool = Field(False, description="drop targets already in the node's history "
                                                     "(every walk sequence but U-S / S-U)")
    min_score: float = Field(0.0, ge=0, description="drop walk entries scoring below this")
    batch_size: int = Field(1024, ge=1, description="source nodes expanded per vectorised batch "
                                                    "(the fused candidates of a batch are in "
                                                    "memory together)")
    workers: int = Field(1, ge=1, description="local processes that expand a plain run's nodes "
                         "side by side, each one shard of the bundle (gie/expand/workers.py); "
                         "the bundle's part files follow the count, so keep it fixed between "
                         "runs that must give the same bytes. Memory: each holds the graph")
    shard_wait_s: int = Field(3600, ge=1, description="how long shards wait for shard 0's indexes")
    index: IndexConfig = IndexConfig()
    fusion: FusionConfig = FusionConfig()

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
