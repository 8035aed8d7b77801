"""The fused CPU projection (csrc/cpu/projection.cpp) against its ATen form `project_aten_`: the
same steps on every kind of matrix the training meets (dense starts, sparse late-training
matrices, dead lines, huge entries), stacks, both float dtypes, and the op contract."""

import textwrap

import pytest
import torch
from torch.library import opcheck

import autoshuffle_ext as asx
from autoshuffle_ext.doubly_stochastic import project_aten_
from tests.references import VECTOR_PATHS, check_vector_path

pytestmark = pytest.mark.skipif(not asx.extension_available(), reason="needs the compiled library")


def matrices(kind: str, B: int, n: int, g: torch.Generator, dtype) -> torch.Tensor:
    if kind == "dense":
        return torch.rand(B, n, n, generator=g, dtype=dtype) + 0.01
    if kind == "late":  # a permutation plus a little mass, after an SGD step: some negative
        M = torch.stack(
            [asx.permutation_matrix(torch.randperm(n, generator=g), dtype) for _ in range(B)]
        )
        return M + 0.02 * torch.randn(B, n, n, generator=g, dtype=dtype)
    if kind == "dead":  # a row and a column all <= 0: reset to uniform
        M = torch.rand(B, n, n, generator=g, dtype=dtype)
        M[:, 1] = -1.0
        M[:, :, 2] = 0.0
        return M
    if kind == "huge":
        return torch.rand(B, n, n, generator=g, dtype=dtype) * 1e30
    raise ValueError(kind)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["dense", "late", "dead", "huge"])
@pytest.mark.parametrize(("iters", "polish"), [(10, 12), (0, 12), (10, 0), (3, 2)])
def test_fused_equals_aten(kind, dtype, iters, polish):
    g = torch.Generator().manual_seed(0)
    for B, n in [(1, 5), (4, 24), (3, 37)]:
        M = matrices(kind, B, n, g, dtype)
        if kind == "huge" and dtype == torch.float32:
            M = M.clamp(max=1e37)
        fused, reference = M.clone(), M.clone()
        torch.ops.autoshuffle_ext.project_doubly_stochastic_(fused, iters, polish)
        project_aten_(reference, iters, polish)
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        torch.testing.assert_close(fused, reference, rtol=tol, atol=tol)
        assert (fused >= 0).all()


def test_public_entry_uses_it_in_place_and_for_one_matrix():
    g = torch.Generator().manual_seed(1)
    M = torch.rand(16, 16, generator=g) + 0.1
    reference = project_aten_(M.clone(), 10, 12)
    version, ptr = M._version, M.data_ptr()
    out = asx.project_doubly_stochastic_(M)
    assert out is M and M.data_ptr() == ptr and M._version > version
    torch.testing.assert_close(M, reference, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(M.sum(0), torch.ones(16), rtol=0, atol=1e-5)
    torch.testing.assert_close(M.sum(1), torch.ones(16), rtol=0, atol=1e-5)
    # A parameter's data, as the optimizer hook projects it.
    w = torch.nn.Parameter(torch.rand(8, 8, generator=g))
    with torch.no_grad():
        asx.project_doubly_stochastic_(w)
    torch.testing.assert_close(w.detach().sum(1), torch.ones(8), rtol=0, atol=1e-5)


def test_opcheck_and_errors():
    M = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    opcheck(torch.ops.autoshuffle_ext.project_doubly_stochastic_.default, (M, 10, 12))
    with pytest.raises(ValueError, match=r"must be a \[B, n, n\] stack, got \[6, 6\]"):
        torch.ops.autoshuffle_ext.project_doubly_stochastic_(M[0], 10, 12)
    with pytest.raises(TypeError, match="must be float32 or float64, got BFloat16"):
        torch.ops.autoshuffle_ext.project_doubly_stochastic_(M.bfloat16(), 10, 12)


_ISA_CHECK = textwrap.dedent(
    """
    import torch
    import autoshuffle_ext as asx
    from autoshuffle_ext.doubly_stochastic import project_aten_
    g = torch.Generator().manual_seed(0)
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 2e-5)]:
        for B, n in [(1, 5), (3, 37), (2, 96), (1, 192)]:
            dense = torch.rand(B, n, n, generator=g, dtype=dtype) + 0.01
            late = torch.stack([asx.permutation_matrix(torch.randperm(n, generator=g), dtype)
                                for _ in range(B)])
            late = late + 0.02 * torch.randn(B, n, n, generator=g, dtype=dtype)
            for M in (dense, late):
                fused, reference = M.clone(), M.clone()
                torch.ops.autoshuffle_ext.project_doubly_stochastic_(fused, 10, 12)
                project_aten_(reference, 10, 12)
                torch.testing.assert_close(fused, reference, rtol=tol, atol=tol)
    print("ok", torch.backends.cpu.get_cpu_capability())
    """
)


@pytest.mark.parametrize("capability", VECTOR_PATHS)
def test_every_vector_path(capability):
    # The loops run compiled for AVX-512, AVX2 or baseline x86-64: every copy this CPU runs.
    check_vector_path(_ISA_CHECK, capability)
