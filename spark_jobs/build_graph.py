"""spark-submit entry point of the graph build (any cluster manager; the master comes from
spark-submit). Same job as `python cli.py build-graph`:

    spark-submit --py-files dist/gie-<version>-pyfiles.zip dist/build_graph.py \\
        --raw DIR --out DIR --date YYYY-MM-DD [--window-days N] [--prev DIR] \\
        [--config FILE] [--set build.key=value ...]

The code comes from --py-files (`make dist` builds the zip and copies this file next to it)
or from an installed gie wheel; run from a checkout (spark_jobs/ next to cli.py) it falls
back to that checkout. Exit codes are those of cli.py (2 bad input, 1 internal error).
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    from cli import main
except ImportError:
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "cli.py").is_file():
        raise SystemExit("gie is not importable: pass --py-files gie-<version>-pyfiles.zip "
                         "(make dist) or install the gie wheel on the driver")
    sys.path.insert(0, str(checkout))
    from cli import main

if __name__ == "__main__":
    sys.exit(main(["build-graph", *sys.argv[1:]]))
