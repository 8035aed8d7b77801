"""`LinearSpline` (the learned structure) and its parts: the grid and inits, TV(2)/BV(2), slope
clipping, sparsification and the inference form, and the whole-model helpers finding it."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.modules.structure import LearnedStructure
from autoshuffle_ext.splines import (
    LinearSpline,
    SparseLinearSpline,
    calculus,
    knot_positions,
    spline_spacing,
)


def trained_like(module: LinearSpline, seed: int = 0, scale: float = 0.2) -> LinearSpline:
    """A spline with every knot moved at random (many slope changes of every size)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.coefficients.add_(scale * torch.randn(module.coefficients.shape, generator=g))
    return module


def on_grid_and_beyond(C: int, range_: float, n: int = 4000, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, C, generator=g, dtype=torch.float64) * 2 - 1) * 1.6 * range_


def test_spacing_and_knots():
    assert spline_spacing(51, 4.0) == pytest.approx(0.16)
    assert knot_positions(5, 0.5).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    for size, match in [(4, "odd"), (1, "odd"), (True, "int")]:
        with pytest.raises((ValueError, TypeError), match=match):
            spline_spacing(size, 1.0)
    with pytest.raises(ValueError, match="range must be a finite float > 0"):
        spline_spacing(5, -1.0)


def test_inside_the_grid_equals_np_interp_and_outside_is_linear():
    m = trained_like(LinearSpline(3, size=21, range=2.0)).double()
    x = on_grid_and_beyond(3, 2.0)
    y = m(x).detach().numpy()
    knots = knot_positions(21, m.spacing).numpy()
    c = m.coefficients.detach().numpy()
    for ch in range(3):
        xs = x[:, ch].numpy()
        inside = np.abs(xs) <= 2.0
        np.testing.assert_allclose(y[inside, ch], np.interp(xs[inside], knots, c[ch]), atol=1e-12)
        left, right = xs < -2.0, xs > 2.0
        slope_l = (c[ch, 1] - c[ch, 0]) / m.spacing
        slope_r = (c[ch, -1] - c[ch, -2]) / m.spacing
        np.testing.assert_allclose(y[left, ch], c[ch, 0] + slope_l * (xs[left] + 2.0), atol=1e-12)
        np.testing.assert_allclose(y[right, ch], c[ch, -1] + slope_r * (xs[right] - 2.0),
                                   atol=1e-12)  # fmt: skip


@pytest.mark.parametrize(
    ("init", "fn"),
    [
        ("relu", torch.relu),
        ("leaky_relu", lambda t: torch.nn.functional.leaky_relu(t, 0.01)),
        ("identity", lambda t: t),
    ],
)
def test_inits_equal_their_activation(init, fn):
    m = LinearSpline(4, init=init).double()  # knot values rounded to float32
    x = torch.linspace(-4, 4, 1001, dtype=torch.float64)[:, None].expand(-1, 4)
    torch.testing.assert_close(m(x), fn(x), atol=1e-6, rtol=0)
    # relu and leaky relu: one knot (at 0); identity: none.
    assert m.knots_per_channel().tolist() == [0 if init == "identity" else 1] * 4


def test_relu_init_in_float32_is_relu_on_the_range_and_beyond():
    m = LinearSpline(5, init="relu")
    x = torch.randn(8, 5, 6, 6) * 3
    torch.testing.assert_close(m(x), torch.relu(x), atol=2e-6, rtol=1e-6)


def test_from_activation():
    for act, fn in [
        ("relu", torch.relu),
        (nn.ReLU(inplace=True), torch.relu),
        (nn.LeakyReLU(0.2), lambda t: torch.nn.functional.leaky_relu(t, 0.2)),
        (nn.ReLU6(), lambda t: t.clamp(0, 6)),
        (nn.Identity(), lambda t: t),
    ]:
        m = LinearSpline.from_activation(act, 3, range=8.0, size=33).double()
        x = torch.linspace(-8, 8, 333, dtype=torch.float64)[:, None].expand(-1, 3)
        torch.testing.assert_close(m(x), fn(x), atol=2e-6, rtol=0)
    prelu = nn.PReLU(3)
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.1, 0.2, 0.3]))
    m = LinearSpline.from_activation(prelu, 3).double()
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)[:, None].expand(-1, 3)
    torch.testing.assert_close(m(x), prelu.double()(x).detach(), atol=2e-6, rtol=0)
    m = LinearSpline.from_activation("leaky_relu", 7, penalty_weight=1e-3)
    assert m.penalty_weight == 1e-3 and m.num_channels == 7
    with pytest.raises(ValueError, match="activation must be one of"):
        LinearSpline.from_activation("gelu", 3)
    with pytest.raises(TypeError, match="activation must be a name"):
        LinearSpline.from_activation(nn.GELU(), 3)


