"""Stage-by-stage wall time and peak memory of the nightly chain at several generated sizes.

Each stage runs as its own CLI command (as a scheduler would run it), measured with its whole
process tree (Spark JVM included). Results: bench/out/nightly.json and
docs/benchmarks/nightly.md. Example:
    .venv/bin/python bench/bench_nightly.py --sizes 100k,1M
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import measure  # noqa: E402
from gie.evaluate.report import lookup  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
DAYS, START = 15, "2025-05-01"


def shape(gifts: int) -> dict[str, int]:
    """Users and streamers grow with the number of gift events (about 5% of users gift/day)."""
    per_day = gifts // DAYS
    return {"gifts_per_day": per_day, "users": max(2_000, per_day * 20),
            "streamers": max(200, per_day * 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="100k,1M")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reuse", action="store_true",
                    help="keep the figures and outputs of stages an interrupted run finished "
                         "(bench/out/stage-<size>-<stage>.json); marked in the table")
    args = ap.parse_args()
    out = Path(args.out)
    py = [sys.executable, str(ROOT / "cli.py")]
    date = (dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 2)).isoformat()
    results = []
    for name in args.sizes.split(","):
        s = shape(SIZES[name])
        raw, work = out / f"raw-{name}", out / f"work-{name}"
        row = {"size": name, "gift_events": SIZES[name], **s, "stages": {}}
        stages = {
            "generate": py + ["generate", "--out", str(raw), "--users", str(s["users"]),
                              "--streamers", str(s["streamers"]), "--days", str(DAYS),
                              "--start", START, "--gifts-per-day", str(s["gifts_per_day"])],
            "build": py + ["build-graph", "--raw", str(raw), "--out", str(work / "graph"),
                           "--date", date],
            "train": py + ["train-gie", "--graph", str(work / "graph" / f"dt={date}"),
                           "--out", str(work / "model" / f"dt={date}"),
                           "--epochs", str(args.epochs)],
            "expand": py + ["expand", "--graph", str(work / "graph" / f"dt={date}"),
                            "--embeddings", str(work / "model" / f"dt={date}" / "embeddings"),
                            "--out", str(work / "bundle" / f"dt={date}")],
            "evaluate": py + ["evaluate", "--raw", str(raw), "--work", str(work),
                              "--date", date],
        }
        for stage, cmd in stages.items():
            if stage == "generate" and (raw / "manifest.json").exists():
                continue
            record = out / f"stage-{name}-{stage}.json"
            if args.reuse and record.exists():   # measured by an earlier, interrupted run
                row["stages"][stage] = {**json.loads(record.read_text()), "reused": True}
                print(name, stage, "reused", row["stages"][stage], flush=True)
                continue
            load = os.getloadavg()[0]
            m = measure(cmd, cwd=str(ROOT), env=dict(os.environ))
            row["stages"][stage] = {"wall_s": round(m.wall_s, 1), "cpu_s": round(m.cpu_s, 1),
                                    "peak_rss_mb": round(m.peak_rss_mb), "rc": m.returncode,
                                    "load_avg_1m_at_start": round(load, 2)}
            print(name, stage, row["stages"][stage], flush=True)
            if m.returncode != 0:
                break
            record.write_text(json.dumps(row["stages"][stage]))
        row["quality"] = quality(work / "reports" / f"dt={date}" / "metrics.json")
        results.append(row)

    out.mkdir(parents=True, exist_ok=True)
    (out / "nightly.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.sizes, args.epochs)
    return 0


QUALITY = {  # report key -> column title
    "retrieval.overall.merged.recall@50": "merged R@50",
    "retrieval.explore.explore.recall@50": "explore R@50",
    "targets.explore_recall.best_baseline_value": "explore best baseline R@50",
    "link_prediction.all.auc": "next-day link AUC",
    "downstream.history_only.auc": "DIN AUC history only",
    "downstream.with_gie.auc": "DIN AUC with GIE",
}


def quality(report: Path) -> dict:
    if not report.exists():
        return {}
    metrics = json.loads(report.read_text())
    return {title: lookup(metrics, key) for key, title in QUALITY.items()}


def write_markdown(results: list[dict], sizes: str, epochs: int) -> None:
    lines = ["# Nightly chain: stage wall time and peak memory", "",
             f"Machine: {os.cpu_count()} cores, {platform.platform()}. "
             f"Command: `.venv/bin/python bench/bench_nightly.py --sizes {sizes} --epochs {epochs}`"
             f" (training runs {epochs} epochs; every other setting is the default). Each stage is "
             "its own CLI command; peak RSS is summed over its process tree (Spark JVM included).",
             "",
             "| size | users | streamers | stage | wall (s) | CPU (s) | peak RSS (MB) | load at start |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for st, v in r["stages"].items():
            lines.append(f"| {r['size']} | {r['users']} | {r['streamers']} | {st} | "
                         f"{v['wall_s']}{' (earlier run)' if v.get('reused') else ''} | "
                         f"{v.get('cpu_s', '')} | {v['peak_rss_mb']} | "
                         f"{v.get('load_avg_1m_at_start', '')} |")
    lines += ["", "Quality of the same runs (`evaluate`, next-day gifts):", "",
              "| size | " + " | ".join(QUALITY.values()) + " |",
              "|---|" + "---|" * len(QUALITY)]
    for r in results:
        cells = [f"{v:.3f}" if isinstance(v, float) else "n/a"
                 for v in (r.get("quality", {}).get(t) for t in QUALITY.values())]
        lines.append(f"| {r['size']} | " + " | ".join(cells) + " |")
    (ROOT / "docs" / "benchmarks").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "benchmarks" / "nightly.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
