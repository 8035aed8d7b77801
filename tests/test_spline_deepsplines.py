"""`LinearSpline` side by side with the paper's own code: `deepsplines` 1.0.0 (PyPI; installed
by `make` with `pip install --no-deps`, its `ds_modules` need only torch and numpy).

With the same knot values both give the same outputs and the same gradients (input and knot
values), the same TV(2) and BV(2) terms, the same initial activations, and keep the same knots
when sparsified. deepsplines rounds its knot spacing down to a multiple of 1e-6
(`spline_grid_from_range`) and stores it in float32: the spline here is built on that spacing.
"""

import pytest
import torch

from autoshuffle_ext.splines import LinearSpline

ds_modules = pytest.importorskip("deepsplines.ds_modules")


def pair(C: int, size: int = 51, range_: float = 4.0, init: str = "leaky_relu", mode="conv"):
    """(theirs, ours) with the same knot values, ours on their spacing."""
    theirs = ds_modules.DeepBSpline(mode, C, size=size, range_=range_, init=init)
    spacing = float(theirs.grid)
    ours = LinearSpline(C, size=size, range=spacing * (size // 2), init=init)
    assert ours.spacing == pytest.approx(spacing, rel=1e-15)
    return theirs, ours


def randomize_(theirs, ours, seed: int = 0, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        theirs.coefficients_vect.add_(
            scale * torch.randn(theirs.coefficients_vect.shape, generator=g)
        )
        ours.coefficients.copy_(theirs.coefficients.detach())


def inputs(shape, range_: float, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    """Over the grid and beyond it on both sides."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * 1.5 * range_


@pytest.mark.parametrize("init", ["leaky_relu", "relu"])
def test_same_initial_knots(init):
    theirs, ours = pair(6, init=init)
    torch.testing.assert_close(ours.coefficients.detach(), theirs.coefficients.detach())


@pytest.mark.parametrize(
    # deepsplines computes its grid ends in float32 (its spacing is a float32 tensor) also for
    # float64 inputs: beyond the grid its float64 outputs carry float32 rounding.
    ("dtype", "tol"),
    [(torch.float32, 2e-5), (torch.float64, 1e-6)],
    ids=["f32", "f64"],
)
@pytest.mark.parametrize(("size", "range_"), [(51, 4.0), (35, 3.0), (5, 1.0)], ids=str)
def test_same_outputs_and_gradients(dtype, tol, size, range_):
    theirs, ours = pair(7, size=size, range_=range_)
    randomize_(theirs, ours)
    theirs.to(dtype)
    ours.to(dtype)
    x = inputs((3, 7, 5, 6), range_, dtype=dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = theirs(x1)
    y2 = ours(x2)
    torch.testing.assert_close(y2, y1, rtol=tol, atol=tol)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=tol, atol=tol)
    their_grad = theirs.coefficients_vect.grad.view(ours.coefficients.shape)
    torch.testing.assert_close(ours.coefficients.grad, their_grad, rtol=tol, atol=tol * 10)


def test_fully_connected_mode():
    theirs, ours = pair(9, mode="fc")
    randomize_(theirs, ours, seed=3)
    x = inputs((16, 9), 4.0)
    torch.testing.assert_close(ours(x), theirs(x), rtol=2e-5, atol=2e-5)


def test_same_tv2_and_bv2_terms():
    theirs, ours = pair(5)
    randomize_(theirs, ours, seed=4)
    torch.testing.assert_close(ours.tv2(), theirs.totalVariation(), rtol=1e-5, atol=1e-5)
    bv2 = LinearSpline(5, range=ours.range, regularizer="bv2")
    with torch.no_grad():
        bv2.coefficients.copy_(ours.coefficients)
    their_bv2 = theirs.totalVariation().sum() + theirs.fZerofOneAbs().sum()
    torch.testing.assert_close(bv2.raw_penalty(), their_bv2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threshold", [0.05, 0.5])
def test_sparsification_keeps_the_same_knots(threshold):
    """Both remove the slope changes below the threshold and keep the others exactly; they
    differ in the affine part (theirs keeps the two leftmost knot values, ours refits it).

    deepsplines' `apply_threshold` asserts that no slope change lies between 1e-4 and the
    threshold (it expects a spline that TV(2) training already made sparse): the knots here are
    a few large slope changes plus noise whose slope changes stay below 5e-5."""
    theirs, ours = pair(4)
    g = torch.Generator().manual_seed(5)
    T = ours.spacing
    knots = (torch.arange(51, dtype=torch.float64) - 25) * T
    big = torch.tensor([[0.8, -0.6, 1.2], [0.7, 0.9, -1.1], [-0.75, 0.6, 0.55], [1.0, 2.0, -3.0]])
    at = torch.tensor([[-6, 2, 13], [-15, 0, 6], [-3, 3, 19], [1, 4, 9]])  # knot indices - 25
    c = torch.zeros(4, 51, dtype=torch.float64)
    for j in range(3):
        c += big[:, j : j + 1].double() * torch.relu(knots - T * at[:, j : j + 1].double())
    noise = (torch.rand(4, 51, generator=g, dtype=torch.float64) * 2 - 1) * 4e-5 * T
    c += noise.cumsum(-1).cumsum(-1)
    with torch.no_grad():
        theirs.coefficients_vect.copy_(c.reshape(-1))
        ours.coefficients.copy_(c)
    theirs.apply_threshold(threshold)
    ours.sparsify_(threshold)
    theirs_a = theirs.relu_slopes.detach()
    ours_a = ours.slope_changes().detach()
    kept = theirs_a.abs() > threshold
    assert kept.sum(-1).tolist() == [3, 3, 3, 3]
    assert torch.equal(ours_a.abs() > threshold, kept)
    torch.testing.assert_close(ours_a * kept, theirs_a * kept, rtol=1e-4, atol=1e-4)
    assert float((ours_a * ~kept).abs().max()) < 1e-4
    assert ours.knots_per_channel(threshold).tolist() == [3, 3, 3, 3]
