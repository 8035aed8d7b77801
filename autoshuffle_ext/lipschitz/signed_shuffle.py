"""`SignedShuffle`: an exact signed channel permutation, `y[:, c] = signs[c] * x[:, perm[c]]`
(what an orthogonal shuffle rounds to), and `fold_signed_shuffle`, which merges one into the
layer after it."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..modules.hard import HardShuffle, check_channels
from ..ops.channel_gather import check_permutation
from ._checks import check_tensor

__all__ = ["SignedShuffle", "fold_signed_shuffle"]

_gather = torch.ops.autoshuffle_ext.channel_gather.default

# Pads that act on each channel alone and commute with a sign: a signed shuffle passes them.
_CHANNELWISE_PADS = (nn.CircularPad2d, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)


class SignedShuffle(nn.Module):
    """`y[:, c] = signs[c] * x[:, perm[c]]`: a channel gather (`channel_gather`) and a sign per
    output channel; orthogonal. `perm` (int64 [C]) and `signs` (+-1, float32 [C]) are buffers.

    Raises:
        TypeError: perm not an int64 tensor, signs not a floating point tensor.
        ValueError: perm not a permutation, signs not [C] of +-1; in the forward, an input not
            [N, C, ...].
    """

    perm: torch.Tensor
    signs: torch.Tensor

    def __init__(self, perm: torch.Tensor, signs: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(perm, torch.Tensor):
            raise TypeError(f"perm must be a torch.Tensor, got {type(perm).__name__}")
        check_permutation(perm, perm.numel())
        check_tensor("signs", signs)
        if signs.shape != perm.shape or not bool((signs.abs() == 1).all()):
            raise ValueError(
                f"signs must be a tensor of +-1 of shape {tuple(perm.shape)}, got shape "
                f"{tuple(signs.shape)}"
                + ("" if signs.shape != perm.shape else " with entries other than +-1")
            )
        self.num_channels = perm.numel()
        self.register_buffer("perm", perm.detach().clone())
        self.register_buffer("signs", signs.detach().to(torch.float32, copy=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        y = _gather(x, self.perm)
        shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        return y * self.signs.to(y.dtype).view(shape)

    def lipschitz_bound(self) -> float:
        """1: a signed permutation is orthogonal."""
        return 1.0

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, negatives={int((self.signs < 0).sum())}"


def _perm_and_signs(shuffle: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(shuffle, SignedShuffle):
        return shuffle.perm, shuffle.signs
    if isinstance(shuffle, HardShuffle):
        return shuffle.perm, torch.ones(shuffle.num_channels, device=shuffle.perm.device)
    raise TypeError(
        f"shuffle must be a SignedShuffle or a HardShuffle, got {type(shuffle).__name__}"
    )


@torch.no_grad()
def fold_signed_shuffle(shuffle: nn.Module, layer: nn.Module) -> nn.Module:
    """A new module computing `layer(shuffle(x))` without the shuffle: the signed permutation is
    folded into the input channels of the layer's weight (`W'[:, perm[c]] = signs[c] W[:, c]`).

    Args:
        shuffle: a `SignedShuffle` (or a `HardShuffle`: all signs +1) of C channels.
        layer: `nn.Conv2d` (groups=1) or `nn.Linear` with C input channels, or an
            `nn.Sequential` (what a frozen `BCOPConv2d` is) that starts with channel-wise pads
            (circular, zero, reflection, replication) and `nn.PixelUnshuffle` before such a
            layer. The layer itself is not changed.

    Raises:
        TypeError: shuffle or layer of another kind (a grouped conv, an activation: a signed
            permutation does not pass those).
        ValueError: the layer's input channels are not C.
    """
    perm, signs = _perm_and_signs(shuffle)
    C = perm.numel()
    if isinstance(layer, nn.Sequential) and len(layer) > 0:
        first, rest = layer[0], nn.Sequential(*list(layer)[1:])
        if isinstance(first, _CHANNELWISE_PADS):
            return nn.Sequential(first, *_as_list(fold_signed_shuffle(shuffle, rest)))
        if isinstance(first, nn.PixelUnshuffle):
            # Channel c becomes channels c s^2 .. c s^2 + s^2 - 1: the shuffle moves blocks.
            r = first.downscale_factor**2
            block = torch.arange(r, device=perm.device)
            inner = SignedShuffle((perm[:, None] * r + block).flatten(), signs.repeat_interleave(r))
            return nn.Sequential(first, *_as_list(fold_signed_shuffle(inner, rest)))
        if len(layer) == 1:
            return fold_signed_shuffle(shuffle, first)
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        fan_in = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise TypeError(
                f"layer must be an ungrouped nn.Conv2d to take a signed shuffle, got groups="
                f"{layer.groups}"
            )
        if fan_in != C:
            raise ValueError(
                f"layer must take the shuffle's {C} channels as input, got a "
                f"{type(layer).__name__} with {fan_in}"
            )
        folded = copy.deepcopy(layer)
        weight = layer.weight
        shape = (1, C) + (1,) * (weight.dim() - 2)
        signed = weight * signs.to(weight.dtype).view(shape)
        folded.weight.copy_(torch.zeros_like(weight).index_copy_(1, perm, signed))
        return folded
    raise TypeError(
        "layer must be an nn.Conv2d, an nn.Linear, or an nn.Sequential of channel-wise pads / "
        f"nn.PixelUnshuffle before one, got {type(layer).__name__}"
    )


def _as_list(module: nn.Module) -> list[nn.Module]:
    return list(module) if isinstance(module, nn.Sequential) else [module]
