"""Group coverage of a channel permutation: how many input groups each output group draws on.

In ShuffleNet a shuffle sits between two grouped convolutions of `groups` groups. The fixed
shuffle hands every group of the next convolution channels from all `groups` groups of the
previous one; a permutation that leaves some out cuts information paths. Coverage is how a
learned permutation is judged against that design, beyond counting channels moved.
"""

from __future__ import annotations

import torch

__all__ = ["group_coverage"]


def group_coverage(perm: torch.Tensor, groups: int) -> torch.Tensor:
    """For each of the `groups` contiguous output blocks of `out[:, c] = x[:, perm[c]]`, the
    number of distinct input blocks it reads from.

    Args:
        perm: 1-D integer permutation of 0..C-1.
        groups: block count, dividing C.

    Returns:
        int64 tensor [groups] with values in 1..min(groups, C // groups); the fixed shuffle
        (`fixed_shuffle_perm(C, groups)` with C >= groups**2) gives `groups` everywhere.

    Raises:
        TypeError: perm not an integer tensor, or groups not an int.
        ValueError: perm not 1-D, groups < 1, or groups not dividing C.
    """
    if not isinstance(perm, torch.Tensor) or perm.dtype.is_floating_point or perm.is_complex():
        raise TypeError(f"perm must be an integer tensor, got {getattr(perm, 'dtype', perm)!r}")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"groups must be an int, got {type(groups).__name__} {groups!r}")
    if perm.dim() != 1:
        raise ValueError(f"perm must be 1-D, got shape {tuple(perm.shape)}")
    C = perm.numel()
    if groups < 1 or C % groups:
        raise ValueError(f"groups must be >= 1 and divide C = {C}, got {groups}")
    block = C // groups
    sources = (perm.to(torch.int64) // block).view(groups, block)  # source block of every slot
    hits = torch.zeros(groups, groups, dtype=torch.bool, device=perm.device)
    rows = torch.arange(groups, device=perm.device).repeat_interleave(block)
    hits[rows, sources.flatten()] = True
    return hits.sum(1)
