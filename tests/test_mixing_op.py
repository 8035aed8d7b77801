"""The fused mixing op `shuffle_mix(x, M) -> (M x over channels, P(M))`: values, layouts, the
fused backward (penalty epilogue), the op contract (opcheck, compile, export) and its errors."""

import pytest
import torch
from torch.library import opcheck

import autoshuffle_ext as asx
from autoshuffle_ext.ops.mixing import shuffle_mix
from tests.references import (
    eager_and_compiled_mix,
    reference_penalty,
    reference_shuffle_mix,
    to_layout,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# (shape, layout): odd channel and pixel counts, C = 1, [N, C] and 5-D inputs, empty batch.
CASES = [
    ((2, 5, 3, 4), "contiguous"),
    ((2, 5, 3, 4), "channels_last"),
    ((3, 37, 5, 7), "contiguous"),
    ((3, 37, 5, 7), "channels_last"),
    ((2, 7, 9, 8), "contiguous"),  # >= 64 pixels per plane: the batched weight gradient
    ((2, 5, 3, 4), "strided"),
    ((4, 1, 3, 3), "contiguous"),
    ((6, 11), "contiguous"),
    ((2, 9, 13), "contiguous"),
    ((2, 6, 2, 3, 2), "channels_last"),
    ((0, 5, 3, 3), "contiguous"),
]
IDS = [f"{s}-{layout}" for s, layout in CASES]


def sample(shape, layout, generator, dtype=torch.float64):
    x = to_layout(torch.randn(shape, generator=generator, dtype=dtype), layout)
    M = torch.rand(shape[1], shape[1], generator=generator, dtype=dtype) + 0.05
    return x, M


def expected_layout(x: torch.Tensor) -> str:
    return "channels_last" if x.shape[1] > 1 and x.stride(1) == 1 else "contiguous"


@pytest.mark.parametrize(("shape", "layout"), CASES, ids=IDS)
def test_forward_matches_reference_and_keeps_layout(shape, layout):
    x, M = sample(shape, layout, torch.Generator().manual_seed(0))
    y, p = shuffle_mix(x, M)
    y_ref, p_ref = reference_shuffle_mix(x, M)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p, p_ref, rtol=1e-12, atol=1e-12)
    assert y.shape == x.shape and y.dtype == x.dtype and p.shape == ()
    if expected_layout(x) == "channels_last":
        assert y.movedim(1, -1).is_contiguous()
    else:
        assert y.is_contiguous()
    if layout == "channels_last" and shape[1] > 1:
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        assert y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(("shape", "layout"), CASES[:9], ids=IDS[:9])
def test_backward_is_the_fused_formula(shape, layout):
    """dX = M^T dY, dM = sum dY X^T + lam * dP/dM, for loss = <y, dY> + lam * P."""
    g = torch.Generator().manual_seed(1)
    x, M = sample(shape, layout, g)
    x.requires_grad_()
    M.requires_grad_()
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    lam = 0.37
    y, p = shuffle_mix(x, M)
    ((y * dy).sum() + lam * p).backward()
    Mr = M.detach().requires_grad_()
    (penalty_grad,) = torch.autograd.grad(reference_penalty(Mr), Mr)
    dx_ref = torch.einsum("ji,nj...->ni...", M.detach(), dy)
    dm_ref = torch.einsum("ni...,nj...->ij", dy, x.detach()) + lam * penalty_grad
    torch.testing.assert_close(x.grad, dx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M.grad, dm_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "layout"), [CASES[0], CASES[1], CASES[6]], ids=str)
def test_gradcheck(shape, layout):
    x, M = sample(shape, layout, torch.Generator().manual_seed(2))
    x.requires_grad_()
    M.requires_grad_()
    assert torch.autograd.gradcheck(shuffle_mix, (x, M))
    assert torch.autograd.gradcheck(lambda x, M: shuffle_mix(x, M)[0], (x, M))
    assert torch.autograd.gradcheck(lambda x, M: shuffle_mix(x, M)[1], (x, M))


def test_gradient_of_penalty_only_and_of_y_only():
    g = torch.Generator().manual_seed(3)
    x, M = sample((2, 6, 3, 3), "contiguous", g)
    M.requires_grad_()
    _, p = shuffle_mix(x, M)
    (grad,) = torch.autograd.grad(2.5 * p, M)
    torch.testing.assert_close(grad, 2.5 * asx.l1l2_penalty_grad(M.detach()))
    y, _ = shuffle_mix(x, M)
    (grad,) = torch.autograd.grad(y.sum(), M)
    torch.testing.assert_close(grad, torch.einsum("ni...,nj...->ij", torch.ones_like(y), x))


def test_x_without_grad_and_m_without_grad():
    g = torch.Generator().manual_seed(4)
    x, M = sample((2, 6, 3, 3), "channels_last", g)
    y, _ = shuffle_mix(x, M.requires_grad_())
    y.sum().backward()
    assert M.grad is not None and x.grad is None
    x.requires_grad_()
    y, _ = shuffle_mix(x, M.detach())
    y.sum().backward()
    torch.testing.assert_close(
        x.grad, torch.einsum("ji,nj...->ni...", M.detach(), torch.ones_like(y))
    )


