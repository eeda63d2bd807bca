"""The users' kNN at size: lists of a fixed size against about 2*sqrt(n) lists.

`expand` searches every user's neighbours in an index tuned to `index.recall_target`
(gie/expand/index.py). With about 2*sqrt(n) lists (the default before `index.list_size`) one
query scans nprobe * sqrt(n)/2 vectors, so the kNN of all users grows as n^1.5. Lists of a
fixed size (`index.list_size`: n / L of them, today's default on a CPU) scan as much per probe
at every size; finding the nearest lists then compares n / L centroids per query, or searches
an HNSW graph of them (`index.quantizer: hnsw`, the default). This bench measures them in one
run, on the user embeddings a nightly run trained (the vectors' shape decides how many probes
the recall needs, so random points would not tell): build, kNN of every user
(k = knn_k + 1, as `expand` searches), and recall@20 of those lists (self left out) against
exact search for 2,000 users, by identity and within `index.recall_epsilon`. The same for the
users' search of the streamer index (the cross-type source every user batch runs,
`search_exact_scores` with k = 100 as `expand` draws it for a user with a long history):
200,000 sampled users, recall@50 against exact search.

    .venv/bin/python bench/bench_knn.py [--embeddings 1M=WORK/model/dt=D/embeddings[@N] ...]
        [--list-sizes 512,128] [--variants 'auto;2*sqrt(n) lists']
(`@N`: N of the folder's users drawn at random, for the growth on one population.)
writes docs/benchmarks/knn.md. Without --embeddings: the newest model of each work folder
bench_nightly.py left in bench/out (`make bench` runs that first).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_nightly import OUT as NIGHTLY, SIZES, git_commit  # noqa: E402
from gie.embeddings import read_embeddings  # noqa: E402
from gie.expand import index as ix  # noqa: E402
from gie.expand.config import ExpandConfig, IndexConfig  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "knn.md"
CHECKED = 2000
CROSS_USERS, CROSS_K = 200_000, 100


def nightly_embeddings() -> list[str]:
    """LABEL=FOLDER of the newest model in each of bench_nightly.py's work folders, by size."""
    found = []
    for work in NIGHTLY.glob("work-*"):
        models = sorted((work / "model").glob("dt=*/embeddings"))
        label = work.name.removeprefix("work-")
        if models and label in SIZES:
            found.append((SIZES[label], f"{label}={models[-1]}"))
    return [spec for _, spec in sorted(found)]


def variants(n: int, d: int, list_sizes: list[int], only: set[str] | None = None
             ) -> list[tuple[str, IndexConfig]]:
    """auto (today's default: lists of `index.list_size`, HNSW quantizer), auto tuned to
    identity recall (epsilon 0), about 2*sqrt(n) lists (the default before) with either
    quantizer, and lists of each size in `list_sizes` with either quantizer; a variant whose
    factory and epsilon an earlier one has is left out; with `only`, the variants of those
    names."""
    out = [("auto", IndexConfig()), ("auto, identity recall", IndexConfig(recall_epsilon=0.0)),
           ("2*sqrt(n) lists", IndexConfig(list_size=None, quantizer="flat")),
           ("2*sqrt(n) lists, hnsw quantizer", IndexConfig(list_size=None))]
    for size in list_sizes:
        out += [(f"lists of ~{size}", IndexConfig(list_size=size, quantizer="flat")),
                (f"lists of ~{size}, hnsw quantizer", IndexConfig(list_size=size))]
    seen, kept = set(), []
    for name, cfg in out:
        if only and name not in only:
            continue
        factory = ix.choose_factory(n, d, cfg), cfg.recall_epsilon
        if factory not in seen:
            seen.add(factory)
            kept.append((name, cfg))
    return kept


