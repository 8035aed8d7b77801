"""`make_shuffle`: one switch between the shuffle kinds a model can be built with."""

from __future__ import annotations

from torch import nn

from .hard import FixedShuffle
from .learned import LearnedShuffle
from .sinkhorn import SinkhornShuffle

__all__ = ["SHUFFLE_KINDS", "make_shuffle"]

SHUFFLE_KINDS = ("fixed", "learned", "sinkhorn", "none")


def make_shuffle(kind: str, num_channels: int, groups: int, **options) -> nn.Module:
    """A shuffle of `num_channels` channels standing where a `groups`-group shuffle stands.

    kind: "fixed" (ShuffleNet's), "learned" (AutoShuffleNet's `LearnedShuffle`), "sinkhorn" (the
    convex relaxation) or "none" (identity). `options` go to the learned/sinkhorn constructor.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "fixed":
        return FixedShuffle(num_channels, groups)
    if kind == "learned":
        return LearnedShuffle(num_channels, groups, **options)
    if kind == "sinkhorn":
        return SinkhornShuffle(num_channels, groups, **options)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"shuffle kind must be one of {SHUFFLE_KINDS}, got {kind!r}")