def test_defaults_are_deepsplines():
    m = LinearSpline(8)
    assert (m.size, m.range, m.init, m.penalty_weight) == (51, 4.0, "leaky_relu", 1e-4)
    assert m.regularizer == "tv2" and m.lipschitz is None
    assert LinearSpline(8, lipschitz=1.0).regularizer == "bv2"
    (group,) = m.param_groups()
    assert group.name == "spline" and group.lr == 1e-3 and group.weight_decay == 0.0
    assert group.params == (m.coefficients,)
    assert isinstance(m, LearnedStructure)


def test_tv2_is_the_sum_of_absolute_slope_changes():
    m = trained_like(LinearSpline(3, size=11, range=1.0)).double()
    c = m.coefficients.detach().numpy()
    slopes = np.diff(c, axis=1) / m.spacing
    expected = np.abs(np.diff(slopes, axis=1)).sum()
    assert float(m.raw_penalty().detach()) == pytest.approx(expected, rel=1e-12)
    assert float(m.penalty().detach()) == pytest.approx(1e-4 * expected, rel=1e-12)
    # The penalty is differentiable: its gradient is sign(a) pushed through the 2nd difference.
    (grad,) = torch.autograd.grad(m.raw_penalty(), m.coefficients)
    a = torch.as_tensor(np.diff(c, n=2, axis=1))
    expected_grad = torch.zeros_like(grad)
    s = a.sign() / m.spacing
    expected_grad[:, :-2] += s
    expected_grad[:, 1:-1] -= 2 * s
    expected_grad[:, 2:] += s
    torch.testing.assert_close(grad, expected_grad)


def test_bv2_adds_the_values_at_0_and_1():
    m = trained_like(LinearSpline(3, size=11, range=2.0, regularizer="bv2")).double()
    x = torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64)
    expected = float((m.tv2().sum() + m(x).abs().sum()).detach())
    assert float(m.raw_penalty().detach()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bound", [1.0, 0.5])
def test_projection_bounds_every_slope(bound):
    m = trained_like(LinearSpline(6, size=51, init="identity", lipschitz=bound), scale=0.5)
    assert m.lipschitz_constant() > bound
    before = m.coefficients.detach().clone()
    m.project_()
    assert m.lipschitz_constant() <= bound * (1 + 1e-6)
    # Finite differences of the activation, on the grid and beyond it.
    x = torch.linspace(-7, 7, 20001, dtype=torch.float64)[:, None].expand(-1, 6)
    y = m.double()(x).detach()
    fd = (y[1:] - y[:-1]) / (x[1:] - x[:-1])
    assert float(fd.abs().max()) <= bound * (1 + 1e-6)
    # The change has mean 0 over the knots; a second projection changes nothing (to rounding).
    change = m.coefficients.detach().float() - before
    assert float(change.mean(-1).abs().max()) < 1e-5
    once = m.coefficients.detach().clone()
    m.project_()
    torch.testing.assert_close(m.coefficients.detach(), once, atol=1e-6, rtol=0)


def test_projection_without_bound_changes_nothing():
    m = trained_like(LinearSpline(3))
    before = m.coefficients.detach().clone()
    m.project_()
    assert torch.equal(m.coefficients.detach(), before)


def test_attach_projection_and_penalty_find_the_spline():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), LinearSpline(6, lipschitz=1.0, init="identity"))
    spline = model[1]
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    asx.attach_projection(opt, model)
    x = torch.randn(4, 3, 5, 5)
    for _ in range(3):
        loss = (model(x) ** 2).sum() * -1 + asx.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert spline.lipschitz_constant() <= 1 + 1e-6
    torch.testing.assert_close(asx.penalty(model), spline.penalty())


@pytest.mark.parametrize("threshold", [1e-3, 0.05, 0.3])
def test_sparsification_keeps_outputs_within_tolerance(threshold):
    m = LinearSpline(4, size=51).double()
    # Smooth-ish knots: a few large slope changes plus many small ones.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m.coefficients.add_(1e-3 * torch.randn(m.coefficients.shape, generator=g,
                                               dtype=torch.float64).cumsum(-1))  # fmt: skip
    x = on_grid_and_beyond(4, 4.0).clamp(-4, 4)
    y = m(x).detach()
    a = m.slope_changes().detach()
    removed = a.abs() <= threshold
    sparse = m.to_inference(threshold)
    assert isinstance(sparse, SparseLinearSpline)
    kept = sparse.knots_per_channel()
    assert kept.tolist() == (~removed).sum(-1).tolist()
    # Error bound on [-R, R]: each removed knot moves the spline by at most |a_k| * 2R before the
    # affine refit, which at most doubles it.
    bound = 2 * float((a.abs() * removed).sum(-1).max()) * 8.0
    err = float((sparse(x) - y).abs().max())
    assert err <= bound + 1e-9
    # The in-place form computes what the inference form does.
    m.sparsify_(threshold)
    torch.testing.assert_close(m(x), sparse(x), atol=1e-10, rtol=0)
    assert m.knots_per_channel(threshold).tolist() == kept.tolist()


