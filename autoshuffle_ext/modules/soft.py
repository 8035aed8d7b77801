"""`SoftShuffle`: what the relaxed shuffles share. Each mixes the channels with a [C, C] doubly
stochastic matrix (`matrix()`) while it trains; rounding that matrix gives the permutation
(`perm`) that inference applies as an exact gather."""

from __future__ import annotations

import abc

import torch

from ..doubly_stochastic import (
    distance_to_permutation,
    permutation_matrix,
    round_to_permutation,
)
from ..ops.channel_gather import fixed_shuffle_perm
from ..ops.penalty import l1l2_penalty
from .coverage import group_coverage
from .hard import HardShuffle
from .structure import LearnedStructure

__all__ = ["SoftShuffle"]


class SoftShuffle(LearnedStructure):
    """Base of `LearnedShuffle` and `SinkhornShuffle`.

    Subclasses set `num_channels` and `groups` (the group count of the shuffle it replaces, or
    None) and define `matrix()`.
    """

    num_channels: int
    groups: int | None
    param_group = "shuffle"  # the training program's --shuffle-lr

    def __init__(
        self, num_channels: int, groups: int | None, reference: torch.Tensor | None = None
    ) -> None:
        """Checks and records the shape, and the permutation that the report's "moved" counts
        against: `reference` (the perm a converted shuffle started from), else the fixed
        shuffle of `groups`.

        Raises:
            TypeError: num_channels or groups not an int.
            ValueError: num_channels < 1, groups < 1, or groups not dividing num_channels.
        """
        super().__init__()
        for name, value in (("num_channels", num_channels), ("groups", groups)):
            if value is None and name == "groups":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if groups is not None and num_channels % groups:
            raise ValueError(
                f"num_channels must be divisible by groups, got {num_channels} and {groups}"
            )
        self.num_channels = num_channels
        self.groups = groups
        if reference is None and groups is not None:
            reference = fixed_shuffle_perm(num_channels, groups)
        elif reference is not None:
            reference = reference.detach().clone()
        # Not in the state dict: checkpoints keep their keys; the constructor sets it again.
        self.register_buffer("reference", reference, persistent=False)

    @abc.abstractmethod
    def matrix(self) -> torch.Tensor:
        """The doubly stochastic mixing matrix M [C, C]: `y[:, i] = sum_j M[i, j] x[:, j]`."""

    @property
    def perm(self) -> torch.Tensor:
        """M rounded to the permutation of maximum weight (1-D int64, computed on access):
        `out[:, c] = x[:, perm[c]]`, i.e. `M[c, perm[c]]` is the entry kept."""
        with torch.no_grad():
            return round_to_permutation(self.matrix())

    def distance_to_permutation(self) -> torch.Tensor:
        """Frobenius distance from M to its rounded permutation matrix."""
        with torch.no_grad():
            return distance_to_permutation(self.matrix())

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """Training: the C x C mixing product at every pixel; inference: none (a gather)."""
        return inputs[0][0].numel() * self.num_channels, 0

    def to_inference(self) -> HardShuffle:
        """The exact gather this shuffle rounds to."""
        return HardShuffle(self.perm)

    def report(self) -> dict:
        """channels, penalty (P(M), unweighted), distance (to the rounded permutation), moved
        (channels whose rounded source differs from `reference`: the start perm, or the fixed
        shuffle; None without either), density (the fraction of M's entries that are not zero),
        coverage (`group_coverage` of the rounded perm per output group; None without groups)."""
        with torch.no_grad():
            matrix = self.matrix()
            perm = round_to_permutation(matrix)
            moved = None
            if self.reference is not None:
                moved = int((perm != self.reference.to(perm.device)).sum())
            return {
                "channels": self.num_channels,
                "penalty": float(l1l2_penalty(matrix)),
                # From the perm already rounded: distance_to_permutation would round again.
                "distance": float(
                    torch.linalg.matrix_norm(matrix - permutation_matrix(perm, matrix.dtype))
                ),
                "moved": moved,
                "density": float((matrix != 0).sum()) / matrix.numel(),
                "coverage": None
                if self.groups is None
                else group_coverage(perm, self.groups).tolist(),
            }
