"""The l1-l2 penalty ops (`l1l2_penalty_fwd`, `l1l2_penalty_bwd`, `l1l2_penalty`,
`l1l2_penalty_grad`) against the literal formula, its properties, and the op contract."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.library import opcheck

import autoshuffle_ext as asx
from autoshuffle_ext.ops.penalty import penalty_and_norms
from tests.references import reference_penalty

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def away_from_zero(shape, generator, dtype=torch.float64) -> torch.Tensor:
    """Random entries of both signs with |m| >= 0.1: the penalty is smooth there."""
    magnitude = 0.1 + torch.rand(shape, generator=generator, dtype=dtype)
    sign = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
    return sign * magnitude


def random_doubly_stochastic(n, generator, terms, dtype=torch.float64) -> torch.Tensor:
    weights = torch.rand(terms, generator=generator, dtype=dtype) + 0.05
    weights = weights / weights.sum()
    perms = [torch.randperm(n, generator=generator) for _ in range(terms)]
    return sum(w * asx.permutation_matrix(p, dtype) for w, p in zip(weights, perms, strict=True))


SHAPES = [(1, 1), (2, 2), (7, 7), (40, 40), (3, 6, 6), (0, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"]
)
def test_value_and_norms_match_reference(shape, dtype, tol):
    g = torch.Generator().manual_seed(0)
    M = torch.randn(shape, generator=g, dtype=torch.float64)
    value, row, col = penalty_and_norms(M.to(dtype))
    assert value.shape == shape[:-2] and value.dtype == dtype
    assert row.shape == col.shape == shape[:-1]
    torch.testing.assert_close(value.double(), reference_penalty(M), rtol=tol, atol=tol)
    torch.testing.assert_close(row.double(), M.norm(dim=-1), rtol=tol, atol=tol)
    torch.testing.assert_close(col.double(), M.norm(dim=-2), rtol=tol, atol=tol)
    torch.testing.assert_close(asx.l1l2_penalty(M.to(dtype)), value)


def test_half_precision_accumulates_in_float32():
    g = torch.Generator().manual_seed(1)
    M = torch.rand(64, 64, generator=g, dtype=torch.float64)
    for dtype in (torch.float16, torch.bfloat16):
        value, row, _ = penalty_and_norms(M.to(dtype))
        assert value.dtype == dtype and row.dtype == torch.float32
        ref = reference_penalty(M.to(dtype).double())
        torch.testing.assert_close(value.double(), ref, rtol=1e-2, atol=0)


@pytest.mark.parametrize("shape", [(6, 6), (2, 5, 5)], ids=str)
def test_gradient_matches_autograd_of_reference(shape):
    g = torch.Generator().manual_seed(2)
    M = away_from_zero(shape, g).requires_grad_()
    weights = torch.rand(shape[:-2], generator=g, dtype=torch.float64)
    (ref_grad,) = torch.autograd.grad((reference_penalty(M) * weights).sum(), M)
    (grad,) = torch.autograd.grad((asx.l1l2_penalty(M) * weights).sum(), M)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    (unit,) = torch.autograd.grad(reference_penalty(M).sum(), M)
    torch.testing.assert_close(asx.l1l2_penalty_grad(M), unit, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    M = away_from_zero((3, 5, 5), g).requires_grad_()
    assert torch.autograd.gradcheck(asx.l1l2_penalty, (M,))
    assert torch.autograd.gradcheck(lambda m: penalty_and_norms(m)[0], (M[0],))


def test_zero_row_and_column_take_the_zero_subgradient():
    M = torch.rand(4, 4, dtype=torch.float64) + 0.1
    M[1] = 0
    M[:, 2] = 0
    grad = asx.l1l2_penalty_grad(M)
    assert torch.isfinite(grad).all()
    # Entries of the zero row: sign 0 and norm term 0.
    assert (grad[1] == 0).all() and (grad[:, 2] == 0).all()
    torch.testing.assert_close(asx.l1l2_penalty(M), reference_penalty(M))


@given(n=st.integers(1, 24), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_zero_on_every_permutation(n, seed):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    value = asx.l1l2_penalty(asx.permutation_matrix(perm, torch.float64))
    assert abs(float(value)) < 1e-12


@given(n=st.integers(2, 24), terms=st.integers(2, 5), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_positive_on_doubly_stochastic_non_permutations(n, terms, seed):
    g = torch.Generator().manual_seed(seed)
    M = random_doubly_stochastic(n, g, terms)
    if ((M > 1e-9) & (M < 1 - 1e-9)).sum() == 0:  # the mixture collapsed to one permutation
        return
    value = float(asx.l1l2_penalty(M))
    assert value > 1e-6
    torch.testing.assert_close(torch.tensor(value, dtype=torch.float64), reference_penalty(M))


def test_batched_equals_per_matrix():
    g = torch.Generator().manual_seed(4)
    M = torch.rand(5, 9, 9, generator=g, dtype=torch.float64)
    stacked = asx.l1l2_penalty(M)
    torch.testing.assert_close(stacked, torch.stack([asx.l1l2_penalty(m) for m in M]))


def test_strided_input():
    g = torch.Generator().manual_seed(5)
    M = torch.randn(8, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(asx.l1l2_penalty(M.t()), reference_penalty(M.t()))


def test_opcheck():
    g = torch.Generator().manual_seed(6)
    for shape in [(5, 5), (3, 4, 4)]:
        M = away_from_zero(shape, g).requires_grad_()
        opcheck(torch.ops.autoshuffle_ext.l1l2_penalty_fwd.default, (M,))
        value, row, col = penalty_and_norms(M.detach())
        grad = torch.rand_like(value)
        opcheck(torch.ops.autoshuffle_ext.l1l2_penalty_bwd.default, (grad, M.detach(), row, col))


def test_compile_fullgraph_forward_and_backward():
    g = torch.Generator().manual_seed(7)
    M = away_from_zero((6, 6), g, torch.float32).requires_grad_()

    def loss(m):
        return asx.l1l2_penalty(m) * 3.0

    compiled = torch.compile(loss, fullgraph=True)
    (grad,) = torch.autograd.grad(compiled(M), M)
    (ref,) = torch.autograd.grad(loss(M), M)
    torch.testing.assert_close(grad, ref)


def test_export():
    class Penalty(torch.nn.Module):
        def forward(self, m):
            return asx.l1l2_penalty(m)

    M = torch.rand(2, 5, 5)
    ep = torch.export.export(Penalty(), (M,))
    torch.testing.assert_close(ep.module()(M), asx.l1l2_penalty(M))


@pytest.mark.parametrize(
    ("arg", "error", "match"),
    [
        ([[1.0]], TypeError, "M must be a torch.Tensor"),
        (torch.ones(3), ValueError, r"got \(3,\)"),
        (torch.ones(2, 3), ValueError, r"\[n, n\] or \[B, n, n\], got \(2, 3\)"),
        (torch.ones(1, 2, 2, 2), ValueError, "got"),
        (torch.ones(2, 2, dtype=torch.int64), TypeError, "floating point.*torch.int64"),
    ],
)
def test_errors(arg, error, match):
    with pytest.raises(error, match=match):
        asx.l1l2_penalty(arg)
    with pytest.raises(error, match=match):
        asx.l1l2_penalty_grad(arg)


@cuda
@pytest.mark.parametrize("shape", [(1, 1), (116, 116), (3, 240, 240), (1030, 1030)], ids=str)
@pytest.mark.parametrize(
    ("dtype", "tol"),
    [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float64, 1e-12)],
    ids=["f32", "bf16", "f64"],
)
def test_cuda_matches_reference(shape, dtype, tol):
    g = torch.Generator().manual_seed(8)
    M = away_from_zero(shape, g).to(dtype)
    Mc = M.cuda().requires_grad_()
    value = asx.l1l2_penalty(Mc)
    weights = torch.rand(shape[:-2], generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((value * weights.to(dtype).cuda()).sum(), Mc)
    Md = M.double().requires_grad_()
    ref = reference_penalty(Md)
    (ref_grad,) = torch.autograd.grad((ref * weights.to(dtype).double()).sum(), Md)
    torch.testing.assert_close(value.cpu().double(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(grad.cpu().double(), ref_grad, rtol=tol, atol=tol * 4)
