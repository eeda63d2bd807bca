"""`make demo`: generate a small synthetic dataset and run the nightly chain on it (local, CPU).

The last generated day is kept as "tomorrow": the nightly runs for the three days before it,
as cron would, so that the last night's fused ranking is learned from the two nights before
it, and the evaluation stage scores the published expansions against gifts never trained on.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gie.evaluate.report import headline_keys, lookup  # noqa: E402


def run(*args: str) -> None:
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--streamers", type=int, default=2_000)
    ap.add_argument("--days", type=int, default=15)
    ap.add_argument("--start", default="2025-05-01")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    out = Path(args.out).resolve()
    raw, work = out / "raw", out / "work"
    date = (dt.date.fromisoformat(args.start) + dt.timedelta(days=args.days - 2)).isoformat()
    if not (raw / "manifest.json").exists():
        run("generate", "--out", str(raw), "--users", str(args.users),
            "--streamers", str(args.streamers), "--days", str(args.days),
            "--start", args.start, "--seed", str(args.seed))
    for back in (2, 1, 0):
        night = (dt.date.fromisoformat(date) - dt.timedelta(days=back)).isoformat()
        run("nightly", "--raw", str(raw), "--work", str(work), "--date", night,
            "--set", f"seed={args.seed}", "--set", f"nightly.evaluate={str(back == 0).lower()}")

    report = work / "reports" / f"dt={date}" / "metrics.json"
    bundle = work / "latest"
    print(f"\nraw data:      {raw}\npublished:     {bundle} -> {bundle.resolve()}")
    print(f"report:        {report.parent / 'report.md'}")
    if report.exists():
        metrics = json.loads(report.read_text())
        print("\nheadline figures (next-day gifts, never seen in training):")
        for key in headline_keys(metrics):
            print(f"  {key:45s} {lookup(metrics, key)}")
        print("targets:", json.dumps(metrics.get("targets", {}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
