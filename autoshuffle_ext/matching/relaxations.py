"""Quadratic relaxations of f(perm) = trace(A^T P B P^T) over doubly stochastic matrices M.

Both agree with f on permutation matrices (up to a constant), so minimising them over the
Birkhoff polytope and rounding is a relaxation of the assignment problem. With sigma = -1 for
graph matching (maximise f) and +1 for quadratic assignment (minimise f):

* `convex`: g(M) = 1/2 ||A M + sigma M B||_F^2. Convex; on a permutation ||A P||, ||P B||
  are constants, so g(P) = const + sigma f(P). For graph matching it is the classic
  1/2 ||A M - M B||^2 relaxation (for permutations ||A P - P B|| = ||A - P B P^T||).
* `indefinite`: g(M) = sigma trace(A^T M B M^T), FAQ's relaxation (Vogelstein et al. 2015);
  non-convex, most of its local minima are vertices.

Both are quadratics, so along a direction D, g(M + t D) = g(M) + t <grad g(M), D> + t^2 c(D)
with the curvature c in closed form: exact line search costs two matrix products.

Shapes: A and B are [..., n, n] and broadcast against M [..., n, n]; values are [...].
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["QuadraticRelaxation", "RelaxationKind"]

RelaxationKind = Literal["convex", "indefinite"]


def _inner(X: Tensor, Y: Tensor) -> Tensor:
    return (X * Y).sum(dim=(-2, -1))


class QuadraticRelaxation:
    """g(M) of one kind for one problem (A, B, maximize); see the module docstring."""

    def __init__(self, A: Tensor, B: Tensor, *, maximize: bool, kind: RelaxationKind) -> None:
        if kind not in ("convex", "indefinite"):
            raise ValueError(f"kind must be 'convex' or 'indefinite', got {kind!r}")
        self.A, self.B, self.kind = A, B, kind
        self.At, self.Bt = A.mT, B.mT
        self.sigma = -1.0 if maximize else 1.0

    def _residual(self, M: Tensor) -> Tensor:
        return self.A @ M + self.sigma * (M @ self.B)

    def value(self, M: Tensor) -> Tensor:
        if self.kind == "convex":
            return 0.5 * self._residual(M).square().sum(dim=(-2, -1))
        return self.sigma * _inner(self.A, M @ self.B @ M.mT)

    def grad(self, M: Tensor) -> Tensor:
        if self.kind == "convex":
            R = self._residual(M)
            return self.At @ R + self.sigma * (R @ self.Bt)
        return self.sigma * (self.A @ M @ self.Bt + self.At @ M @ self.B)

    def curvature(self, D: Tensor) -> Tensor:
        """c(D), the coefficient of t^2 in g(M + t D)."""
        if self.kind == "convex":
            return 0.5 * self._residual(D).square().sum(dim=(-2, -1))
        return self.sigma * _inner(self.A, D @ self.B @ D.mT)
