"""The Birkhoff polytope: projection onto doubly stochastic matrices, rounding to permutations.

After each optimizer step AutoShuffleNet keeps M (approximately) doubly stochastic by
thresholding (M = max(M, 0)) and matrix scaling (alternate column and row normalisation, i.e.
Sinkhorn-Knopp iterations); a short polish by alternating projections fixes the slow cases.
At the end M is rounded to the permutation of maximum total weight, an exact linear
assignment, never a per-row argmax that could pick a column twice.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .ops.penalty import check_square

__all__ = [
    "distance_to_permutation",
    "permutation_matrix",
    "project_doubly_stochastic_",
    "round_to_permutation",
]

DEFAULT_SCALING_ITERS = 10
DEFAULT_POLISH_ITERS = 30


def _scale_(M: torch.Tensor, iters: int) -> None:
    for _ in range(iters):
        M.div_(M.sum(dim=-2, keepdim=True))
        M.div_(M.sum(dim=-1, keepdim=True))


def _polish_(M: torch.Tensor, iters: int) -> None:
    # Alternating projections between the affine set {unit row and column sums} (closed form)
    # and the non-negative orthant, ending on the orthant.
    n = M.shape[-1]
    for _ in range(iters):
        row_gap = 1 - M.sum(dim=-1, keepdim=True)
        col_gap = 1 - M.sum(dim=-2, keepdim=True)
        total_gap = row_gap.sum(dim=-2, keepdim=True)
        M.add_((row_gap + col_gap) / n - total_gap / (n * n)).clamp_(min=0)


@torch.no_grad()
def project_doubly_stochastic_(
    M: torch.Tensor,
    iters: int = DEFAULT_SCALING_ITERS,
    *,
    polish: int = DEFAULT_POLISH_ITERS,
) -> torch.Tensor:
    """Thresholds M at 0, alternately normalises its columns and rows, then polishes, in place.

    Thresholding and matrix scaling (Sinkhorn-Knopp) are AutoShuffleNet's constraint handling.
    Scaling converges geometrically on dense matrices but slowly near a permutation, where
    entries off every positive diagonal decay only like 1/iters (e.g. [[a, b], [0, c]]). The
    polish, alternating projections onto the unit row/column sums and the non-negative
    orthant, converges fast from the nearby point scaling reaches; it is cheap, batched and
    never synchronises with the host.

    Args:
        M: [n, n] or [B, n, n] floating tensor (a Parameter's data is fine).
        iters: column + row scaling rounds.
        polish: alternating projection rounds after scaling (0 for the paper's scaling alone).

    Returns:
        M itself, non-negative. At the defaults rows and columns sum to 1 within about 1e-4 on
        dense matrices; on matrices that thresholding leaves mostly zero (late in training)
        alternating projections slow down and leave up to about 5e-3 (measured on 60 x 60,
        40-70% zeros), which `polish=300` brings below 1e-6. A row or column that thresholding
        leaves all zero is reset to uniform, since no scaling can bring it back.

    Raises:
        TypeError / ValueError: M is not a floating [n, n] or [B, n, n] tensor; iters or
            polish < 0.
    """
    check_square(M)
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if polish < 0:
        raise ValueError(f"polish must be >= 0, got {polish}")
    n = M.shape[-1]
    M.clamp_(min=0)
    dead_rows = M.sum(dim=-1, keepdim=True) == 0
    dead_cols = M.sum(dim=-2, keepdim=True) == 0
    M.masked_fill_(dead_rows | dead_cols, 1.0 / n)
    _scale_(M, iters)
    _polish_(M, polish)
    return M


def round_to_permutation(M: torch.Tensor) -> torch.Tensor:
    """The permutation of maximum weight: perm[i] = column assigned to row i.

    `M` [n, n] gives a [n] int64 tensor, [B, n, n] gives [B, n], on M's device. With perm, the
    gather `x[:, perm]` is what the mixing `M @ x` becomes once M is a permutation matrix
    (`M[i, perm[i]] == 1`).

    Raises:
        TypeError / ValueError: M is not a floating [n, n] or [B, n, n] tensor, or holds NaN/inf.
    """
    check_square(M)
    weights = M.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(weights).all():
        raise ValueError("M must be finite to be rounded, got NaN or inf entries")
    stack = weights.reshape(-1, *weights.shape[-2:])
    perms = [linear_sum_assignment(w, maximize=True)[1] for w in stack]
    perm = torch.as_tensor(np.stack(perms), dtype=torch.int64).reshape(M.shape[:-1])
    return perm.to(M.device)


def permutation_matrix(perm: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 0/1 matrix P with P[i, perm[i]] = 1 ([n] -> [n, n], [B, n] -> [B, n, n])."""
    n = perm.shape[-1]
    eye = torch.eye(n, dtype=dtype, device=perm.device)
    return eye[perm]


def distance_to_permutation(M: torch.Tensor) -> torch.Tensor:
    """Frobenius distance from M to its rounded permutation matrix (0-d tensor, or [B])."""
    P = permutation_matrix(round_to_permutation(M), dtype=M.dtype)
    return torch.linalg.matrix_norm(M.detach() - P)
