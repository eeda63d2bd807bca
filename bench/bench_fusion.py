"""Cost of the fused ranking: the expand stage of one night with and without it, same data.

Reads a nightly work folder that holds the graphs and models of three consecutive dates
(D-2, D-1, D; e.g. what `bench/bench_nightly.py` or `bench/bench_quality.py` leave) and runs
`cli.py expand` for D three times, each a CLI process measured with its whole tree:
    sources only   `expand.fusion.enabled=false` (every source sequence, no merged/explore)
    fixed weights  the first-night fusion (no previous nights given)
    learned        the nightly's default: learned from D-1 and D-2 (the fit included)
Results: bench/out/fusion-<name>.json and docs/benchmarks/fusion.md. Example:
    .venv/bin/python bench/bench_fusion.py --work bench/out/work-1M --date 2025-05-14 --name 1M
(the defaults: the 1M work folder that bench/bench_nightly.py leaves, three nights deep)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(name: str, cmd: list[str], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    cpu0 = children_cpu_s()
    m = measure(cmd, cwd=str(ROOT), env=dict(os.environ))
    if m.returncode != 0:
        raise SystemExit(f"{name}: expand exited with {m.returncode}")
    meta = json.loads((out / "metadata.json").read_text())
    users = meta["counts"]["nodes"]["user"]
    row = {"variant": name, "wall_s": round(m.wall_s, 1), "cpu_s": round(children_cpu_s() - cpu0, 1),
           "peak_rss_mb": round(m.peak_rss_mb), "load_avg_1m_at_start": round(load, 2),
           "users": users, "streamers": meta["counts"]["nodes"]["streamer"],
           "learn_fusion_s": meta["timings_s"].get("learn_fusion"),
           "expand_user_s": sum(v for k, v in meta["timings_s"].items()
                                if k.startswith("expand_user")),
           "fusion": {t: {k: d.get("kind") for k, d in (meta.get("fusion") or {}).get(t, {}).items()}
                      for t in ("user", "streamer")} if meta.get("fusion") else None}
    row["cpu_ms_per_user"] = round(1000 * row["cpu_s"] / users, 3)
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "work-1M"),
                    help="default: the 1M work folder of bench/bench_nightly.py")
    ap.add_argument("--date", default="2025-05-14", help="D: the graphs and models of D-2 "
                                                         "and D-1 must be there too")
    ap.add_argument("--name", default="1M")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    work, out = Path(args.work).resolve(), Path(args.out)
    d = dt.date.fromisoformat(args.date)
    g = lambda day: work / "graph" / f"dt={day}"  # noqa: E731
    e = lambda day: work / "model" / f"dt={day}" / "embeddings"  # noqa: E731
    prev = [(d - dt.timedelta(days=1)).isoformat(), (d - dt.timedelta(days=2)).isoformat()]
    base = [sys.executable, str(ROOT / "cli.py"), "expand", "--graph", str(g(args.date)),
            "--embeddings", str(e(args.date))]
    learn = [a for p in prev for a in ("--prev-graph", str(g(p)), "--prev-embeddings", str(e(p)))]
    bundle = out / f"fusion-bundle-{args.name}"
    rows = [run("sources only", base + ["--out", str(bundle), "--set",
                                        "expand.fusion.enabled=false"], bundle),
            run("fixed weights", base + ["--out", str(bundle)], bundle),
            run("learned", base + ["--out", str(bundle)] + learn, bundle)]
    shutil.rmtree(bundle, ignore_errors=True)
    (out / f"fusion-{args.name}.json").write_text(json.dumps(rows, indent=1))
    write_markdown(out)
    return 0


def write_markdown(out: Path) -> None:
    lines = ["# Benchmark: the cost of the fused ranking", "",
             "`bench/bench_fusion.py` runs `cli.py expand` on one night of a nightly work folder "
             "three ways, each a separate process measured with its tree (wall, CPU, peak "
             "RSS): every source sequence without the fused ranking (`expand.fusion.enabled="
             "false`, the named alternative); the first-night fixed weights; and the nightly's "
             "default, learned from the two previous nights (the fit included). Raw figures: "
             "`bench/out/fusion-*.json`.", "",
             "| data | users | streamers | variant | wall (s) | CPU (s) | CPU ms / user | "
             "of which the fit (s) | peak RSS (MB) | load at start |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(out.glob("fusion-*.json")):
        for r in json.loads(f.read_text()):
            lines.append(f"| {f.stem[len('fusion-'):]} | {r['users']:,} | {r['streamers']:,} | "
                         f"{r['variant']} | {r['wall_s']} | {r['cpu_s']} | {r['cpu_ms_per_user']} "
                         f"| {r['learn_fusion_s'] or '-'} | {r['peak_rss_mb']:,} | "
                         f"{r['load_avg_1m_at_start']} |")
    (ROOT / "docs" / "benchmarks" / "fusion.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
