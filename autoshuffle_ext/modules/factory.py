"""`make_shuffle`: one switch between the shuffle kinds a model can be built with."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.channel_gather import check_permutation, fixed_shuffle_perm
from .hard import FixedShuffle, HardShuffle
from .learned import LearnedShuffle
from .sinkhorn import SinkhornShuffle

__all__ = ["SHUFFLE_KINDS", "make_shuffle"]

SHUFFLE_KINDS = ("fixed", "learned", "random", "sinkhorn", "none")


def make_shuffle(
    kind: str,
    num_channels: int,
    groups: int | None,
    *,
    perm: torch.Tensor | None = None,
    **options,
) -> nn.Module:
    """A shuffle of `num_channels` channels standing where a shuffle stands: ShuffleNet's of
    `groups` groups, or, given `perm`, that permutation (`out[:, c] = x[:, perm[c]]`, e.g. the
    one `convert_shuffles` read off a network; `groups` may then be None).

    kind: "fixed" (the shuffle as it is: `FixedShuffle`, or a `HardShuffle` of `perm`),
    "learned" (AutoShuffleNet's `LearnedShuffle`, starting from the shuffle unless `options`
    name another init), "random" (a `HardShuffle` of a random permutation drawn once: the
    control that separates "any mixing across groups" from "the right mixing"), "sinkhorn" (the
    convex relaxation) or "none" (identity). `options` go to the learned/sinkhorn constructor;
    "random" takes only `generator` (a `torch.Generator`, for a seeded draw).

    Raises:
        ValueError: unknown kind; neither groups nor perm.
        TypeError, ValueError: a perm that is not a permutation of num_channels.
        TypeError: options that "random" does not take.
    """
    if kind not in SHUFFLE_KINDS:
        raise ValueError(f"shuffle kind must be one of {SHUFFLE_KINDS}, got {kind!r}")
    if perm is None and groups is None:
        raise ValueError("make_shuffle needs groups or perm, got neither")
    if perm is not None:
        check_permutation(perm, num_channels)
        if groups is not None and not torch.equal(perm, fixed_shuffle_perm(num_channels, groups)):
            groups = None  # groups names the shuffle that perm is, or nothing
    if kind == "fixed":
        return HardShuffle(perm) if groups is None else FixedShuffle(num_channels, groups)
    if kind in ("learned", "sinkhorn"):
        if perm is not None:
            options = {"init": perm, **options}
        cls = LearnedShuffle if kind == "learned" else SinkhornShuffle
        return cls(num_channels, groups, **options)
    if kind == "random":
        extra = sorted(set(options) - {"generator"})
        if extra:
            raise TypeError(f"shuffle kind 'random' takes only generator, got {extra}")
        return HardShuffle(torch.randperm(num_channels, generator=options.get("generator")))
    return nn.Identity()
