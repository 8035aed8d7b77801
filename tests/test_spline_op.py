"""The fused op `spline_activation(x, coefficients, spacing)`: values against the plain PyTorch
reference and np.interp, layouts, dtypes, gradients (reverse and forward mode, gradcheck in
float64), the op contract (opcheck, compile, export) and its errors."""

import numpy as np
import pytest
import torch
from torch.library import opcheck

from autoshuffle_ext.ops import spline_activation as op_module
from autoshuffle_ext.splines import linear_spline_reference, spline_activation
from tests.references import to_layout

T = 0.16

# (shape, layout, K): odd channel and pixel counts, C = 1, [N, C] and 5-D inputs, empty batch,
# the smallest grid (K = 2, 3) and an even K.
CASES = [
    ((2, 5, 3, 4), "contiguous", 51),
    ((2, 5, 3, 4), "channels_last", 51),
    ((3, 7, 5, 3), "strided", 11),
    ((4, 1, 3, 3), "contiguous", 3),
    ((6, 11), "contiguous", 21),
    ((2, 9, 13), "contiguous", 2),
    ((2, 6, 2, 3, 2), "channels_last", 8),
    ((0, 5, 3, 3), "contiguous", 5),
]
IDS = [f"{s}-{layout}-K{k}" for s, layout, k in CASES]


def sample(shape, layout, K, generator, dtype=torch.float64):
    """x spread over the grid and beyond it on both sides, random knot values."""
    half_width = T * (K // 2)
    x = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * (1.5 * half_width + T)
    coefficients = torch.randn(shape[1], K, generator=generator, dtype=dtype)
    return to_layout(x, layout), coefficients


def interp(x: torch.Tensor, coefficients: torch.Tensor, spacing: float) -> np.ndarray:
    """np.interp of each channel's knots inside the grid, the end lines outside: the truth."""
    C, K = coefficients.shape
    knots = (np.arange(K) - K // 2) * spacing
    xs = x.detach().double().movedim(1, 0).reshape(C, -1).numpy()
    cs = coefficients.detach().double().numpy()
    out = np.empty_like(xs)
    for c in range(C):
        out[c] = np.interp(xs[c], knots, cs[c])
        left, right = xs[c] < knots[0], xs[c] > knots[-1]
        slope_l = (cs[c, 1] - cs[c, 0]) / spacing
        slope_r = (cs[c, -1] - cs[c, -2]) / spacing
        out[c][left] = cs[c, 0] + slope_l * (xs[c][left] - knots[0])
        out[c][right] = cs[c, -1] + slope_r * (xs[c][right] - knots[-1])
    shape = (C, x.shape[0], *x.shape[2:])
    return np.moveaxis(out.reshape(shape), 0, 1)


@pytest.mark.parametrize(("shape", "layout", "K"), CASES, ids=IDS)
def test_forward_matches_interp_and_reference_and_keeps_layout(shape, layout, K):
    x, c = sample(shape, layout, K, torch.Generator().manual_seed(0))
    y = spline_activation(x, c, T)
    np.testing.assert_allclose(y.numpy(), interp(x, c, T), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, linear_spline_reference(x, c, T), rtol=1e-12, atol=1e-12)
    assert y.shape == x.shape and y.dtype == x.dtype
    if layout == "strided":
        assert y.is_contiguous()
    else:
        assert y.stride() == x.stride()


@pytest.mark.parametrize(("shape", "layout", "K"), CASES[:7], ids=IDS[:7])
def test_backward_matches_reference(shape, layout, K):
    g = torch.Generator().manual_seed(1)
    x, c = sample(shape, layout, K, g)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    x1, c1 = x.clone().requires_grad_(), c.clone().requires_grad_()
    (spline_activation(x1, c1, T) * dy).sum().backward()
    x2, c2 = x.clone().requires_grad_(), c.clone().requires_grad_()
    (linear_spline_reference(x2, c2, T) * dy).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c1.grad, c2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "layout", "K"), [CASES[0], CASES[1], CASES[3]], ids=str)
