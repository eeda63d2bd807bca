"""`make bench`: run every stage benchmark, then assemble docs/BENCHMARKS.md.

Each bench/bench_*.py writes its own section to docs/benchmarks/<name>.md; this script runs
them in pipeline order with their default (documented) sizes and concatenates the sections.
Pass names to run a subset: `bench/run_all.py build train`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["generate", "build", "train", "expand", "nightly"]


def assemble() -> None:
    parts = ["# Benchmarks", "",
             "Measured on the 2-core, 24 GB CPU machine this project is developed on, each "
             "against a named alternative on the same data in the same run. Reproduce all with "
             "`make bench`, or one section with the command given in it.", ""]
    for name in ORDER:
        f = ROOT / "docs" / "benchmarks" / f"{name}.md"
        if f.exists():
            parts += [f.read_text().replace("\n# ", "\n## ", 1).replace("# ", "## ", 1), ""]
    (ROOT / "docs" / "BENCHMARKS.md").write_text("\n".join(parts))


def main() -> int:
    names = sys.argv[1:] or ORDER
    failed = []
    for name in names:
        script = ROOT / "bench" / f"bench_{name}.py"
        print(f"== bench {name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=ROOT).returncode != 0:
            failed.append(name)
    assemble()
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
