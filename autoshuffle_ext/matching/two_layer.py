"""The paper's two-layer network example, with an exact population loss.

Teacher: f(x) = sum_k a_k relu(w_k . x), x ~ N(0, I_d). The student is given the teacher's
hidden units in an unknown order, `W_s[perm[i]] = w_i`, and learns a doubly stochastic M mixing
them: its hidden weights are the rows of U = M W_s, so g(x) = sum_i a_i relu(u_i . x), and
M = P (P[i, perm[i]] = 1) gives g = f. The population loss

    L(M) = E_x[(g(x) - f(x))^2] = a^T K(U, U) a - 2 a^T K(U, W) a + a^T K(W, W) a

is exact through the arc-cosine kernel of degree 1 (Cho & Saul 2009):

    K(u, v) = E[relu(u . x) relu(v . x)] = |u| |v| (sin t + (pi - t) cos t) / (2 pi),

t the angle between u and v. In c = cos t the bracket is J(c) = sqrt(1 - c^2) + (pi - acos c) c
with J'(c) = pi - acos c: finite at c = +-1, where differentiating acos itself gives inf * 0.
Here J has that derivative written out, so L and its gradient in M are exact everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .penalty_path import PathOptions, PathResult, penalty_path
from .steps import round_to_perms

__all__ = [
    "TwoLayerProblem",
    "compare_penalty_relaxation",
    "monte_carlo_loss",
    "plot_path",
    "relu_kernel",
    "solve_two_layer",
    "two_layer_problem",
]


class _ArcCosJ(torch.autograd.Function):
    """J(c) = sqrt(1 - c^2) + (pi - acos c) c with dJ/dc = pi - acos c (c clamped to [-1, 1])."""

    @staticmethod
    def forward(ctx: Any, c: Tensor) -> Tensor:
        c = c.clamp(-1.0, 1.0)
        theta = torch.acos(c)
        ctx.save_for_backward(theta)
        return torch.sqrt((1 - c * c).clamp_min(0)) + (math.pi - theta) * c

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (theta,) = ctx.saved_tensors
        return grad * (math.pi - theta)


def relu_kernel(U: Tensor, V: Tensor) -> Tensor:
    """E_x[relu(u . x) relu(v . x)] for x ~ N(0, I): rows of U [..., m, d] and V [..., k, d]
    give [..., m, k]. Differentiable (finite gradients for parallel rows too); rows must be
    non-zero."""
    nu = torch.linalg.vector_norm(U, dim=-1)
    nv = torch.linalg.vector_norm(V, dim=-1)
    scale = nu[..., :, None] * nv[..., None, :]
    cos = (U @ V.mT) / scale
    return scale * _ArcCosJ.apply(cos) / (2 * math.pi)


@dataclass(frozen=True)
class TwoLayerProblem:
    """Teacher (W [n, d], a [n]) and the scrambled units W_s with W_s[perm[i]] = W[i]."""

    W: Tensor
    a: Tensor
    W_scrambled: Tensor
    perm: Tensor

    def loss(self, M: Tensor) -> Tensor:
        """L(M) for M [..., n, n] (returns [...]), differentiable."""
        U = M @ self.W_scrambled
        a = self.a
        quad = lambda K: (a * (K @ a)).sum(-1)  # noqa: E731
        return (
            quad(relu_kernel(U, U))
            - 2 * quad(relu_kernel(U, self.W))
            + quad(relu_kernel(self.W, self.W))
        )

    # The interface of `penalty_path`'s objective.
    def value(self, M: Tensor) -> Tensor:
        return self.loss(M)

    def grad(self, M: Tensor) -> Tensor:
        with torch.enable_grad():
            M = M.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss(M).sum(), M)
        return g


def two_layer_problem(
    n: int, d: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> TwoLayerProblem:
    """Random teacher: w_k ~ N(0, I_d / d), output weights a with magnitudes evenly spaced in
    [0.5, 1.5] (shuffled, random signs: well separated, so every unit is identifiable), and a
    uniform random scrambling permutation.

    Raises:
        ValueError: n < 1 or d < 1.
    """
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got n={n}, d={d}")
    W = torch.randn(n, d, generator=generator, dtype=dtype) / math.sqrt(d)
    sign = torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1
    magnitude = torch.linspace(0.5, 1.5, n, dtype=dtype)[torch.randperm(n, generator=generator)]
    a = sign * magnitude
    perm = torch.randperm(n, generator=generator)
    W_scrambled = torch.empty_like(W)
    W_scrambled[perm] = W
    return TwoLayerProblem(W, a, W_scrambled, perm)


def monte_carlo_loss(
    problem: TwoLayerProblem, M: Tensor, samples: int, *, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """(mean, standard error) of (g(x) - f(x))^2 over `samples` Gaussian inputs, M [n, n]."""
    d = problem.W.shape[1]
    x = torch.randn(samples, d, generator=generator, dtype=problem.W.dtype)
    student = torch.relu(x @ (M @ problem.W_scrambled).T) @ problem.a
    teacher = torch.relu(x @ problem.W.T) @ problem.a
    sq = (student - teacher).square()
    return sq.mean().item(), (sq.std() / math.sqrt(samples)).item()


TWO_LAYER_DEFAULTS: dict[str, Any] = {"eta": 0.5, "warmup": 200, "growth": 1.05, "max_iters": 1000}


def solve_two_layer(
    problem: TwoLayerProblem, *, penalty: bool = True, record: bool = False, **options: Any
) -> tuple[Tensor, PathResult]:
    """Learns M from the barycenter by mirror descent on L(M) (+ lambda P(M) with `penalty`),
    then rounds. Options are `PathOptions` fields (defaults: `TWO_LAYER_DEFAULTS`).

    Returns (perm [n], the path); recovery means perm == problem.perm.
    """
    n = problem.W.shape[0]
    opts = PathOptions(penalty=penalty, **{**TWO_LAYER_DEFAULTS, **options})
    M0 = torch.full((n, n), 1.0 / n, dtype=problem.W.dtype)
    path = penalty_path(problem, M0, opts, record=record)
    return round_to_perms(path.M), path


def compare_penalty_relaxation(
    n: int, d: int, trials: int, *, seed: int = 0, **options: Any
) -> dict[str, float]:
    """Recovery rate and mean final loss (at the rounded permutation) of both methods."""
    gen = torch.Generator().manual_seed(seed)
    out = {"penalty": 0.0, "relaxation": 0.0, "penalty_loss": 0.0, "relaxation_loss": 0.0}
    for _ in range(trials):
        problem = two_layer_problem(n, d, generator=gen)
        for name, penalty in (("penalty", True), ("relaxation", False)):
            perm, _ = solve_two_layer(problem, penalty=penalty, **options)
            P = torch.eye(n, dtype=problem.W.dtype)[perm]
            out[name] += float(torch.equal(perm, problem.perm)) / trials
            out[f"{name}_loss"] += problem.loss(P).item() / trials
    return out


def plot_path(paths: dict[str, PathResult], path_png: str) -> None:
    """Writes a PNG of loss and penalty P(M) per iteration for recorded paths (by label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_pen) = plt.subplots(1, 2, figsize=(10, 4))
    for label, result in paths.items():
        hist = result.history
        # A loss of exactly 0 (the planted permutation) would leave gaps on a log axis.
        ax_loss.semilogy([max(v.item(), 1e-16) for v in hist["objective"]], label=label)
        ax_pen.plot([v.item() for v in hist["penalty"]], label=label)
    ax_loss.set(xlabel="iteration", ylabel="population loss L(M)", title="loss")
    ax_pen.set(xlabel="iteration", ylabel="P(M)", title="l1-l2 penalty")
    for ax in (ax_loss, ax_pen):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path_png, dpi=100)
    plt.close(fig)