def run_cross(label: str, folder: str, pick, users: np.ndarray) -> list[dict]:
    """Sampled users searching the streamer index, as the cross-type source does."""
    vectors = ix.normalise(read_embeddings(folder, "streamer")[1])
    n = len(vectors)
    queries = users[np.sort(np.random.default_rng(2).choice(
        len(users), min(CROSS_USERS, len(users)), replace=False))]
    _, exact = faiss.knn(queries[:CHECKED], vectors, 50, faiss.METRIC_INNER_PRODUCT)
    rows = []
    for name, cfg in pick(n, vectors.shape[1]):
        built = ix.build_index(vectors, cfg, 0.0, 0, name="streamer", other=users)
        effort = built.info["cross_search_param"]        # as `expand` searches it for users
        start = time.perf_counter()
        _, ids = ix.search_exact_scores(built.index, vectors, queries, CROSS_K,
                                        params=ix.cross_params(built.index, effort))
        rows.append({"size": label, "users": len(queries), "streamers": n, "variant": name,
                     "factory": built.info["factory"], "effort": effort,
                     "search_s": time.perf_counter() - start,
                     "recall": ix.recall_at_k(ids[:CHECKED, :50], exact)})
        print(rows[-1], flush=True)
    return rows


def run_size(label: str, folder: str, pick, k: int, sample: int | None = None
             ) -> tuple[list[dict], list[dict]]:
    """The users' kNN (and their search of the streamers, unless `sample`: a seeded subset of
    that many users, the same population at a smaller size, whose growth to the whole set is
    the index's own, not a new model's)."""
    _, raw = read_embeddings(folder, "user")
    if sample is not None and sample < len(raw):
        raw = raw[np.sort(np.random.default_rng(4).choice(len(raw), sample, replace=False))]
    vectors = ix.normalise(raw)
    del raw
    n = len(vectors)
    checked = np.sort(np.random.default_rng(1).choice(n, min(CHECKED, n), replace=False))
    exact_sims, exact = faiss.knn(vectors[checked], vectors, k, faiss.METRIC_INNER_PRODUCT)
    rows = []
    for name, cfg in pick(n, vectors.shape[1]):
        start = time.perf_counter()
        built = ix.build_index(vectors, cfg, 0.0, 0, name="user")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        sims, ids = ix.search(built.index, vectors, k, indexed=True)
        knn_s = time.perf_counter() - start
        rows.append({"size": label, "users": n, "variant": name,
                     "factory": built.info["factory"], "effort": built.info["search_param"],
                     "build_s": build_s, "knn_s": knn_s,
                     "recall": ix.recall_at_k(ids[checked, 1:], exact[:, 1:]),
                     "eps_recall": ix.epsilon_recall((sims[checked, 1:], ids[checked, 1:]),
                                                     (exact_sims[:, 1:], exact[:, 1:]),
                                                     cfg.recall_epsilon)})
        print(rows[-1], flush=True)
        del built, sims, ids
    return rows, [] if sample is not None else run_cross(label, folder, pick, vectors)


def _effort(row: dict) -> str:
    return ", ".join(f"{a} {b}" for a, b in row["effort"].items())


