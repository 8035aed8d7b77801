"""The Triton kernel of the sparse channel mixing called directly
(`autoshuffle_ext.kernels.ell_mix`), against its plain PyTorch reference (`ell_mix_reference`).
Without a GPU it runs on CPU tensors through the interpreter (TRITON_INTERPRET=1, set in
conftest.py); with one, natively on CUDA. Small tiles are forced where useful, so that small
shapes span several channel and pixel blocks with ragged edges."""

import pytest
import torch

pytest.importorskip("triton")

from autoshuffle_ext.kernels.ell_mix import ell_mix_forward

from autoshuffle_ext.ops.ell_reference import ell_index, ell_mix_reference
from tests.references import to_layout

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

TOLERANCES = {  # (rtol, atol) against the reference (which rounds once, like the kernel)
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float16: (1e-3, 1e-3),
}


def sparse_mixing(C: int, extra: int, g: torch.Generator) -> torch.Tensor:
    """A random [C, C] float32 matrix with a permutation's non-zeros plus up to `extra` more per
    row (rows of different counts, so that the row lists are padded with -1), values in
    [0.1, 1.1) with random signs."""
    M = torch.zeros(C, C)
    M[torch.arange(C), torch.randperm(C, generator=g)] = 1.0
    for i in range(C):
        count = int(torch.randint(0, extra + 1, (), generator=g))
        M[i, torch.randint(0, C, (count,), generator=g)] = 1.0
    signs = torch.randint(0, 2, (C, C), generator=g) * 2 - 1
    return M * (torch.rand(C, C, generator=g) + 0.1) * signs


def run(shape, layout, transpose, dtype, a_dtype, extra, seed, tile=None, out_layout=None):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    M = sparse_mixing(C, extra, g).to(a_dtype).to(DEVICE)
    A = M.t() if transpose else M
    index = ell_index(A)
    x = to_layout(torch.randn(shape, generator=g).to(dtype).to(DEVICE), layout)
    out = to_layout(torch.full(shape, float("nan"), dtype=dtype, device=DEVICE),
                    out_layout or layout)  # fmt: skip
    y = ell_mix_forward(x, A, index, out, tile=tile)
    assert y is out
    return y, ell_mix_reference(x, A, index), index


CASES = [  # (shape, layout, transpose, extra, tile)
    ((1, 24, 5, 7), "contiguous", False, 3, None),
    ((1, 24, 5, 7), "channels_last", True, 3, None),
    ((3, 58, 3, 5), "contiguous", True, 2, (16, 8)),
    ((3, 58, 3, 5), "channels_last", False, 2, (16, 8)),
    ((2, 116, 2, 3), "channels_last", True, 4, None),
    ((2, 116, 2, 3), "contiguous", False, 4, (32, 4)),
    ((2, 13, 7), "contiguous", True, 1, (4, 4)),
    ((5, 24), "contiguous", False, 2, (8, 2)),
]
IDS = [f"{list(s)}-{layout}-{'At' if t else 'A'}" for s, layout, t, _, _ in CASES]


@pytest.mark.parametrize(("shape", "layout", "transpose", "extra", "tile"), CASES, ids=IDS)
def test_forward_float32(shape, layout, transpose, extra, tile):
    y, y_ref, index = run(shape, layout, transpose, torch.float32, torch.float32, extra, 0, tile)
    assert (index < 0).any(), "the case must pad some rows"
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    torch.testing.assert_close(y.cpu(), y_ref.cpu(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("a_float32", [True, False], ids=["A_f32", "A_same"])
def test_forward_half(layout, dtype, a_float32):
    a_dtype = torch.float32 if a_float32 else dtype
    y, y_ref, _ = run((2, 58, 3, 5), layout, True, dtype, a_dtype, 3, 1)
    assert y.dtype == dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(y.cpu().float(), y_ref.cpu().float(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward_permutation_k1(layout):
    """K = 1 (a permutation with signed weights): y[:, i] = A[i, perm[i]] x[:, perm[i]]."""
    y, y_ref, index = run((3, 24, 3, 3), layout, True, torch.float32, torch.float32, 0, 2)
    assert index.shape == (24, 1) and (index >= 0).all()
    torch.testing.assert_close(y.cpu(), y_ref.cpu(), rtol=1e-5, atol=1e-6)


def test_forward_other_output_layout():
    """out in the other layout than x: the kernel stores through out's strides."""
    for layout, out_layout in (("contiguous", "channels_last"), ("channels_last", "contiguous")):
        y, y_ref, _ = run((2, 24, 3, 5), layout, False, torch.float32, torch.float32, 2, 3,
                          out_layout=out_layout)  # fmt: skip
        fmt = torch.channels_last if out_layout == "channels_last" else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(y.cpu(), y_ref.cpu(), rtol=1e-5, atol=1e-6)


def test_forward_empty_rows():
    """All-zero rows (rows of -1 only in the row list) give zeros."""
    g = torch.Generator().manual_seed(4)
    M = sparse_mixing(24, 2, g).to(DEVICE)
    M[::5] = 0.0
    index = ell_index(M)
    assert (index[::5] == -1).all()
    x = torch.randn(2, 24, 3, 3, generator=g).to(DEVICE)
    y = ell_mix_forward(x, M, index, torch.full_like(x, float("nan")))
    torch.testing.assert_close(y.cpu(), ell_mix_reference(x, M, index).cpu(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    assert (y[:, ::5] == 0).all()


def test_forward_rejects_unmergeable_pixels():
    x = torch.randn(2, 8, 4, 6, device=DEVICE).transpose(2, 3)  # pixels do not merge
    index = torch.zeros(8, 1, dtype=torch.int64, device=DEVICE)
    A = torch.eye(8, device=DEVICE)
    with pytest.raises(ValueError, match="pixel dims of x"):
        ell_mix_forward(x, A, index, torch.empty(x.shape, device=DEVICE))
