"""The Triton kernels of `spline_activation` called directly (`autoshuffle_ext.kernels.spline`),
against the plain PyTorch reference. Without a GPU they run on CPU tensors through the
interpreter (TRITON_INTERPRET=1, set in conftest.py); with one, natively on CUDA. Small tiles
and several splits are forced where useful, so that small shapes span several channel, pixel
and split blocks with ragged edges."""

import pytest
import torch

pytest.importorskip("triton")

from autoshuffle_ext.kernels.spline import spline_backward, spline_forward

from autoshuffle_ext.splines import linear_spline_reference
from tests.references import to_layout

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [  # (shape, layout, K, tile)
    ((2, 5, 3, 4), "contiguous", 51, None),
    ((2, 5, 3, 4), "channels_last", 51, None),
    ((3, 37, 5, 7), "contiguous", 21, (4, 8)),
    ((3, 37, 5, 7), "channels_last", 21, (8, 4)),
    ((2, 20, 3, 5), "strided", 11, (4, 4)),
    ((4, 1, 3, 3), "contiguous", 3, None),
    ((70, 3), "contiguous", 2, (2, 16)),
    ((2, 6, 2, 3, 2), "channels_last", 101, None),
]
IDS = [f"{s}-{layout}-K{k}" for s, layout, k, _ in CASES]


def sample(shape, layout, K, seed, spacing=0.1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    width = spacing * (K // 2) * 1.5 + spacing
    x = (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * width
    c = torch.randn(shape[1], K, generator=g, dtype=dtype)
    dy = torch.randn(shape, generator=g, dtype=dtype)
    return to_layout(x.to(DEVICE), layout), c.to(DEVICE), to_layout(dy.to(DEVICE), layout)


def reference(x, c, dy, spacing):
    xr = x.detach().cpu().double().requires_grad_()
    cr = c.detach().cpu().double().requires_grad_()
    y = linear_spline_reference(xr, cr, spacing)
    (y * dy.cpu().double()).sum().backward()
    return y.detach(), xr.grad, cr.grad


@pytest.mark.parametrize(("shape", "layout", "K", "tile"), CASES, ids=IDS)
def test_forward_kernel(shape, layout, K, tile):
    x, c, dy = sample(shape, layout, K, 0)
    y = spline_forward(x, c, 0.1, torch.empty_like(x), tile=tile)
    y_ref, _, _ = reference(x, c, dy, 0.1)
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("shape", "layout", "K", "tile"), CASES, ids=IDS)
@pytest.mark.parametrize("num_splits", [1, 3])
def test_backward_kernel(shape, layout, K, tile, num_splits):
    x, c, dy = sample(shape, layout, K, 1)
    dx = torch.empty_like(x)
    dc = spline_backward(dy, x, c, 0.1, dx, True, tile=tile, num_splits=num_splits)
    _, dx_ref, dc_ref = reference(x, c, dy, 0.1)
    torch.testing.assert_close(dx.cpu().double(), dx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dc.cpu().double(), dc_ref, rtol=1e-5, atol=1e-4)
    assert dc.dtype == torch.float32 and dc.shape == c.shape


def test_backward_kernel_partial_outputs():
    x, c, dy = sample((2, 24, 5, 5), "channels_last", 51, 2)
    _, dx_ref, dc_ref = reference(x, c, dy, 0.1)
    dc = spline_backward(dy, x, c, 0.1, None, True, num_splits=2)
    torch.testing.assert_close(dc.cpu().double(), dc_ref, rtol=1e-5, atol=1e-4)
    dx = torch.full_like(x, float("nan"))
    assert spline_backward(dy, x, c, 0.1, dx, False) is None
    torch.testing.assert_close(dx.cpu().double(), dx_ref, rtol=1e-5, atol=1e-5)


def test_backward_kernel_concentrated_inputs():
    """Every input of a channel in one segment: all contributions meet in two bins (the case
    that serialises atomics); here a plain sum."""
    x, c, dy = sample((4, 3, 8, 8), "contiguous", 51, 3)
    x = torch.full_like(x, 0.03) + 0.001 * torch.arange(3, device=DEVICE).view(1, 3, 1, 1)
    dc = spline_backward(dy, x, c, 0.1, None, True, num_splits=3)
    _, _, dc_ref = reference(x, c, dy, 0.1)
    torch.testing.assert_close(dc.cpu().double(), dc_ref, rtol=1e-5, atol=1e-4)
    assert int((dc != 0).sum()) == 6


def test_half_inputs_with_float32_knots():
    x, c, dy = sample((2, 16, 6, 6), "channels_last", 51, 4)
    xh, dyh = x.bfloat16(), dy.bfloat16()
    y = spline_forward(xh, c, 0.1, torch.empty_like(xh))
    dx = torch.empty_like(xh)
    dc = spline_backward(dyh, xh, c, 0.1, dx, True)
    y_ref, dx_ref, dc_ref = reference(xh.float(), c, dyh.float(), 0.1)
    assert y.dtype == dx.dtype == torch.bfloat16
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=1e-2, atol=2e-2)
    torch.testing.assert_close(dx.cpu().double(), dx_ref, rtol=1e-2, atol=1e-1)
    torch.testing.assert_close(dc.cpu().double(), dc_ref, rtol=1e-4, atol=1e-3)


def test_nan_input_gives_nan_and_reads_in_bounds():
    x, c, _ = sample((1, 2, 4), "contiguous", 5, 5)
    x[0, 0, 1] = float("nan")
    y = spline_forward(x, c, 0.1, torch.empty_like(x))
    assert torch.isnan(y[0, 0, 1]) and int(torch.isnan(y).sum()) == 1


def test_empty_inputs():
    x = torch.empty(0, 4, 3, 3, device=DEVICE)
    c = torch.randn(4, 7, device=DEVICE)
    assert spline_forward(x, c, 0.1, torch.empty_like(x)).shape == x.shape
    dc = spline_backward(x, x, c, 0.1, torch.empty_like(x), True)
    assert torch.equal(dc.cpu(), torch.zeros(4, 7))
