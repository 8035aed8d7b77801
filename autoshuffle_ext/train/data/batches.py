"""Which samples each rank sees, in which order, and how they come out in batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .images import TensorImages

__all__ = ["eval_indices", "iterate_batches", "train_indices"]


def train_indices(dataset: Dataset, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This rank's shuffled share of the training set for `epoch`: `DistributedSampler`'s
    order, a function of (seed, epoch) only, so that resuming reproduces it."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def eval_indices(dataset: Dataset, rank: int, world: int) -> list[int]:
    """This rank's share of an evaluation set, every sample exactly once over all ranks (unlike
    `DistributedSampler`, which pads with repeats and would bias the accuracy)."""
    return list(range(rank, len(dataset), world))


def iterate_batches(
    dataset: Dataset, indices: list[int], batch_size: int, drop_last: bool, workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images [B, 3, H, W], int64 labels [B]) over `indices` in order.

    In-memory sets are sliced a batch at a time; folders are decoded by a `DataLoader` with
    `workers` processes.
    """
    stop = len(indices) - len(indices) % batch_size if drop_last else len(indices)
    chunks = [indices[i : i + batch_size] for i in range(0, stop, batch_size)]
    if isinstance(dataset, TensorImages):
        for chunk in chunks:
            yield dataset.__getitems__(chunk)
        return
    loader = DataLoader(dataset, batch_sampler=chunks, num_workers=workers)
    yield from loader
