"""Cost of the fused ranking: the expand stage of one night with and without it, same data.

Reads a work folder that holds the graphs and models of three consecutive dates (D-2, D-1, D)
and runs `cli.py expand` for D three times, each a CLI process measured with its whole tree:
    sources only   `expand.fusion.enabled=false` (every source sequence, no merged/explore)
    fixed weights  the first-night fusion (no previous nights given)
    learned        the nightly's default: learned from D-1 and D-2 (the fit included)
By default it first prepares that folder when it is missing (bench/out/work-1M-users):
1M generated users over 15 days (lean ratios: 5 clicks, 1 comment, 1 like per gift), the
graphs of D-2, D-1 and D and a 1-epoch model each (warm-started from the night before);
the fusion's cost does not depend on how well the model is trained. Another nightly work
folder can be given with --work. Results: bench/out/fusion-<name>.json and
docs/benchmarks/fusion.md. Example:
    .venv/bin/python bench/bench_fusion.py                      # 1M users, prepared
    .venv/bin/python bench/bench_fusion.py --work W --date D --name mine
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, cmd: list[str], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    m = measure(cmd, cwd=str(ROOT), env=dict(os.environ))
    if m.returncode != 0:
        raise SystemExit(f"{name}: expand exited with {m.returncode}")
    meta = json.loads((out / "metadata.json").read_text())
    users = meta["counts"]["nodes"]["user"]
    row = {"variant": name, "wall_s": round(m.wall_s, 1), "cpu_s": round(m.cpu_s, 1),
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


def prepare(work: Path, raw: Path, dates: list[str], users: int) -> None:
    """Generated data and the graphs and models of `dates` (oldest first), where missing."""
    from graphbuild.synthetic import GenConfig, generate
    if not (raw / "manifest.json").exists():
        generate(raw, GenConfig(users=users, streamers=users // 10, days=15, start="2025-05-01",
                                click_ratio=5, comment_ratio=1, like_ratio=1, seed=0))
    cli = [sys.executable, str(ROOT / "cli.py")]
    for i, day in enumerate(dates):
        graph, model = work / "graph" / f"dt={day}", work / "model" / f"dt={day}"
        if not (graph / "_SUCCESS").exists():
            subprocess.run(cli + ["build-graph", "--raw", str(raw), "--out", str(graph.parent),
                                  "--date", day], check=True, cwd=ROOT)
        if not (model / "_SUCCESS").exists():
            warm = ["--warm-start", str(work / "model" / f"dt={dates[i - 1]}")] if i else []
            subprocess.run(cli + ["train-gie", "--graph", str(graph), "--out", str(model),
                                  "--set", "train.epochs=1"] + warm, check=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default=None,
                    help="a work folder with the graphs and models of D-2, D-1 and D "
                         "(default: bench/out/work-1M-users, prepared when missing)")
    ap.add_argument("--users", type=int, default=1_000_000,
                    help="users of the prepared data (without --work)")
    ap.add_argument("--date", default="2025-05-14", help="D: the graphs and models of D-2 "
                                                         "and D-1 must be there too")
    ap.add_argument("--name", default="1M-users")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    out = Path(args.out)
    d = dt.date.fromisoformat(args.date)
    if args.work is None:
        work = (out / f"work-{args.name}").resolve()
        prepare(work, (out / f"raw-{args.name}").resolve(),
                [(d - dt.timedelta(days=k)).isoformat() for k in (2, 1, 0)], args.users)
    else:
        work = Path(args.work).resolve()
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
             "default, learned from the two previous nights (the fit included). Data "
             "`1M-users`: 1M generated users (761k of them and 95k streamers in the night's "
             "graph), lean ratios, 1-epoch models (see the script). Raw figures: "
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
