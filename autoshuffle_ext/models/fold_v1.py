"""Folding a frozen ShuffleNet v1 unit's channel permutations into as few gathers as possible.

After `freeze`, a unit with learned group counts and a learned shuffle runs up to five gathers:
each frozen `DGConv2d` gathers its input into group order and its output back, and the shuffle
gathers in between. Between the two pointwise convs every layer is per-channel (BatchNorm, ReLU,
the depthwise conv), so a permutation passes through them by permuting their parameters: the
first conv's output order, the shuffle and the second conv's input order compose into a single
gather, placed after the depthwise conv (a quarter of the pixels in a stride-2 unit). What stays
is the gather of the unit's input into the first conv's groups and of the second conv's output
back, which the residual sum or concat needs in the original order: neither exists when the
learned groups are contiguous (the closed gates are the leading factors).
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import FixedShuffle, HardShuffle

__all__ = ["fold_unit_permutations_"]


def _split_conv(module: nn.Module) -> tuple[torch.Tensor | None, nn.Conv2d, torch.Tensor | None]:
    """(input perm, conv, output perm) of a frozen pointwise conv: a plain `nn.Conv2d`, or the
    `Sequential(HardShuffle?, Conv2d, HardShuffle?)` a frozen `DGConv2d` is."""
    if isinstance(module, nn.Conv2d):
        return None, module, None
    parts = list(module)
    before = parts.pop(0).perm if isinstance(parts[0], HardShuffle) else None
    after = parts.pop().perm if isinstance(parts[-1], HardShuffle) else None
    (conv,) = parts
    return before, conv, after


def _compose(outer: torch.Tensor | None, inner: torch.Tensor | None) -> torch.Tensor | None:
    """The perm of gathering by `outer` then by `inner` (None is the identity)."""
    if outer is None:
        return inner
    return outer if inner is None else outer[inner]


@torch.no_grad()
def _reorder_(module: nn.Module, index: torch.Tensor) -> None:
    """Puts channel index[j] of a per-channel layer (BatchNorm, depthwise conv) at j."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            tensor.copy_(tensor[index])


def _is_frozen_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) or (
        isinstance(module, nn.Sequential)
        and any(isinstance(m, nn.Conv2d) for m in module)
        and all(isinstance(m, (nn.Conv2d, HardShuffle)) for m in module)
    )


def fold_unit_permutations_(unit: nn.Module) -> bool:
    """Folds the permutations of a frozen `ShuffleNetV1Unit` in place; returns whether it did.

    Leaves the unit as it is (False) while any of its parts is not frozen, or when it holds no
    gather to fold. The unit computes exactly what it did: only the order in which the
    per-channel layers see their channels changes.
    """
    compress, depthwise, expand = unit.compress[0], unit.depthwise[0], unit.expand[0]
    shuffle = unit.shuffle
    if not (_is_frozen_conv(compress) and _is_frozen_conv(expand)):
        return False
    if not isinstance(shuffle, (HardShuffle, FixedShuffle, nn.Identity)):
        return False
    shuffle_perm = None if isinstance(shuffle, nn.Identity) else shuffle.perm
    in_c, conv_c, out_c = _split_conv(compress)
    in_e, conv_e, out_e = _split_conv(expand)
    if out_c is None and in_e is None and not isinstance(shuffle, HardShuffle):
        return False  # nothing learned here: ShuffleNet's own shuffle stays as it is
    channels = conv_c.out_channels
    device = conv_c.weight.device
    identity = torch.arange(channels, device=device)
    # The first conv leaves its channels in group order: channel j is original out_src[j].
    out_src = identity if out_c is None else torch.argsort(out_c)
    shuffle_perm = identity if shuffle_perm is None else shuffle_perm.to(device)
    # Which shuffled channel each group-ordered channel becomes: the depthwise conv and its
    # BatchNorm take that channel's parameters.
    shuffled_index = torch.argsort(shuffle_perm)[out_src]
    _reorder_(unit.compress[1], out_src)
    _reorder_(depthwise, shuffled_index)
    _reorder_(unit.depthwise[1], shuffled_index)
    joined = _compose(_compose(out_c, shuffle_perm), in_e)
    gather = [] if torch.equal(joined, identity) else [HardShuffle(joined)]
    unit.compress = nn.Sequential(
        *([HardShuffle(in_c)] if in_c is not None else []), conv_c, *unit.compress[1:]
    )
    unit.shuffle = nn.Identity()
    unit.depthwise = nn.Sequential(depthwise, unit.depthwise[1], *gather)
    unit.expand = nn.Sequential(
        conv_e, *([HardShuffle(out_e)] if out_e is not None else []), *unit.expand[1:]
    )
    return True
