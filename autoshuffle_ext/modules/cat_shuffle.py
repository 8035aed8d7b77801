"""`cat_shuffle`: a shuffle of the concatenation of two tensors, in one pass where the shuffle is
an exact permutation (ShuffleNet v2's units end with a concat and a shuffle)."""

from __future__ import annotations

import torch
from torch import nn

from .hard import FixedShuffle, HardShuffle

__all__ = ["cat_shuffle"]


def cat_shuffle(shuffle: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`shuffle(torch.cat([a, b], 1))`.

    An exact permutation (`HardShuffle`, which a frozen learned shuffle is, and `FixedShuffle`)
    copies a and b straight to their permuted places (`forward_cat`, one pass instead of a concat
    and a gather), with the same values and gradients; any other module (a soft shuffle while it
    trains, `nn.Identity` for no shuffle) gets the concatenation.
    """
    if isinstance(shuffle, (HardShuffle, FixedShuffle)):
        return shuffle.forward_cat(a, b)
    return shuffle(torch.cat((a, b), dim=1))
