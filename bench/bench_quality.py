"""Quality of the published sequences on several shapes of data, over several seeds.

For each generator profile and seed: generate the data, run the nightly chain for D-6 .. D
(a nightly that has run for a week: the fused ranking of D learns from the previous nights,
each against the gifts of the day after it, the newest held out; at these sizes one night's
label nodes are few, so it reads up to `expand.fusion.learn.max_nights` of them), and read
the evaluation of D against the gifts of D+1: every source, the fused sequences and the
baselines, the targets, and the oracle ceiling. Results: bench/out/quality.json and
docs/benchmarks/quality.md. Example:
    .venv/bin/python bench/bench_quality.py --profiles default,long_history,weak_clicks --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAYS, START = 15, "2025-05-01"
NIGHTS = 7     # D-6 .. D: a week of nightly runs (expand.fusion.learn.max_nights 6)
K = 50
FIGURES = {  # column -> dotted path in metrics.json
    "explore": f"retrieval.explore.explore.recall@{K}",
    "merged (explore seg.)": f"retrieval.explore.merged.recall@{K}",
    "popularity": f"retrieval.explore.popularity.recall@{K}",
    "swing": f"retrieval.explore.swing.recall@{K}",
    "emb_knn": f"retrieval.explore.emb_knn.recall@{K}",
    "oracle": f"oracle.recall@{K}",
}
SOURCES = ["U-S", "U-U-S", "U-S-S", "U-W-S", "U-W-S-S", "U-knn-S", "U-s2s-S"]


def lookup(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def run(*args: str) -> None:
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def one(profile: str, seed: int, out: Path) -> dict:
    raw, work = out / f"raw-{profile}-{seed}", out / f"work-{profile}-{seed}"
    if not (raw / "manifest.json").exists():
        run("generate", "--out", str(raw), "--profile", profile, "--seed", str(seed),
            "--days", str(DAYS), "--start", START)
    last = dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 2)
    for back in range(NIGHTS - 1, -1, -1):
        date = last - dt.timedelta(days=back)
        run("nightly", "--raw", str(raw), "--work", str(work), "--date", date.isoformat(),
            "--set", f"seed={seed}", "--set", f"nightly.evaluate={str(date == last).lower()}",
            # the nights run are the steady state: no backfill of nights before the first
            "--set", "nightly.backfill=false")
    return json.loads((work / "reports" / f"dt={last}" / "metrics.json").read_text())


def commit() -> str:
    """The code a row was measured with (rows of older runs are kept on resume)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True).stdout.strip() or "unknown"


def summarise(m: dict) -> dict:
    t = m["targets"]
    row = {name: lookup(m, path) for name, path in FIGURES.items()}
    row.update({
        "explore_ratio": t["explore_recall"]["ratio"],
        "explore_best_baseline": t["explore_recall"]["best_baseline"],
        "new_streamer_ratio": t["new_streamer_recall"]["ratio"],
        "merged_met": t["merged_recall"]["met"],
        "merged_closest": min((v["merged"] - v["best_baseline_value"] for v in
                               t["merged_recall"]["per_k"].values()), default=None),
        "fused_vs_sources_met": t["fused_vs_sources"]["met"],
        "downstream_margin": (t.get("downstream_auc") or {}).get("margin"),
        "downstream_spread": (t.get("downstream_auc") or {}).get("spread"),
        "downstream_met": (t.get("downstream_auc") or {}).get("met"),
        "emb_over_pop_met": t["embeddings_vs_popularity"]["met"],
        "sources": {s: lookup(m, f"retrieval.explore.{s}.recall@{K}") for s in SOURCES},
        "streamer_explore": lookup(m, f"streamer_retrieval.explore.explore.recall@{K}"),
        "streamer_explore_baselines": {
            b: lookup(m, f"streamer_retrieval.explore.{b}.recall@{K}")
            for b in ("active_gifters", "user_cf", "emb_knn")},
        "fusion": m.get("fusion"),
        "explore_users": lookup(m, f"retrieval.explore.explore.users"),
    })
    return row


def mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else None


