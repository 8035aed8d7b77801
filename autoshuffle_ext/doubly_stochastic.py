"""The Birkhoff polytope: projection onto doubly stochastic matrices, rounding to permutations.

After each optimizer step AutoShuffleNet keeps M (approximately) doubly stochastic by
thresholding (M = max(M, 0)) and matrix scaling (alternate column and row normalisation, i.e.
Sinkhorn-Knopp iterations); a short polish, a few rounds of the dual of the Euclidean projection
onto the polytope, fixes the cases scaling converges slowly on.
At the end M is rounded to the permutation of maximum total weight, an exact linear
assignment, never a per-row argmax that could pick a column twice.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ._extension import extension_available
from .ops.channel_gather import is_permutation
from .ops.penalty import check_square

__all__ = [
    "distance_to_permutation",
    "linear_assignment",
    "permutation_matrix",
    "project_doubly_stochastic_",
    "round_to_permutation",
]

DEFAULT_SCALING_ITERS = 10
DEFAULT_POLISH_ITERS = 12
FIRST_NEWTON_STEPS = 3


def _scale_(M: torch.Tensor, iters: int) -> None:
    # A line whose entries all underflow in a division would be 0 / 0: clamping the sums at the
    # smallest normal number leaves it 0, finite, for the polish to fill.
    tiny = torch.finfo(M.dtype).tiny
    for _ in range(iters):
        M.div_(M.sum(dim=-2, keepdim=True).clamp_(min=tiny))
        M.div_(M.sum(dim=-1, keepdim=True).clamp_(min=tiny))


def _normalise_peak_(M: torch.Tensor, iters: int) -> None:
    """Divides each non-negative matrix of M by its largest entry, so that no sum overflows.

    Scaling (iters > 0) is invariant to that factor. The polish alone (iters == 0) projects M
    itself, which is not, so there only matrices whose largest entry is beyond the dtype's
    resolution of the result (above 1 / eps, or large enough for a sum to overflow) are divided.
    """
    peak = M.amax(dim=(-2, -1), keepdim=True)
    if iters > 0:
        factor = torch.where(peak > 0, peak, 1.0)
    else:
        info = torch.finfo(M.dtype)
        limit = min(1 / info.eps, info.max / (4 * M.shape[-1]))
        factor = torch.where(peak > limit, peak, 1.0)
    M.div_(factor)


def _shift(
    A: torch.Tensor, dim: int, tau: torch.Tensor | None, steps: int, work: torch.Tensor
) -> torch.Tensor:
    """tau with sum over `dim` of max(A - tau, 0) = 1 for every line of A along `dim`.

    Newton's method on that convex, decreasing, piecewise linear function of tau: from the
    left of the root it climbs monotonically, from the right its first step lands left of it,
    and it is exact once the set of positive entries settles. Without a warm start it begins
    at the mean shift, left of the root. No sort, no host sync; `work` is scratch of A's shape.
    """
    if tau is None:
        tau = (A.sum(dim, keepdim=True) - 1) / A.shape[dim]
    for _ in range(steps):
        torch.sub(A, tau, out=work).clamp_(min=0)
        excess = work.sum(dim, keepdim=True) - 1
        # sign() counts the positive entries ~4x faster than a boolean sum on the CPU.
        tau = tau + excess / work.sign_().sum(dim, keepdim=True).clamp_(min=1)
    return tau


def _polish_(M: torch.Tensor, rounds: int) -> None:
    # The Euclidean projection onto the polytope is max(M - u 1^T - 1 v^T, 0) for the dual
    # variables u, v that make every row and column sum to 1. Block coordinate ascent on the
    # dual solves for u given v (rows), then v given u (columns), each warm-started from the
    # round before, where one Newton step mostly suffices. Unlike alternating projections it
    # does not stall where many entries sit at 0 (sparse M late in training).
    if rounds == 0:
        return
    # Two scratch buffers for all rounds: a fresh [B, n, n] temporary per op cost 10x the
    # arithmetic on large stacks (page faults of new allocations).
    shifted, work = torch.empty_like(M), torch.empty_like(M)
    u = v = None
    for r in range(rounds):
        steps = FIRST_NEWTON_STEPS if r == 0 else 1
        u = _shift(M if v is None else torch.sub(M, v, out=shifted), -1, u, steps, work)
        torch.sub(M, u, out=shifted)
        v = _shift(shifted, -2, v, steps, work)
    M.sub_(u).sub_(v).clamp_(min=0)


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
    polish then projects the scaled matrix onto the polytope (Euclidean projection through its
    dual, a few rounds): cheap, batched, never synchronises with the host.

    Args:
        M: [n, n] or [B, n, n] floating tensor (a Parameter's data is fine); an empty one (n == 0
            or B == 0) is returned as it is.
        iters: column + row scaling rounds.
        polish: rounds of the projection's dual after scaling (0 for the paper's scaling alone).

    Returns:
        M itself, non-negative, with columns summing to 1 and rows within about 1e-6 of 1 at
        the defaults, also on the mostly-zero matrices of late training (measured worst case
        8e-7 on 60 x 60 matrices 54-83% zero, where 30 rounds of alternating projections,
        1.4-2.4x as costly, left 2e-3). Finite for every finite M: after thresholding, each
        matrix is divided by its largest entry (which scaling is invariant to), so that no sum
        overflows, however large the entries. A row or column that thresholding leaves all zero
        (or whose entries underflow in that division) is reset to uniform, since no scaling can
        bring it back.

    Raises:
        TypeError / ValueError: M is not a floating [n, n] or [B, n, n] tensor; iters or
            polish < 0.
        ValueError: M holds NaN or inf (checked first, M is left unchanged; one host sync on
            CUDA).

    On the CPU (float32/float64, contiguous) a compiled kernel runs the same steps fused, with
    its sums in M's dtype, vectorised for the CPU's widest ISA; elsewhere, and without the
    compiled library, `project_aten_`.
    """
    check_square(M)
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if polish < 0:
        raise ValueError(f"polish must be >= 0, got {polish}")
    if M.numel() == 0:  # n == 0 or an empty stack: nothing to project
        return M
    if not bool(torch.isfinite(M).all()):
        raise ValueError(
            f"M must be finite to be projected, got NaN or inf entries (shape {tuple(M.shape)}, "
            f"{M.dtype})"
        )
    n = M.shape[-1]
    if _fusable(M):
        stack = M.detach().view(-1, n, n)
        torch.ops.autoshuffle_ext.project_doubly_stochastic_(stack, iters, polish)
        # The kernel writes through a pointer: bump the version as ATen's in-place ops do (the
        # learned shuffle keys its cached penalty and sparse form on it).
        torch.autograd.graph.increment_version(M)
        return M
    return project_aten_(M, iters, polish)


