"""Tests of `channel_gather` (torch.ops.autoshuffle_ext.channel_gather) and `fixed_shuffle_perm`.

The reference is plain indexing, `x[:, perm]`; results must match it exactly (`torch.equal`) on
fresh random inputs.
"""

from __future__ import annotations

import io
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import autoshuffle_ext as asx
from autoshuffle_ext.ops.channel_gather import check_permutation, inverse_permutation
from tests.references import ALL_DTYPES, reference_channel_gather, run_with_cpu_capability

OP = torch.ops.autoshuffle_ext.channel_gather

DTYPES = ALL_DTYPES
LAYOUTS = ["contiguous", "channels_last", "strided", "transposed"]


def random_tensor(shape, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator, dtype=dtype)
    low = 0 if dtype == torch.uint8 else -100
    return torch.randint(low, 100, shape, generator=generator, dtype=dtype)


def make_input(shape, dtype: torch.dtype, layout: str, generator: torch.Generator) -> torch.Tensor:
    """A random tensor of `shape` whose memory is laid out as `layout` says."""
    if layout == "channels_last" and len(shape) in (4, 5):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        return random_tensor(shape, dtype, generator).contiguous(memory_format=fmt)
    if layout == "strided":  # every other element along the last dim
        wide = random_tensor((*shape[:-1], 2 * shape[-1]), dtype, generator)
        return wide[..., ::2]
    if layout == "transposed" and len(shape) >= 3:  # channels not at stride order position 1
        return random_tensor((*shape[:1], *shape[2:], shape[1]), dtype, generator).movedim(-1, 1)
    return random_tensor(shape, dtype, generator)


