"""One signature for every solver: `solve(A, B, method, maximize=..., **options) -> MatchResult`.

Methods:

* `penalty`: the penalty path (`penalty_path.py`) on the convex relaxation, rounded, then
  `faq_polish` (option `polish`); `restarts` starts from the barycenter and from random
  points near it, all batched, and keeps the best. The path sees A and B scaled to magnitude
  1; where it degenerates (diagnostics `degenerate`) its last finite iterate is rounded and
  polished instead of a vertex.
* `relaxation`: the same path without the penalty (the convex relaxation solved, then rounded):
  the baseline AutoShuffleNet argues against.
* `faq`, `2opt`: `scipy.optimize.quadratic_assignment`, the reference a user would otherwise
  pick (options go to scipy: e.g. `maxiter`, `tol`, `P0`).

The objective is scipy's: f(perm) = sum_ij A[i, j] B[perm[i], perm[j]]; `maximize=True` for
graph matching (see `problems.py`). A and B may be batches [B, n, n]: the path solvers run them
as one batch, the scipy ones one after the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from scipy.optimize import quadratic_assignment
from torch import Tensor

from ..doubly_stochastic import round_to_permutation
from ..ops.channel_gather import is_permutation
from .penalty_path import PathOptions, penalty_path
from .polish import faq_polish
from .problems import check_pair, qap_objective
from .relaxations import QuadraticRelaxation
from .steps import barycenter_starts

__all__ = ["SOLVERS", "MatchResult", "solve"]

SOLVERS = ("penalty", "relaxation", "faq", "2opt")


@dataclass
class MatchResult:
    """A solver's answer.

    perm: int64 [n] (or [B, n]) on the inputs' device, P[i, perm[i]] = 1 (scipy's `col_ind`).
    objective: float64 0-d (or [B]): f(perm) = sum_ij A[i, j] B[perm[i], perm[j]].
    seconds: wall-clock time of the whole call.
    diagnostics: solver-specific counts (iterations, restarts, ...).
    """

    perm: Tensor
    objective: Tensor
    seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: objective as float(s), perm as 0-based list(s), seconds, diagnostics."""
        return {
            "objective": self.objective.tolist(),
            "permutation": self.perm.tolist(),
            "seconds": self.seconds,
            "diagnostics": self.diagnostics,
        }


def _start_points(like: Tensor, restarts: int, spread: float, seed: int | None) -> Tensor:
    """[..., restarts, n, n]: the barycenter, then random doubly stochastic points near it."""
    n = like.shape[-1]
    noise = like.new_empty((*like.shape[:-2], 0, n, n))
    if restarts > 1:
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        # One draw per start, the barycenter's unused, so that a seed keeps its start points.
        shape = (*like.shape[:-2], restarts, n, n)
        noise = torch.rand(shape, generator=gen, dtype=like.dtype)[..., 1:, :, :].to(like.device)
    return barycenter_starts(noise, spread, scaling_iters=20)


def _optimal(convex: QuadraticRelaxation, perm: Tensor) -> Tensor:
    """Whether the convex relaxation (>= 0 everywhere) is 0 at each permutation of perm
    ([..., restarts, n]), which makes it a global optimum ([..., restarts]); computed in the
    relaxation's dtype.

    For graph matching that is an exact isomorphism, ||A - P B P^T|| = 0.
    """
    A = convex.A
    P = torch.zeros(*perm.shape, perm.shape[-1], dtype=A.dtype, device=A.device)
    P.scatter_(-1, perm[..., None], 1.0)
    return convex.value(P) <= 1e-9 * (A.square().sum(dim=(-2, -1)) + 1)


def _certified(convex: QuadraticRelaxation) -> Callable[[Tensor], bool]:
    """A stopping rule: every problem of the batch has a restart whose row-wise argmax is a
    permutation at which `_optimal` holds.

    A permutation taking every row's largest entry is also the maximum-weight rounding of M, so
    rounding M later returns it.
    """

    def solved(M: Tensor) -> bool:
        perm = M.argmax(dim=-1)
        is_perm = is_permutation(perm)
        if not bool(is_perm.any()):
            return False
        return bool((is_perm & _optimal(convex, perm)).any(dim=-1).all())

    return solved


