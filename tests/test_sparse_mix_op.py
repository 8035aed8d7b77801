"""The sparse mixing: `ell_index` (the padded row lists), the kernel `ell_mix` against its plain
reference, `sparse_mix` against the dense `shuffle_mix` (values, both gradients, forward mode),
the op contract (opcheck, compile) and its errors; and `LearnedShuffle`'s switch between them."""

import textwrap

import pytest
import torch
from torch.library import opcheck

import autoshuffle_ext as asx
from autoshuffle_ext.ops.ell_reference import ell_index, ell_mix_reference
from autoshuffle_ext.ops.mixing import shuffle_mix
from autoshuffle_ext.ops.sparse_mix import ell_mix, sparse_mix, sparse_mix_index
from tests.references import VECTOR_PATHS, check_vector_path, eager_and_compiled_mix, to_layout

CASES = [
    ((2, 24, 3, 5), "contiguous"),
    ((2, 24, 3, 5), "channels_last"),
    ((3, 37, 5, 7), "contiguous"),
    ((3, 37, 5, 7), "channels_last"),
    ((1, 58, 7, 7), "channels_last"),
    ((2, 13, 3, 4), "strided"),
    ((5, 11), "contiguous"),
    ((2, 9, 13), "contiguous"),
    ((2, 6, 2, 3, 2), "channels_last"),
    ((0, 5, 3, 3), "contiguous"),
    ((3, 1, 4, 4), "contiguous"),
]
IDS = [f"{s}-{layout}" for s, layout in CASES]
# Without the compiled library the CPU kernels are the reference itself: nothing to compare.
compiled = pytest.mark.skipif(not asx.extension_available(), reason="needs the compiled library")


