"""Exact channel permutations: `HardShuffle` (any perm, a C++/CUDA gather) and `FixedShuffle`
(ShuffleNet's hand-designed shuffle, the baseline a learned shuffle replaces). Both also permute
the concatenation of two tensors in one pass (`forward_cat`, the `cat_gather` op)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.channel_gather import check_permutation, fixed_shuffle_perm

_gather = torch.ops.autoshuffle_ext.channel_gather.default
_cat_gather = torch.ops.autoshuffle_ext.cat_gather.default

__all__ = ["FixedShuffle", "HardShuffle", "check_cat_channels", "check_channels"]


def check_channels(x: torch.Tensor, num_channels: int, module: str) -> None:
    """Raises ValueError unless x is [N, C, ...] with C == num_channels."""
    if x.dim() < 2 or x.shape[1] != num_channels:
        raise ValueError(
            f"{module}: input x must have shape [N, {num_channels}, ...], got {tuple(x.shape)}"
        )


def check_cat_channels(a: torch.Tensor, b: torch.Tensor, num_channels: int, module: str) -> None:
    """Raises ValueError unless a and b are [N, Ca, ...] and [N, Cb, ...] with Ca + Cb ==
    num_channels (their other sizes are the op's to check)."""
    if a.dim() < 2 or b.dim() < 2 or a.shape[1] + b.shape[1] != num_channels:
        raise ValueError(
            f"{module}: inputs a and b must have shapes [N, Ca, ...] and [N, Cb, ...] with "
            f"Ca + Cb = {num_channels}, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


class HardShuffle(nn.Module):
    """`y[:, c] = x[:, perm[c]]`: an exact permutation of the channels, at the cost of a copy.

    This is what a learned shuffle becomes after `freeze`. `perm` is kept as a buffer, so it
    travels with `state_dict` and `.to(device)`.
    """

    perm: torch.Tensor

    def __init__(self, perm: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(perm, torch.Tensor):
            raise TypeError(f"perm must be a torch.Tensor, got {type(perm).__name__}")
        check_permutation(perm, perm.numel())
        self.num_channels = perm.numel()
        self.register_buffer("perm", perm.detach().clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A loaded perm must be a permutation of as many channels as the constructor's.
        perm = state_dict.get(prefix + "perm")
        if isinstance(perm, torch.Tensor):
            check_permutation(perm, self.num_channels, name=f"state_dict[{prefix + 'perm'!r}]")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        # The op itself: perm was validated once, and the op re-checks its dtype, device,
        # length and range in C++; the Python wrapper's checks would cost as much as the gather
        # of a small activation (batch-1 inference).
        return _gather(x, self.perm)

    def forward_cat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """`self(torch.cat([a, b], 1))` in one pass (`cat_gather`): a and b are copied straight
        to their permuted places, without the concatenated tensor."""
        check_cat_channels(a, b, self.num_channels, type(self).__name__)
        return _cat_gather(a, b, self.perm)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"


class FixedShuffle(nn.Module):
    """ShuffleNet's channel shuffle with `groups` groups (`F.channel_shuffle`).

    Equal to `HardShuffle(fixed_shuffle_perm(num_channels, groups))`; kept on PyTorch's own
    kernel because it is the baseline the learned shuffle is measured against.
    """

    def __init__(self, num_channels: int, groups: int) -> None:
        super().__init__()
        # fixed_shuffle_perm validates num_channels and groups. The perm is kept for forward_cat;
        # not persistent, so state dicts stay as they were (groups says it all).
        self.register_buffer("_perm", fixed_shuffle_perm(num_channels, groups), persistent=False)
        self.num_channels = num_channels
        self.groups = groups

    @property
    def perm(self) -> torch.Tensor:
        """The shuffle as a perm (`out[:, c] = x[:, perm[c]]`), as `HardShuffle.perm`."""
        return self._perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        return F.channel_shuffle(x, self.groups)

    def forward_cat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """`self(torch.cat([a, b], 1))` in one pass (`cat_gather`), as `HardShuffle.forward_cat`."""
        check_cat_channels(a, b, self.num_channels, type(self).__name__)
        return _cat_gather(a, b, self._perm)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, groups={self.groups}"
