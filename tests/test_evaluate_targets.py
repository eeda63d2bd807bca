"""The acceptance targets read off one run's figures (gie/evaluate/targets.py)."""
from __future__ import annotations

from gie.evaluate.targets import fusion_summary, targets

BASELINES = ["popularity", "history", "swing", "emb_knn"]


def _metrics(explore: float, merged10: float, fusion: dict | None = None) -> dict:
    def block(values):
        return {m: {"recall@10": v[0], "recall@50": v[1]} for m, v in values.items()}
    base = {"popularity": (0.1, 0.30), "history": (0.4, 0.45), "swing": (0.2, 0.40),
            "emb_knn": (0.2, 0.38)}
    return {
        "config": {"ks": [10, 50, 100]}, "methods": {"gie": ["merged", "explore"],
                                                     "baselines": BASELINES},
        "retrieval": {
            "overall": block({**base, "merged": (merged10, 0.6), "explore": (0.1, 0.3)}),
            "explore": block({**base, "history": (0, 0), "merged": (0.2, 0.45),
                              "explore": (0.2, explore)}),
            "new_streamers": block({**base, "merged": (0.1, 0.2), "explore": (0.3, 0.6)})},
        "downstream": {"auc_margin": 0.02, "auc_spread": 0.01, "margin_exceeds_spread": True},
        "fusion": fusion_summary(fusion)}


def test_explore_lift_is_against_the_best_of_popularity_swing_and_embeddings():
    t = targets(_metrics(explore=0.50, merged10=0.5), 50)["explore_recall"]
    assert t["best_baseline"] == "swing" and t["ratio"] == 0.50 / 0.40 and t["met"]
    assert not targets(_metrics(explore=0.49, merged10=0.5), 50)["explore_recall"]["met"]
    assert targets(_metrics(explore=0.5, merged10=0.5), 50)["new_streamer_recall"]["met"]


def test_merged_must_match_the_best_baseline_at_every_k():
    assert targets(_metrics(0.5, merged10=0.41), 50)["merged_recall"]["met"]
    missed = targets(_metrics(0.5, merged10=0.39), 50)["merged_recall"]
    assert not missed["met"] and missed["per_k"][10]["best_baseline"] == "history"
    assert 100 not in missed["per_k"]


def test_fused_against_sources_comes_from_the_bundle():
    learned = {"learned": True, "user": {
        "explore": {"kind": "learned", "best_source": "U-W-S",
                    "held_out": {"recall@50": {"fused": 0.4, "U-W-S": 0.3, "fixed_weights": 0.35}}},
        "merged": {"kind": "source", "source": "U-S", "best_source": "U-S",
                   "held_out": {"recall@50": {"fused": 0.2, "U-S": 0.3, "fixed_weights": 0.1}}}}}
    t = targets(_metrics(0.5, 0.5, learned), 50)
    assert t["fused_vs_sources"]["met"] is True           # the weaker one was replaced
    assert t["fused_vs_sources"]["held_out"]["user.explore"]["held_out_best_source"] == 0.3
    first = targets(_metrics(0.5, 0.5, {"learned": False, "reason": "first night"}), 50)
    assert first["fused_vs_sources"]["met"] is None and not first["fused_vs_sources"]["learned"]
    assert t["downstream_auc"]["met"] and t["embeddings_vs_popularity"]["met"]