def test_inference_form_is_exact_at_threshold_zero_and_keeps_only_knots():
    m = trained_like(LinearSpline(5, size=21, range=2.0), scale=0.1)
    with torch.no_grad():  # two channels with exactly 2 knots: a ReLU sum on the grid
        grid = knot_positions(21, m.spacing).float()
        m.coefficients[0] = 0.5 * torch.relu(grid - 0.4) - 0.3 * torch.relu(grid + 1.0) + 0.2
        m.coefficients[1] = torch.relu(grid)
    x = torch.randn(7, 5, 3, 3) * 2.5
    frozen = m.to_inference()
    torch.testing.assert_close(frozen(x), m(x), atol=1e-5, rtol=1e-5)
    knots = frozen.knots_per_channel().tolist()
    assert knots[:2] == [2, 1] and knots == m.knots_per_channel().tolist()
    assert frozen.knots.shape == (5, max(knots))
    torch.testing.assert_close(frozen.knots[0, :2], torch.tensor([-1.0, 0.4]), atol=1e-6, rtol=0)
    assert torch.isinf(frozen.knots[1, 1:]).all() and (frozen.jumps[1, 1:] == 0).all()
    # asx.freeze swaps the module for its inference form.
    model = asx.freeze(nn.Sequential(nn.Identity(), m))
    assert isinstance(model[1], SparseLinearSpline)
    torch.testing.assert_close(model(x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_inference_form_with_many_knots_uses_the_running_sums(layout):
    m = trained_like(LinearSpline(6, size=21, range=2.0), seed=7)
    frozen = m.to_inference()
    assert frozen.knots.shape[1] > 4  # beyond LOOP_KNOTS: the binary-search path
    x = torch.randn(3, 6, 5, 4) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(frozen(x), m(x), atol=2e-5, rtol=1e-5)
    loop = SparseLinearSpline.from_coefficients(m.coefficients.detach().double(), m.spacing)
    xd = x.double()
    y_loop = loop.intercept.view(6, 1, 1) + loop.slope.view(6, 1, 1) * xd
    for j in range(loop.knots.shape[1]):
        step = (xd - loop.knots[:, j].view(6, 1, 1)).clamp(min=0)
        y_loop = y_loop + loop.jumps[:, j].view(6, 1, 1) * torch.nan_to_num(step)
    torch.testing.assert_close(loop(xd), y_loop, atol=1e-9, rtol=1e-9)


def test_calculus_helpers():
    c = torch.tensor([[0.0, 0.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    assert calculus.segment_slopes(c, 0.5).tolist() == [[0.0, 2.0, 4.0, 0.0]]
    assert calculus.slope_changes(c, 0.5).tolist() == [[2.0, 2.0, -4.0]]
    assert calculus.tv2(c, 0.5).tolist() == [8.0]
    clipped = calculus.clip_slopes(c, 0.5, 1.0)
    assert float(calculus.segment_slopes(clipped, 0.5).abs().max()) == pytest.approx(1.0)


def test_report_and_macs():
    m = LinearSpline(4, init="relu", knot_threshold=1e-3)
    report = m.report()
    assert report["knots"] == [1, 1, 1, 1] and report["mean_knots"] == 1.0
    assert report["max_slope"] == pytest.approx(1.0)
    assert report["penalty"] == pytest.approx(4.0, rel=1e-4)  # one slope change of 1 each
    assert report["distance"] < 1e-6 and report["regularizer"] == "tv2"
    y = m(torch.randn(2, 4, 3, 3))
    assert m.macs((None,), y) == (2 * 36, 2 * 36)
    assert math.isfinite(float(m.penalty().detach()))
    assert "size=51" in repr(m)


def test_state_dict_round_trip_and_dtypes():
    m = trained_like(LinearSpline(3, size=11))
    n = LinearSpline(3, size=11)
    n.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(n(x), m(x))
    half = m(x.bfloat16())
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_channels": 0}, ValueError, "num_channels must be >= 1"),
        ({"num_channels": 2.0}, TypeError, "num_channels must be an int"),
        ({"size": 50}, ValueError, "size must be an odd int"),
        ({"range": 0.0}, ValueError, "range must be"),
        ({"init": "tanh"}, ValueError, "init must be one of"),
        ({"lipschitz": 0.0}, ValueError, "lipschitz must be None or"),
        ({"regularizer": "l1"}, ValueError, "regularizer must be"),
        ({"knot_threshold": -1.0}, ValueError, "knot_threshold must be"),
        ({"penalty_weight": float("nan")}, ValueError, "penalty_weight must be"),
    ],
)
def test_errors(kwargs, error, match):
    kwargs = {"num_channels": 3, **kwargs}
    with pytest.raises(error, match=match):
        LinearSpline(**kwargs)


def test_wrong_channel_count_names_the_shape():
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3, ...\], got \(2, 4\)"):
        LinearSpline(3)(torch.ones(2, 4))
