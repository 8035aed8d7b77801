"""`LearnedShuffle`: a channel shuffle whose permutation is learned (AutoShuffleNet).

Training mixes the channels with a doubly stochastic matrix M, `y[:, i] = sum_j M[i, j] x[:, j]`,
and the loss adds `penalty_weight * P(M)`, the exact l1-l2 penalty that vanishes exactly on
permutations. An optimizer hook (`attach_projection`) keeps M doubly stochastic after each step;
`freeze` rounds M to an exact permutation, served by a `HardShuffle` gather.
"""

from __future__ import annotations

import torch
from torch import nn

from ..doubly_stochastic import (
    DEFAULT_SCALING_ITERS,
    distance_to_permutation,
    project_doubly_stochastic_,
    round_to_permutation,
)
from ..ops.mixing import shuffle_mix
from ..ops.penalty import l1l2_penalty
from .hard import HardShuffle, check_channels
from .init import initial_matrix

__all__ = ["LearnedShuffle"]


class LearnedShuffle(nn.Module):
    """Drop-in channel shuffle with a learned doubly stochastic mixing matrix `weight` [C, C].

    Args:
        num_channels: C, the size of dim 1 of the input.
        groups: the group count of the shuffle it replaces (needed by init="shuffle" and by the
            report of channels moved versus the fixed shuffle).
        init: "shuffle" (default: the fixed shuffle blended toward uniform), "identity" or
            "uniform"; see `initial_matrix`.
        penalty_weight: lambda, the factor of P(M) in `penalty()`.
        blend, noise, generator: passed to `initial_matrix`.

    The forward pass runs the fused mixing op, which also returns P(M); `penalty()` reuses that
    value while M is unchanged, so the penalty's gradient joins the mixing backward in one pass.
    """

    def __init__(
        self,
        num_channels: int,
        groups: int | None = None,
        init: str = "shuffle",
        penalty_weight: float = 1.0,
        *,
        blend: float = 0.5,
        noise: float = 1e-2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if penalty_weight < 0:
            raise ValueError(f"penalty_weight must be >= 0, got {penalty_weight}")
        self.num_channels = num_channels
        self.groups = groups
        self.penalty_weight = float(penalty_weight)
        matrix = initial_matrix(
            num_channels, groups, init, blend=blend, noise=noise, generator=generator
        )
        self.weight = nn.Parameter(matrix)
        # P(M) of the last differentiable forward and the version of M it was computed at.
        self._last_penalty: tuple[torch.Tensor, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        y, p = shuffle_mix(x, self.weight)
        if p.requires_grad and not torch.compiler.is_compiling():
            self._last_penalty = (p, self.weight._version)
        return y

    def __getstate__(self) -> dict:
        # The cached penalty belongs to one forward's graph: copies and pickles start without it.
        state = super().__getstate__()
        return {**state, "_last_penalty": None}

    def penalty(self) -> torch.Tensor:
        """`penalty_weight * P(M)` (0-d), differentiable in M."""
        cached = self._last_penalty
        if cached is not None and cached[1] == self.weight._version:
            p = cached[0]
        else:
            p = l1l2_penalty(self.weight)
        return self.penalty_weight * p

    @torch.no_grad()
    def project_(self, iters: int = DEFAULT_SCALING_ITERS) -> None:
        """Brings M back to (approximately) doubly stochastic, in place."""
        project_doubly_stochastic_(self.weight, iters)

    def permutation(self) -> torch.Tensor:
        """M rounded to the permutation of maximum weight (1-D int64)."""
        return round_to_permutation(self.weight)

    def distance_to_permutation(self) -> torch.Tensor:
        """Frobenius distance from M to its rounded permutation matrix."""
        return distance_to_permutation(self.weight)

    def to_hard(self) -> HardShuffle:
        """The exact gather this shuffle rounds to."""
        return HardShuffle(self.permutation())

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, groups={self.groups}, "
            f"penalty_weight={self.penalty_weight}"
        )
