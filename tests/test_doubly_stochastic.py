"""Projection onto doubly stochastic matrices, rounding to permutations, and their errors."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import autoshuffle_ext as asx


def brute_force_best_perm(M: torch.Tensor) -> tuple[int, ...]:
    n = M.shape[0]
    return max(itertools.permutations(range(n)), key=lambda p: float(M[range(n), list(p)].sum()))


def random_doubly_stochastic(shape, generator, terms=4):
    """A random convex combination of permutation matrices (Birkhoff-von Neumann)."""
    n = shape[-1]
    weights = torch.rand(*shape[:-2], terms, 1, 1, generator=generator, dtype=torch.float64)
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(terms)])
    P = asx.permutation_matrix(perms, torch.float64).expand(*shape[:-2], terms, n, n)
    return (weights * P).sum(-3) / weights.sum(-3)


@given(n=st.integers(8, 64), batch=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_projection_brings_a_perturbed_matrix_back(n, batch, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, n, n) if batch else (n, n)
    # What an SGD step does to M: a doubly stochastic matrix plus signed noise, some entries < 0.
    # A dense mixture keeps the thresholded pattern with total support; sparse patterns converge
    # only like 1/iters (test_projection_of_a_sparse_pattern_converges_slowly).
    M = (
        random_doubly_stochastic(shape, g, terms=n)
        + 0.02 * torch.randn(shape, generator=g).double()
    )
    out = asx.project_doubly_stochastic_(M)
    assert out is M
    assert (M >= 0).all()
    ones = torch.ones((), dtype=M.dtype)
    torch.testing.assert_close(M.sum(-1), ones.expand(M.shape[:-1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(M.sum(-2), ones.expand(M.shape[:-1]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [2, 3, 12, 240])
@pytest.mark.parametrize("noise", [1e-4, 1e-2])
def test_projection_near_a_permutation_needs_the_polish(n, noise):
    # Near a permutation thresholding leaves patterns like [[1, b], [0, 1]], where scaling alone
    # converges only like 1/iters; the polish must still bring every sum within 1e-4.
    g = torch.Generator().manual_seed(n)
    for _ in range(10):
        P = asx.permutation_matrix(torch.randperm(n, generator=g))
        M = P + noise * torch.randn(n, n, generator=g)
        asx.project_doubly_stochastic_(M)
        assert (M >= 0).all()
        assert (M.sum(0) - 1).abs().max() < 1e-4
        assert (M.sum(1) - 1).abs().max() < 1e-4


def test_scaling_alone_is_slow_on_a_pattern_without_total_support():
    M = torch.tensor([[1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)
    scaled = asx.project_doubly_stochastic_(M.clone(), 100, polish=0)
    assert (scaled.sum(0) - 1).abs().max() > 1e-3  # the 1/iters rate the polish exists for
    polished = asx.project_doubly_stochastic_(M.clone())
    torch.testing.assert_close(polished.sum(0), torch.ones(2, dtype=M.dtype), atol=1e-6, rtol=0)


@given(n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_projection_of_any_matrix_is_nonnegative_and_near_the_polytope(n, seed):
    M = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    asx.project_doubly_stochastic_(M)
    assert (M >= 0).all()
    ones = torch.ones(n, dtype=M.dtype)
    torch.testing.assert_close(M.sum(-1), ones, atol=1e-3, rtol=0)
    torch.testing.assert_close(M.sum(-2), ones, atol=1e-3, rtol=0)


def test_projection_float32_default_iters_close_to_one():
    M = torch.rand(240, 240) * 0.01 + torch.eye(240)[torch.randperm(240)]
    M += 0.05 * torch.randn(240, 240)  # an SGD-like perturbation off the polytope
    asx.project_doubly_stochastic_(M)
    assert (M.sum(0) - 1).abs().max() < 1e-4
    assert (M.sum(1) - 1).abs().max() < 1e-4


def test_projection_keeps_permutations_fixed():
    P = asx.permutation_matrix(torch.randperm(17), torch.float64)
    torch.testing.assert_close(asx.project_doubly_stochastic_(P.clone()), P, atol=0, rtol=0)


def test_projection_resets_dead_rows_to_uniform():
    M = torch.rand(5, 5, dtype=torch.float64)
    M[2] = -1.0
    asx.project_doubly_stochastic_(M, iters=200)
    assert (M[2] > 0).all()
    torch.testing.assert_close(M.sum(0), torch.ones(5, dtype=M.dtype), atol=1e-6, rtol=0)


def _assert_doubly_stochastic(M: torch.Tensor, atol: float) -> None:
    assert torch.isfinite(M).all(), M
    assert (M >= 0).all()
    ones = torch.ones((), dtype=M.dtype)
    torch.testing.assert_close(M.sum(-1), ones.expand(M.shape[:-1]), atol=atol, rtol=0)
    torch.testing.assert_close(M.sum(-2), ones.expand(M.shape[:-1]), atol=atol, rtol=0)


def _extreme_matrices(dtype: torch.dtype) -> list[torch.Tensor]:
    big, tiny = torch.finfo(dtype).max, torch.finfo(dtype).smallest_normal
    g = torch.Generator().manual_seed(7)
    return [
        torch.full((2, 2), big * 0.9, dtype=dtype),  # every sum overflows
        torch.tensor([[big * 0.9, 1.0], [1.0, big * 0.9]], dtype=dtype),
        torch.rand(6, 6, generator=g, dtype=dtype) * big,
        torch.tensor([[big * 0.9, 0.0], [0.0, tiny]], dtype=dtype),  # tiny / big underflows
        torch.full((3, 3), tiny / 4, dtype=dtype),  # subnormal entries
        torch.rand(6, 6, generator=g, dtype=dtype) * tiny,
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("iters", [10, 0])
def test_projection_of_finite_extreme_matrices_is_finite_and_doubly_stochastic(dtype, iters):
    for M in _extreme_matrices(dtype):
        asx.project_doubly_stochastic_(M, iters)
        _assert_doubly_stochastic(M, atol=1e-4)
    huge = torch.full((2, 2), torch.finfo(dtype).max, dtype=dtype)
    torch.testing.assert_close(
        asx.project_doubly_stochastic_(huge, iters), torch.full_like(huge, 0.5)
    )


def test_projection_scales_each_matrix_of_a_stack_by_itself():
    g = torch.Generator().manual_seed(8)
    normal = torch.rand(5, 5, generator=g) + 0.1
    stack = torch.stack([normal, torch.rand(5, 5, generator=g) * 3e38])
    asx.project_doubly_stochastic_(stack)
    _assert_doubly_stochastic(stack, atol=1e-4)
    torch.testing.assert_close(stack[0], asx.project_doubly_stochastic_(normal.clone()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_projection_rejects_non_finite_matrices_and_leaves_them(bad):
    M = torch.rand(2, 3, 3)
    M[1, 0, 2] = bad
    before = M.clone()
    with pytest.raises(ValueError, match=r"M must be finite.*got NaN or inf entries"):
        asx.project_doubly_stochastic_(M)
    torch.testing.assert_close(M, before, equal_nan=True, atol=0, rtol=0)


@given(n=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_rounding_is_the_maximum_weight_permutation(n, seed):
    M = torch.rand(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    perm = asx.round_to_permutation(M)
    assert perm.dtype == torch.int64
    assert sorted(perm.tolist()) == list(range(n))
    best = brute_force_best_perm(M)
    assert M[range(n), perm].sum().item() == pytest.approx(M[range(n), list(best)].sum().item())


def test_rounding_recovers_a_planted_permutation_from_noise():
    g = torch.Generator().manual_seed(0)
    n = 64
    perm = torch.randperm(n, generator=g)
    M = 0.6 * asx.permutation_matrix(perm) + 0.4 * torch.rand(n, n, generator=g) / n * 4
    asx.project_doubly_stochastic_(M)
    assert torch.equal(asx.round_to_permutation(M), perm)


@pytest.mark.parametrize("shape", [(0, 0), (0, 3, 3), (2, 0, 0), (0, 0, 0)])
def test_empty_matrices_give_empty_results(shape):
    M = torch.empty(shape, dtype=torch.float64)
    assert asx.project_doubly_stochastic_(M) is M
    assert M.shape == shape
    perm = asx.round_to_permutation(M)
    assert perm.dtype == torch.int64
    assert perm.shape == shape[:-1]
    assert asx.permutation_matrix(perm, torch.float64).shape == shape
    assert asx.distance_to_permutation(M).shape == shape[:-2]


def test_rounding_never_picks_a_column_twice_where_argmax_would():
    # Both rows prefer column 0; a per-row argmax would return [0, 0].
    M = torch.tensor([[0.9, 0.8], [0.85, 0.1]])
    assert asx.round_to_permutation(M).tolist() == [1, 0]


def test_rounding_batched_and_device():
    M = torch.rand(4, 9, 9)
    perms = asx.round_to_permutation(M)
    assert perms.shape == (4, 9)
    for b in range(4):
        assert torch.equal(perms[b], asx.round_to_permutation(M[b]))


def test_permutation_matrix_agrees_with_gather():
    perm = torch.randperm(6)
    x = torch.randn(3, 6, 2, 2)
    P = asx.permutation_matrix(perm)
    mixed = torch.einsum("ij,njhw->nihw", P, x)
    assert torch.equal(mixed, asx.channel_gather(x, perm))
    assert (P[torch.arange(6), perm] == 1).all()


def test_distance_to_permutation():
    perm = torch.randperm(8)
    P = asx.permutation_matrix(perm, torch.float64)
    assert asx.distance_to_permutation(P).item() == 0.0
    U = torch.full((8, 8), 1 / 8, dtype=torch.float64)
    # ||U - P||_F^2 = n * ((1 - 1/n)^2 + (n - 1) / n^2) = n - 1
    assert asx.distance_to_permutation(U).item() == pytest.approx(np.sqrt(7))


@pytest.mark.parametrize(
    ("M", "error", "match"),
    [
        (torch.rand(3, 4), ValueError, r"M must have shape \[.*, got \(3, 4\)"),
        (torch.rand(2, 2, 2, 2), ValueError, r"got \(2, 2, 2, 2\)"),
        (torch.ones(3, 3, dtype=torch.int64), TypeError, "floating point tensor, got torch.int64"),
        ([[1.0]], TypeError, "M must be a torch.Tensor, got list"),
    ],
)
def test_bad_matrices_are_rejected(M, error, match):
    functions = [asx.project_doubly_stochastic_, asx.round_to_permutation]
    if isinstance(M, torch.Tensor) and M.dim() == 4:
        functions = functions[:1]  # rounding takes any leading dims (below)
    for fn in functions:
        with pytest.raises(error, match=match):
            fn(M)


def test_rounding_takes_any_leading_dims_and_rounds_each_matrix():
    M = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    perms = asx.round_to_permutation(M)
    assert perms.shape == (2, 3, 5)
    for i in range(2):
        for j in range(3):
            assert torch.equal(perms[i, j], asx.round_to_permutation(M[i, j]))
    with pytest.raises(ValueError, match=r"M must have shape \[\.\.\., n, n\], got \(5,\)"):
        asx.round_to_permutation(torch.rand(5))


def test_rounding_rejects_nan_and_negative_iters():
    M = torch.rand(3, 3)
    M[1, 1] = float("nan")
    with pytest.raises(ValueError, match="M must be finite"):
        asx.round_to_permutation(M)
    with pytest.raises(ValueError, match="iters must be >= 0, got -1"):
        asx.project_doubly_stochastic_(torch.rand(3, 3), iters=-1)
    with pytest.raises(ValueError, match="polish must be >= 0, got -2"):
        asx.project_doubly_stochastic_(torch.rand(3, 3), polish=-2)