@pytest.mark.parametrize(
    ("x_dtype", "m_dtype", "tol"),
    [
        (torch.float32, torch.float32, 1e-5),
        (torch.bfloat16, torch.float32, 2e-2),
        (torch.bfloat16, torch.bfloat16, 2e-2),
        (torch.float16, torch.float32, 5e-3),
    ],
    ids=["f32", "bf16-x-f32-M", "bf16", "f16-x-f32-M"],
)
def test_dtypes(x_dtype, m_dtype, tol):
    g = torch.Generator().manual_seed(5)
    x, M = sample((2, 24, 5, 5), "channels_last", g)
    xq, Mq = x.to(x_dtype).requires_grad_(), M.to(m_dtype).requires_grad_()
    y, p = shuffle_mix(xq, Mq)
    assert y.dtype == x_dtype and p.dtype == m_dtype
    (y.float().sum() + p.float()).backward()
    assert xq.grad.dtype == x_dtype and Mq.grad.dtype == m_dtype
    y_ref, _ = reference_shuffle_mix(xq.detach().double(), Mq.detach().to(x_dtype).double())
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(
        p.double(), reference_penalty(Mq.detach().double()), rtol=tol, atol=0
    )


def test_opcheck():
    g = torch.Generator().manual_seed(6)
    for shape, layout in [CASES[0], CASES[1], CASES[6]]:
        x, M = sample(shape, layout, g)
        x.requires_grad_()
        M.requires_grad_()
        opcheck(torch.ops.autoshuffle_ext.shuffle_mix_fwd.default, (x, M))
        _, _, row, col = torch.ops.autoshuffle_ext.shuffle_mix_fwd(x.detach(), M.detach())
        dy = torch.randn(shape, generator=g, dtype=torch.float64)
        half = torch.tensor(0.5, dtype=torch.float64)
        for grad_p, need_dx, need_dm in [
            (half, True, True),
            (None, False, True),
            (None, True, False),
        ]:
            args = (dy, grad_p, x.detach(), M.detach(), row, col, need_dx, need_dm)
            opcheck(torch.ops.autoshuffle_ext.shuffle_mix_bwd.default, args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compile_fullgraph_forward_and_backward(layout):
    g = torch.Generator().manual_seed(7)
    x, M = sample((2, 12, 4, 4), layout, g, torch.float32)

    (ye, dxe, dMe), (yc, dxc, dMc) = eager_and_compiled_mix(shuffle_mix, x, M)
    torch.testing.assert_close(yc, ye)
    assert yc.stride() == ye.stride()
    torch.testing.assert_close(dxc, dxe)
    torch.testing.assert_close(dMc, dMe)


def test_export():
    class Mix(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.M = torch.nn.Parameter(torch.rand(8, 8))

        def forward(self, x):
            return shuffle_mix(x, self.M)

    x = torch.randn(2, 8, 3, 3)
    module = Mix()
    ep = torch.export.export(module, (x,))
    for a, b in zip(ep.module()(x), module(x), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("x", "M", "error", "match"),
    [
        ([1.0], torch.eye(2), TypeError, "x must be a torch.Tensor"),
        (torch.ones(2, 2), "M", TypeError, "M must be a torch.Tensor"),
        (torch.ones(3), torch.eye(3), ValueError, r"x must have shape \[N, C, ...\].*got \(3,\)"),
        (torch.ones(2, 3, 4), torch.eye(4), ValueError, r"M must have shape \[C, C\] = \[3, 3\]"),
        (torch.ones(2, 3, 4), torch.ones(3, 4), ValueError, r"got \(3, 4\)"),
        (torch.ones(2, 3, dtype=torch.int64), torch.eye(3), TypeError, "x must be a floating"),
        (torch.ones(2, 3), torch.eye(3, dtype=torch.float64), TypeError, "got torch.float64"),
        (
            torch.ones(2, 3, dtype=torch.bfloat16),
            torch.eye(3, dtype=torch.float16),
            TypeError,
            "M must have x's dtype torch.bfloat16",
        ),
        (torch.ones(2, 3), torch.eye(3, device="meta"), ValueError, "M must be on x's device"),
    ],
)
def test_errors(x, M, error, match):
    with pytest.raises(error, match=match):
        shuffle_mix(x, M)


@cuda
@pytest.mark.parametrize(
    "shape",
    [(64, 240, 16, 16), (32, 232, 14, 14), (1, 116, 28, 28), (3, 1, 5, 5), (5, 33)],
    ids=str,
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize(
    ("x_dtype", "m_dtype", "tol"),
    [(torch.float32, torch.float32, 1e-4), (torch.bfloat16, torch.float32, 3e-2)],
    ids=["f32", "bf16-x-f32-M"],
)
def test_cuda_matches_reference(shape, layout, x_dtype, m_dtype, tol):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("channels_last needs 4-D")
    g = torch.Generator().manual_seed(8)
    x, M = sample(shape, layout, g)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    xc = to_layout(x.to(x_dtype).cuda(), layout).requires_grad_()
    Mc = M.to(m_dtype).cuda().requires_grad_()
    y, p = shuffle_mix(xc, Mc)
    ((y.double() * dy.cuda()).sum() + 0.3 * p).backward()
    xr, Mr = (
        xc.detach().cpu().double().requires_grad_(),
        Mc.detach().cpu().double().requires_grad_(),
    )
    y_ref, p_ref = reference_shuffle_mix(xr, Mr.to(x_dtype).double())
    ((y_ref * dy).sum() + 0.3 * reference_penalty(Mr)).backward()
    scale = max(1.0, float(y_ref.abs().max()))
    torch.testing.assert_close(y.cpu().double(), y_ref.detach(), rtol=tol, atol=tol * scale)
    torch.testing.assert_close(p.cpu().double(), p_ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(xc.grad.cpu().double(), xr.grad, rtol=tol, atol=tol * scale)
    dm_scale = max(1.0, float(Mr.grad.abs().max()))
    torch.testing.assert_close(Mc.grad.cpu().double(), Mr.grad, rtol=tol, atol=tol * dm_scale)