def _first_and_last(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(row at the smallest size, row at the largest) of each variant measured at both."""
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    if len(sizes) < 2:
        return []
    last = {r["variant"]: r for r in rows if r["size"] == sizes[-1]}
    return [(r, last[r["variant"]]) for r in rows
            if r["size"] == sizes[0] and r["variant"] in last]


def cross_report(rows: list[dict]) -> list[str]:
    lines = ["", "## Users searching the streamer index", "",
             f"{CROSS_USERS:,} sampled users, the {CROSS_K} nearest streamers each, every hit "
             "scored again pair by pair (`search_exact_scores`); recall@50 against exact search "
             f"for {CHECKED:,} of them, at the effort the build tuned on 1,000 users' "
             "searches (`cross_search_param`; the streamers' own searches get theirs).", "",
             "| size | streamers | index | factory | effort | search s | us per user | "
             "recall@50 |", "|---|---:|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['streamers']:,} | {r['variant']} | `{r['factory']}` "
                     f"| {_effort(r)} | {r['search_s']:.1f} | "
                     f"{1e6 * r['search_s'] / r['users']:.1f} | {r['recall']:.4f} |")
    pairs = _first_and_last(rows)
    if pairs:
        per_user = [(a["variant"], (b["search_s"] / b["users"]) / (a["search_s"] / a["users"]))
                    for a, b in pairs]
        lines += ["", "Time per user, last size against the first (constant = linear in the "
                      "users): " + "; ".join(f"{v} {x:.2f}x" for v, x in per_user)]
    return lines


def report(rows: list[dict], cross: list[dict], k: int) -> str:
    lines = [
        "# The users' kNN at size: lists of a fixed size against about 2*sqrt(n) lists",
        "",
        f"Machine: {faiss.omp_get_max_threads()} Faiss threads, {platform.platform()}. "
        "Command: `.venv/bin/python bench/bench_knn.py` (bench/bench_knn.py says how). "
        f"Every user's {k - 1} neighbours, as `expand` searches them, in an index whose search "
        "effort is raised until recall@50 on 1,000 sampled users reaches the default target "
        "(0.95; a neighbour within 1 + `recall_epsilon` of the exact 50th's distance counts, "
        f"0.01 unless the variant says otherwise); recall@{k - 1} of the lists against exact "
        f"search for {CHECKED:,} users, by identity and within epsilon. "
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at {git_commit()}.",
        "",
        "| size | users | index | factory | effort | build s | kNN s | us per user | "
        f"recall@{k - 1} | epsilon recall@{k - 1} |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['users']:,} | {r['variant']} | `{r['factory']}` | "
                     f"{_effort(r)} | {r['build_s']:.1f} | {r['knn_s']:.1f} | "
                     f"{1e6 * r['knn_s'] / r['users']:.1f} | {r['recall']:.4f} | "
                     f"{r['eps_recall']:.4f} |")
    pairs = _first_and_last(rows)
    if pairs:
        lines += ["", "**Growth** (kNN seconds, last size against the first; linear = the users' "
                      "ratio):", ""]
        ratio = pairs[0][1]["users"] / pairs[0][0]["users"]
        for a, b in pairs:
            lines.append(f"- {a['variant']}: {b['knn_s'] / a['knn_s']:.2f}x for {ratio:.2f}x "
                         f"the users (build {b['build_s'] / a['build_s']:.2f}x)")
    return "\n".join(lines + cross_report(cross)) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", action="append",
                    help="LABEL=FOLDER[@N]: a trained model's embeddings folder, or N of its "
                         "users drawn at random (repeatable; default: bench_nightly.py's work "
                         "folders)")
    ap.add_argument("--list-sizes", default="512,128",
                    help="comma-separated vectors per inverted list for the fixed-size variants")
    ap.add_argument("--variants", default="",
                    help="variant names to measure, separated by ';' (default: all), e.g. "
                         "'auto;2*sqrt(n) lists'")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    k = ExpandConfig().knn_k + 1
    sizes = [int(s) for s in args.list_sizes.split(",") if s]
    only = {v.strip() for v in args.variants.split(";") if v.strip()}

    def pick(n: int, d: int) -> list[tuple[str, IndexConfig]]:
        return variants(n, d, sizes, only)
    specs = args.embeddings or nightly_embeddings()
    if not specs:
        print("no embeddings: run bench/bench_nightly.py first or pass --embeddings",
              file=sys.stderr)
        return 2
    rows, cross = [], []
    for spec in specs:
        label, _, folder = spec.partition("=")
        folder, _, sample = folder.partition("@")
        knn, searched = run_size(label, folder, pick, k, int(sample) if sample else None)
        rows, cross = rows + knn, cross + searched
    Path(args.out).write_text(report(rows, cross, k))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