def write_markdown(results: dict, path: Path, seeds: list[int]) -> None:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["# Quality of the published sequences", "",
             f"Command: `.venv/bin/python bench/bench_quality.py --seeds "
             f"{','.join(map(str, seeds))}`. Per profile and seed: generate, nightly for "
             f"D-{NIGHTS - 1} .. D (the fused ranking of D learns from the previous nights, up "
             f"to expand.fusion.learn.max_nights, each against the gifts of the day after it, "
             f"the newest held out), evaluate D on D+1. Explore Recall@{K}: streamers the "
             f"user never gifted before, history removed "
             f"from every list. Means over seeds; per-seed figures in bench/out/quality.json.", "",
             "| profile | explore | best baseline | ratio (target 1.25x) | popularity | swing "
             "| emb_knn | oracle | share of oracle | new streamers ratio | merged >= baselines "
             "all K | fused >= sources | downstream margin / spread | emb > pop |",
             "|---" * 14 + "|"]
    for profile, rows in results.items():
        ratio = mean(rows, "explore_ratio")
        share = (mean(rows, "explore") / mean(rows, "oracle")) if mean(rows, "oracle") else None
        lines.append(
            f"| {profile} | {f(mean(rows, 'explore'))} | "
            f"{'/'.join(sorted({r['explore_best_baseline'] for r in rows}))} | {f(ratio)}x | "
            f"{f(mean(rows, 'popularity'))} | {f(mean(rows, 'swing'))} | "
            f"{f(mean(rows, 'emb_knn'))} | {f(mean(rows, 'oracle'))} | "
            f"{'n/a' if share is None else f'{share:.0%}'} | "
            f"{f(mean(rows, 'new_streamer_ratio'))}x | "
            f"{sum(bool(r['merged_met']) for r in rows)}/{len(rows)} | "
            f"{sum(r['fused_vs_sources_met'] is not False for r in rows)}/{len(rows)} | "
            f"{f(mean(rows, 'downstream_margin'))} / {f(mean(rows, 'downstream_spread'))} | "
            f"{sum(bool(r['emb_over_pop_met']) for r in rows)}/{len(rows)} |")
    lines += ["", "Code measured (git commit per profile and seed): " + "; ".join(
        f"{p} " + ", ".join(f"{r['seed']}: {r.get('commit', 'unknown')}" for r in rows)
        for p, rows in results.items()) + "."]
    lines += ["", f"Every source alone (explore Recall@{K}, mean over seeds):", "",
              "| profile | " + " | ".join(SOURCES) + " |", "|---" * (len(SOURCES) + 1) + "|"]
    for profile, rows in results.items():
        cells = [f(float(np.mean([r["sources"][s] for r in rows if r["sources"][s] is not None])))
                 if any(r["sources"][s] is not None for r in rows) else "n/a" for s in SOURCES]
        lines.append(f"| {profile} | " + " | ".join(cells) + " |")
    lines += ["", "Streamer side (first-time gifters of each streamer, explore Recall@50):", "",
              "| profile | explore | active_gifters | user_cf | emb_knn |", "|---|---|---|---|---|"]
    for profile, rows in results.items():
        base = {b: float(np.mean([r["streamer_explore_baselines"][b] for r in rows]))
                for b in ("active_gifters", "user_cf", "emb_knn")}
        lines.append(f"| {profile} | {f(mean(rows, 'streamer_explore'))} | "
                     + " | ".join(f(v) for v in base.values()) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profiles", default="default,long_history,weak_clicks")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    store = out / "quality.json"
    results: dict[str, list[dict]] = json.loads(store.read_text()) if store.exists() else {}
    for profile in args.profiles.split(","):
        done = {r["seed"] for r in results.get(profile, [])}
        for seed in seeds:
            if seed in done:
                continue
            row = {"seed": seed, "commit": commit(), **summarise(one(profile, seed, out))}
            results.setdefault(profile, []).append(row)
            store.write_text(json.dumps(results, indent=2))
            print(profile, seed, {k: row[k] for k in ("explore", "explore_ratio", "oracle")},
                  flush=True)
    selected = {p: sorted((r for r in results[p] if r["seed"] in seeds), key=lambda r: r["seed"])
                for p in args.profiles.split(",") if p in results}
    write_markdown(selected, ROOT / "docs" / "benchmarks" / "quality.md", seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
