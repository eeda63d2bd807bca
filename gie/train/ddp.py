"""Process group set-up for one-host multi-process training (torchrun) and DGL distributed.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them the
run is a single process. Backend: NCCL on GPU, gloo on CPU.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ctx:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str, timeout_s: int = 600) -> Ctx:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            from gie.errors import BadInputError
            raise BadInputError("--device cuda requested but no CUDA device is visible")
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=dt.timedelta(seconds=timeout_s))
    return Ctx(rank, world, dev)


def barrier(ctx: Ctx) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast(ctx: Ctx, values: list[float]) -> list[float]:
    """Rank 0's values on every rank (validation results, the early-stop decision)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, 0)
    return t.cpu().tolist()


def all_mean(ctx: Ctx, value: float) -> float:
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.cpu()) / ctx.world


def teardown(ctx: Ctx) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
