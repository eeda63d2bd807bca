"""Ceiling of exploration Recall@K on generated data (gie/evaluate/oracle.py), for any
generated raw folder and published graph, outside an evaluation run:
    .venv/bin/python bench/explore_ceiling.py --raw demo-out/raw \\
        --graph demo-out/work/graph/dt=2025-05-14 --date 2025-05-14
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gie.evaluate import baselines as bl  # noqa: E402
from gie.evaluate.oracle import explore_ceiling  # noqa: E402
from gie.evaluate.run import next_day_labels  # noqa: E402
from graphbuild.dataset import load_graph, to_node_ids  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--graph", required=True, help="published graph folder of --date")
    ap.add_argument("--date", required=True, help="bundle date D; labels are the gifts of D+1")
    ap.add_argument("--k", type=int, default=50)
    args = ap.parse_args()
    g = load_graph(args.graph, edge_types=("gift",))
    labels, _ = next_day_labels(args.raw, args.date, g)
    weights, s_ids = bl.gift_weights(g), g.raw_ids["streamer"]
    nodes = to_node_ids(g.raw_ids["user"], np.array(sorted(labels), np.int64))
    history = {int(g.raw_ids["user"][n]): set(s_ids[weights[n].indices].tolist())
               for n in nodes[nodes >= 0]}
    result = explore_ceiling(args.raw, args.date, labels, history, args.k)
    if result is None:
        print(f"{args.raw} is not a generated dataset (no manifest.json and truth/)")
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