def sparse_matrix(C: int, g: torch.Generator, extra: int = 2, dtype=torch.float64) -> torch.Tensor:
    """A permutation plus `extra` more non-zeros per row at random places (rows of unequal
    counts where they collide), random positive and negative values, and one all-zero row."""
    M = torch.zeros(C, C, dtype=dtype)
    values = torch.rand(C, generator=g, dtype=dtype) + 0.5
    M[torch.arange(C), torch.randperm(C, generator=g)] = values
    for _ in range(extra):
        cols = torch.randint(0, C, (C,), generator=g)
        M[torch.arange(C), cols] += torch.randn(C, generator=g, dtype=dtype)
    if C > 2:
        M[C // 2] = 0
    return M


def expected_layout(x: torch.Tensor) -> bool:
    """Whether the output is channels-last (x's channel stride is 1)."""
    return x.shape[1] > 1 and x.stride(1) == 1


def test_ell_index_lists_every_nonzero_in_order():
    g = torch.Generator().manual_seed(0)
    M = sparse_matrix(17, g)
    index = ell_index(M)
    assert index.dtype == torch.int64 and index.shape[1] == int((M != 0).sum(1).max())
    for i in range(17):
        cols = index[i][index[i] >= 0]
        assert torch.equal(cols, (M[i] != 0).nonzero().flatten())
        assert (index[i][len(cols) :] == -1).all()
    assert ell_index(torch.zeros(3, 3)).shape == (3, 1)  # width at least 1, all -1
    assert (ell_index(torch.zeros(3, 3)) == -1).all()


@compiled
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_ell_index_op_equals_reference(dtype):
    g = torch.Generator().manual_seed(12)
    for C in (1, 5, 24, 37):
        M = sparse_matrix(C, g).to(dtype)
        for A in (M, M.t(), torch.zeros(C, C, dtype=dtype)):
            assert torch.equal(torch.ops.autoshuffle_ext.ell_index(A), ell_index(A))
    rows, cols = sparse_mix_index(M)
    assert torch.equal(rows, ell_index(M)) and torch.equal(cols, ell_index(M.t()))


@compiled
@pytest.mark.parametrize(("shape", "layout"), CASES, ids=IDS)
@pytest.mark.parametrize("transpose", [False, True])
def test_ell_mix_matches_reference(shape, layout, transpose):
    g = torch.Generator().manual_seed(1)
    x = to_layout(torch.randn(shape, generator=g, dtype=torch.float64), layout)
    M = sparse_matrix(shape[1], g)
    A = M.t() if transpose else M  # a transposed view: read through its strides
    index = ell_index(A)
    y = ell_mix(x, A, index)
    torch.testing.assert_close(y, ell_mix_reference(x, A, index), rtol=1e-13, atol=1e-13)
    if expected_layout(x):
        assert y.movedim(1, -1).is_contiguous()
    else:
        assert y.is_contiguous()


@pytest.mark.parametrize(
    ("x_dtype", "m_dtype", "tol"),
    [
        (torch.float32, torch.float32, 1e-6),
        (torch.bfloat16, torch.float32, 1e-2),
        (torch.bfloat16, torch.bfloat16, 1e-2),
        (torch.float16, torch.float32, 1e-3),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_ell_mix_dtypes(x_dtype, m_dtype, tol, layout):
    g = torch.Generator().manual_seed(2)
    x = to_layout(torch.randn(2, 40, 5, 5, generator=g).to(x_dtype), layout)
    M = sparse_matrix(40, g, dtype=torch.float32).to(m_dtype)
    index = ell_index(M)
    y = ell_mix(x, M, index)
    assert y.dtype == x_dtype
    torch.testing.assert_close(
        y.float(), ell_mix_reference(x, M, index).float(), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_permutation_is_an_exact_gather(layout):
    g = torch.Generator().manual_seed(3)
    x = to_layout(torch.randn(3, 48, 6, 6, generator=g), layout)
    perm = torch.randperm(48, generator=g)
    M = asx.permutation_matrix(perm, torch.float32)
    y, p = sparse_mix(x, M)
    assert torch.equal(y, x[:, perm]) and p == 0


_ISA_CHECK = textwrap.dedent(
    """
    import torch
    from autoshuffle_ext.ops.ell_reference import ell_index, ell_mix_reference
    from autoshuffle_ext.ops.sparse_mix import ell_mix
    g = torch.Generator().manual_seed(0)
    for dtype, tol in [(torch.float64, 1e-13), (torch.float32, 1e-5), (torch.bfloat16, 1e-2)]:
        for shape in [(2, 37, 5, 7), (3, 64, 9, 9), (1, 130, 4, 4), (70, 24)]:
            for fmt in [torch.contiguous_format, torch.channels_last]:
                x = torch.randn(shape, generator=g).to(dtype)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=fmt)
                C = shape[1]
                A = torch.randn(C, C, generator=g) * (torch.rand(C, C, generator=g) < 0.1)
                A = A.to(torch.float64 if dtype == torch.float64 else torch.float32)
                index = ell_index(A)
                y = ell_mix(x, A, index)
                torch.testing.assert_close(y.double(), ell_mix_reference(x, A, index).double(),
                                           rtol=tol, atol=tol)
    print("ok", torch.backends.cpu.get_cpu_capability())
    """
)


@compiled
@pytest.mark.parametrize("capability", VECTOR_PATHS)
def test_every_vector_path(capability):
    # The loops run compiled for AVX-512, AVX2 or baseline x86-64: every copy this CPU runs.
    check_vector_path(_ISA_CHECK, capability)


@pytest.mark.parametrize(("shape", "layout"), CASES, ids=IDS)
def test_sparse_mix_equals_dense_mix_and_its_gradients(shape, layout):
    g = torch.Generator().manual_seed(4)
    x = to_layout(torch.randn(shape, generator=g, dtype=torch.float64), layout)
    M = sparse_matrix(shape[1], g)
    # dy in x's layout: the backward's products see channels-last rows where x has them.
    dy = to_layout(torch.randn(shape, generator=g, dtype=torch.float64), layout)
    xs, Ms = x.clone().requires_grad_(), M.clone().requires_grad_()
    xd, Md = x.clone().requires_grad_(), M.clone().requires_grad_()
    ys, ps = sparse_mix(xs, Ms)
    yd, pd = shuffle_mix(xd, Md)
    weight = torch.tensor(0.3, dtype=torch.float64)
    torch.autograd.backward((ys, ps), (dy, weight))
    torch.autograd.backward((yd, pd), (dy, weight))
    torch.testing.assert_close(ys, yd, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ps, pd, rtol=1e-12, atol=1e-12)
    assert ys.stride() == yd.stride() or ys.numel() == 0
    torch.testing.assert_close(xs.grad, xd.grad, rtol=1e-12, atol=1e-12)
    # dM is dense: the entries at zero get their gradient too, so they can come back.
    torch.testing.assert_close(Ms.grad, Md.grad, rtol=1e-12, atol=1e-12)
    if x.numel() and shape[1] > 1:
        assert (Ms.grad[M == 0] != 0).any()


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_sparse_mix_equals_dense_mix_for_half_inputs(x_dtype, layout):
    # The sparse path multiplies by the float32 M, the dense one by M rounded to x's dtype: one
    # unit in the last place of x's dtype apart, at most.
    g = torch.Generator().manual_seed(13)
    x = to_layout(torch.randn(2, 32, 5, 5, generator=g), layout).to(x_dtype)
    M = sparse_matrix(32, g, dtype=torch.float32).abs()
    ys, ps = sparse_mix(x, M)
    yd, pd = shuffle_mix(x, M)
    assert ys.dtype == yd.dtype == x_dtype and ps.dtype == pd.dtype == torch.float32
    tol = 2e-2 if x_dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(ys.float(), yd.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(ps, pd)


def test_gradcheck_reverse_and_forward_mode():
    g = torch.Generator().manual_seed(5)
    for layout in ("contiguous", "channels_last"):
        x = to_layout(torch.randn(2, 6, 3, 3, generator=g, dtype=torch.float64), layout)
        M = sparse_matrix(6, g, extra=1)
        x.requires_grad_()
        M.requires_grad_()
        # The index follows M, so a perturbed zero entry joins it: the dense function's Jacobian.
        assert torch.autograd.gradcheck(sparse_mix, (x, M), check_forward_ad=True)


def test_forward_mode_tangents():
    import torch.autograd.forward_ad as fwAD

    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 10, 4, 4, generator=g, dtype=torch.float64)
    M = sparse_matrix(10, g)
    tx, tm = torch.randn_like(x), torch.randn_like(M)
    rows, cols = sparse_mix_index(M)
    with fwAD.dual_level():
        y, p = sparse_mix(fwAD.make_dual(x, tx), fwAD.make_dual(M, tm), rows, cols)
        y_t, p_t = fwAD.unpack_dual(y).tangent, fwAD.unpack_dual(p).tangent
    expected = shuffle_mix(tx, M)[0] + shuffle_mix(x, tm)[0]
    torch.testing.assert_close(y_t, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p_t, (asx.l1l2_penalty_grad(M) * tm).sum(), rtol=1e-12, atol=1e-12)


def test_opcheck():
    g = torch.Generator().manual_seed(7)
    for shape, layout in [CASES[0], CASES[1], CASES[6]]:
        x = to_layout(torch.randn(shape, generator=g, dtype=torch.float64), layout)
        M = sparse_matrix(shape[1], g)
        rows, cols = sparse_mix_index(M)
        opcheck(torch.ops.autoshuffle_ext.ell_index.default, (M,))  # a data-dependent width
        opcheck(torch.ops.autoshuffle_ext.ell_mix.default, (x, M, rows))
        opcheck(torch.ops.autoshuffle_ext.ell_mix.default, (x, M.t(), cols))
        xg, Mg = x.clone().requires_grad_(), M.clone().requires_grad_()
        opcheck(torch.ops.autoshuffle_ext.sparse_mix.default, (xg, Mg, rows, cols))
        dy = torch.randn(shape, generator=g, dtype=torch.float64)
        half = torch.tensor(0.5, dtype=torch.float64)
        for grad_p, need_x, need_m in [
            (half, True, True),
            (None, False, True),
            (None, True, False),
        ]:
            args = (dy, grad_p, x, M, cols, need_x, need_m)
            opcheck(torch.ops.autoshuffle_ext.sparse_mix_backward.default, args)


def test_compile_fullgraph_forward_and_backward():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 12, 4, 4, generator=g).contiguous(memory_format=torch.channels_last)
    M = sparse_matrix(12, g, dtype=torch.float32)
    rows, cols = sparse_mix_index(M)

    (ye, dxe, dMe), (yc, dxc, dMc) = eager_and_compiled_mix(
        lambda x, M: sparse_mix(x, M, rows, cols), x, M
    )
    torch.testing.assert_close(yc, ye)
    torch.testing.assert_close(dxc, dxe)
    torch.testing.assert_close(dMc, dMe)


def test_double_backward_is_refused():
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    M = sparse_matrix(5, torch.Generator().manual_seed(9)).requires_grad_()
    (gx,) = torch.autograd.grad(sparse_mix(x, M)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        gx.sum().backward()


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            (torch.ones(2, 3, 2, 2), torch.eye(3), torch.zeros(3, 1)),
            TypeError,
            "index must be int64",
        ),
        (
            (torch.ones(2, 3, 2, 2), torch.eye(3), torch.zeros(4, 1, dtype=torch.int64)),
            ValueError,
            r"index must have shape \[C, K\] with C = x.shape\[1\] = 3.*got \(4, 1\)",
        ),
        (
            (torch.ones(2, 3, 2, 2), torch.eye(3), torch.full((3, 1), 3, dtype=torch.int64)),
            (ValueError, RuntimeError),
            r"index must hold columns in \[0, 3\) or -1, got 3",
        ),
        ((torch.ones(2, 3, 2, 2), torch.eye(4), None), ValueError, r"M must have shape \[C, C\]"),
    ],
)
def test_errors(args, error, match):
    x, A, index = args
    with pytest.raises(error, match=match):
        if index is None:
            sparse_mix(x, A)
        else:
            ell_mix(x, A, index)


# ---- the module's switch ----


def _sparse_module(C: int, groups: int, g: torch.Generator, **options) -> asx.LearnedShuffle:
    """M = 0.7 P + 0.3 Q for two random permutations: doubly stochastic, at most 2 non-zeros
    in every row and column (the projection keeps that pattern)."""
    m = asx.LearnedShuffle(C, groups, **options)
    with torch.no_grad():
        P, Q = (asx.permutation_matrix(torch.randperm(C, generator=g)) for _ in range(2))
        m.weight.copy_(0.7 * P + 0.3 * Q)
        m.project_()
    return m


def test_learned_shuffle_switches_by_density_and_follows_m():
    g = torch.Generator().manual_seed(10)
    m = asx.LearnedShuffle(32, 4, generator=g)
    assert m.sparse_index() is None  # the blended start is dense
    m = _sparse_module(32, 4, g, sparse_below=0.125)
    rows, cols = m.sparse_index()
    assert max(rows.shape[1], cols.shape[1]) <= 2
    assert m.sparse_index()[0] is rows  # kept while M is unchanged
    with torch.no_grad():
        m.weight.fill_(1 / 32)  # an in-place change of M: taken again, now dense
    assert m.sparse_index() is None
    # The projection after each step writes M in place (the compiled kernel too): taken again.
    m = _sparse_module(32, 4, g, sparse_below=0.125)
    assert m.sparse_index() is not None
    m.weight.data.fill_(1.0)  # bumps no version ...
    m.project_()  # ... but the projection does: uniform, dense
    assert m.sparse_index() is None
    assert _sparse_module(32, 4, g, sparse_below=0.0).sparse_index() is None


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_learned_shuffle_sparse_step_equals_dense_step(layout):
    g = torch.Generator().manual_seed(11)
    sparse = _sparse_module(32, 4, g, sparse_below=0.25)
    dense = asx.LearnedShuffle(32, 4, sparse_below=0.0)
    dense.load_state_dict(sparse.state_dict())
    assert sparse.sparse_index() is not None and dense.sparse_index() is None
    x = to_layout(torch.randn(4, 32, 6, 6, generator=g), layout)
    for m in (sparse, dense):
        xm = x.clone().requires_grad_()
        out = m(xm)
        loss = (out * out.detach().flip(0)).sum() + m.penalty()
        loss.backward()
        m.x_grad, m.out = xm.grad, out
    torch.testing.assert_close(sparse.out, dense.out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sparse.x_grad, dense.x_grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sparse.weight.grad, dense.weight.grad, rtol=1e-5, atol=1e-5)


def test_sparse_index_survives_inference_mode_and_data_writes():
    g = torch.Generator().manual_seed(14)
    m = _sparse_module(24, 4, g)
    x = torch.randn(2, 24, 3, 3, generator=g)
    with torch.inference_mode():
        m(x)  # takes the sparse form under inference mode
    out = m(x.clone().requires_grad_())  # a training step reuses it: must be a normal tensor
    out.sum().backward()
    assert m.weight.grad is not None
    # A write through .data bumps no version: reset_sparse_index() makes the module see it.
    perm = torch.randperm(24, generator=g)
    m.weight.data.copy_(asx.permutation_matrix(perm))
    m.reset_sparse_index()
    assert torch.equal(m(x), x[:, perm])
    # .to() and load_state_dict forget it too.
    other = _sparse_module(24, 4, g)
    m.load_state_dict(other.state_dict())
    torch.testing.assert_close(m(x), other(x))


def test_compiled_module_takes_the_dense_path():
    g = torch.Generator().manual_seed(15)
    m = _sparse_module(16, 4, g)
    x = torch.randn(2, 16, 3, 3, generator=g)
    assert m.sparse_index() is not None  # eager: the sparse op
    # fullgraph: the data-dependent sparse form would break the graph; the dense op serves.
    torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x))


