"""The Triton kernels called directly (`autoshuffle_ext.kernels`), against plain PyTorch references.

Without a GPU they run on CPU tensors through the interpreter (TRITON_INTERPRET=1, set in
conftest.py); with one, natively on CUDA. Small blocks are forced where useful so that small
shapes still span several row, pixel and split blocks, with ragged edges."""

import pytest
import torch

pytest.importorskip("triton")

from autoshuffle_ext.kernels.mixing import shuffle_mix_backward, shuffle_mix_forward
from autoshuffle_ext.kernels.penalty import penalty_backward, penalty_forward

from autoshuffle_ext.ops.mixing import empty_mix_output
from tests.references import reference_penalty, reference_shuffle_mix, to_layout

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _ieee_fp32():
    # The kernels follow torch's TF32 switch; the references here are exact.
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


def reference_penalty_grad(M: torch.Tensor) -> torch.Tensor:
    M = M.detach().double().requires_grad_()
    (grad,) = torch.autograd.grad(reference_penalty(M).sum(), M)
    return grad


# ---- penalty ----


@pytest.mark.parametrize(
    ("shape", "transpose"),
    [((1, 1), False), ((5, 5), False), ((3, 7, 7), False), ((37, 37), True), ((2, 19, 19), True),
     ((1025, 1025), False)],
    ids=str,
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_penalty_kernels(shape, transpose, dtype):
    if shape[-1] > 1000 and dtype == torch.float64:
        pytest.skip("one dtype is enough for the multi-chunk rows")
    g = torch.Generator().manual_seed(0)
    # Entries away from zero: the reference gradient is smooth there.
    M = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.1) * (
        torch.randint(0, 2, shape, generator=g) * 2 - 1
    )
    M = M.to(dtype).to(DEVICE)
    if transpose:
        M = M.transpose(-1, -2)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    value, row, col = penalty_forward(M)
    Md = M.double().cpu()
    torch.testing.assert_close(value.cpu().double(), reference_penalty(Md), rtol=tol, atol=tol)
    torch.testing.assert_close(row.cpu().double(), Md.norm(dim=-1), rtol=tol, atol=tol)
    torch.testing.assert_close(col.cpu().double(), Md.norm(dim=-2), rtol=tol, atol=tol)
    grad = torch.rand(shape[:-2], generator=g, dtype=dtype).to(DEVICE) + 0.5
    dm = penalty_backward(grad, M, row, col)
    ref = grad.cpu().double()[..., None, None] * reference_penalty_grad(Md)
    torch.testing.assert_close(dm.cpu().double(), ref, rtol=tol, atol=tol)


def test_penalty_kernels_empty_stack():
    value, row, col = penalty_forward(torch.rand(0, 4, 4, device=DEVICE))
    assert value.shape == (0,) and row.shape == col.shape == (0, 4)


# ---- shuffle_mix ----

BLOCKS = (16, 16, 16)
CASES = [  # (shape, layout, blocks): ragged channel and pixel blocks, C = 1, [N, C], 5-D
    ((2, 5, 3, 4), "contiguous", None),
    ((2, 5, 3, 4), "channels_last", None),
    ((3, 37, 5, 7), "contiguous", BLOCKS),
    ((3, 37, 5, 7), "channels_last", BLOCKS),
    ((2, 20, 3, 5), "strided", BLOCKS),
    ((4, 1, 3, 3), "contiguous", None),
    ((70, 3), "contiguous", BLOCKS),
    ((2, 17, 9), "contiguous", BLOCKS),
    ((2, 6, 2, 3, 2), "channels_last", None),
    ((1, 40, 6, 6), "contiguous", BLOCKS),
]
IDS = [f"{s}-{layout}" for s, layout, _ in CASES]


def mix_sample(shape, layout, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype).to(DEVICE)
    M = (torch.rand(shape[1], shape[1], generator=g, dtype=dtype) + 0.05).to(DEVICE)
    dy = torch.randn(shape, generator=g, dtype=dtype).to(DEVICE)
    return to_layout(x, layout), M, to_layout(dy, layout)


