"""Click commands of the expansion stage: `expand` and `query`."""
from __future__ import annotations

import json

import click

from gie.cliopts import config_option, set_option


@click.command()
@click.option("--graph", required=True, type=click.Path(file_okay=False),
              help="one published graph dataset folder (graph/dt=D)")
@click.option("--embeddings", required=True, type=click.Path(file_okay=False),
              help="folder with user.parquet / streamer.parquet (or part folders)")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="bundle folder for one date, published atomically with _SUCCESS")
@click.option("--topk", type=click.IntRange(1), default=None, help="per-sequence cap")
@click.option("--shard", default=None, metavar="I/N",
              help="expand nodes with node_id % N == I (default: RANK/WORLD_SIZE under torchrun)")
@click.option("--prev-graph", type=click.Path(file_okay=False), multiple=True,
              help="a previous night's graph, newest first (repeat): the fused ranking "
                   "learns from them")
@click.option("--prev-embeddings", type=click.Path(file_okay=False), multiple=True,
              help="the embeddings trained on each --prev-graph, in the same order")
@config_option
@set_option
def expand(graph, embeddings, out, topk, shard, prev_graph, prev_embeddings, config_path,
           overrides):
    """Expand behaviour sequences along metapaths, fuse them, build Faiss indexes, publish."""
    from gie.config import load_config
    from gie.expand.run import expand as run

    if len(prev_graph) != len(prev_embeddings):
        raise click.UsageError("give one --prev-embeddings per --prev-graph")
    cfg = load_config(config_path, overrides)
    if topk is not None:
        cfg.expand.topk = topk
    learn_from = list(zip(prev_graph, prev_embeddings))
    meta = run(graph, embeddings, out, cfg.expand, seed=cfg.seed, shard=shard,
               learn_from=learn_from)
    click.echo(json.dumps(meta.get("counts", meta), sort_keys=True))


@click.command()
@click.option("--bundle", required=True, type=click.Path(file_okay=False))
@click.option("--user", "user", type=int, default=None, help="raw user id")
@click.option("--streamer", "streamer", type=int, default=None, help="raw streamer id")
@click.option("--metapath", default=None, help="only this metapath (e.g. U-U-S, merged)")
@click.option("--json", "as_json", is_flag=True, help="print rows as JSON")
@click.option("--explain", "with_features", is_flag=True,
              help="fused sequences: the features that moved each entry's score (rebuilds "
                   "the node's candidates on the bundle's graph: slow on large graphs)")
@click.option("--graph", type=click.Path(file_okay=False), default=None,
              help="with --explain: the bundle's graph, when it moved")
def query(bundle, user, streamer, metapath, as_json, with_features, graph):
    """Show one node's expansions: source, via node and (--explain) feature contributions."""
    from gie.expand.query import contributions, explain, lookup

    if (user is None) == (streamer is None):
        raise click.UsageError("give exactly one of --user or --streamer")
    node_type, raw_id = ("user", user) if user is not None else ("streamer", streamer)
    rows = lookup(bundle, node_type, raw_id, metapath)
    contrib = contributions(bundle, node_type, raw_id, graph=graph) if with_features else None
    if as_json:
        click.echo(json.dumps({"rows": rows, "contributions": contrib} if contrib else rows))
    else:
        click.echo(explain(node_type, raw_id, rows, contrib))
