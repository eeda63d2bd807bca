"""Click command of the evaluation package: `evaluate`."""
from __future__ import annotations

import click

from gie.cliopts import config_option, set_option


def _parse_ks(ctx, param, value):
    if value is None:
        return None
    try:
        ks = sorted({int(k) for k in value.split(",") if k.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not ks or ks[0] < 1:
        raise click.BadParameter(f"{value!r}: every K must be a positive integer")
    return ks


@click.command()
@click.option("--raw", required=True, type=click.Path(exists=True, file_okay=False),
              help="raw KuaiLive-layout folder holding the gifts/clicks of D+1")
@click.option("--work", required=True, type=click.Path(exists=True, file_okay=False),
              help="work folder with graph/dt=D and bundle/dt=D")
@click.option("--date", required=True, help="bundle date D, YYYY-MM-DD (labels: D+1)")
@click.option("--k", "ks", default=None, callback=_parse_ks, help="cut-offs, e.g. 10,50,100")
@config_option
@set_option
def evaluate(raw, work, date, ks, config_path, overrides):
    """Evaluate the bundle of D on the gifts of D+1; write <work>/reports/dt=D/."""
    from gie.config import load_config
    from gie.evaluate.run import evaluate as run

    cfg = load_config(config_path, overrides)
    if ks is not None:
        cfg.evaluate.ks = ks
    metrics = run(raw, work, date, cfg.evaluate, seed=cfg.seed)
    t = metrics["targets"]["explore_recall"]
    ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}x"
    click.echo(f"report: {work}/reports/dt={date}  exploration Recall@{t['k']} {t['sequence']} "
               f"{t['value']:.4f} vs {t['best_baseline']} {t['best_baseline_value']:.4f} "
               f"({ratio})  regressions: {len(metrics['regressions'])}")
    for r in metrics["regressions"]:
        click.echo(f"  REGRESSION {r['metric']}: {r['previous']:.4f} -> {r['current']:.4f}")