def test_sparse_below_is_runtime_only():
    from autoshuffle_ext.train.config import TrainConfig

    fast, slow = (TrainConfig(structures=(asx.ShuffleConfig(sparse_below=v),)) for v in (0.5, 0))
    assert fast.identity() == slow.identity()  # a resumed run may change it
    assert fast.to_dict() != slow.to_dict()


def test_sparse_below_is_checked():
    with pytest.raises(ValueError, match=r"sparse_below must lie in \[0, 1\], got 2"):
        asx.LearnedShuffle(8, 2, sparse_below=2)
    with pytest.raises(ValueError, match=r"sparse_below must lie in \[0, 1\], got -1"):
        asx.ShuffleConfig(sparse_below=-1)


def test_a_network_on_the_sparse_path_has_the_dense_paths_gradients():
    """A whole ShuffleNet with every learned M on the sparse path (sparse_below=1) against the
    dense one (0): the same loss and gradients, up to float rounding. (Training runs do not stay
    equal step for step: after a step the projection's threshold decides which of hundreds of
    near-zero entries become exactly zero, and rounding decides some of them differently; their
    accuracies are compared over seeds in bench/RESULTS.md.)"""
    from autoshuffle_ext.models import build_model

    nets = {}
    for below in (1.0, 0.0):
        torch.manual_seed(0)  # the same conv weights
        config = asx.ShuffleConfig("learned", sparse_below=below)
        gen = torch.Generator().manual_seed(0)
        nets[below] = build_model("shufflenet_v1_g3_x0_25", 10, "cifar", (config,), gen, 16)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = {}
    for below, net in nets.items():
        net.train()
        loss = net(x).square().mean() + asx.penalty(net)
        loss.backward()
        losses[below] = loss.detach()
    assert any(
        m.sparse_index() is not None for m in nets[1.0].modules() if hasattr(m, "sparse_index")
    )
    torch.testing.assert_close(losses[1.0], losses[0.0], rtol=1e-6, atol=0)
    pairs = zip(nets[1.0].named_parameters(), nets[0.0].named_parameters(), strict=True)
    for (name, p1), (_, p0) in pairs:
        scale = p0.grad.abs().max().item()
        torch.testing.assert_close(p1.grad, p0.grad, rtol=0, atol=1e-4 * scale + 1e-7, msg=name)
