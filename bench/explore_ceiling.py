"""Ceiling of exploration Recall@K on generated data: an oracle that knows the planted truth.

The oracle ranks, for each next-day gifter, every streamer the user never gifted in the window
by P(streamer's topic | user's planted topic mixture) x the streamer's planted popularity
(with the generator's new-streamer boost), and is scored exactly like `evaluate`'s `explore`
segment. No learned method can be expected to beat it; it tells whether a target stated as a
multiple of the best baseline is reachable at all on this data.
    .venv/bin/python bench/explore_ceiling.py --raw demo-out/raw \
        --graph demo-out/work/graph/dt=2025-05-14 --date 2025-05-14
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gie.evaluate.rawdata import next_date, read_days  # noqa: E402
from graphbuild.dataset import load_graph  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--graph", required=True, help="published graph folder of --date")
    ap.add_argument("--date", required=True, help="bundle date D; labels are the gifts of D+1")
    ap.add_argument("--k", type=int, default=50)
    args = ap.parse_args()

    raw = Path(args.raw)
    manifest = json.loads((raw / "manifest.json").read_text())["config"]
    users = pq.read_table(raw / "truth" / "users.parquet").to_pandas().set_index("user_id")
    streamers = pq.read_table(raw / "truth" / "streamers.parquet").to_pandas()
    topics = int(max(streamers.topic.max(), users.topic.max()) + 1)

    g = load_graph(args.graph, edge_types=("gift",))
    u_raw, s_raw = g.raw_ids["user"], g.raw_ids["streamer"]
    history: dict[int, set[int]] = {}
    for u, s in zip(g.edges["gift"].src, g.edges["gift"].dst):
        history.setdefault(int(u_raw[u]), set()).add(int(s_raw[s]))

    next_day = dt.date.fromisoformat(next_date(args.date))
    gifts = read_days(raw, "gift", next_day.isoformat(), 1, ["user_id", "streamer_id"])
    labels = gifts.groupby("user_id").streamer_id.apply(set).to_dict()

    day = (next_day - dt.date.fromisoformat(manifest["start"])).days
    debut = streamers.debut_day.to_numpy()
    fresh = (debut > 0) & (debut <= day) & (day - debut < manifest["new_boost_days"])
    pop = streamers.popularity.to_numpy() * np.where(fresh, manifest["new_boost"], 1.0)
    pop *= debut <= day
    ids, s_topic = streamers.streamer_id.to_numpy(), streamers.topic.to_numpy()
    cross = manifest["cross_topic_share"]

    recalls = []
    for u, gifted in labels.items():
        seen = history.get(int(u), set())
        relevant = gifted - seen
        if not relevant or u not in users.index:
            continue
        row = users.loc[u]
        mix = np.full(topics, cross / topics)
        mix[row.topic] += row.main_weight
        mix[row.second_topic] += max(0.0, 1 - cross - row.main_weight)
        ranked = ids[np.argsort(-(mix[s_topic] * pop), kind="stable")]
        top = [s for s in ranked if s not in seen][: args.k]
        recalls.append(len(relevant & set(top)) / len(relevant))
    print(json.dumps({"users": len(recalls),
                      f"oracle_explore_recall@{args.k}": round(float(np.mean(recalls)), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