def _unit_scaled(A: Tensor, B: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """A and B divided by their largest magnitude, per problem, as float32.

    The relaxation then changes by a positive factor only: the indefinite one is bilinear in A
    and B, so each gets its own divisor; the convex one, 1/2 ||A M + sigma M B||^2, mixes them,
    so both get the larger one. The path's lambda is relative to grad g, so it follows the
    same iterates, whatever the instance's magnitude, without overflowing float32.
    """

    def peak(X: Tensor) -> Tensor:
        return X.abs().amax(dim=(-2, -1), keepdim=True)

    scale_a, scale_b = peak(A), peak(B)
    if kind == "convex":
        scale_a = scale_b = torch.maximum(scale_a, scale_b)
    one = torch.ones((), dtype=A.dtype, device=A.device)
    scale_a = torch.where(scale_a > 0, scale_a, one)
    scale_b = torch.where(scale_b > 0, scale_b, one)
    return (A / scale_a).float(), (B / scale_b).float()


def _path_solver(
    A: Tensor,
    B: Tensor,
    maximize: bool,
    *,
    penalty: bool,
    restarts: int = 1,
    spread: float = 0.5,
    seed: int | None = None,
    polish: bool | None = None,
    relaxation: str | None = None,
    **path_options: Any,
) -> tuple[Tensor, dict[str, Any]]:
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    known = {f.name for f in fields(PathOptions)} - {"penalty"}
    unknown = set(path_options) - known
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; known: {sorted(known)}")
    if not penalty:  # the relaxation alone is convex: Frank-Wolfe solves it best (measured)
        path_options.setdefault("step", "frank-wolfe")
        path_options.setdefault("max_iters", 100)
    options = PathOptions(penalty=penalty, **path_options)
    # Measured: the convex relaxation carries the signal for graph matching, but is nearly flat
    # for quadratic assignment (non-negative flows and distances), where FAQ's is better.
    relaxation = relaxation or ("convex" if maximize else "indefinite")
    polish = penalty if polish is None else polish

    # Restarts ride along as a batch dimension right before the matrices.
    A_, B_ = A[..., None, :, :], B[..., None, :, :]
    # The path runs in float32 (half the time of float64 products, same iterates to rounding on
    # the benchmarks) on A and B scaled to magnitude 1; its certificate is checked again, the
    # polish runs, and the objective is measured, in float64 on A and B themselves.
    relaxed = QuadraticRelaxation(
        *_unit_scaled(A_, B_, relaxation), maximize=maximize, kind=relaxation
    )
    convex32 = QuadraticRelaxation(
        *_unit_scaled(A_, B_, "convex"), maximize=maximize, kind="convex"
    )
    M0 = _start_points(A, restarts, spread, seed).float()
    # A degenerate path ends at its last finite iterate, which is rounded and polished as any.
    path = penalty_path(relaxed, M0, options, solved=_certified(convex32))
    perm = round_to_permutation(path.M)
    convex64 = QuadraticRelaxation(A_, B_, maximize=maximize, kind="convex")
    certified = path.solved and bool(_optimal(convex64, perm).any(dim=-1).all())
    exact = QuadraticRelaxation(A_, B_, maximize=maximize, kind="indefinite")
    moves = 0
    if polish and not certified:  # a certified permutation cannot be improved
        perm, moves = faq_polish(exact, perm)
    scores = exact.value(torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)[perm])
    best = scores.argmin(dim=-1)
    perm = torch.take_along_dim(perm, best[..., None, None], dim=-2).squeeze(-2)
    diagnostics = {
        "iterations": path.iterations,
        "certified": certified,
        "restarts": restarts,
        "polish_steps": moves,
        "degenerate": path.degenerate,
    }
    return perm, diagnostics


def _scipy_solver(
    A: Tensor, B: Tensor, maximize: bool, method: str, seed: int | None = None, **options: Any
) -> tuple[Tensor, dict[str, Any]]:
    An, Bn = A.cpu().numpy(), B.cpu().numpy()
    flat_A, flat_B = An.reshape(-1, *An.shape[-2:]), Bn.reshape(-1, *Bn.shape[-2:])
    opts = {"maximize": maximize, "rng": np.random.default_rng(seed), **options}
    perms, iterations = [], []
    for a, b in zip(flat_A, flat_B, strict=True):
        res = quadratic_assignment(a, b, method=method, options=opts)
        perms.append(res.col_ind)
        iterations.append(int(res.nit))
    perm = torch.from_numpy(np.stack(perms)).reshape(A.shape[:-1]).to(A.device)
    return perm, {"iterations": iterations if len(iterations) > 1 else iterations[0]}


def solve(
    A: Tensor | np.ndarray,
    B: Tensor | np.ndarray,
    method: str = "penalty",
    *,
    maximize: bool = False,
    **options: Any,
) -> MatchResult:
    """Finds a permutation optimising f(perm) = sum_ij A[i, j] B[perm[i], perm[j]].

    Args:
        A, B: [n, n] or [B, n, n] tensors or arrays (any real dtype), on A's device. The path
            solvers run their path in float32 on A and B divided by their largest magnitude
            (so the result does not depend on the instance's scale, and `eta` of the
            `gradient` step is relative to magnitude 1), their certificate, polish and the
            objective in float64 on A and B themselves; the assignments are solved on the host.
        method: one of `SOLVERS`.
        maximize: False for quadratic assignment (QAPLIB), True for graph matching, where the
            maximiser of f minimises ||A - P B P^T||_F^2.
        **options: for `penalty`/`relaxation`: `restarts`, `spread` (how far restarts start
            from the barycenter, in [0, 1]), `seed`, `polish`, `relaxation` ("convex" or
            "indefinite") and the fields of `PathOptions` (`step`, `max_iters`, `warmup`,
            `lambda0`, `growth`, `eta`, `scaling_iters`, `vertex_tol`); for `faq`/`2opt`:
            `seed` and scipy's options.

    Returns:
        MatchResult (perm on the inputs' device, exact objective, seconds, diagnostics; for the
        path solvers `degenerate` says that the path stopped at its last finite iterate, short
        of a vertex, which was then rounded and polished).

    Raises:
        TypeError / ValueError: A or B not square, of different shapes or devices, non-finite;
            an unknown method or option; an option out of range.
    """
    start = time.perf_counter()
    A, B = check_pair(A, B)
    if method in ("penalty", "relaxation"):
        perm, diagnostics = _path_solver(A, B, maximize, penalty=method == "penalty", **options)
    elif method in ("faq", "2opt"):
        perm, diagnostics = _scipy_solver(A, B, maximize, method, **options)
    else:
        raise ValueError(f"method must be one of {SOLVERS}, got {method!r}")
    objective = qap_objective(A, B, perm)
    return MatchResult(perm, objective, time.perf_counter() - start, diagnostics)