def expected_format(x: torch.Tensor) -> torch.memory_format:
    """The documented output layout, derived independently of the implementation."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return None  # strided input: a dense result, format checked against the fake kernel


shapes = st.builds(
    lambda n, c, spatial: (n, c, *spatial),
    st.integers(0, 3),
    st.integers(1, 40),
    st.lists(st.integers(1, 7), min_size=0, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_equals_indexing(shape, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    x = make_input(shape, dtype, layout, g)
    perm = torch.randperm(shape[1], generator=g)
    y = asx.channel_gather(x, perm)
    assert torch.equal(y, reference_channel_gather(x, perm))
    fmt = expected_format(x)
    if fmt is not None:
        assert y.is_contiguous(memory_format=fmt)
    else:
        formats = [torch.contiguous_format]
        formats += {4: [torch.channels_last], 5: [torch.channels_last_3d]}.get(x.dim(), [])
        assert any(y.is_contiguous(memory_format=f) for f in formats)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shufflenet_shapes_every_dtype(dtype):
    # Wide channel counts exercise the full SIMD vectors and their tails (116 = 7 * 16 + 4).
    g = torch.Generator().manual_seed(1)
    for shape in [(3, 116, 5, 7), (2, 240, 4, 4), (2, 33, 3, 3, 2)]:
        for layout in ("contiguous", "channels_last"):
            x = make_input(shape, dtype, layout, g)
            perm = torch.randperm(shape[1], generator=g)
            assert torch.equal(OP.default(x, perm), reference_channel_gather(x, perm))


def _fake_strides(x: torch.Tensor, perm: torch.Tensor) -> tuple[int, ...]:
    with FakeTensorMode() as mode:
        return OP.default(mode.from_tensor(x), mode.from_tensor(perm)).stride()


@pytest.mark.parametrize(
    "shape",
    [(2, 1, 3, 3), (2, 5, 1, 1), (1, 5, 3, 3), (2, 3, 1, 4), (0, 4, 2, 2), (2, 6, 2, 3, 4), (3, 5)],
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_kernel_strides_match_real(shape, layout):
    # Includes layouts where contiguous and channels_last strides coincide (C == 1, H == W == 1).
    x = make_input(shape, torch.float32, layout, torch.Generator().manual_seed(2))
    perm = torch.randperm(shape[1])
    assert OP.default(x, perm).stride() == _fake_strides(x, perm)


@pytest.mark.parametrize(
    "shape", [(0, 4, 3, 3), (2, 4, 0, 3), (2, 0, 3, 3), (0, 1, 3, 3), (0, 4, 2, 2, 2), (3, 0, 2)]
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_empty_inputs_keep_their_memory_format(shape, layout):
    # Every memory format's is_contiguous holds for an empty tensor, so the layout must be read
    # from the strides: an empty channels_last batch stays channels_last, in eager and fake.
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(len(shape))
    if layout == "contiguous" or fmt is None:
        fmt = torch.contiguous_format
    x = torch.empty(shape).to(memory_format=fmt)
    assert x.stride() == torch.empty(shape, memory_format=fmt).stride()
    perm = torch.randperm(shape[1])
    y = asx.channel_gather(x, perm)
    assert y.shape == x.shape
    assert y.stride() == x.stride()
    assert _fake_strides(x, perm) == x.stride()
    x.requires_grad_()
    asx.channel_gather(x, perm).sum().backward()
    assert x.grad.shape == x.shape


def test_out_variant_any_layout():
    g = torch.Generator().manual_seed(3)
    x = make_input((4, 24, 5, 5), torch.float32, "channels_last", g)
    perm = torch.randperm(24, generator=g)
    expected = reference_channel_gather(x, perm)
    for fmt in (torch.contiguous_format, torch.channels_last):
        out = torch.empty_like(x, memory_format=fmt)
        assert asx.channel_gather(x, perm, out=out) is out
        assert torch.equal(out, expected)
        assert out.is_contiguous(memory_format=fmt)
    strided_out = torch.empty(4, 24, 5, 10)[..., ::2]
    OP.out(x, perm, out=strided_out)
    assert torch.equal(strided_out, expected)


def test_gradcheck():
    g = torch.Generator().manual_seed(4)
    perm = torch.randperm(6, generator=g)
    for layout in ("contiguous", "channels_last"):
        x = make_input((2, 6, 3, 2), torch.float64, layout, g).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: OP.default(t, perm), (x,))
        assert torch.autograd.gradgradcheck(lambda t: OP.default(t, perm), (x,))


def test_gradient_is_inverse_gather():
    x = torch.randn(3, 10, 4, requires_grad=True)
    perm = torch.randperm(10)
    w = torch.randn(3, 10, 4)
    (OP.default(x, perm) * w).sum().backward()
    assert torch.equal(x.grad, w[:, inverse_permutation(perm)])
    assert torch.equal(perm[inverse_permutation(perm)], torch.arange(10))


def _sample_inputs():
    g = torch.Generator().manual_seed(5)
    for shape, layout in [
        ((2, 8, 3, 3), "contiguous"),
        ((2, 8, 3, 3), "channels_last"),
        ((3, 5), "contiguous"),
        ((2, 6, 2, 3, 4), "channels_last"),
        ((2, 7, 4, 3), "strided"),
        ((0, 4, 2, 2), "contiguous"),
    ]:
        x = make_input(shape, torch.float32, layout, g)
        yield x.requires_grad_(), torch.randperm(shape[1], generator=g)


@pytest.mark.parametrize("args", list(_sample_inputs()), ids=lambda a: str(tuple(a[0].shape)))
def test_opcheck(args):
    torch.library.opcheck(OP.default, args)


def test_opcheck_out_variant():
    x = torch.randn(2, 8, 3, 3).to(memory_format=torch.channels_last)
    perm = torch.randperm(8)
    torch.library.opcheck(OP.out, (x, perm), {"out": torch.empty_like(x)})


class _Shuffle(torch.nn.Module):
    def __init__(self, perm: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("perm", perm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return asx.channel_gather(torch.relu(x), self.perm) * 2.0


def test_torch_compile_fullgraph_inductor():
    perm = torch.randperm(12)
    model = _Shuffle(perm)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 12, 5, 5).contiguous(memory_format=fmt).requires_grad_()
        w = torch.randn(3, 12, 5, 5)
        y = compiled(x)
        assert torch.equal(y, model(x))
        assert y.is_contiguous(memory_format=fmt)
        (y * w).sum().backward()
        assert torch.equal(x.grad, 2.0 * (x > 0) * w[:, inverse_permutation(perm)])


def test_torch_export_round_trip():
    model = _Shuffle(torch.randperm(10))
    x = torch.randn(2, 10, 4, 4)
    program = torch.export.export(model, (x,))
    assert any(
        node.target is OP.default for node in program.graph.nodes if node.op == "call_function"
    )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    x2 = torch.randn(2, 10, 4, 4)
    assert torch.equal(loaded.module()(x2), model(x2))


def test_bad_inputs_raise_documented_errors():
    x = torch.randn(2, 4, 3, 3)
    ok = torch.arange(4)
    with pytest.raises(ValueError, match=r"x must have at least 2 dims.*got 1 dims"):
        asx.channel_gather(torch.randn(4), ok)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        asx.channel_gather([1, 2], ok)
    with pytest.raises(TypeError, match=r"perm must be a torch.Tensor, got list"):
        asx.channel_gather(x, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"perm must be 1-D, got 2 dims"):
        asx.channel_gather(x, ok.view(2, 2))
    with pytest.raises(TypeError, match=r"perm must have dtype int64.*got torch.int32"):
        asx.channel_gather(x, ok.int())
    with pytest.raises(ValueError, match=r"perm must have length C = x.size\(1\) = 4, got 3"):
        asx.channel_gather(x, torch.arange(3))
    with pytest.raises(ValueError, match=r"perm must be on x's device cpu, got meta"):
        asx.channel_gather(x, ok.to("meta"))
    with pytest.raises(ValueError, match=r"permutation of 0..3.*got \[0, 0, 1, 2\]"):
        asx.channel_gather(x, torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"permutation of 0..3.*got \[0, 1, 2, 4\]"):
        asx.channel_gather(x, torch.tensor([0, 1, 2, 4]))
    # Without validation the op still range-checks every entry: never an out-of-bounds read.
    with pytest.raises(IndexError, match=r"perm entries must lie in \[0, 4\).*perm\[3\] = 4"):
        asx.channel_gather(x, torch.tensor([0, 1, 2, 4]), validate=False)
    with pytest.raises(IndexError, match=r"perm\[0\] = -1"):
        OP.default(x.to(memory_format=torch.channels_last), torch.tensor([-1, 1, 2, 3]))
    with pytest.raises(IndexError, match=r"perm\[1\] = 9"):
        OP.default(torch.randn(0, 4, 2), torch.tensor([0, 9, 2, 3]))  # even with no elements
    # The raw op raises the same exception types.
    with pytest.raises(TypeError, match=r"perm must have dtype int64"):
        OP.default(x, ok.int())
    with pytest.raises(ValueError, match=r"perm must have length"):
        OP.default(x, torch.arange(5))


def test_validation_skips_values_of_meta_and_fake_tensors():
    # Meta and fake tensors hold no values: the entry point checks their shapes and dtypes only.
    y = asx.channel_gather(torch.zeros(2, 3, device="meta"), torch.arange(3, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 3)
    x_cl = torch.zeros(2, 4, 3, 3, device="meta").to(memory_format=torch.channels_last)
    assert asx.channel_gather(x_cl, torch.arange(4, device="meta")).is_contiguous(
        memory_format=torch.channels_last
    )
    with pytest.raises(ValueError, match=r"perm must have length C = x.size\(1\) = 3, got 4"):
        asx.channel_gather(torch.zeros(2, 3, device="meta"), torch.arange(4, device="meta"))
    with pytest.raises(TypeError, match=r"perm must have dtype int64.*got torch.int32"):
        asx.channel_gather(
            torch.zeros(2, 3, device="meta"), torch.arange(3, device="meta", dtype=torch.int32)
        )
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(2, 5, 3))
        perm = mode.from_tensor(torch.randperm(5))
        assert asx.channel_gather(x, perm).shape == (2, 5, 3)
        assert check_permutation(perm, 5) is None
        with pytest.raises(ValueError, match=r"perm must have length 4, got 5"):
            check_permutation(perm, 4)
    # Real tensors are still checked for values.
    with pytest.raises(ValueError, match=r"permutation of 0..2"):
        check_permutation(torch.tensor([0, 0, 1]), 3)


def test_bad_out_raises():
    x = torch.randn(2, 4, 3, 3)
    perm = torch.randperm(4)
    with pytest.raises(ValueError, match=r"out must have x's shape .2, 4, 3, 3., got .2, 4, 3."):
        asx.channel_gather(x, perm, out=torch.empty(2, 4, 3))
    with pytest.raises(ValueError, match=r"out must have x's shape .2, 4, 3, 3., got .2, 4, 3."):
        OP.out(x, perm, out=torch.empty(2, 4, 3))
    with pytest.raises(TypeError, match=r"out must have x's dtype torch.float32, got torch.float6"):
        asx.channel_gather(x, perm, out=torch.empty(2, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"out must not share memory with x"):
        asx.channel_gather(x, perm, out=x)
    with pytest.raises(ValueError, match=r"out must not share memory with x"):
        flat = torch.randn(100)  # two dense views that partly overlap
        OP.out(flat[:72].view(2, 4, 3, 3), perm, out=flat[10:82].view(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"out must not share memory with perm"):
        p = torch.randperm(4)
        OP.out(torch.arange(4).view(1, 4), p, out=p.view(1, 4))
    with pytest.raises(ValueError, match=r"out must not have elements that share memory"):
        OP.out(x, perm, out=torch.empty(1, 1, 1, 1).expand(2, 4, 3, 3))


def test_out_sharing_memory_with_strided_x_is_safe():
    # Overlap between non-dense views cannot be decided cheaply; the kernels then read a dense copy
    # of x and write out through a temporary, so the result is still exact.
    big = torch.randn(2, 8, 3, 3)
    x = big[:, :4]
    perm = torch.randperm(4)
    expected = reference_channel_gather(x, perm).clone()
    OP.out(x, perm, out=big[:, 2:6])
    assert torch.equal(big[:, 2:6], expected)


def test_repeated_entries_never_give_a_wrong_gradient():
    # The gradient is the gather by the inverse permutation, which exists only for a permutation:
    # x[:, [3, 1, 0, 3, 2, 4]] has gradient [1, 1, 1, 2, 1, 0], the inverse gather all ones. The
    # CPU kernel checks perm is a permutation with its range check, also with validate=False.
    x = torch.zeros(1, 6, 1, 1, requires_grad=True)
    repeats = torch.tensor([3, 1, 0, 3, 2, 4])
    message = r"perm must be a permutation of 0..5.*got perm\[3\] = 3, also at perm\[0\]"
    with pytest.raises(ValueError, match=message):
        asx.channel_gather(x, repeats, validate=False)
    with pytest.raises(ValueError, match=message):
        OP.default(x.detach().to(memory_format=torch.channels_last), repeats)
    with pytest.raises(ValueError, match=message):
        OP.out(x.detach(), repeats, out=torch.empty(1, 6, 1, 1))
    with pytest.raises(ValueError, match=r"got perm\[1\] = 0, also at perm\[0\]"):
        OP.default(torch.randn(0, 3, 2), torch.tensor([0, 0, 1]))  # even with no elements
    # Where the guarantee holds, validate=False differentiates exactly.
    perm = torch.tensor([3, 1, 0, 5, 2, 4])
    w = torch.randn(1, 6, 1, 1)
    (asx.channel_gather(x, perm, validate=False) * w).sum().backward()
    expected = torch.zeros(1, 6, 1, 1)
    expected[:, perm] = w
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("channels,groups", [(8, 2), (116, 2), (240, 3), (6, 6), (5, 1), (0, 3)])
def test_fixed_shuffle_perm_equals_channel_shuffle(channels, groups):
    perm = asx.fixed_shuffle_perm(channels, groups)
    assert perm.dtype == torch.int64
    assert perm.shape == (channels,)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, channels, 3, 5).contiguous(memory_format=fmt)
        assert torch.equal(asx.channel_gather(x, perm), F.channel_shuffle(x, groups))


def test_fixed_shuffle_perm_rejects_bad_groups():
    with pytest.raises(ValueError, match=r"groups must be >= 1, got 0"):
        asx.fixed_shuffle_perm(8, 0)
    with pytest.raises(ValueError, match=r"num_channels must be divisible by groups"):
        asx.fixed_shuffle_perm(8, 3)
    with pytest.raises(ValueError, match=r"num_channels must be >= 0, got -4"):
        asx.fixed_shuffle_perm(-4, 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: asx.fixed_shuffle_perm(6.0, 3), r"num_channels must be an int, got float 6.0"),
        (lambda: asx.fixed_shuffle_perm(6, 3.0), r"groups must be an int, got float 3.0"),
        (lambda: asx.fixed_shuffle_perm(True, 1), r"num_channels must be an int, got bool True"),
        (lambda: asx.fixed_shuffle_perm(6, "3"), r"groups must be an int, got str '3'"),
        (lambda: asx.FixedShuffle(6, 3.0), r"groups must be an int, got float 3.0"),
        (lambda: asx.FixedShuffle(6.0, 3), r"num_channels must be an int, got float 6.0"),
    ],
)
def test_fixed_shuffle_perm_rejects_non_integers(call, match):
    with pytest.raises(TypeError, match=match):
        call()


_ISA_CHECK = textwrap.dedent(
    """
    import torch
    import autoshuffle_ext  # noqa: F401
    op = torch.ops.autoshuffle_ext.channel_gather.default
    g = torch.Generator().manual_seed(0)
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.uint8, torch.complex128]
    for dtype in dtypes:
        for shape in [(2, 116, 3, 5), (1, 7, 2, 2), (3, 33, 1, 3), (1, 128, 3, 1), (2, 237, 3, 3)]:
            x = torch.randn(shape, generator=g).to(dtype).contiguous(
                memory_format=torch.channels_last)
            perm = torch.randperm(shape[1], generator=g)
            assert torch.equal(op(x, perm), x[:, perm]), (dtype, shape)
    print("ok", torch.backends.cpu.get_cpu_capability())
    """
)


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_narrower_cpu_paths(capability):
    # The channels_last gather picks AVX-512, AVX2 or scalar code at run time, capped by ATen's
    # capability: run the narrower paths too, in a fresh process.
    assert run_with_cpu_capability(_ISA_CHECK, capability).startswith("ok")


@pytest.mark.parametrize(
    "channels",
    [1, 2, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 97, 112, 116, 127, 128, 129, 136, 144, 237],
)
@pytest.mark.parametrize("pixels", [1, 2, 3, 4, 5, 7])
def test_channels_last_register_boundaries(channels, pixels):
    # Channels-last float32 with C <= 128 permutes whole pixels in registers (one template per
    # register count, odd and even pixel counts, a partial last register); above it, tile
    # transposes of 4 pixels and 8-channel blocks (hardware gathers on Intel).
    g = torch.Generator().manual_seed(channels * 10 + pixels)
    x = torch.randn(2, channels, pixels, 1, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    perm = torch.randperm(channels, generator=g)
    y = OP(x, perm)
    assert torch.equal(y, x[:, perm])
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_large_tensors_stream_exactly():
    # When input and output together take more than half the last-level cache (32 MiB on the AMD
    # test machines), the CPU kernel writes contiguous outputs with non-temporal stores.
    g = torch.Generator().manual_seed(6)
    x = make_input((40, 256, 16, 16), torch.float32, "contiguous", g)  # 10 MiB
    perm = torch.randperm(256, generator=g)
    assert torch.equal(OP(x, perm), x[:, perm])
    # channels_last rows: the tile transposes stream whole aligned vectors.
    x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(OP(x, perm), x[:, perm])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels,groups", [(24, 1), (232, 2), (240, 3), (48, 4), (240, 8)])
@pytest.mark.parametrize("moved", [0, 2, 3, 40])
def test_channels_last_near_shuffle(dtype, channels, groups, moved):
    # A perm at or a few channels from F.channel_shuffle's (a frozen learned shuffle trained from
    # it, or the fixed one converted to a gather) runs as the shuffle plus a patch of those
    # channels, up to 1/8 of them (AVX-512); 40 moved channels are beyond that, and go the general
    # paths. All exact, in channels_last.
    g = torch.Generator().manual_seed(channels * 100 + groups * 10 + moved)
    perm = asx.fixed_shuffle_perm(channels, groups)
    moved = min(moved, channels)
    at = torch.randperm(channels, generator=g)[:moved]
    perm[at] = perm[at.roll(1)]
    x = make_input((2, channels, 3, 5), dtype, "channels_last", g)
    y = OP(x, perm)
    assert torch.equal(y, x[:, perm])
    assert y.is_contiguous(memory_format=torch.channels_last)
    # F.channel_shuffle itself, exactly.
    if moved == 0 and groups > 1:
        assert torch.equal(y, torch.nn.functional.channel_shuffle(x, groups))