def test_gradcheck_reverse_and_forward_mode(shape, layout, K):
    x, c = sample(shape, layout, K, torch.Generator().manual_seed(2))
    x.requires_grad_()
    c.requires_grad_()

    def fn(x, c):
        return spline_activation(x, c, T)

    assert torch.autograd.gradcheck(fn, (x, c), check_forward_ad=True)


def test_forward_mode_matches_reference():
    """Dual numbers (torch.autograd.forward_ad); torch.func.jvp is not supported (the formula
    is an autograd.Function under the dispatcher's Autograd key, below torch.func's layers)."""
    import torch.autograd.forward_ad as fwAD

    x, c = sample((3, 4, 5), "contiguous", 9, torch.Generator().manual_seed(3))
    tx, tc = torch.randn_like(x), torch.randn_like(c)
    tangents = []
    for fn in (spline_activation, linear_spline_reference):
        with fwAD.dual_level():
            y = fn(fwAD.make_dual(x, tx), fwAD.make_dual(c, tc), T)
            tangents.append(fwAD.unpack_dual(y).tangent)
        with fwAD.dual_level():  # one tangent only
            y = fn(fwAD.make_dual(x, tx), c, T)
            tangents.append(fwAD.unpack_dual(y).tangent)
    torch.testing.assert_close(tangents[0], tangents[2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tangents[1], tangents[3], rtol=1e-12, atol=1e-12)


def test_only_one_input_needs_grad():
    x, c = sample((2, 6, 3, 3), "channels_last", 7, torch.Generator().manual_seed(4))
    c.requires_grad_()
    spline_activation(x, c, T).sum().backward()
    assert c.grad is not None and x.grad is None
    x.requires_grad_()
    y = spline_activation(x, c.detach(), T)
    (dx,) = torch.autograd.grad(y.sum(), x)
    slopes = torch.autograd.grad(linear_spline_reference(x, c.detach(), T).sum(), x)[0]
    torch.testing.assert_close(dx, slopes)


@pytest.mark.parametrize(
    ("x_dtype", "c_dtype", "tol"),
    [
        (torch.float32, torch.float32, 1e-5),
        (torch.bfloat16, torch.float32, 2e-2),
        (torch.bfloat16, torch.bfloat16, 3e-2),
        (torch.float16, torch.float32, 5e-3),
    ],
    ids=["f32", "bf16-x-f32-c", "bf16", "f16-x-f32-c"],
)
def test_dtypes(x_dtype, c_dtype, tol):
    x, c = sample((2, 12, 5, 5), "channels_last", 51, torch.Generator().manual_seed(5))
    xq, cq = x.to(x_dtype).requires_grad_(), c.to(c_dtype).requires_grad_()
    y = spline_activation(xq, cq, T)
    assert y.dtype == x_dtype
    y.float().sum().backward()
    assert xq.grad.dtype == x_dtype and cq.grad.dtype == c_dtype
    ref = linear_spline_reference(xq.detach().double(), cq.detach().double(), T)
    scale = float(ref.abs().max())
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * scale)


def test_nan_and_inf_inputs():
    c = torch.randn(3, 11, dtype=torch.float64)
    x = torch.tensor([[float("nan"), 0.3, -0.2], [float("inf"), -float("inf"), 5.0]])
    y = spline_activation(x.double(), c, T)
    assert torch.isnan(y[0, 0])
    assert torch.isfinite(y[0, 1:]).all() and torch.isfinite(y[1, 2])


