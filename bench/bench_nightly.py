"""Stage-by-stage wall time, CPU time and peak memory of the nightly chain at generated sizes.

Each stage runs as its own CLI command (as a scheduler would run it), measured with its whole
process tree (Spark JVM included). The measured night is a steady-state one: the `--nights - 1`
nights before it are built and trained first (not measured; kept and reused when published),
so the measured build keeps their id map, training warm-starts from the night before, and
`expand` learns the fused ranking from them, as `cli.py nightly` does (those nights after the
first are expanded too, unmeasured, so the training sets a nightly keeps for the next nights
are there: the measured night builds only its newest previous night's). `--nights 1` measures
a first night (fixed fusion weights, cold start). Results: bench/out/nightly.json and
docs/benchmarks/nightly.md. Example:
    .venv/bin/python bench/bench_nightly.py --sizes 100k,1M
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import measure  # noqa: E402
from bench.pace import pace  # noqa: E402
from gie.evaluate.report import lookup  # noqa: E402
from gie.expand.run import SETS_CACHE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"          # the store docs/benchmarks/nightly.md is written from
SIZES = {"100k": 100_000, "1M": 1_000_000, "3M": 3_000_000, "10M": 10_000_000}
DAYS, START = 15, "2025-05-01"


def shape(gifts: int) -> dict[str, int]:
    """Users and streamers grow with the number of gift events (about 5% of users gift/day)."""
    per_day = gifts // DAYS
    return {"gifts_per_day": per_day, "users": max(2_000, per_day * 20),
            "streamers": max(200, per_day * 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="100k,1M")
    ap.add_argument("--out", default=str(OUT), help="work folders and nightly.json; "
                    "docs/benchmarks/nightly.md is written from the default folder's only, "
                    "and only when its nightly.json holds every run the page shows (a run "
                    "elsewhere, a probe, a fresh bench/out or a page with rows merged by hand "
                    "writes OUT/nightly.md instead)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--nights", type=int, default=3,
                    help="nights in the work folder at the measured one (1 = a first night)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="config override for every stage "
                    "(repeatable), e.g. expand.workers=2")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the figures and outputs of stages an interrupted run finished "
                         "(bench/out/stage-<size>-n<nights>-<stage>.json); marked in the table")
    args = ap.parse_args()
    out = Path(args.out)
    py = [sys.executable, str(ROOT / "cli.py")]
    sets = [a for o in args.overrides for a in ("--set", o)]
    last = dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 2)
    dates = [(last - dt.timedelta(days=k)).isoformat() for k in range(args.nights)][::-1]
    date = dates[-1]
    results = []
    for name in args.sizes.split(","):
        s = shape(SIZES[name])
        raw, work = out / f"raw-{name}", out / f"work-{name}"
        row = {"size": name, "gift_events": SIZES[name], **s, "nights": args.nights,
               "stages": {}}

        def night(d: str) -> dict[str, list[str]]:
            graph, model = work / "graph" / f"dt={d}", work / "model" / f"dt={d}"
            earlier = [x for x in dates if x < d][::-1]          # newest first
            warm = ["--warm-start", str(work / "model" / f"dt={earlier[0]}")] if earlier else []
            prev = [a for x in earlier for a in (
                "--prev-graph", str(work / "graph" / f"dt={x}"),
                "--prev-embeddings", str(work / "model" / f"dt={x}" / "embeddings"))]
            return {
                "build": py + ["build-graph", "--raw", str(raw), "--out", str(work / "graph"),
                               "--date", d] + sets,
                "train": py + ["train-gie", "--graph", str(graph), "--out", str(model),
                               "--epochs", str(args.epochs)] + warm + sets,
                "expand": py + ["expand", "--graph", str(graph), "--embeddings",
                                str(model / "embeddings"), "--out",
                                str(work / "bundle" / f"dt={d}")] + prev + sets,
                "evaluate": py + ["evaluate", "--raw", str(raw), "--work", str(work),
                                  "--date", d] + sets,
            }

        if not (raw / "manifest.json").exists():
            m = measure(py + ["generate", "--out", str(raw), "--users", str(s["users"]),
                              "--streamers", str(s["streamers"]), "--days", str(DAYS),
                              "--start", START, "--gifts-per-day", str(s["gifts_per_day"])],
                        cwd=str(ROOT), env=dict(os.environ))
            row["stages"]["generate"] = {"wall_s": round(m.wall_s, 1), "cpu_s": round(m.cpu_s, 1),
                                         "peak_rss_mb": round(m.peak_rss_mb), "rc": m.returncode}
        for i, d in enumerate(dates[:-1]):                       # the nights learned from
            cmds = night(d)
            stages_before = [("build", work / "graph"), ("train", work / "model")]
            if i:   # as a nightly ran them: their expand left the training sets it built
                stages_before.append(("expand", work / "bundle"))   # (all but the newest's)
            for stage, folder in stages_before:
                if not (folder / f"dt={d}" / "_SUCCESS").exists():
                    m = measure(cmds[stage], cwd=str(ROOT), env=dict(os.environ))
                    print(name, d, stage, "(earlier night)", round(m.wall_s, 1), flush=True)
                    if m.returncode != 0:
                        raise SystemExit(f"{name}: {stage} of {d} exited with {m.returncode}")
        stages = night(date)
        # The measured night builds its newest previous night's sets (a rerun would read them).
        if args.nights > 1:
            for f in (work / "bundle" / SETS_CACHE).glob(f"dt={dates[-2]}_*"):
                f.unlink()
        for stage, cmd in stages.items():
            record = out / f"stage-{name}-n{args.nights}-{stage}.json"
            if args.reuse and record.exists():   # measured by an earlier, interrupted run
                row["stages"][stage] = {**json.loads(record.read_text()), "reused": True}
                print(name, stage, "reused", row["stages"][stage], flush=True)
                continue
            load, speed = os.getloadavg()[0], pace()
            m = measure(cmd, cwd=str(ROOT), env=dict(os.environ))
            row["stages"][stage] = {"wall_s": round(m.wall_s, 1), "cpu_s": round(m.cpu_s, 1),
                                    "peak_rss_mb": round(m.peak_rss_mb), "rc": m.returncode,
                                    "load_avg_1m_at_start": round(load, 2), "pace": speed}
            print(name, stage, row["stages"][stage], flush=True)
            if m.returncode != 0:
                break
            record.write_text(json.dumps(row["stages"][stage]))
        row["quality"] = quality(work / "reports" / f"dt={date}" / "metrics.json")
        results.append(row)

    out.mkdir(parents=True, exist_ok=True)
    kept = json.loads((out / "nightly.json").read_text()) if (out / "nightly.json").exists() \
        else []
    for r in results:
        r.update(epochs=args.epochs, overrides=args.overrides, commit=git_commit(),
                 measured=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    same = {(r["size"], r["nights"], tuple(r["overrides"])) for r in results}
    kept = [r for r in kept if (r["size"], r.get("nights", 1), tuple(r.get("overrides", [])))
            not in same] + results
    kept.sort(key=lambda r: (SIZES[r["size"]], r.get("nights", 1)))
    (out / "nightly.json").write_text(json.dumps(kept, indent=2))
    page = ROOT / "docs" / "benchmarks" / "nightly.md"
    if out.resolve() == OUT.resolve() and page_runs(page) <= {_run_name(r) for r in kept}:
        write_markdown(kept, page)
    else:   # a probe, a fresh bench/out, rows merged by hand: not every row is in nightly.json
        write_markdown(kept, out / "nightly.md")
        print(f"results in {out / 'nightly.md'}; {page} left as it is (merge the rows by hand)")
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


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def _run_name(r: dict) -> str:
    night = "first night" if r.get("nights", 1) == 1 else f"night {r['nights']}"
    sets = ", ".join(r.get("overrides", []))
    return f"{r['size']}, {night}" + (f", {sets}" if sets else "")


def page_runs(page: Path) -> set[str]:
    """The runs a page's tables show (their rows' first cells); none when there is no page."""
    if not page.exists():
        return set()
    return {line[2:].split(" | ")[0] for line in page.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| run |")}


def write_markdown(results: list[dict], page: Path) -> None:
    """Every run kept in nightly.json, one row per stage."""
    lines = ["# Nightly chain: wall time, CPU time and peak memory per stage", "",
             f"Machine: {os.cpu_count()} cores, {platform.platform()}. Command: `.venv/bin/python "
             "bench/bench_nightly.py --sizes SIZE --epochs E --nights N [--set K=V]` (training "
             "runs E epochs; every setting not named is the default). Night N of a work folder "
             "is measured after the N-1 nights before it were built and trained (and, but the "
             "first, expanded): it keeps their id map, warm-starts from the previous model and "
             "learns the fused ranking from them, reading the training sets the earlier "
             "expands kept, as `cli.py nightly` does; a first night uses fixed fusion weights "
             "and a cold start. Each stage is its own CLI command; CPU time and peak RSS cover its process "
             "tree (Spark JVM included); the load average at each stage's start shows whether "
             "the machine was idle, and the pace (bench/pace.py: seconds of a fixed one-thread "
             "workload, taken just before the stage; runs since 2026-12-05) how fast it was: "
             "compare two runs' stages in proportion to their paces.", "",
             "| run | users | streamers | stage | wall (s) | CPU (s) | peak RSS (MB) | "
             "load at start (pace, s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for st, v in r["stages"].items():
            speed = f" ({v['pace']['pace_s']})" if "pace" in v else ""
            lines.append(f"| {_run_name(r)} | {r['users']:,} | {r['streamers']:,} | {st} | "
                         f"{v['wall_s']}{' (earlier run)' if v.get('reused') else ''} | "
                         f"{'n/a' if v.get('cpu_s') is None else v['cpu_s']} | "
                         f"{v['peak_rss_mb']:,} | {v.get('load_avg_1m_at_start', '')}{speed} |")
        total = sum(v["wall_s"] for st, v in r["stages"].items() if st != "generate")
        lines.append(f"| {_run_name(r)} | | | **night (build to evaluate)** | **{total:.0f}** "
                     f"| | | |")
    lines += ["", "Quality of the same runs (`evaluate`, next-day gifts):", "",
              "| run | " + " | ".join(QUALITY.values()) + " |",
              "|---|" + "---|" * len(QUALITY)]
    for r in results:
        cells = [f"{v:.3f}" if isinstance(v, float) else "n/a"
                 for v in (r.get("quality", {}).get(t) for t in QUALITY.values())]
        lines.append(f"| {_run_name(r)} | " + " | ".join(cells) + " |")
    notes = [f"- {_run_name(r)}: {r['note']}" for r in results if r.get("note")]
    lines += ["", "Notes:", "", *notes] if notes else []
    lines += ["", "Code measured: " + "; ".join(
        f"{_run_name(r)}: {r.get('commit', '?')} ({r.get('measured', '?')})" for r in results) + "."]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
