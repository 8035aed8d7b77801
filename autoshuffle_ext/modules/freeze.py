"""From training to inference: round every learned shuffle to an exact gather, and report."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..ops.channel_gather import fixed_shuffle_perm
from ..ops.penalty import l1l2_penalty
from .learned import LearnedShuffle
from .sinkhorn import SinkhornShuffle

__all__ = ["freeze", "shuffle_report"]

_SOFT = (LearnedShuffle, SinkhornShuffle)


def freeze(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replaces every `LearnedShuffle` / `SinkhornShuffle` by the `HardShuffle` it rounds to.

    Rounding is a maximum-weight assignment, so each gather is a true permutation. When every M
    already is a permutation matrix the frozen model computes exactly what the soft one did.
    Returns a frozen copy (or `model` itself with `inplace=True`); the original keeps training.
    """
    if isinstance(model, _SOFT):
        return model.to_hard()
    target = model if inplace else copy.deepcopy(model)
    soft = [(name, m) for name, m in target.named_modules() if isinstance(m, _SOFT)]
    for name, module in soft:
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name)
        setattr(parent, child, module.to_hard())
    return target


@torch.no_grad()
def shuffle_report(model: nn.Module) -> list[dict]:
    """One row per learned or relaxed shuffle of `model`.

    Keys: name, kind, channels, penalty (P(M), unweighted), distance (Frobenius distance to the
    rounded permutation), moved (channels whose rounded source differs from the fixed shuffle's;
    None when the module has no groups).
    """
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, _SOFT):
            continue
        matrix = module.weight if isinstance(module, LearnedShuffle) else module.matrix()
        perm = module.permutation()
        moved = None
        if module.groups is not None:
            fixed = fixed_shuffle_perm(module.num_channels, module.groups, device=perm.device)
            moved = int((perm != fixed).sum())
        rows.append(
            {
                "name": name,
                "kind": type(module).__name__,
                "channels": module.num_channels,
                "penalty": float(l1l2_penalty(matrix.detach())),
                "distance": float(module.distance_to_permutation()),
                "moved": moved,
            }
        )
    return rows