@pytest.mark.parametrize(("shape", "layout", "blocks"), CASES, ids=IDS)
def test_mix_forward_kernel(shape, layout, blocks):
    x, M, _ = mix_sample(shape, layout, 1)
    y, p, row, col = shuffle_mix_forward(x, M, empty_mix_output(x), blocks=blocks)
    y_ref, p_ref = reference_shuffle_mix(x.cpu().double(), M.cpu().double())
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.cpu().double(), p_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(row.cpu().double(), M.cpu().double().norm(dim=1))
    torch.testing.assert_close(col.cpu().double(), M.cpu().double().norm(dim=0))


@pytest.mark.parametrize(("shape", "layout", "blocks"), CASES, ids=IDS)
@pytest.mark.parametrize("num_splits", [1, 3])
def test_mix_backward_kernel(shape, layout, blocks, num_splits):
    x, M, dy = mix_sample(shape, layout, 2)
    _, _, row, col = shuffle_mix_forward(x, M, empty_mix_output(x))
    grad_p = torch.tensor(0.37, device=DEVICE)
    dx, dm = empty_mix_output(dy), torch.empty_like(M)
    dm_blocks = (16, 16) if blocks else None
    shuffle_mix_backward(dy, grad_p, x, M, row, col, dx, dm, blocks=blocks, dm_blocks=dm_blocks,
                         num_splits=num_splits)  # fmt: skip
    xd, Md, dyd = x.cpu().double(), M.cpu().double(), dy.cpu().double()
    dx_ref = torch.einsum("ji,nj...->ni...", Md, dyd)
    dm_ref = torch.einsum("ni...,nj...->ij", dyd, xd) + 0.37 * reference_penalty_grad(Md)
    torch.testing.assert_close(dx.cpu().double(), dx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dm.cpu().double(), dm_ref, rtol=1e-5, atol=1e-4)


def test_mix_backward_kernel_partial_outputs():
    """Without grad_p the epilogue adds nothing; dx or dm alone are computed alone."""
    x, M, dy = mix_sample((2, 24, 5, 5), "channels_last", 3)
    _, _, row, col = shuffle_mix_forward(x, M, empty_mix_output(x))
    xd, Md, dyd = x.cpu().double(), M.cpu().double(), dy.cpu().double()
    dm = torch.full_like(M, float("nan"))
    shuffle_mix_backward(dy, None, x, M, row, col, None, dm, num_splits=2)
    torch.testing.assert_close(dm.cpu().double(), torch.einsum("ni...,nj...->ij", dyd, xd),
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    dx = torch.full_like(dy, float("nan"))
    shuffle_mix_backward(dy, None, x, M, row, col, dx, None)
    torch.testing.assert_close(dx.cpu().double(), torch.einsum("ji,nj...->ni...", Md, dyd),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_mix_kernels_half_input_float32_matrix():
    x, M, dy = mix_sample((2, 24, 3, 5), "contiguous", 4)
    x, dy = x.half(), dy.half()
    y, p, row, col = shuffle_mix_forward(x, M, empty_mix_output(x))
    assert y.dtype == torch.float16 and p.dtype == torch.float32
    Mh = M.half().cpu().double()
    y_ref, _ = reference_shuffle_mix(x.cpu().double(), Mh)
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=2e-3, atol=2e-3)
    dx, dm = empty_mix_output(dy), torch.empty_like(M)
    shuffle_mix_backward(dy, None, x, M, row, col, dx, dm, num_splits=2)
    assert dx.dtype == torch.float16 and dm.dtype == torch.float32
    dm_ref = torch.einsum("ni...,nj...->ij", dy.cpu().double(), x.cpu().double())
    torch.testing.assert_close(dm.cpu().double(), dm_ref, rtol=1e-4, atol=1e-4)


@cuda
def test_mix_forward_64bit_offsets():
    """More than 2**31 elements: the last pixels are addressed beyond int32."""
    C, P = 8, 2**27 + 5
    x = torch.randn(2, C, P, device="cuda", dtype=torch.bfloat16)
    M = torch.rand(C, C, device="cuda")
    y, _, _, _ = shuffle_mix_forward(x, M, empty_mix_output(x))
    tail = x[:, :, -1000:].double()
    y_ref = torch.einsum("ij,njp->nip", M.bfloat16().double(), tail)
    torch.testing.assert_close(y[:, :, -1000:].double(), y_ref, rtol=2e-2, atol=2e-2)
