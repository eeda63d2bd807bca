#!/usr/bin/env python
"""Time the generator (Parquet) at 1M and 10M gift events; write docs/benchmarks/generate.md.

Each scale runs in its own process, measured with bench.measure (wall time, peak RSS) plus
its CPU time (user + sys, from getrusage: the fairer figure on a shared machine). "10M" keeps
the default per-gift ratios (20 clicks, 3 comments, 5 likes); "10M-lean" lowers them to
5 / 1 / 1.

    .venv/bin/python bench/bench_generate.py [--scales 1M,10M-lean,10M] [--work DIR]
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import click
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.measure import measure  # noqa: E402

DAYS = 15
SCALES = {
    # name: (users, streamers, gifts per day, overrides of GenConfig ratios)
    "1M": dict(users=200_000, streamers=20_000, gifts_per_day=1_000_000 // DAYS, ratios={}),
    "10M": dict(users=4_000_000, streamers=100_000, gifts_per_day=10_000_000 // DAYS, ratios={}),
    "10M-lean": dict(users=4_000_000, streamers=100_000, gifts_per_day=10_000_000 // DAYS,
                     ratios={"click_ratio": 5.0, "comment_ratio": 1.0, "like_ratio": 1.0}),
}
CHILD = """
import sys, json
from gie.logs import setup_logging
from graphbuild.synthetic import GenConfig, generate
setup_logging()
generate(sys.argv[1], GenConfig(**json.loads(sys.argv[2])))
"""


def run_scale(name: str, work: Path) -> dict:
    spec = SCALES[name]
    cfg = {"users": spec["users"], "streamers": spec["streamers"], "days": DAYS,
           "gifts_per_day": spec["gifts_per_day"], "seed": 0, **spec["ratios"]}
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    m = measure([sys.executable, "-c", CHILD, str(out), json.dumps(cfg)], cwd=str(ROOT),
                env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall, cpu = m.wall_s, m.cpu_s
    if m.returncode != 0:
        raise SystemExit(f"generation at scale {name} failed (exit {m.returncode})")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = sum(manifest["row_counts"].values())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {"scale": name, "config": cfg, "rows": manifest["row_counts"], "total_rows": rows,
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rows_per_s": round(rows / wall),
            "gifts_per_s": round(manifest["row_counts"]["gift"] / wall),
            "peak_rss_mb": round(m.peak_rss_mb), "size_mb": round(size / 2**20),
            "load": round(os.getloadavg()[0], 1)}


def report(results: list[dict]) -> str:
    lines = [
        "# Synthetic data generation (`cli.py generate`, Parquet)", "",
        "Reproduce: `.venv/bin/python bench/bench_generate.py`. Target: 10 million gift events "
        "with proportional other tables in under 3 minutes on 2 cores, memory bounded by one "
        "day of events. The machine is shared by several engineers' test runs: CPU seconds "
        "(user + sys of the generator process) are the stable figure, wall time depends on the "
        "load at the time (given below).", "",
        f"Machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM,"
        f" {platform.platform()}, Python {platform.python_version()}. Produced by "
        f"`bench/bench_generate.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "", "| scale | users | streamers | days | gift | click | comment | like | room | segments "
        "| all rows | wall s | CPU s | rows/s | peak RSS MB | on disk MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, n = r["config"], r["rows"]
        lines.append(
            f"| {r['scale']} | {c['users']:,} | {c['streamers']:,} | {c['days']} "
            + "".join(f"| {n[t]:,} " for t in ("gift", "click", "comment", "like", "room",
                                                 "segments"))
            + f"| {r['total_rows']:,} | {r['wall_s']} | {r['cpu_s']} | {r['rows_per_s']:,} "
            f"| {r['peak_rss_mb']:,} | {r['size_mb']:,} |")
    lines += ["", "Load average (1 min) at the end of each run: "
              + ", ".join(f"{r['scale']}: {r['load']}" for r in results) + ".", "",
              "Reading the numbers: the generator is CPU-bound and runs on two threads (day d+1 "
              "is drawn while day d is written), so on two otherwise idle cores its wall time "
              "lies between CPU s / 2 and CPU s; drawing takes about 60% of the CPU and "
              "writing 40% (cProfile of one 1M-scale day), so the overlap can reach about 1.6x. "
              "Peak RSS is the population arrays plus about "
              "two days of events; it grows with users per day, not with the number of days.",
              ""]
    for r in results:
        if r["cpu_s"] <= 180:
            verdict = "within 3 minutes on 2 idle cores even without any overlap"
        elif r["cpu_s"] / 2 <= 180:
            verdict = (f"within 3 minutes on 2 idle cores only if the two threads overlap "
                       f"by at least {r['cpu_s'] / 180:.2f}x (not shown on this machine)")
        else:
            verdict = "over 3 minutes on 2 cores"
        lines.append(f"- {r['scale']}: {r['total_rows'] / r['cpu_s']:,.0f} rows per CPU "
                     f"second; {verdict}.")
    lines += ["", "Where the 3 minutes matter more than the click volume, lower "
              "`GenConfig.click_ratio`, `comment_ratio` and `like_ratio` (the 10M-lean row)."]
    lines += ["", "Ratios per gift (click / comment / like): "
              + "; ".join(f"{r['scale']}: {r['config'].get('click_ratio', 20.0)} / "
                          f"{r['config'].get('comment_ratio', 3.0)} / "
                          f"{r['config'].get('like_ratio', 5.0)}" for r in results), ""]
    return "\n".join(lines)


@click.command()
@click.option("--scales", default="1M,10M-lean,10M", show_default=True)
@click.option("--work", default="/tmp/gie-bench-gen", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--out", default=str(ROOT / "docs" / "benchmarks" / "generate.md"),
              show_default=True, type=click.Path(dir_okay=False))
def main(scales: str, work: str, out: str) -> None:
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in scales.split(","):
        results.append(run_scale(name.strip(), work_dir))
        click.echo(json.dumps(results[-1]))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(report(results))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