def _fusable(M: torch.Tensor) -> bool:
    """Whether the compiled CPU kernel (csrc/cpu/projection.cpp) projects M: the same steps in
    one pass of loops, instead of some 200 small tensor ops."""
    return (
        M.device.type == "cpu"
        and M.dtype in (torch.float32, torch.float64)
        and M.is_contiguous()
        and extension_available()
    )


if extension_available():

    @torch.library.register_fake("autoshuffle_ext::project_doubly_stochastic_")
    def _(M: torch.Tensor, iters: int, polish: int) -> None:
        return None


def project_aten_(M: torch.Tensor, iters: int, polish: int) -> torch.Tensor:
    """`project_doubly_stochastic_` in ATen ops, on any device (the reference of the CPU kernel;
    the arguments are not checked again)."""
    n = M.shape[-1]
    M.clamp_(min=0)
    _normalise_peak_(M, iters)
    dead_rows = M.sum(dim=-1, keepdim=True) == 0
    dead_cols = M.sum(dim=-2, keepdim=True) == 0
    M.masked_fill_(dead_rows | dead_cols, 1.0 / n)
    _scale_(M, iters)
    _polish_(M, polish)
    return M


def linear_assignment(weights: torch.Tensor, *, maximize: bool) -> torch.Tensor:
    """The assignment of least (with `maximize`, greatest) total weight of each matrix.

    `weights` [n, n] gives an int64 [n] tensor perm, perm[i] = column assigned to row i; [..., n, n]
    gives [..., n]; on weights' device. Solved on the host in float64 by scipy, matrix by matrix.
    Empty weights (n == 0 or no matrices) give an empty perm of that shape.
    """
    if weights.numel() == 0:
        return torch.empty(weights.shape[:-1], dtype=torch.int64, device=weights.device)
    stack = weights.detach().to("cpu", torch.float64).numpy().reshape(-1, *weights.shape[-2:])
    perms = [linear_sum_assignment(w, maximize=maximize)[1] for w in stack]
    perm = torch.as_tensor(np.stack(perms), dtype=torch.int64).reshape(weights.shape[:-1])
    return perm.to(weights.device)


def round_to_permutation(M: torch.Tensor) -> torch.Tensor:
    """The permutation of maximum weight: perm[i] = column assigned to row i.

    `M` [n, n] gives a [n] int64 tensor, [..., n, n] gives [..., n] (one per matrix), on M's
    device (empty for an empty M). With perm, the gather `x[:, perm]` is what the mixing
    `M @ x` becomes once M is a permutation matrix (`M[i, perm[i]] == 1`). Where every row's
    argmax already forms a permutation, that is the answer (no assignment beats every row's
    maximum), which spares the assignment solve near a vertex.

    Raises:
        TypeError: M is not a floating point tensor.
        ValueError: M is not [..., n, n], or holds NaN or inf.
    """
    if not isinstance(M, torch.Tensor):
        raise TypeError(f"M must be a torch.Tensor, got {type(M).__name__}")
    if M.dim() < 2 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"M must have shape [..., n, n], got {tuple(M.shape)}")
    if not M.dtype.is_floating_point:
        raise TypeError(f"M must be a floating point tensor, got {M.dtype}")
    if not bool(torch.isfinite(M).all()):
        raise ValueError("M must be finite to be rounded, got NaN or inf entries")
    if M.numel() == 0:
        return torch.empty(M.shape[:-1], dtype=torch.int64, device=M.device)
    perm = M.argmax(dim=-1)
    if bool(is_permutation(perm).all()):
        return perm
    return linear_assignment(M, maximize=True)


def permutation_matrix(perm: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 0/1 matrix P with P[i, perm[i]] = 1 ([n] -> [n, n], [B, n] -> [B, n, n])."""
    n = perm.shape[-1]
    eye = torch.eye(n, dtype=dtype, device=perm.device)
    return eye[perm]


def distance_to_permutation(M: torch.Tensor) -> torch.Tensor:
    """Frobenius distance from M to its rounded permutation matrix (0-d tensor, or [B])."""
    P = permutation_matrix(round_to_permutation(M), dtype=M.dtype)
    return torch.linalg.matrix_norm(M.detach() - P)
