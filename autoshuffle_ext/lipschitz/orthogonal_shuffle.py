"""`OrthogonalShuffle`: a learned channel shuffle that is orthogonal, hence 1-Lipschitz, at every
step of training.

A permutation matrix is both doubly stochastic and orthogonal. `LearnedShuffle` relaxes it to
the doubly stochastic matrices; this shuffle relaxes it to the orthogonal ones: M = Björck(A) for
an unconstrained A [C, C], and the loss adds AutoShuffleNet's l1-l2 penalty on |M|,
`P(M) = sum_i (|M_i,:|_1 - |M_i,:|_2) + sum_j (|M_:,j|_1 - |M_:,j|_2)`. On orthogonal matrices
every row and column has l2 norm 1, so P(M) >= 0 with equality exactly at the signed
permutations. `freeze` rounds M to the nearest signed permutation (a maximum-weight assignment
on |M|, the sign of each kept entry): a `SignedShuffle` (a `HardShuffle` when no sign is
negative), which `fold_signed_shuffle` can merge into the next conv or linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..doubly_stochastic import round_to_permutation
from ..modules.hard import HardShuffle, check_channels
from ..modules.structure import LearnedStructure
from ..ops.channel_gather import check_permutation
from ..ops.mixing import shuffle_mix
from ..ops.penalty import l1l2_penalty
from ._checks import check_int, check_real
from .bjorck import (
    DEFAULT_BJORCK_ITERS,
    DEFAULT_POWER_ITERS,
    bjorck_orthonormalize,
    orthogonality_error,
)
from .eval_cache import cached_in_eval
from .signed_shuffle import SignedShuffle

__all__ = ["DEFAULT_ORTHOGONAL_PENALTY_WEIGHT", "OrthogonalShuffle"]

# lambda of P(M): LearnedShuffle's default.
DEFAULT_ORTHOGONAL_PENALTY_WEIGHT = 0.5
INITS = ("random", "identity")


class OrthogonalShuffle(LearnedStructure):
    """Drop-in channel shuffle `y[:, i] = sum_j M[i, j] x[:, j]` with M = Björck(weight)
    orthogonal: [N, C, ...] -> [N, C, ...].

    Args:
        num_channels: C, the size of dim 1 of the input (>= 1).
        init: "random" (a random orthogonal matrix), "identity", or a perm tensor (int64 [C]) to
            start from (M[i, perm[i]] = 1); plus `noise` times a standard normal matrix.
        penalty_weight: lambda, the factor of P(M) in `penalty()`.
        bjorck_iters, power_iters: of the orthonormalisation (`bjorck_orthonormalize`).
        noise: the scale of the random part of the start (>= 0).
        generator: for the random start.

    Parameter: `weight` [C, C] (unconstrained; the structure parameter, in the optimizer group
    "shuffle" like the other learned shuffles). The forward runs the fused mixing op, which
    also returns P(M); `penalty()` reuses it while the weight is unchanged. No projection is
    needed: M is orthogonal by construction. In evaluation mode M is computed once.

    Raises:
        TypeError: num_channels not an int, a perm init not an int64 tensor, a penalty_weight
            or noise not a number.
        ValueError: num_channels < 1, an unknown init, a perm init that is not a permutation of
            C channels, a negative or non-finite penalty_weight or noise; in the forward, an
            input not [N, C, ...].
    """

    param_group = "shuffle"  # the training program's --shuffle-lr

    def __init__(
        self,
        num_channels: int,
        init: str | torch.Tensor = "random",
        penalty_weight: float = DEFAULT_ORTHOGONAL_PENALTY_WEIGHT,
        *,
        bjorck_iters: int = DEFAULT_BJORCK_ITERS,
        power_iters: int = DEFAULT_POWER_ITERS,
        noise: float = 1e-2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_channels = C = check_int("num_channels", num_channels, 1)
        self.penalty_weight = check_real("penalty_weight", penalty_weight, low=0.0)
        self.bjorck_iters = check_int("bjorck_iters", bjorck_iters, 1)
        self.power_iters = check_int("power_iters", power_iters, 1)
        noise = check_real("noise", noise, low=0.0)
        if isinstance(init, torch.Tensor):
            check_permutation(init, C, name="init")
            start = torch.zeros(C, C)
            start[torch.arange(C), init.cpu()] = 1.0
        elif init == "identity":
            start = torch.eye(C)
        elif init == "random":
            start = nn.init.orthogonal_(torch.empty(C, C), generator=generator)
        else:
            raise ValueError(f"init must be one of {INITS} or a perm tensor, got {init!r}")
        start += noise * torch.randn(C, C, generator=generator)
        self.weight = nn.Parameter(start)

    def matrix(self) -> torch.Tensor:
        """M = Björck(weight) [C, C], orthogonal (differentiable), recomputed at every call."""
        return bjorck_orthonormalize(self.weight, self.bjorck_iters, power_iters=self.power_iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        M = cached_in_eval(self, (self.weight,), self.matrix)
        y, p = shuffle_mix(x, M)
        self.remember_penalty(p)  # `penalty()` reuses it while the weight is unchanged
        return y

    def raw_penalty(self) -> torch.Tensor:
        """P(M) (0-d), differentiable in the weight: 0 exactly when M is a signed permutation."""
        return l1l2_penalty(self.matrix())

    @property
    def perm(self) -> torch.Tensor:
        """|M| rounded to the permutation of maximum weight (int64 [C]): `out[:, c] = +-x[:,
        perm[c]]`."""
        with torch.no_grad():
            return round_to_permutation(self.matrix().abs())

    def signed_permutation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(perm, signs): the signed permutation nearest M, signs[c] = sign(M[c, perm[c]]) (+1
        for a zero), float32 [C]."""
        with torch.no_grad():
            M = self.matrix()
            perm = round_to_permutation(M.abs())
            kept = M.gather(1, perm[:, None])[:, 0]
            signs = torch.where(kept < 0, -1.0, 1.0).to(torch.float32)
            return perm, signs

    def distance_to_signed_permutation(self) -> torch.Tensor:
        """Frobenius distance from M to its rounded signed permutation matrix (0-d)."""
        with torch.no_grad():
            M = self.matrix()
            perm, signs = self.signed_permutation()
            S = torch.zeros_like(M)
            S[torch.arange(self.num_channels, device=M.device), perm] = signs.to(M.dtype)
            return torch.linalg.matrix_norm(M - S)

    def to_inference(self) -> nn.Module:
        """The exact signed gather M rounds to: a `SignedShuffle`, or a `HardShuffle` when every
        kept entry is positive."""
        perm, signs = self.signed_permutation()
        if bool((signs > 0).all()):
            return HardShuffle(perm)
        return SignedShuffle(perm, signs)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """sigma_max(M): 1 up to the orthonormalisation's error."""
        return float(torch.linalg.matrix_norm(self.matrix().double(), ord=2))

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """Training: the C x C mixing product at every pixel; inference: none (a gather)."""
        return inputs[0][0].numel() * self.num_channels, 0

    def report(self) -> dict:
        """channels, penalty (P(M), unweighted), distance (to the rounded signed permutation),
        negatives (signs -1 in it), orthogonality (max |sigma - 1| of M)."""
        with torch.no_grad():
            M = self.matrix()
            _, signs = self.signed_permutation()
            return {
                "channels": self.num_channels,
                "penalty": float(l1l2_penalty(M)),
                "distance": float(self.distance_to_signed_permutation()),
                "negatives": int((signs < 0).sum()),
                "orthogonality": float(orthogonality_error(M)),
            }

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_eval_cache": None}

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, penalty_weight={self.penalty_weight}"
