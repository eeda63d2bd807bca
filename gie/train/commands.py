"""Click commands of the training stage: `train-gie` and `partition`."""
from __future__ import annotations

import click

from gie.cliopts import config_option, set_option


@click.command("train-gie")
@click.option("--graph", type=click.Path(file_okay=False), default=None,
              help="one published graph dataset folder (<graph root>/dt=D); not with --dist")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="model folder for this date; published with _SUCCESS")
@config_option
@set_option
@click.option("--epochs", type=click.IntRange(1), default=None, help="overrides train.epochs")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="overrides train.device")
@click.option("--seed", type=int, default=None, help="overrides the top-level seed")
@click.option("--resume", is_flag=True, help="continue from the newest checkpoint in --out")
@click.option("--warm-start", type=click.Path(file_okay=False), default=None,
              help="yesterday's model folder: its weights are the starting point")
@click.option("--dist", is_flag=True, help="DGL distributed training on a partitioned graph")
@click.option("--part-config", type=click.Path(dir_okay=False), default=None,
              help="with --dist: <partition folder>/<graph-name>.json")
@click.option("--ip-config", type=click.Path(dir_okay=False), default=None,
              help="with --dist: one 'IP [PORT]' line per machine")
@click.option("--num-servers", type=click.IntRange(1), default=1, show_default=True,
              help="with --dist: graph servers per machine")
@click.option("--num-trainers", type=click.IntRange(1), default=1, show_default=True,
              help="with --dist: trainers per machine")
@click.option("--master-port", type=click.IntRange(1, 65535), default=29500, show_default=True)
@click.option("--remote", default="ssh {host}", show_default=True,
              help="with --dist: how to run a command on another machine")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=None,
              help="with --dist: stop the whole job after this many seconds")
def train_gie(graph, out, config_path, overrides, epochs, device, seed, resume, warm_start,
              dist, part_config, ip_config, num_servers, num_trainers, master_port, remote,
              dist_timeout):
    """Train user and streamer embeddings on one graph dataset.

    One process by default; under `torchrun --nproc-per-node N` every process trains a
    share of each epoch with DDP (gloo on CPU, NCCL on GPU). With --dist this command
    launches graph servers and trainers (see docs/TRAINING.md); --graph is then unused.
    """
    import os
    import sys

    from gie.config import load_config
    from gie.errors import BadInputError

    cfg = load_config(config_path, overrides)
    if epochs is not None:
        cfg.train.epochs = epochs
    if device is not None:
        cfg.train.device = device
    seed = cfg.seed if seed is None else seed
    if not dist:
        from gie.train.run import train

        if not graph:
            raise BadInputError("--graph is required (or --dist with --part-config)")
        train(graph, out, cfg.train, seed=seed, resume=resume, warm_start=warm_start)
        return
    if not (part_config and ip_config):
        raise BadInputError("--dist needs --part-config and --ip-config")
    if "DGL_ROLE" in os.environ:                     # started by our launcher
        from gie.train.dist import train_dist

        train_dist(part_config, ip_config, out, cfg.train, seed=seed, resume=resume,
                   warm_start=warm_start)
        return
    from gie.train.launch import launch

    launch([sys.executable, *sys.argv], part_config, ip_config, num_servers=num_servers,
           num_trainers=num_trainers, master_port=master_port, remote=remote,
           timeout_s=dist_timeout)


@click.command()
@click.option("--graph", required=True, type=click.Path(file_okay=False),
              help="one published graph dataset folder")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="partition folder (published with _SUCCESS); holds <graph-name>.json")
@click.option("--parts", required=True, type=click.IntRange(1), help="number of partitions")
@click.option("--method", type=click.Choice(["metis", "random"]), default="metis",
              show_default=True)
@click.option("--graph-name", default=None,
              help="DGL graph name; must be unique among jobs sharing a host (default: "
                   "from the id map)")
def partition(graph, out, parts, method, graph_name):
    """Partition a graph for DGL distributed training (node and edge features kept)."""
    from gie.train.partition import partition as run

    run(graph, out, parts, method, graph_name)
