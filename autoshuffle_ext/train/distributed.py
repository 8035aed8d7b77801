"""Multi-process data parallel (torchrun): process group, and the check that learned shuffles
stayed identical on every rank."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_reduce_sum", "assert_same_on_all_ranks", "init_distributed"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Joins the torchrun job described by RANK / WORLD_SIZE / LOCAL_RANK, if any: NCCL for CUDA
    devices, gloo otherwise. A plain process gets the single-rank context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world)


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sums a few floats over the ranks (identity on one rank)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def assert_same_on_all_ranks(tensors: dict[str, torch.Tensor], ctx: DistContext) -> float:
    """Largest absolute difference between each tensor and rank 0's copy, over all ranks.

    Raises:
        RuntimeError: some rank holds a different value (a bug: data parallelism must keep the
            learned matrices identical).
    """
    if not ctx.enabled or not tensors:
        return 0.0
    worst = torch.zeros((), dtype=torch.float64)
    for name in sorted(tensors):
        local = tensors[name].detach()
        reference = local.clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (local - reference).abs().max().double().cpu())
    total = worst.to(next(iter(tensors.values())).device)
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    if total.item() != 0.0:
        raise RuntimeError(f"learned matrices differ between ranks (max |diff| {total.item():.3g})")
    return total.item()
