"""Björck orthonormalisation: the polar factor (from the SVD) as the reference, batched against a
per-matrix loop, its gradient (gradcheck, float64), the power-iteration estimate, bad input."""

import pytest
import torch

from autoshuffle_ext.lipschitz import (
    bjorck_orthonormalize,
    orthogonality_error,
    spectral_norm_estimate,
)


def polar_factor(W: torch.Tensor) -> torch.Tensor:
    """U V^T from the thin SVD: the closest matrix with orthonormal columns (rows if wide)."""
    U, _, Vh = torch.linalg.svd(W, full_matrices=False)
    return U @ Vh


def well_conditioned(*shape, seed=0) -> torch.Tensor:
    """Random matrices with singular values in [0.5, 2] (Björck's 20 steps converge to 1e-12)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*shape, generator=g, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    k = min(shape[-2:])
    s = 0.5 + 1.5 * torch.rand(*shape[:-2], k, generator=g, dtype=torch.float64)
    return U @ torch.diag_embed(s) @ Vh


@pytest.mark.parametrize("shape", [(8, 8), (12, 5), (5, 12), (3, 16, 16), (2, 3, 10, 6)])
@pytest.mark.parametrize("scaling", ["power", "frobenius"])
def test_converges_to_the_polar_factor(shape, scaling):
    W = well_conditioned(*shape)
    iters = 20 if scaling == "power" else 40  # the Frobenius scale starts further below 1
    Q = bjorck_orthonormalize(W, iters, scaling=scaling)
    assert Q.shape == W.shape and Q.dtype == W.dtype
    torch.testing.assert_close(Q, polar_factor(W), rtol=0, atol=1e-10)
    assert float(orthogonality_error(Q).max()) < 1e-12


def test_scale_does_not_matter_with_power_scaling():
    W = well_conditioned(6, 6, seed=1)
    torch.testing.assert_close(
        bjorck_orthonormalize(1e3 * W), bjorck_orthonormalize(1e-3 * W), rtol=0, atol=1e-10
    )


def test_batched_equals_per_matrix_loop():
    W = torch.randn(7, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batched = bjorck_orthonormalize(W)
    looped = torch.stack([bjorck_orthonormalize(w) for w in W])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-13)


@pytest.mark.parametrize("scaling", ["none", "frobenius"])
@pytest.mark.parametrize("shape", [(5, 5), (6, 3), (3, 6), (2, 4, 4)])
def test_gradcheck(shape, scaling):
    W = well_conditioned(*shape, seed=3)
    if scaling == "none":
        W = W / 2.5  # singular values in (0, sqrt(3))
    W.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda w: bjorck_orthonormalize(w, 6, scaling=scaling), (W,), atol=1e-7
    )
    assert torch.autograd.gradgradcheck(
        lambda w: bjorck_orthonormalize(w, 3, scaling=scaling), (W,), atol=1e-6
    )


def test_power_scaling_gradient_treats_the_scale_as_a_constant():
    # The paper's choice: no gradient through the estimate. The gradient is then the gradient of
    # the iteration at W / s with s fixed.
    W = well_conditioned(5, 5, seed=4).requires_grad_(True)
    G = torch.randn(5, 5, dtype=torch.float64)
    (grad,) = torch.autograd.grad((bjorck_orthonormalize(W, 8) * G).sum(), W)
    s = spectral_norm_estimate(W)
    V = W.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        (bjorck_orthonormalize(V / s, 8, scaling="none") * G).sum(), V
    )
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_spectral_norm_estimate():
    W = torch.randn(4, 20, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = torch.linalg.svdvals(W)[:, 0]
    estimate = spectral_norm_estimate(W, 100)
    torch.testing.assert_close(estimate, exact, rtol=1e-8, atol=0)
    few = spectral_norm_estimate(W, 2)
    assert bool((few <= exact * (1 + 1e-12)).all())  # from below
    assert torch.equal(spectral_norm_estimate(W), spectral_norm_estimate(W))  # deterministic
    assert not spectral_norm_estimate(W.requires_grad_(True)).requires_grad


def test_zero_matrix_stays_zero():
    assert torch.equal(bjorck_orthonormalize(torch.zeros(4, 4)), torch.zeros(4, 4))


def test_bad_input():
    with pytest.raises(TypeError, match=r"W must be a floating point tensor, got torch\.int64"):
        bjorck_orthonormalize(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"W must have shape \[..., m, n\], got \(3,\)"):
        bjorck_orthonormalize(torch.ones(3))
    with pytest.raises(ValueError, match=r"scaling must be one of .* got 'spectral'"):
        bjorck_orthonormalize(torch.eye(3), scaling="spectral")
    with pytest.raises(ValueError, match=r"beta must be finite and lie in \(0.0, 1.0\], got 2"):
        bjorck_orthonormalize(torch.eye(3), beta=2)
    with pytest.raises(ValueError, match="iters must be >= 0, got -1"):
        bjorck_orthonormalize(torch.eye(3), -1)
    with pytest.raises(TypeError, match=r"power_iters must be an int, got float 2\.0"):
        bjorck_orthonormalize(torch.eye(3), power_iters=2.0)
