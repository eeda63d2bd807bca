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
ORDER = ["generate", "build", "train", "sampler", "expand", "nightly", "knn", "fusion",
         "quality"]
SUMMARY = [  # kept by hand: the figures of the sections below, against the issues' targets
    "| generate | 10M gifts (lean ratios, 90M rows): 74 CPU-s; default ratios (300M rows): "
    "238 CPU-s | < 3 min on 2 cores | lean met; default ratios not shown on an idle machine |",
    "| build | Spark / DuckDB: 6.35x at 1M, 4.42x at 3M, 2.50x at 10M gifts (80M events, "
    "865 s vs 346 s; lean ratios); Spark s per M events 24.0 -> 15.9 -> 10.8 (sub-linear) | "
    "within 3x of DuckDB at 10M, linear | met |",
    "| train | 0.87x / 1.65x / 3.52x the plain DGL loop's edges/s at 2k/5k/20k users "
    "(layer histories, reproducible sampler: 1.16x-1.23x DGL's sampler in the same loop); "
    "high-degree nodes drawn, not keyed: one epoch at 761k users 163 s -> 51.5 s "
    "| >= 1.5x | met at 5k and 20k users, not at 2k |",
    "| expand | 1M users: IVF recall@50 0.964, 54.5x faster than exact; 6.9 CPU-min "
    "| recall >= 0.95, >= 10x, < 10 min | met (CPU time; wall time on an idle host not shown) |",
    "| nightly | 1M gifts (1.29M users), steady-state night (learned fusion, 2 local expand "
    "workers, 2 training threads), every stage in one run: **1168 s** at a39683a (build 189 s, "
    "train 186 s, expand 696 s, evaluate 98 s); on an AVX-512 host 1229, 1211, 1204 and "
    "1188 s at c09e6dd's code, 1153 s at 9792945 (the previous night's relations and "
    "streamer vectors kept for the next night's learning), **1121 s** at 81e43f8 (the fits' "
    "judgement without a sort of every row: expand 598 s, evaluate 95 s, with the build, "
    "223 s, and training, 205 s, of the 9d16f97 run an hour before), **1132 s** with no stage "
    "reused at 0870e15 (build 208 s, train 202 s, expand 621 s, evaluate 102 s) and 1122 s "
    "at 6d5ae56 (the workers' startup pieces built once between them: expand 612 s), "
    "**1053 s** with no stage reused at db87329 (every sort a radix sort, the graph read by "
    "one: train 176 s, expand 572 s) and **1048 s** at 9a5321d (build 209 s, train 190 s, "
    "expand 568 s, evaluate 82 s; 983 s with the rankers' learning rate at 0.1, not kept: "
    "the test day's Recall@10 fell, docs/BUNDLE.md); explore Recall@50 0.390, 1.75x emb_knn there "
    "(1.51-1.53x on AVX2 hosts); growth at one code and host: 100k -> 1M (night 3) every stage "
    "below linear, the night 6.4x for 9.7x the users; 1M -> 3M (first nights, one expand "
    "process, c09e6dd): build 2.75x, train 3.41x (each step 1.17x dearer over larger tables), "
    "expand 3.16x (users' kNN 3.3x, 5.1x before the lists of a fixed size), evaluate 3.27x, the "
    "night 1272 -> 3990 s, 3.14x for 3.0x the users; at 6ca4a5b (index_select gathers, the "
    "graph read by one integer sort): train 3.03x, expand 3.30x, the night 1342 -> 4180 s, "
    "3.11x; at db87329's code (f72856b) the night 1169 -> 3745 s, 3.20x (train 3.77x, one "
    "run's noise: 3.03x before; expand 3.15x; evaluate 3.22x, then 2.35x with the dense "
    "baselines ranked by blocks of targets); at 493b61d the training stage alone 172.8 -> "
    "520.2 s (3.01x), and the users' kNN of one expand shard 21.9 -> 78.5 s, then 17.3 -> "
    "56.8 s with the queries ordered by the lists that store them, the audience vectors "
    "alone 12.2 -> 46.9 s, then 8.9-11.0 -> 32.4-34.5 s through a CSC view; with both, on an "
    "AVX2 host (d3f7836, pace 0.60 s against 0.55 s), the night 1386 -> 4206 s, **3.03x** "
    "(build 2.93x, train 3.19x, expand 3.14x: users 3.25x, each 8% dearer; evaluate 2.34x); "
    "3M learned night 6467 s (acccb3b); on the AVX2 host the steady-state 1M night **1235 s** "
    "at 58848d4, 1281 s at fc8e69d, 1281 / 1270 s at 54f3e74, 1240 s at 7d3dbc9 and **1190 s** "
    "at cd6d15f in the same session (build 263 -> 231 s with the segments' vectors kept out "
    "of the validation's shuffle; earlier: build 257 / 254 / 266-267, "
    "train 212 / 220 / 224-240, expand 646 / 685 / 672-680, evaluate 120 / 123 / 95-107 s: "
    "the dense baselines "
    "keep a running top per source, the metrics in array operations, the same report; expand "
    "peak 21.1 -> 15.6 GB with chunked predictions; the compiled rankers in "
    "cache blocks summed in LightGBM's order: night 2's users 660-680 -> 465-473 s a worker) "
    "| 1M night in 20 min on 2 cores, growth no worse than linear | 1M met (1168 s at "
    "a39683a, 1132 s with every stage measured at 0870e15, 1122 s at 6d5ae56, 1053 s at "
    "db87329, 1048 s at 9a5321d: 152 s to spare) on the AVX-512 host; on the AVX2 host **met once, by 10 s: "
    "1190 s at cd6d15f**, inside that host's run-to-run spread (1240 s at 7d3dbc9 and 1297 s "
    "between them in the same session; 1235-1281 s over four runs at 58848d4, fc8e69d and "
    "54f3e74; its first night ran 1.19x the AVX-512 host's); "
    "growth met to 1M, 1-7% over linear from 1M to 3M (3.03x at "
    "d3f7836; the expand's users 3.25x: recall-tuned searches and tables past the cache; "
    "training 3.03-3.77x over bench runs, 3.01x alone) |",
    "| fusion | 761k users, 95k streamers (1M generated users): expand 340 s wall / 291 CPU s with the "
    "source sequences only; fixed-weight fusion 391 s / 415 CPU s; learned 1065 s / 1375 CPU s "
    "(472 s preparing two previous nights and fitting), peak RSS 4.1 -> 16.4 GB | cost at 1M "
    "users shown | shown (measured before the previous nights' kNN was cut to the rows "
    "their label walks read: 97 s -> 3 s a night at 1.29M users) |",
    "| quality | explore Recall@50 vs best baseline, a week of nights, the last three evaluated "
    "(means of seeds 0-2 and those days, 64d4d28: topics over content and audience): default "
    "0.566 (1.32x), weak_clicks 0.470 (1.26x; 1.15x before the content features, 1.22x before "
    "the topic features), long_history 0.408 at 9a5321d (1.26x; 1.22x before the audience; oracle 0.411, "
    "99% reached), no_content 0.405 (1.40x; 1.19x before), few_users (the public dataset's "
    "size, e160d64) 0.429 (1.43x Swing); streamer side 0.388 / 0.308 / 0.565 / 0.549 / 0.784 "
    "| 1.25x on every profile | met on default, weak_clicks and long_history, with every "
    "other #13 target (downstream margin / spread at 8e7d741, the models reading hit "
    "features: long_history 0.009 / 0.009 at 9a5321d, default 0.025 / 0.012, weak_clicks 0.032 / 0.015) |",
]


def assemble() -> None:
    parts = ["# Benchmarks", "",
             "Measured on the 2-core, 24 GB CPU machine this project is developed on, each "
             "against a named alternative on the same data in the same run. Reproduce all with "
             "`make bench`, or one section with the command given in it. Sections are written "
             "by the scripts to docs/benchmarks/*.md and concatenated here. The host has changed "
             "under us: the nightly b11b4df row ran 2.2-3.1x slower than the rows before it on "
             "the same code, the be6c2a0 rows on a third host (AVX-512) about 1.1-1.2x, and the "
             "d3f7836 rows on the b11b4df platform again 1.19x the AVX-512 host's time; "
             "`bench/pace.py` now records the host's speed beside each nightly stage.", "",
             "| stage | headline | target | status |", "|---|---|---|---|",
             *SUMMARY, ""]
    for name in ORDER:
        f = ROOT / "docs" / "benchmarks" / f"{name}.md"
        if f.exists():
            text = f.read_text().splitlines()   # demote every heading one level
            parts += ["#" + line if line.startswith("#") else line for line in text] + [""]
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
