"""Quality of the published sequences on several shapes of data, over several seeds.

For each generator profile and seed: generate the data, run the nightly chain for D-6 .. D
(a nightly that has run for a week: the fused ranking of D learns from the previous nights,
each against the gifts of the day after it, the newest held out; at these sizes one night's
label nodes are few, so it reads up to `expand.fusion.learn.max_nights` of them), and read
the evaluations of the last three nights, each against the gifts of the day after it: every
source, the fused sequences and the baselines, the targets, and the oracle ceiling. One test
day holds about 350 explore users, whose Recall@50 moves by about 0.03 from day to day: three
days a seed make a mean that a change of 0.02 can be read from. Results:
bench/out/quality/quality.json (a row per profile, seed and test day) and
docs/benchmarks/quality.md. Example:
    .venv/bin/python bench/bench_quality.py --profiles default,long_history,weak_clicks,no_content,few_users \
        --seeds 0,1,2
`--from-stage expand` re-runs expand and evaluate of the tested nights in the work folders
that exist (the rows of those seeds are measured again): what a code change to expansion
moves, without building and training the week again.
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
TESTED = 3     # D-2 .. D are evaluated (they learn from 4, 5 and 6 previous nights)
K = 50
FIGURES = {  # column -> dotted path in metrics.json
    "explore": f"retrieval.explore.explore.recall@{K}",
    "merged (explore seg.)": f"retrieval.explore.merged.recall@{K}",
    "popularity": f"retrieval.explore.popularity.recall@{K}",
    "swing": f"retrieval.explore.swing.recall@{K}",
    "emb_knn": f"retrieval.explore.emb_knn.recall@{K}",
    "oracle": f"oracle.recall@{K}",
    "history_oracle": f"oracle.history_recall@{K}",
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


def one(profile: str, seed: int, out: Path, from_stage: str | None,
        sets: list[str]) -> list[tuple[str, dict]]:
    """(date, metrics.json) of each tested night."""
    raw, work = out / f"raw-{profile}-{seed}", out / f"work-{profile}-{seed}"
    if not (raw / "manifest.json").exists():
        run("generate", "--out", str(raw), "--profile", profile, "--seed", str(seed),
            "--days", str(DAYS), "--start", START)
    last = dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 2)
    dates = [last - dt.timedelta(days=back) for back in range(NIGHTS - 1, -1, -1)]
    tested = dates[-TESTED:]
    for date in dates:
        redo = ["--from-stage", from_stage] if from_stage and date in tested else []
        run("nightly", "--raw", str(raw), "--work", str(work), "--date", date.isoformat(),
            "--set", f"seed={seed}", "--set", f"nightly.evaluate={str(date in tested).lower()}",
            # the nights run are the steady state: no backfill of nights before the first
            "--set", "nightly.backfill=false", *redo, *sets)
    return [(d.isoformat(), json.loads((work / "reports" / f"dt={d}" / "metrics.json")
                                       .read_text())) for d in tested]


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
    """Mean over every row: each seed's test days weigh the same."""
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else None


def write_markdown(results: dict, path: Path, seeds: list[int]) -> None:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["# Quality of the published sequences", "",
             f"Command: `.venv/bin/python bench/bench_quality.py --seeds "
             f"{','.join(map(str, seeds))}`. Per profile and seed: generate, nightly for "
             f"D-{NIGHTS - 1} .. D (the fused ranking of D learns from the previous nights, up "
             f"to expand.fusion.learn.max_nights, each against the gifts of the day after it, "
             f"the newest held out), evaluate D-{TESTED - 1} .. D, each on the next day. "
             f"Explore Recall@{K}: streamers the "
             f"user never gifted before, history removed "
             f"from every list. Means over seeds and test days (the counts: test days that "
             f"meet a target); per-day figures in bench/out/quality/quality.json.", "",
             "| profile | explore | best baseline | ratio (target 1.25x) | popularity | swing "
             "| emb_knn | oracle | share of oracle | history oracle (share) | new streamers ratio "
             "| merged >= baselines all K | fused >= sources | downstream margin / spread "
             "| emb > pop |",
             "|---" * 15 + "|"]
    for profile, rows in results.items():
        ratio = mean(rows, "explore_ratio")
        share = (mean(rows, "explore") / mean(rows, "oracle")) if mean(rows, "oracle") else None
        hist = mean(rows, "history_oracle")
        hist_cell = "n/a" if not hist else f"{hist:.3f} ({mean(rows, 'explore') / hist:.0%})"
        lines.append(
            f"| {profile} | {f(mean(rows, 'explore'))} | "
            f"{'/'.join(sorted({r['explore_best_baseline'] for r in rows}))} | {f(ratio)}x | "
            f"{f(mean(rows, 'popularity'))} | {f(mean(rows, 'swing'))} | "
            f"{f(mean(rows, 'emb_knn'))} | {f(mean(rows, 'oracle'))} | "
            f"{'n/a' if share is None else f'{share:.0%}'} | "
            f"{hist_cell} | "
            f"{f(mean(rows, 'new_streamer_ratio'))}x | "
            f"{sum(bool(r['merged_met']) for r in rows)}/{len(rows)} | "
            f"{sum(r['fused_vs_sources_met'] is not False for r in rows)}/{len(rows)} | "
            f"{f(mean(rows, 'downstream_margin'))} / {f(mean(rows, 'downstream_spread'))} | "
            f"{sum(bool(r['emb_over_pop_met']) for r in rows)}/{len(rows)} |")
    lines += ["", "Code measured (git commit per profile and seed): " + "; ".join(
        f"{p} " + ", ".join(f"{seed}: {commit}" for seed, commit in
                            dict.fromkeys((r["seed"], r.get("commit", "unknown")
                                           + "".join(f" --set {o}" for o in r.get("overrides", [])))
                                          for r in rows))
        for p, rows in results.items()) + "."]
    lines += ["", f"Every source alone (explore Recall@{K}, mean over seeds and test days):", "",
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
    ap.add_argument("--profiles", default="default,long_history,weak_clicks,no_content,few_users")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality"))
    ap.add_argument("--from-stage", choices=["build", "train", "expand", "evaluate"],
                    help="redo the tested nights from this stage (and measure those seeds again)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="config override for every night "
                    "(repeatable): a trial of a setting; its rows replace the seeds' rows")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [a for o in args.overrides for a in ("--set", o)]
    seeds = [int(s) for s in args.seeds.split(",")]
    store = out / "quality.json"
    results: dict[str, list[dict]] = json.loads(store.read_text()) if store.exists() else {}
    for profile in args.profiles.split(","):
        done = {r["seed"] for r in results.get(profile, [])}
        for seed in seeds:
            if seed in done and not args.from_stage:
                continue
            rows = [{"seed": seed, "date": date, "commit": commit(), "overrides": args.overrides,
                     **summarise(m)}
                    for date, m in one(profile, seed, out, args.from_stage, sets)]
            # Read again: another run of this script may have stored other profiles since.
            results = json.loads(store.read_text()) if store.exists() else {}
            results[profile] = [r for r in results.get(profile, []) if r["seed"] != seed] + rows
            store.write_text(json.dumps(results, indent=2))
            for row in rows:
                print(profile, seed, row["date"],
                      {k: row[k] for k in ("explore", "explore_ratio", "oracle")}, flush=True)
    # Every profile stored, not only those of this run: the page shows the whole picture.
    selected = {p: sorted((r for r in rows if r["seed"] in seeds),
                          key=lambda r: (r["seed"], r.get("date", "")))
                for p, rows in results.items()}
    write_markdown(selected, ROOT / "docs" / "benchmarks" / "quality.md", seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
