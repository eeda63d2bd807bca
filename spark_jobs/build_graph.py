"""spark-submit entry point of the graph build (any cluster manager; the master comes from
spark-submit). Same job as `python cli.py build-graph`:

    spark-submit spark_jobs/build_graph.py --raw DIR --out DIR --date YYYY-MM-DD \\
        [--window-days N] [--prev DIR] [--config FILE] [--set build.key=value ...]

Ship the repository's `graphbuild` and `gie` packages with --py-files (or install them on the
driver); exit codes are those of cli.py (2 bad input, 3 quality floor, 1 internal error).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["build-graph", *sys.argv[1:]]))
