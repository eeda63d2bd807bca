"""Ceiling of exploration Recall@K on generated data: an oracle that knows the planted truth.

The oracle ranks, for each next-day gifter, every streamer the user never gifted in the window
by the generator's own chance of an explored gift: P(topic | user's planted topic mixture) x
P(live that day) x the streamer's planted popularity (with the new-streamer boost) / the
expected popularity live in its topic (the generator picks a topic, then a live streamer of it
by popularity). It is scored exactly like the `explore` segment.
No learned method can be expected to beat it by much; it tells what share of the reachable
exploration recall a method reaches. Only generated raw folders (manifest.json and truth/)
have it.

The same oracle with the user's topic mixture *estimated from their gifts in the window*
(`history_recall@k`: the planted topics of the streamers they gifted, counted once each, plus
one pseudo-count spread over all topics) tells how much of the gap is the ranking's and how
much is what a short history cannot say: it still knows every streamer's topic, popularity
and liveness, which no method sees, so it is a reference, not a bound.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from gie.evaluate.baselines import best_positions
from gie.evaluate.rawdata import next_date

HISTORY_PSEUDO_COUNT = 1.0   # history oracle: prior topic counts, spread evenly


def has_truth(raw: str | Path) -> bool:
    raw = Path(raw)
    return (raw / "manifest.json").is_file() and (raw / "truth" / "users.parquet").is_file()


def explore_ceiling(raw: str | Path, date: str, labels: dict[int, set[int]],
                    history: dict[int, set[int]], k: int) -> dict | None:
    """Oracle exploration Recall@k over the users of `labels` (raw ids), or None."""
    if not has_truth(raw):
        return None
    raw = Path(raw)
    gen = json.loads((raw / "manifest.json").read_text())["config"]
    users = pq.read_table(raw / "truth" / "users.parquet").to_pandas().set_index("user_id")
    streamers = pq.read_table(raw / "truth" / "streamers.parquet").to_pandas()
    topics = int(gen["topics"])
    day = (dt.date.fromisoformat(next_date(date)) - dt.date.fromisoformat(gen["start"])).days
    debut = streamers.debut_day.to_numpy()
    fresh = (debut > 0) & (debut <= day) & (day - debut < gen["new_boost_days"])
    pop = streamers.popularity.to_numpy() * np.where(fresh, gen["new_boost"], 1.0) * (debut <= day)
    live = np.where(debut == day, 1.0, gen["live_prob"]) * (debut <= day)
    ids, s_topic = streamers.streamer_id.to_numpy(), streamers.topic.to_numpy()
    mass = np.bincount(s_topic, weights=pop * live, minlength=topics)
    chance = live * pop / np.where(mass > 0, mass, 1.0)[s_topic]
    cross = gen["cross_topic_share"]
    recalls, from_history = [], []
    for u, gifted in sorted(labels.items()):
        seen = history.get(u, set())
        relevant = gifted - seen
        if not relevant or u not in users.index:
            continue
        row = users.loc[u]
        mix = np.full(topics, cross / topics)
        mix[int(row.topic)] += row.main_weight
        mix[int(row.second_topic)] += max(0.0, 1 - cross - row.main_weight)
        recalls.append(_recall(mix[s_topic] * chance, ids, seen, relevant, k))
        counts = np.bincount(s_topic[np.isin(ids, list(seen))], minlength=topics)
        estimate = (counts + HISTORY_PSEUDO_COUNT / topics) / (counts.sum() + HISTORY_PSEUDO_COUNT)
        from_history.append(_recall(estimate[s_topic] * chance, ids, seen, relevant, k))
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return {"users": len(recalls), f"recall@{k}": mean(recalls),
            f"history_recall@{k}": mean(from_history),
            "method": "the generator's planted chance of an explored gift"}


def _recall(score: np.ndarray, ids: np.ndarray, seen: set[int], relevant: set[int],
            k: int) -> float:
    ranked = ids[best_positions(score, k + len(seen))]
    top = [s for s in ranked if s not in seen][:k]
    return len(relevant & set(top)) / len(relevant)
