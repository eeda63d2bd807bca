"""Process group set-up for one-host multi-process training (torchrun) and DGL distributed.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them the
run is a single process. Backend: NCCL on GPU, gloo on CPU.

Every tensor handed to a collective stays referenced here until the process group is gone.
gloo's worker thread drops its references to a finished collective's tensors after the
caller has moved on; if that drops the last reference to a tensor created in Python, it needs
the GIL, which `destroy_process_group` holds while it joins that thread: the run hangs at
exit (torch 2.2: about one torchrun in three on a loaded 2-core host).
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


_KEEP: list[torch.Tensor] = []    # see the module docstring


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


def _kept(ctx: Ctx, values: list, dtype: torch.dtype) -> torch.Tensor:
    """A tensor for a collective, referenced until teardown (see the module docstring)."""
    t = torch.tensor(values, dtype=dtype, device=ctx.device)
    _KEEP.append(t)
    return t


def barrier(ctx: Ctx) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast(ctx: Ctx, values: list[float]) -> list[float]:
    """Rank 0's values on every rank (validation results, the early-stop decision)."""
    if not ctx.distributed:
        return values
    t = _kept(ctx, values, torch.float64)
    dist.broadcast(t, 0)
    return t.cpu().tolist()


def all_mean(ctx: Ctx, value: float) -> float:
    if not ctx.distributed:
        return value
    t = _kept(ctx, [value], torch.float64)
    dist.all_reduce(t)
    return float(t.cpu()) / ctx.world


def all_min(ctx: Ctx, value: int) -> int:
    if not ctx.distributed:
        return value
    t = _kept(ctx, [value], torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.cpu())


def teardown(ctx: Ctx) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
    _KEEP.clear()
