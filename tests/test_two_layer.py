"""The two-layer network example: the closed-form population loss and recovery."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from autoshuffle_ext import project_doubly_stochastic_
from autoshuffle_ext.matching.two_layer import (
    compare_penalty_relaxation,
    monte_carlo_loss,
    plot_path,
    relu_kernel,
    solve_two_layer,
    start_points,
    two_layer_problem,
    two_layer_problems,
)

# Hundreds of steps on 4 x 4 matrices: threads only add contention (5x slower, measured).
pytestmark = pytest.mark.usefixtures("one_thread")


def _random_ds(n: int, gen: torch.Generator) -> torch.Tensor:
    M = torch.rand(n, n, generator=gen, dtype=torch.float64)
    return project_doubly_stochastic_(M, iters=50)


def test_kernel_matches_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(0)
    d, samples = 5, 400_000
    U = torch.randn(4, d, generator=gen, dtype=torch.float64)
    U[3] = -2 * U[0]  # antiparallel rows, and the diagonal gives parallel pairs
    x = torch.randn(samples, d, generator=gen, dtype=torch.float64)
    h = torch.relu(x @ U.T)
    prod = h[:, :, None] * h[:, None, :]
    mean, se = prod.mean(0), prod.std(0) / math.sqrt(samples)
    closed = relu_kernel(U, U)
    assert ((closed - mean).abs() <= 5 * se + 1e-12).all()
    assert closed[0, 3].item() == 0.0


def test_closed_form_loss_matches_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(1)
    problem = two_layer_problem(6, 8, generator=gen)
    for _ in range(3):
        M = _random_ds(6, gen)
        mean, se = monte_carlo_loss(problem, M, 200_000, generator=gen)
        assert abs(problem.loss(M).item() - mean) <= 5 * se


def test_loss_zero_at_planted_perm_with_finite_gradient() -> None:
    problem = two_layer_problem(5, 7, generator=torch.Generator().manual_seed(2))
    P = torch.eye(5, dtype=torch.float64)[problem.perm]
    assert problem.loss(P).item() == pytest.approx(0.0, abs=1e-12)
    grad = problem.grad(P)  # parallel student/teacher rows: acos' is infinite there
    assert torch.isfinite(grad).all() and grad.abs().max().item() < 1e-9


def test_gradient_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    problem = two_layer_problem(4, 6, generator=gen)
    M = _random_ds(4, gen)
    D = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    h = 1e-6
    numeric = (problem.loss(M + h * D) - problem.loss(M - h * D)).item() / (2 * h)
    assert (problem.grad(M) * D).sum().item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_batched_problems_match_one_by_one() -> None:
    problems = two_layer_problems(4, 6, 3, generator=torch.Generator().manual_seed(6))
    M = _random_ds(4, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(6)
    for k in range(3):
        one = two_layer_problem(4, 6, generator=gen)
        assert torch.equal(one.perm, problems.perm[k])
        assert problems.loss(M)[k].item() == pytest.approx(one.loss(M).item(), rel=1e-12)


def test_penalty_recovers_planted_perms_and_relaxation_stays_inside() -> None:
    # 8 starts per instance, the one of least loss at its rounding kept: a trial's answer.
    rates = compare_penalty_relaxation(4, 16, 10, starts=8, seed=4)
    assert rates["penalty_best"] >= 0.8
    assert rates["penalty_best"] >= rates["relaxation_best"]
    # The paper's point: unpenalised, M ends away from every permutation; penalised, at one.
    assert rates["relaxation_distance"] > 0.1 and rates["relaxation_penalty"] > 0.2
    assert rates["penalty_distance"] < 0.05 and rates["penalty_penalty"] < 0.1


def test_penalty_path_ends_at_a_permutation_and_plots(tmp_path: Path) -> None:
    problem = two_layer_problem(4, 10, generator=torch.Generator().manual_seed(5))
    perm, path = solve_two_layer(problem, penalty=True, record=True)
    assert torch.equal(perm.sort().values, torch.arange(4))
    assert path.history["penalty"][-1].item() < 0.1 * path.history["penalty"][0].item()
    _, relaxed = solve_two_layer(problem, penalty=False, record=True, max_iters=50)
    png = tmp_path / "path.png"
    plot_path({"penalty": path, "relaxation": relaxed}, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="starts must be >= 1, got 0"):
        start_points(4, 0, 0.5)
    with pytest.raises(ValueError, match=r"spread must be in \[0, 1\], got 1.5"):
        start_points(4, 2, 1.5)
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        two_layer_problems(4, 6, 0)
    problems = two_layer_problems(4, 6, 2, generator=torch.Generator().manual_seed(8))
    with pytest.raises(ValueError, match=r"one problem and M \[n, n\], got W \(2, 4, 6\)"):
        monte_carlo_loss(problems, torch.eye(4, dtype=torch.float64), 10)
