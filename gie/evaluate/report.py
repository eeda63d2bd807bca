"""Write the evaluation report folder: metrics.json, metadata.json, report.md and PNG plots.

Every figure is shown beside the baselines measured in the same run and, when the report of
an earlier date exists, beside that date's value (in parentheses). Headline figures that
dropped by more than `regression_tolerance` (relative) are listed under `regressions`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gie.layout import WorkLayout, dates_under  # noqa: E402
from gie.publish import is_published, write_json_atomic  # noqa: E402
from graphbuild.schema import EXPLORE, MERGED  # noqa: E402

SEGMENT_TITLES = {
    "overall": "All next-day gifted streamers",
    "explore": "Streamers the user never gifted before (history removed from every list)",
    "new_streamers": "New streamers (first seen within the last days of the window)",
}


def headline_keys(metrics: dict) -> list[str]:
    """Dotted paths of the figures watched for regressions."""
    ks = metrics["config"]["ks"]
    keys = [f"retrieval.{seg}.{MERGED}.recall@{k}" for seg in ("overall", "explore") for k in ks]
    keys += [f"retrieval.explore.{EXPLORE}.recall@{k}" for k in ks]
    keys += [f"retrieval.overall.{MERGED}.coverage", "link_prediction.all.auc",
             "link_prediction.all.mrr", "downstream.with_gie.auc"]
    return keys


def lookup(tree: dict | None, dotted: str) -> float | None:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and math.isfinite(node) else None


def previous_metrics(layout: WorkLayout, date: str) -> tuple[str | None, dict | None]:
    """The latest published report strictly before `date`, if any."""
    for prev in reversed([d for d in dates_under(layout.work / "reports") if d < date]):
        path = layout.report(prev) / "metrics.json"
        if is_published(layout.report(prev)) and path.is_file():
            return prev, json.loads(path.read_text())
    return None, None


def find_regressions(metrics: dict, previous: dict | None, tolerance: float) -> list[dict]:
    if previous is None:
        return []
    out = []
    for key in headline_keys(metrics):
        cur, prev = lookup(metrics, key), lookup(previous, key)
        if cur is None or prev is None or prev <= 0:
            continue
        drop = (prev - cur) / prev
        if drop > tolerance:
            out.append({"metric": key, "previous": prev, "current": cur, "drop": drop})
    return out


def _fmt(value: float | None, prev: float | None = None) -> str:
    text = "n/a" if value is None else f"{value:.4f}"
    return text if prev is None else f"{text} ({prev:.4f})"


def _methods(metrics: dict) -> list[str]:
    return metrics["methods"]["gie"] + metrics["methods"]["baselines"]


def plot_recall_curves(metrics: dict, path: Path) -> None:
    ks = metrics["config"]["ks"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=False)
    for ax, seg in zip(axes, SEGMENT_TITLES):
        for m in _methods(metrics):
            style = "-o" if m in metrics["methods"]["gie"] else "--s"
            ax.plot(ks, [metrics["retrieval"][seg][m][f"recall@{k}"] for k in ks], style, label=m,
                    linewidth=2.5 if m == MERGED else 1.2)
        ax.set_title(seg)
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Recall@K on {metrics['label_date']} (bundle {metrics['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_lift(metrics: dict, k: int, path: Path) -> None:
    """Recall@k of each GIE sequence divided by each baseline's (no bar where the baseline is 0)."""
    gie_methods, base = metrics["methods"]["gie"], metrics["methods"]["baselines"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(base)
    for ax, seg in zip(axes, ("overall", "explore")):
        r = metrics["retrieval"][seg]
        for j, b in enumerate(base):
            lift = [r[m][f"recall@{k}"] / r[b][f"recall@{k}"] if r[b][f"recall@{k}"] > 0
                    else float("nan") for m in gie_methods]
            bars = ax.bar([i + j * width for i in range(len(gie_methods))], lift, width,
                          label=f"vs {b}")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(gie_methods))], gie_methods)
        ax.set_title(f"{seg}: lift of Recall@{k} over baselines")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_downstream(downstream: dict, path: Path) -> None:
    names = ["history_only", "with_gie"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, n in enumerate(names):
        aucs = [r["auc"] for r in downstream[n]["runs"]]
        ax.bar(i, downstream[n]["auc"], color="C0" if i == 0 else "C1")
        ax.plot([i] * len(aucs), aucs, "k.")
    ax.set_xticks(range(len(names)), names)
    lo = min(r["auc"] for n in names for r in downstream[n]["runs"])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("test AUC (dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


STREAMER_SEGMENT_TITLES = {
    "overall": "Streamer side: all next-day gifters of each streamer",
    "explore": "Streamer side: first-time gifters (the streamer's past gifters removed)",
}


def _target_lines(t: dict) -> list[str]:
    def status(met):
        return "n/a" if met is None else "met" if met else "MISSED"

    lines = []
    for name, title in (("explore_recall", "Never-gifted streamers"),
                        ("new_streamer_recall", "New streamers")):
        v = t[name]
        ratio = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}x"
        lines.append(f"- {title}, Recall@{v['k']}: {v['sequence']} {v['value']:.4f} vs best "
                     f"baseline {v['best_baseline']} {v['best_baseline_value']:.4f} = {ratio} "
                     f"(target {v['target_ratio']}x: {status(v['met'])})")
    worst = min(t["merged_recall"]["per_k"].items(),
                key=lambda kv: kv[1]["merged"] - kv[1]["best_baseline_value"], default=None)
    if worst:
        k, v = worst
        lines.append(f"- merged Recall@K >= best baseline at every K <= 50: "
                     f"{status(t['merged_recall']['met'])} (closest at K={k}: "
                     f"{v['merged']:.4f} vs {v['best_baseline']} {v['best_baseline_value']:.4f})")
    f = t["fused_vs_sources"]
    lines.append(f"- Fused ranking >= best single source on its held-out label nodes: "
                 f"{status(f['met'])}" + ("" if f["learned"] else " (first night: fixed weights)"))
    if "downstream_auc" in t:
        d = t["downstream_auc"]
        lines.append(f"- Downstream AUC margin {d['margin']:+.4f} vs seed spread {d['spread']:.4f} "
                     f"({status(d['met'])})")
    e = t["embeddings_vs_popularity"]
    lines.append(f"- Embedding kNN above popularity on never-gifted streamers: {e['emb_knn']:.4f} "
                 f"vs {e['popularity']:.4f} ({status(e['met'])})")
    return lines


def _fusion_lines(fusion: dict | None) -> list[str]:
    if not fusion:
        return ["", "## Fused ranking", "", "The bundle has no fused sequences."]
    lines = ["", "## Fused ranking", ""]
    if not fusion["learned"]:
        lines.append(f"Fixed weights: {fusion.get('reason')}.")
        return lines
    nights = ", ".join(f"{n.get('date')} ({n.get('label_pairs')} label pairs)"
                       for n in fusion.get("learned_from") or [])
    lines += [f"Learned from the nights of {nights}, each against the gifts of the day after "
              f"it; held out: {fusion.get('held_out')}. Held-out Recall:", "",
              "| sequence | scored by | fused | best source | fixed weights |", "|---|---|---|---|---|"]
    for name, v in fusion.items():
        if isinstance(v, dict) and "kind" in v:
            scored = v["kind"] + (f" ({v['source']})" if v.get("source") else "")
            lines.append(f"| {name} | {scored} | {_fmt(v['held_out_fused'])} | "
                         f"{v.get('best_source')} {_fmt(v['held_out_best_source'])} | "
                         f"{_fmt(v['held_out_fixed_weights'])} |")
    return lines


def _retrieval_lines(metrics: dict, previous: dict | None, key: str, methods_key: str,
                     titles: dict, who: str) -> list[str]:
    ks = metrics["config"]["ks"]
    methods = metrics[methods_key]["gie"] + metrics[methods_key]["baselines"]
    lines = []
    for seg, title in titles.items():
        block = metrics[key][seg]
        count = block[methods[0]]["users"] if methods else 0
        cols = [f"{m}@{k}" for k in ks for m in ("hit_rate", "recall", "ndcg")]
        extra = ["coverage"] if seg == "overall" else []
        lines += ["", f"## Retrieval: {title}", "", f"{count} {who}.", "",
                  "| method | " + " | ".join(cols + extra) + " |",
                  "|---" * (1 + len(cols) + len(extra)) + "|"]
        for m in methods:
            kind = "" if m in metrics[methods_key]["gie"] else " (baseline)"
            cells = [_fmt(block[m].get(c), lookup(previous, f"{key}.{seg}.{m}.{c}"))
                     for c in cols + extra]
            lines.append(f"| {m}{kind} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(metrics: dict, previous: dict | None, plots: list[str]) -> str:
    prev_note = f" Values in parentheses: report of {metrics['previous_date']}." if previous else ""
    lines = [f"# GIE evaluation: bundle {metrics['date']}, labels {metrics['label_date']}", "",
             f"Code {metrics['code_version']}, seed {metrics['seed']}, "
             f"{metrics['timings_s']['total']:.1f}s.{prev_note}", ""]
    if metrics["regressions"]:
        lines += ["## ⚠ Regressions", "",
                  f"Dropped by more than {metrics['config']['regression_tolerance']:.0%} "
                  f"since {metrics['previous_date']}:", "",
                  "| metric | previous | current | drop |", "|---|---|---|---|"]
        lines += [f"| {r['metric']} | {r['previous']:.4f} | {r['current']:.4f} | {r['drop']:.1%} |"
                  for r in metrics["regressions"]]
        lines.append("")
    lines += ["## Targets", ""] + _target_lines(metrics["targets"])
    lines += ["", "## Counts", ""] + [f"- {k}: {v}" for k, v in metrics["counts"].items()]
    oracle = metrics.get("oracle")
    if oracle:
        k = metrics["targets"]["explore_recall"]["k"]
        value = metrics["targets"]["explore_recall"]["value"]
        ceiling = oracle[f"recall@{k}"]
        share = f", {value / ceiling:.0%} of it reached" if ceiling > 0 else ""
        lines += ["", "## Oracle ceiling (generated data)", "",
                  f"An oracle that knows the planted truth ({oracle['method']}) reaches "
                  f"exploration Recall@{k} = {ceiling:.4f} over {oracle['users']} users"
                  f"{share}."]
        if f"history_recall@{k}" in oracle:
            lines.append(f"With each user's topic mixture estimated from their own gifts in the "
                         f"window instead, it reaches {oracle[f'history_recall@{k}']:.4f}.")
    lines += _fusion_lines(metrics.get("fusion"))
    lines += _retrieval_lines(metrics, previous, "retrieval", "methods", SEGMENT_TITLES, "users")
    if metrics.get("streamer_retrieval"):
        lines += _retrieval_lines(metrics, previous, "streamer_retrieval", "streamer_methods",
                                  STREAMER_SEGMENT_TITLES, "streamers")
    lines += ["", "## Link prediction on next-day gift edges (embeddings)", "",
              "| edges | count | AUC | MRR |", "|---|---|---|---|"]
    for name, lp in metrics["link_prediction"].items():
        lines.append(f"| {name} | {lp['edges']} | "
                     f"{_fmt(lp['auc'], lookup(previous, f'link_prediction.{name}.auc'))} | "
                     f"{_fmt(lp['mrr'], lookup(previous, f'link_prediction.{name}.mrr'))} |")

    ds = metrics["downstream"]
    lines += ["", "## Downstream gift prediction (DIN-style ablation)", ""]
    if "skipped" in ds:
        lines.append(f"Skipped: {ds['skipped']}.")
    else:
        lines += [f"Samples: {ds['samples']}.", "", "| variant | AUC (mean over seeds) | AUC range "
                  "| GAUC |", "|---|---|---|---|"]
        for v in ("history_only", "with_gie"):
            lines.append(f"| {v} | {_fmt(ds[v]['auc'], lookup(previous, f'downstream.{v}.auc'))} "
                         f"| {ds[v]['auc_range']:.4f} | "
                         f"{_fmt(ds[v]['gauc'], lookup(previous, f'downstream.{v}.gauc'))} |")
        tis = ds.get("target_in_sequence")
        if tis and tis["clicks"]:
            lines += ["", f"What each sequence can tell, before any model: the {tis['clicks']} "
                      f"test clicks of users with a gift history (positive rate "
                      f"{_fmt(tis['positive_rate'])}; without a history "
                      f"{_fmt(tis['positive_rate_without_history'])}), by whether the clicked "
                      "streamer is in the user's sequence.", "",
                      "| sequence | clicks in it | positive rate in | positive rate out |",
                      "|---|---|---|---|"]
            for name, r in tis["sequences"].items():
                lines.append(f"| {name} | {r['clicks_in']} | {_fmt(r['positive_rate_in'])} | "
                             f"{_fmt(r['positive_rate_out'])} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def strict_json(obj):
    """NaN and Inf (an undefined AUC, a ratio over zero) become null: valid JSON for any reader."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [strict_json(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def write_report(folder: Path, metrics: dict, previous: dict | None) -> None:
    ks = metrics["config"]["ks"]
    lift_k = 50 if 50 in ks else max(ks)
    plot_recall_curves(metrics, folder / "recall_at_k.png")
    plot_lift(metrics, lift_k, folder / "lift_over_baselines.png")
    plots = ["recall_at_k.png", "lift_over_baselines.png"]
    if "skipped" not in metrics["downstream"]:
        plot_downstream(metrics["downstream"], folder / "downstream_auc.png")
        plots.append("downstream_auc.png")
    write_json_atomic(folder / "metrics.json", strict_json(metrics))
    write_json_atomic(folder / "metadata.json", {
        k: metrics[k] for k in ("schema_version", "date", "label_date", "code_version",
                                "environment", "seed", "config", "inputs", "counts",
                                "timings_s", "previous_date")}
        | {"files": ["metrics.json", "report.md", *plots]})
    (folder / "report.md").write_text(render_markdown(metrics, previous, plots))
