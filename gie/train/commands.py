"""Click commands of the training stage: `train-gie` and `partition`."""
from __future__ import annotations

import click

from gie.cliopts import config_option, set_option


@click.command("train-gie")
@click.option("--graph", required=True, type=click.Path(file_okay=False),
              help="one published graph dataset folder (<graph root>/dt=D)")
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
def train_gie(graph, out, config_path, overrides, epochs, device, seed, resume, warm_start):
    """Train user and streamer embeddings on one graph dataset.

    One process by default; under `torchrun --nproc-per-node N` every process trains a
    share of each epoch with DDP (gloo on CPU, NCCL on GPU).
    """
    from gie.config import load_config
    from gie.train.run import train

    cfg = load_config(config_path, overrides)
    if epochs is not None:
        cfg.train.epochs = epochs
    if device is not None:
        cfg.train.device = device
    train(graph, out, cfg.train, seed=cfg.seed if seed is None else seed, resume=resume,
          warm_start=warm_start)
