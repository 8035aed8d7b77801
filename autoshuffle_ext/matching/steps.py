"""Moves inside the Birkhoff polytope for a (penalised) objective with gradient H at M.

* `mirror_step`: exponentiated gradient then matrix scaling (entropic mirror descent; the
  scaling is the KL projection back onto the doubly stochastic matrices). Stays strictly inside
  the polytope, batched, no host synchronisation; the step is normalised by the gradient's range
  so that one `eta` fits every problem scale.
* `frank_wolfe_step`: the vertex minimising <H, Q> (a linear assignment, solved on the host by
  scipy), then the exact minimiser of a quadratic model along Q - M. Stays inside by convexity.
* `projected_step`: AutoShuffleNet's update, a gradient step then thresholding at 0 and matrix
  scaling (`project_doubly_stochastic_`), the step normalised by the gradient's range.
* `gradient_step`: the same update with the raw gradient, M - eta * H: steps shrink with the
  gradient, so the plain relaxation converges to a stationary point (the paper's training).

All take and return M of shape [..., n, n] and keep its dtype and device: the solvers run them in
float32 (`solvers.py`), the two-layer example in float64. `barycenter_starts` builds the points
they start from; `round_to_permutation` rounds where they end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..doubly_stochastic import linear_assignment, project_doubly_stochastic_
from ..kernels import as_stack

__all__ = [
    "assignment_vertices",
    "barycenter_starts",
    "frank_wolfe_step",
    "gradient_step",
    "mirror_step",
    "projected_step",
]


def _normalised(H: Tensor) -> Tensor:
    """H shifted and scaled to [0, 1] per matrix (a constant shift does not change a step)."""
    low = H.amin(dim=(-2, -1), keepdim=True)
    span = H.amax(dim=(-2, -1), keepdim=True) - low
    return (H - low) / span.clamp_min(torch.finfo(H.dtype).tiny)


def assignment_vertices(H: Tensor) -> Tensor:
    """The permutation matrices Q minimising <H, Q> (Q[..., i, perm[i]] = 1), H's shape."""
    perm = linear_assignment(H, maximize=False)
    return torch.zeros_like(H).scatter_(-1, perm[..., None], 1.0)


def barycenter_starts(noise: Tensor, spread: float, scaling_iters: int) -> Tensor:
    """Start points [..., k + 1, n, n]: the barycenter (every entry 1/n), then the k random
    non-negative matrices of `noise` [..., k, n, n], scaled towards doubly stochastic (a copy:
    `noise` is left as it is) and each mixed into the barycenter with weight `spread`.
    """
    n, k = noise.shape[-1], noise.shape[-3]
    shape = (*noise.shape[:-3], k + 1, n, n)
    M = torch.full(shape, 1.0 / n, dtype=noise.dtype, device=noise.device)
    if k > 0:
        near = noise.clone(memory_format=torch.contiguous_format)
        project_doubly_stochastic_(as_stack(near), iters=scaling_iters)
        M[..., 1:, :, :] = (1 - spread) * M[..., 1:, :, :] + spread * near
    return M


def mirror_step(M: Tensor, H: Tensor, eta: float, scaling_iters: int = 5) -> Tensor:
    """M * exp(-eta * H / range(H)), rescaled towards doubly stochastic (a new tensor)."""
    M = M * torch.exp(-eta * _normalised(H))
    project_doubly_stochastic_(as_stack(M), iters=scaling_iters, polish=0)
    return M


def projected_step(M: Tensor, H: Tensor, eta: float, scaling_iters: int = 10) -> Tensor:
    """Threshold + scaling of M - (eta / n) * H / range(H) (a new tensor).

    The step moves an entry by at most eta / n, i.e. eta times the barycenter's entries.
    """
    n = M.shape[-1]
    M = M - (eta / n) * _normalised(H)
    project_doubly_stochastic_(as_stack(M), iters=scaling_iters)
    return M


def gradient_step(M: Tensor, H: Tensor, eta: float, scaling_iters: int = 10) -> Tensor:
    """Threshold + scaling of M - eta * H (a new tensor)."""
    M = M - eta * H
    project_doubly_stochastic_(as_stack(M), iters=scaling_iters)
    return M


def frank_wolfe_step(
    M: Tensor, H: Tensor, curvature_of: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Frank-Wolfe step on a model m(M + tD) = m(M) + t <H, D> + t^2 curvature_of(D).

    For the relaxations the model is exact; with a concave penalty linearised at M it is an
    upper bound (the penalty lies below its tangent), so the true objective decreases too.

    Returns:
        (new M, vertex Q, slope <H, Q - M>, curvature), slope and curvature of shape M[..., 0, 0].
    """
    Q = assignment_vertices(H)
    D = Q - M
    slope = (H * D).sum(dim=(-2, -1))
    curv = curvature_of(D)
    # Minimiser on [0, 1] of slope t + curv t^2: the stationary point if convex, else an end.
    interior = (-slope / (2 * curv).clamp_min(torch.finfo(M.dtype).tiny)).clamp(0.0, 1.0)
    end = (slope + curv < 0).to(M.dtype)
    t = torch.where(curv > 0, interior, end)
    return M + t[..., None, None] * D, Q, slope, curv