def test_opcheck():
    g = torch.Generator().manual_seed(6)
    for shape, layout, K in [CASES[0], CASES[1], CASES[2], CASES[4]]:
        x, c = sample(shape, layout, K, g)
        opcheck(torch.ops.autoshuffle_ext.spline_activation.default, (x, c, T))
        opcheck(
            torch.ops.autoshuffle_ext.spline_activation.default,
            (x.requires_grad_(), c.requires_grad_(), T),
        )
        dy = torch.randn(shape, generator=g, dtype=torch.float64)
        for need_x, need_c in [(True, True), (True, False), (False, True)]:
            args = (dy, x.detach(), c.detach(), T, need_x, need_c)
            opcheck(torch.ops.autoshuffle_ext.spline_activation_backward.default, args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compile_fullgraph_forward_and_backward(layout):
    x, c = sample((2, 12, 4, 4), layout, 51, torch.Generator().manual_seed(7), torch.float32)

    def loss(x, c):
        y = spline_activation(x, c, T)
        return (y * y).sum(), y

    xe, ce = x.clone().requires_grad_(), c.clone().requires_grad_()
    xc, cc = x.clone().requires_grad_(), c.clone().requires_grad_()
    le, ye = loss(xe, ce)
    le.backward()
    lc, yc = torch.compile(loss, fullgraph=True)(xc, cc)
    lc.backward()
    torch.testing.assert_close(yc, ye)
    assert yc.stride() == ye.stride()
    torch.testing.assert_close(xc.grad, xe.grad)
    torch.testing.assert_close(cc.grad, ce.grad)


def test_export():
    class Spline(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Parameter(torch.randn(8, 21))

        def forward(self, x):
            return spline_activation(x, self.c, T)

    x = torch.randn(2, 8, 3, 3)
    module = Spline()
    ep = torch.export.export(module, (x,))
    torch.testing.assert_close(ep.module()(x), module(x))


@pytest.mark.parametrize(
    ("x", "c", "spacing", "error", "match"),
    [
        ([1.0], torch.ones(2, 3), T, TypeError, "x must be a torch.Tensor"),
        (torch.ones(2, 3), "c", T, TypeError, "coefficients must be a torch.Tensor"),
        (torch.ones(3), torch.ones(3, 5), T, ValueError, r"x must have shape \[N, C, ...\]"),
        (torch.ones(2, 3), torch.ones(4, 5), T, ValueError, r"C = x.shape\[1\] = 3.*got \(4, 5\)"),
        (torch.ones(2, 3), torch.ones(3, 1), T, ValueError, "K >= 2"),
        (torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 5), T, TypeError, "x must be float"),
        (torch.ones(2, 3), torch.ones(3, 5, dtype=torch.float64), T, TypeError, "float64"),
        (torch.ones(2, 3), torch.ones(3, 5, device="meta"), T, ValueError, "x's device"),
        (torch.ones(2, 3), torch.ones(3, 5), 0.0, ValueError, "spacing must be a finite"),
        (torch.ones(2, 3), torch.ones(3, 5), float("nan"), ValueError, "spacing must be"),
        (torch.ones(2, 3), torch.ones(3, 5), "0.1", TypeError, "spacing must be a float"),
    ],
)
def test_errors(x, c, spacing, error, match):
    with pytest.raises(error, match=match):
        spline_activation(x, c, spacing)


# ---- the CUDA implementation's glue (layouts, copies) run on CPU tensors through Triton's
# interpreter: the kernels themselves are tested in test_spline_triton.py ----


@pytest.mark.parametrize(("shape", "layout", "K"), CASES[:7], ids=IDS[:7])
def test_cuda_path_on_the_interpreter(shape, layout, K):
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(8)
    x, c = sample(shape, layout, K, g, torch.float32)
    dy = to_layout(torch.randn(shape, generator=g), "contiguous")
    y = op_module._forward_cuda(x, c, T)
    ref = linear_spline_reference(x.double(), c.double(), T)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    assert y.stride() == op_module.spline_output_like(x).stride()
    dx, dc = op_module._backward_cuda(dy, x, c, T, True, True)
    dx_ref, dc_ref = op_module._backward_aten(dy.double(), x.double(), c.double(), T, True, True)
    torch.testing.assert_close(dx.double(), dx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dc.double(), dc_ref, rtol=1e-5, atol=1e-4)
    assert dx.stride() == y.stride() and dc.dtype == c.dtype
