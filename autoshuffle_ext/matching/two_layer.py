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

Both methods train M as AutoShuffleNet does, by projected gradient (`penalty_path` with
step="gradient"): the relaxation on L alone, stopping wherever it converges inside the polytope
and rounded there; the penalty method on L + lambda P(M), lambda rising, which ends at a vertex.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..doubly_stochastic import round_to_permutation
from ..kernels import as_stack
from ..ops.penalty import l1l2_penalty
from .penalty_path import PathOptions, PathResult, penalty_path
from .steps import barycenter_starts

__all__ = [
    "TwoLayerProblem",
    "compare_penalty_relaxation",
    "monte_carlo_loss",
    "plot_path",
    "relu_kernel",
    "solve_two_layer",
    "start_points",
    "two_layer_problem",
    "two_layer_problems",
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
    """Teacher (W [..., n, d], a [..., n]) and the scrambled units W_s with W_s[perm[i]] = W[i].

    Leading dimensions hold independent problems (`two_layer_problems`), solved as one batch.
    """

    W: Tensor
    a: Tensor
    W_scrambled: Tensor
    perm: Tensor

    def loss(self, M: Tensor) -> Tensor:
        """L(M) for M [..., n, n] broadcasting against the problems (returns [...]),
        differentiable."""
        U = M @ self.W_scrambled
        a = self.a[..., None]
        quad = lambda K: (a * (K @ a)).sum(dim=(-2, -1))  # noqa: E731
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

    def per_start(self) -> TwoLayerProblem:
        """The same problems with a dimension for starts, so M [..., starts, n, n] fits."""
        return TwoLayerProblem(
            self.W[..., None, :, :],
            self.a[..., None, :],
            self.W_scrambled[..., None, :, :],
            self.perm[..., None, :],
        )


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


def two_layer_problems(
    n: int, d: int, count: int, *, generator: torch.Generator | None = None
) -> TwoLayerProblem:
    """`count` independent `two_layer_problem`s drawn in turn, stacked (batch shape [count]).

    Raises:
        ValueError: count < 1, n < 1 or d < 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    problems = [two_layer_problem(n, d, generator=generator) for _ in range(count)]
    return TwoLayerProblem(
        *(torch.stack([getattr(p, f) for p in problems]) for f in ("W", "a", "W_scrambled", "perm"))
    )


def monte_carlo_loss(
    problem: TwoLayerProblem, M: Tensor, samples: int, *, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """(mean, standard error) of (g(x) - f(x))^2 over `samples` Gaussian inputs, for one
    problem (W [n, d]) and M [n, n]."""
    if problem.W.dim() != 2 or M.shape != (problem.W.shape[0],) * 2:
        raise ValueError(
            f"monte_carlo_loss takes one problem and M [n, n], got W {tuple(problem.W.shape)} "
            f"and M {tuple(M.shape)}"
        )
    d = problem.W.shape[1]
    x = torch.randn(samples, d, generator=generator, dtype=problem.W.dtype)
    student = torch.relu(x @ (M @ problem.W_scrambled).T) @ problem.a
    teacher = torch.relu(x @ problem.W.T) @ problem.a
    sq = (student - teacher).square()
    return sq.mean().item(), (sq.std() / math.sqrt(samples)).item()


# AutoShuffleNet's training for both methods: projected gradient (a raw gradient step, threshold
# at 0, matrix scaling). eta 0.2 converges the relaxation in a few hundred steps at this problem
# scale (|w_k| ~ 1, |a_k| in [0.5, 1.5]). The penalty is on from the first step, lambda growing
# 1% a step; faster growth (3%) overshoots: a step of eta * lambda * dP/dM then zeroes whole
# rows of near-ties, which the projection resets to uniform (measured).
TWO_LAYER_DEFAULTS: dict[str, Any] = {
    "step": "gradient",
    "eta": 0.2,
    "warmup": 0,
    "lambda0": 0.02,
    "growth": 1.01,
    "max_iters": 500,
    "scaling_iters": 10,
    "stall_tol": 1e-6,
}


def start_points(
    n: int, starts: int, spread: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """[starts, n, n] float64: the barycenter, then random doubly stochastic points mixed into it
    with weight `spread` (all the barycenter when starts == 1).

    Raises:
        ValueError: starts < 1 or spread outside [0, 1].
    """
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    noise = torch.rand(starts - 1, n, n, generator=generator, dtype=torch.float64)
    return barycenter_starts(noise, spread, scaling_iters=50)


def solve_two_layer(
    problem: TwoLayerProblem,
    M0: Tensor | None = None,
    *,
    penalty: bool = True,
    record: bool = False,
    **options: Any,
) -> tuple[Tensor, PathResult]:
    """Learns M on L(M) (+ lambda P(M) with `penalty`) from M0 (default: the barycenter),
    then rounds each M to its maximum-weight permutation. M0 [..., n, n] must broadcast
    against the problem's batch. Options are `PathOptions` fields (defaults:
    `TWO_LAYER_DEFAULTS`; e.g. step="mirror", eta=0.5 for entropic mirror descent).

    Returns (perm [..., n], the path); recovery means perm == problem.perm.
    """
    n = problem.W.shape[-2]
    if M0 is None:
        M0 = torch.full((n, n), 1.0 / n, dtype=problem.W.dtype)
    shape = torch.broadcast_shapes(M0.shape, (*problem.perm.shape, n))
    M0 = M0.to(problem.W.dtype).expand(shape).contiguous()
    opts = PathOptions(penalty=penalty, **{**TWO_LAYER_DEFAULTS, **options})
    path = penalty_path(problem, M0, opts, record=record)
    return round_to_permutation(path.M), path


def compare_penalty_relaxation(
    n: int,
    d: int,
    trials: int,
    *,
    starts: int = 1,
    spread: float = 0.5,
    seed: int = 0,
    **options: Any,
) -> dict[str, float]:
    """Both methods on `trials` seeded problems, each from the same `starts` points (see
    `start_points`); every (problem, start) pair is one run.

    Returns the fraction of runs recovering the planted permutation (`penalty`,
    `relaxation`), the fraction of problems where the start of least loss at its rounding
    recovers it (`*_best`), the mean loss at the rounded permutations (`*_loss`), and where the
    relaxation ends before rounding: mean loss (`relaxation_final_loss`), penalty P(M)
    (`relaxation_penalty`) and Frobenius distance to its rounding (`relaxation_distance`); the
    same two for the penalty method (`penalty_penalty`, `penalty_distance`).
    """
    gen = torch.Generator().manual_seed(seed)
    problems = two_layer_problems(n, d, trials, generator=gen).per_start()
    M0 = start_points(n, starts, spread, generator=gen)
    eye = torch.eye(n, dtype=torch.float64)
    out: dict[str, float] = {}
    for name, penalty in (("penalty", True), ("relaxation", False)):
        perm, path = solve_two_layer(problems, M0, penalty=penalty, **options)
        P = eye[perm]
        hit = (perm == problems.perm).all(dim=-1)
        loss = problems.loss(P)
        out[name] = hit.double().mean().item()
        out[f"{name}_best"] = (
            hit.gather(-1, loss.argmin(dim=-1, keepdim=True)).double().mean().item()
        )
        out[f"{name}_loss"] = loss.mean().item()
        out[f"{name}_final_loss"] = problems.loss(path.M).mean().item()
        out[f"{name}_penalty"] = l1l2_penalty(as_stack(path.M)).mean().item()
        out[f"{name}_distance"] = torch.linalg.matrix_norm(path.M - P).mean().item()
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
