"""Whole-model helpers for training: the summed penalty and the projection after each step."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..doubly_stochastic import DEFAULT_SCALING_ITERS, project_doubly_stochastic_
from .learned import LearnedShuffle

__all__ = ["attach_projection", "learned_matrices", "learned_shuffles", "penalty"]


def learned_shuffles(model: nn.Module) -> Iterator[tuple[str, LearnedShuffle]]:
    """(qualified name, module) of every `LearnedShuffle` in `model`, itself included."""
    for name, module in model.named_modules():
        if isinstance(module, LearnedShuffle):
            yield name, module


def penalty(model: nn.Module) -> torch.Tensor:
    """Sum of `penalty_weight * P(M)` over the model's learned shuffles (0-d; 0 if none).

    Add it to the task loss: `loss = criterion(model(x), y) + asx.penalty(model)`. After a forward
    pass each term reuses the value the fused mixing op already computed.
    """
    terms = [module.penalty() for _, module in learned_shuffles(model)]
    if not terms:
        first = next(model.parameters(), None)
        device = first.device if first is not None else None
        return torch.zeros((), device=device)
    return torch.stack(terms).sum()


def learned_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every learned mixing matrix M, by module name."""
    return {name: module.weight.detach().clone() for name, module in learned_shuffles(model)}


def attach_projection(
    optimizer: torch.optim.Optimizer, model: nn.Module, iters: int = DEFAULT_SCALING_ITERS
) -> RemovableHandle:
    """After every `optimizer.step()`, projects each learned M back onto the doubly stochastic
    matrices (threshold at 0, then `iters` rounds of column/row scaling).

    Returns the hook's handle (`handle.remove()` detaches it).

    Raises:
        ValueError: iters < 0, or a learned matrix of `model` is not among the optimizer's
            parameters (a projection that could never see an update is a wiring mistake).
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    modules = [module for _, module in learned_shuffles(model)]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, m in learned_shuffles(model) if id(m.weight) not in optimized]
    if missing:
        raise ValueError(
            f"optimizer must hold every learned matrix of model; missing: {', '.join(missing)}"
        )

    # Matrices of one size, dtype and device are projected as one [B, n, n] stack: the
    # projection is many small passes, so a stack pays the per-op overhead once for all.
    buckets: dict[tuple, list[LearnedShuffle]] = {}
    for module in modules:
        w = module.weight
        buckets.setdefault((w.shape[0], w.dtype, w.device), []).append(module)

    @torch.no_grad()
    def project(_optimizer, _args, _kwargs) -> None:
        for bucket in buckets.values():
            if len(bucket) == 1:
                bucket[0].project_(iters)
                continue
            stack = torch.stack([m.weight for m in bucket])
            project_doubly_stochastic_(stack, iters)
            for m, projected in zip(bucket, stack, strict=True):
                m.weight.copy_(projected)

    return optimizer.register_step_post_hook(project)
