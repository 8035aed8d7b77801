"""`make_shuffle`: one switch between the shuffle kinds a model can be built with."""

from __future__ import annotations

import torch
from torch import nn

from .hard import FixedShuffle, HardShuffle
from .learned import LearnedShuffle
from .sinkhorn import SinkhornShuffle

__all__ = ["SHUFFLE_KINDS", "make_shuffle"]

SHUFFLE_KINDS = ("fixed", "learned", "random", "sinkhorn", "none")


def make_shuffle(kind: str, num_channels: int, groups: int, **options) -> nn.Module:
    """A shuffle of `num_channels` channels standing where a `groups`-group shuffle stands.

    kind: "fixed" (ShuffleNet's), "learned" (AutoShuffleNet's `LearnedShuffle`), "random" (a
    `HardShuffle` of a random permutation drawn once: the control that separates "any mixing
    across groups" from "the right mixing"), "sinkhorn" (the convex relaxation) or "none"
    (identity). `options` go to the learned/sinkhorn constructor; "random" takes only
    `generator` (a `torch.Generator`, for a seeded draw).

    Raises:
        ValueError: unknown kind.
        TypeError: options that "random" does not take.
    """
    if kind == "fixed":
        return FixedShuffle(num_channels, groups)
    if kind == "learned":
        return LearnedShuffle(num_channels, groups, **options)
    if kind == "random":
        extra = sorted(set(options) - {"generator"})
        if extra:
            raise TypeError(f"shuffle kind 'random' takes only generator, got {extra}")
        perm = torch.randperm(num_channels, generator=options.get("generator"))
        return HardShuffle(perm)
    if kind == "sinkhorn":
        return SinkhornShuffle(num_channels, groups, **options)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"shuffle kind must be one of {SHUFFLE_KINDS}, got {kind!r}")
