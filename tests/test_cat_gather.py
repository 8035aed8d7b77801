"""Tests of `cat_gather` (torch.ops.autoshuffle_ext.cat_gather) and of its use in ShuffleNet v2.

The reference is the concat, then plain indexing, `torch.cat([a, b], 1)[:, perm]`; results must
match it exactly (`torch.equal`) on fresh random inputs.
"""

from __future__ import annotations

import importlib
import re
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import autoshuffle_ext as asx
from autoshuffle_ext.models import shufflenet_v2
from autoshuffle_ext.ops.channel_gather import inverse_permutation
from tests.references import ALL_DTYPES, reference_cat_gather, run_with_cpu_capability

OP = torch.ops.autoshuffle_ext.cat_gather

DTYPES = ALL_DTYPES
# "chunk": a channel slice of a wider tensor in the same format, as ShuffleNet v2's split gives.
LAYOUTS = ["contiguous", "channels_last", "strided", "transposed", "chunk", "chunk_cl"]


def random_tensor(shape, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator, dtype=dtype)
    low = 0 if dtype == torch.uint8 else -100
    return torch.randint(low, 100, shape, generator=generator, dtype=dtype)


def channels_last_format(dims: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dims)


def make_input(shape, dtype: torch.dtype, layout: str, generator: torch.Generator) -> torch.Tensor:
    """A random tensor of `shape` whose memory is laid out as `layout` says."""
    shape = tuple(shape)
    fmt = channels_last_format(len(shape))
    if layout == "channels_last" and fmt is not None:
        return random_tensor(shape, dtype, generator).contiguous(memory_format=fmt)
    if layout == "strided" and len(shape) >= 3:  # every other element along the last dim
        wide = random_tensor((*shape[:-1], 2 * shape[-1]), dtype, generator)
        return wide[..., ::2]
    if layout == "transposed" and len(shape) >= 3:  # channels not at stride order position 1
        return random_tensor((*shape[:1], *shape[2:], shape[1]), dtype, generator).movedim(-1, 1)
    if layout in ("chunk", "chunk_cl"):  # the second channel half of a tensor twice as wide
        wide = random_tensor((shape[0], 2 * shape[1] + 1, *shape[2:]), dtype, generator)
        if layout == "chunk_cl" and fmt is not None:
            wide = wide.contiguous(memory_format=fmt)
        return wide[:, shape[1] + 1 :]
    return random_tensor(shape, dtype, generator)


def dense_format(t: torch.Tensor) -> torch.memory_format | None:
    """The format t is dense in (contiguous first), or None; derived without the op's code. An
    empty tensor is dense in every format: its strides say which it was made in."""
    fmt = channels_last_format(t.dim())
    if t.numel() == 0:
        made_in = [f for f in (torch.contiguous_format, fmt) if f is not None]
        return next(
            (f for f in made_in if t.stride() == torch.empty(t.shape, memory_format=f).stride()),
            torch.contiguous_format,
        )
    if t.is_contiguous():
        return torch.contiguous_format
    if fmt is not None and t.is_contiguous(memory_format=fmt):
        return fmt
    return None


def check_layout(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """The documented output layout: the format a and b are both dense in, contiguous when they
    are dense in different ones; otherwise (strided inputs) at least dense."""
    fa, fb = dense_format(a), dense_format(b)
    if fa is not None and fb is not None:
        assert y.is_contiguous(memory_format=fa if fa == fb else torch.contiguous_format)
    else:
        formats = [torch.contiguous_format, channels_last_format(y.dim())]
        assert any(f is not None and y.is_contiguous(memory_format=f) for f in formats)


def fake_strides(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> tuple[int, ...]:
    with FakeTensorMode() as mode:
        return OP.default(mode.from_tensor(a), mode.from_tensor(b), mode.from_tensor(perm)).stride()


cases = st.builds(
    lambda n, ca, cb, spatial: (n, ca, cb, spatial),
    st.integers(0, 3),
    st.integers(0, 40),
    st.integers(0, 40),
    st.lists(st.integers(1, 6), min_size=0, max_size=3),
).filter(lambda case: case[1] + case[2] > 0)


@settings(max_examples=150, deadline=None)
@given(
    case=cases,
    dtype=st.sampled_from(DTYPES),
    layout_a=st.sampled_from(LAYOUTS),
    layout_b=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_equals_reference(case, dtype, layout_a, layout_b, seed):
    n, ca, cb, spatial = case
    g = torch.Generator().manual_seed(seed)
    a = make_input((n, ca, *spatial), dtype, layout_a, g)
    b = make_input((n, cb, *spatial), dtype, layout_b, g)
    perm = torch.randperm(ca + cb, generator=g)
    y = asx.cat_gather(a, b, perm)
    assert torch.equal(y, reference_cat_gather(a, b, perm))
    if y.numel():
        check_layout(y, a, b)
    assert y.stride() == fake_strides(a, b, perm)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shufflenet_shapes_every_dtype(dtype):
    # ShuffleNet v2 1.0x's three stages (58, 116, 232 channels a side), with the unit's split.
    g = torch.Generator().manual_seed(1)
    for n, c, hw in [(2, 58, (5, 7)), (2, 116, (3, 3)), (1, 232, (2, 3)), (2, 24, (3, 3, 2))]:
        for layout in ("contiguous", "channels_last"):
            x = make_input((n, 2 * c, *hw), dtype, layout, g)
            x1, x2 = x.chunk(2, dim=1)
            b = make_input((n, c, *hw), dtype, layout, g)
            perm = torch.randperm(2 * c, generator=g)
            for first, second in [(x1, b), (b, x2), (x2, x1)]:
                y = OP.default(first, second, perm)
                assert torch.equal(y, reference_cat_gather(first, second, perm))
                assert y.is_contiguous(memory_format=dense_format(b))


REGISTER_BOUNDARIES = [1, 2, 15, 16, 17, 33, 58, 64, 65, 116, 127, 128, 129, 232]


@pytest.mark.parametrize("ca", REGISTER_BOUNDARIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.float64, torch.bfloat16])
def test_channels_last_register_boundaries(ca, dtype):
    # Channels-last rows of 4-byte elements are permuted in registers up to 8 AVX-512 registers
    # (16 channels each, a and b rounded up separately), else through 8 x 8 transposes with
    # partial tails; other sizes through a packed row. Odd pixel counts leave partial blocks.
    g = torch.Generator().manual_seed(ca)
    for cb in REGISTER_BOUNDARIES:
        for pixels in (1, 3, 9):
            a = make_input((2, ca, pixels, 1), dtype, "channels_last", g)
            b = make_input((2, cb, pixels, 1), dtype, "chunk_cl", g)
            perm = torch.randperm(ca + cb, generator=g)
            y = OP.default(a, b, perm)
            assert torch.equal(y, reference_cat_gather(a, b, perm)), (ca, cb, pixels)


@pytest.mark.parametrize("ca", [1, 7, 8, 9, 58, 116, 232])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.float64])
def test_channels_last_fixed_shuffle(ca, dtype):
    # ShuffleNet's own shuffle of two equal halves interleaves a and b: 4-byte elements zip
    # (8 channels at a time, then a scalar tail), with and without a split input.
    g = torch.Generator().manual_seed(ca)
    perm = asx.fixed_shuffle_perm(2 * ca, 2)
    for pixels in (1, 5):
        a = make_input((2, ca, pixels, 3), dtype, "chunk_cl", g)
        b = make_input((2, ca, pixels, 3), dtype, "channels_last", g)
        y = OP.default(a, b, perm)
        assert torch.equal(y, reference_cat_gather(a, b, perm))
        assert torch.equal(y, torch.nn.functional.channel_shuffle(torch.cat([a, b], 1), 2))
    # Equal halves in another order are a permutation like any other.
    swapped = torch.cat([perm[1:2], perm[:1], perm[2:]])
    assert torch.equal(OP.default(a, b, swapped), reference_cat_gather(a, b, swapped))


@pytest.mark.parametrize("ca", [8, 58, 116, 232])
@pytest.mark.parametrize("moves", [1, 2, 3, 5, 1000])
def test_channels_last_near_fixed_shuffle(ca, moves):
    # A learned permutation a few slots from ShuffleNet's: the zip plus a patch of those output
    # channels (up to 1/8 of them), or beyond that the general path; both exact.
    g = torch.Generator().manual_seed(ca * 10 + moves)
    perm = asx.fixed_shuffle_perm(2 * ca, 2)
    for _ in range(moves):  # swap two random slots
        i, j = torch.randint(0, 2 * ca, (2,), generator=g).tolist()
        perm[[i, j]] = perm[[j, i]]
    for pixels in (1, 5):
        a = make_input((2, ca, pixels, 3), torch.float32, "chunk_cl", g)
        b = make_input((2, ca, pixels, 3), torch.float32, "channels_last", g)
        assert torch.equal(OP.default(a, b, perm), reference_cat_gather(a, b, perm))


@pytest.mark.parametrize(
    "layout_a,layout_b,expected",
    [
        ("channels_last", "contiguous", torch.contiguous_format),
        ("contiguous", "channels_last", torch.contiguous_format),
        ("chunk_cl", "channels_last", torch.channels_last),
        ("chunk", "contiguous", torch.contiguous_format),
        ("chunk_cl", "chunk_cl", torch.channels_last),
        ("transposed", "channels_last", torch.channels_last),  # [N, H, W, C] moved: channels last
    ],
)
def test_mixed_and_sliced_formats(layout_a, layout_b, expected):
    g = torch.Generator().manual_seed(2)
    a = make_input((3, 10, 4, 5), torch.float32, layout_a, g)
    b = make_input((3, 7, 4, 5), torch.float32, layout_b, g)
    perm = torch.randperm(17, generator=g)
    y = asx.cat_gather(a, b, perm)
    assert torch.equal(y, reference_cat_gather(a, b, perm))
    assert y.is_contiguous(memory_format=expected)
    assert y.stride() == fake_strides(a, b, perm)


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 9, 5, 4, generator=g)
    perm = torch.randperm(12, generator=g)
    b = torch.randn(3, 5, 5, 5, generator=g)
    cases = [
        base[::2, :7],  # every other image, a channel slice
        base[::2, :7].contiguous(memory_format=torch.channels_last),
        base[::2, :7, ::2],  # every other row
        base[:3, :7].transpose(2, 3),  # H and W swapped
        torch.randn(1, 7, 5, 4, generator=g).expand(3, 7, 5, 4),  # stride 0 over the batch
        torch.randn(3, 1, 5, 4, generator=g).expand(3, 7, 5, 4),  # stride 0 over the channels
    ]
    for a in cases:
        bb = b[:, :, : a.shape[2], : a.shape[3]]
        for second in (bb, bb.contiguous(memory_format=torch.channels_last)):
            y = asx.cat_gather(a, second, perm)
            assert torch.equal(y, reference_cat_gather(a, second, perm))
            assert y.stride() == fake_strides(a, second, perm)


@pytest.mark.parametrize(
    "shape_a,shape_b",
    [
        ((0, 4, 3, 3), (0, 5, 3, 3)),
        ((2, 4, 0, 3), (2, 5, 0, 3)),
        ((0, 3, 2, 2, 2), (0, 1, 2, 2, 2)),
        ((3, 0, 2, 2), (3, 4, 2, 2)),
        ((3, 4, 2, 2), (3, 0, 2, 2)),
        ((0, 3), (0, 2)),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_empty_inputs(shape_a, shape_b, layout):
    fmt = channels_last_format(len(shape_a)) if layout == "channels_last" else None
    fmt = fmt or torch.contiguous_format
    a = torch.randn(shape_a).to(memory_format=fmt)
    b = torch.randn(shape_b).to(memory_format=fmt)
    perm = torch.randperm(shape_a[1] + shape_b[1])
    y = asx.cat_gather(a, b, perm)
    assert torch.equal(y, reference_cat_gather(a, b, perm))
    assert y.stride() == fake_strides(a, b, perm)
    if a.numel() == 0 and b.numel() == 0 and y.numel() == 0:
        # An empty batch keeps its format, as channel_gather keeps it.
        assert y.stride() == torch.empty(y.shape, memory_format=fmt).stride()
    a.requires_grad_()
    b.requires_grad_()
    asx.cat_gather(a, b, perm).sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


def test_gradcheck():
    g = torch.Generator().manual_seed(4)
    perm = torch.randperm(9, generator=g)
    for layout in ("contiguous", "channels_last", "chunk_cl"):
        a = make_input((2, 4, 3, 2), torch.float64, layout, g).requires_grad_()
        b = make_input((2, 5, 3, 2), torch.float64, "channels_last", g).requires_grad_()
        assert torch.autograd.gradcheck(lambda s, t: OP.default(s, t, perm), (a, b))
        assert torch.autograd.gradgradcheck(lambda s, t: OP.default(s, t, perm), (a, b))


def test_gradient_is_the_inverse_gather_split():
    a = torch.randn(3, 4, 5, requires_grad=True)
    b = torch.randn(3, 6, 5, requires_grad=True)
    perm = torch.randperm(10)
    w = torch.randn(3, 10, 5)
    (OP.default(a, b, perm) * w).sum().backward()
    full = w[:, inverse_permutation(perm)]
    assert torch.equal(a.grad, full[:, :4])
    assert torch.equal(b.grad, full[:, 4:])
    # Only one input needing a gradient.
    c = torch.randn(3, 6, 5)
    a.grad = None
    (OP.default(a, c, perm) * w).sum().backward()
    assert torch.equal(a.grad, full[:, :4])


def _sample_inputs():
    g = torch.Generator().manual_seed(5)
    for shape_a, shape_b, layout in [
        ((2, 8, 3, 3), (2, 5, 3, 3), "contiguous"),
        ((2, 8, 3, 3), (2, 5, 3, 3), "channels_last"),
        ((2, 6, 3, 3), (2, 6, 3, 3), "chunk_cl"),
        ((3, 5), (3, 2), "contiguous"),
        ((2, 6, 2, 3, 4), (2, 3, 2, 3, 4), "channels_last"),
        ((2, 7, 4, 3), (2, 1, 4, 3), "strided"),
        ((0, 4, 2, 2), (0, 3, 2, 2), "contiguous"),
    ]:
        a = make_input(shape_a, torch.float32, layout, g).requires_grad_()
        b = make_input(shape_b, torch.float32, layout, g).requires_grad_()
        yield a, b, torch.randperm(shape_a[1] + shape_b[1], generator=g)


@pytest.mark.parametrize("args", list(_sample_inputs()), ids=lambda a: str(tuple(a[0].shape)))
def test_opcheck(args):
    torch.library.opcheck(OP.default, args)


def _unit_tail(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return asx.cat_gather(torch.relu(a), b, perm) * 2.0


def test_torch_compile_fullgraph():
    perm = torch.randperm(12)
    compiled = torch.compile(_unit_tail, fullgraph=True, backend="inductor")
    x = torch.randn(3, 14, 5, 5).contiguous(memory_format=torch.channels_last)
    a = x[:, 2:9].detach().requires_grad_()  # a channels_last slice, as in a v2 unit
    b = torch.randn(3, 5, 5, 5).contiguous(memory_format=torch.channels_last)
    y = compiled(a, b, perm)
    assert torch.equal(y, _unit_tail(a, b, perm))
    assert y.is_contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 12, 5, 5)
    (y * w).sum().backward()
    assert torch.equal(a.grad, 2.0 * (a > 0) * w[:, inverse_permutation(perm)][:, :7])


class _SplitUnit(torch.nn.Module):
    """A v2 unit's tail: split, a conv on one half, cat_gather."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        self.register_buffer("perm", torch.randperm(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return OP.default(x1, self.conv(x2), self.perm)


def test_export_with_a_dynamic_batch():
    # The conv's parameters need gradients, so export traces through the autograd kernel, whose
    # sizes must stay symbolic (a batch read as an int would be specialised).
    unit = _SplitUnit()
    x = torch.randn(2, 8, 5, 5)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(unit, (x,), dynamic_shapes=({0: batch},))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert OP.default in targets
    y = torch.randn(5, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(program.module()(y), unit(y))


def test_bad_inputs_raise_documented_errors():
    a = torch.randn(2, 4, 3, 3)
    b = torch.randn(2, 5, 3, 3)
    ok = torch.randperm(9)
    cases = [
        ((torch.randn(4), b, ok), ValueError, r"a must have at least 2 dims.*got 1 dims"),
        ((a, torch.randn(2, 5, 3), ok), ValueError, r"b must have a's number of dims 4, got 3"),
        (
            (a, torch.randn(3, 5, 3, 3), ok),
            ValueError,
            r"b must have a's size in every dim but 1 \(a.shape = \(2, 4, 3, 3\)\), "
            r"got b.shape = \(3, 5, 3, 3\)",
        ),
        ((a, torch.randn(2, 5, 3, 4), ok), ValueError, r"got b.shape = \(2, 5, 3, 4\)"),
        ((a, b.double(), ok), TypeError, r"b must have a's dtype torch.float32, got torch.float64"),
        ((a, b.to("meta"), ok), ValueError, r"b must be on a's device cpu, got meta"),
        ((a, b, ok.view(3, 3)), ValueError, r"perm must be 1-D, got 2 dims"),
        ((a, b, ok.int()), TypeError, r"perm must have dtype int64.*got torch.int32"),
        ((a, b, ok.to("meta")), ValueError, r"perm must be on a's device cpu, got meta"),
        (
            (a, b, torch.arange(8)),
            ValueError,
            r"perm must have length a.size\(1\) \+ b.size\(1\) = 4 \+ 5 = 9, got 8",
        ),
        (
            (a, b, torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7])),
            ValueError,
            r"permutation of 0..8.*got \[0, 0, 1, 2",
        ),
        ((a, b, torch.arange(1, 10)), ValueError, r"permutation of 0..8.*got \[1, 2, .*9\]"),
        (([1, 2], b, ok), TypeError, r"a must be a torch.Tensor, got list"),
        ((a, None, ok), TypeError, r"b must be a torch.Tensor, got NoneType"),
        ((a, b, [0, 1]), TypeError, r"perm must be a torch.Tensor, got list"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            asx.cat_gather(*args)
    # The raw op raises the same exception types; C++ writes shapes and dtypes its own way.
    for args, error, match in cases[:10]:
        with pytest.raises(error, match=re.split(r"\\\(|torch\.", match)[0]):
            OP.default(*args)
    # Without validation the CPU kernel still range-checks every entry and rejects repeats.
    with pytest.raises(IndexError, match=r"perm entries must lie in \[0, 9\) \(C = a.size\(1\) "):
        asx.cat_gather(a, b, torch.arange(1, 10), validate=False)
    with pytest.raises(IndexError, match=r"got perm\[0\] = -1"):
        OP.default(a, b, torch.tensor([-1, 1, 2, 3, 4, 5, 6, 7, 8]))
    message = r"perm must be a permutation of 0..8 .*got perm\[1\] = 0, also at perm\[0\]"
    with pytest.raises(ValueError, match=message):
        asx.cat_gather(a, b, torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7]), validate=False)
    with pytest.raises(ValueError, match=r"got perm\[1\] = 0, also at perm\[0\]"):
        OP.default(a[:0], b[:0], torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7]))  # even when empty


def test_validation_skips_values_of_meta_and_fake_tensors():
    meta = torch.device("meta")
    y = asx.cat_gather(
        torch.zeros(2, 3, 4, 4, device=meta).to(memory_format=torch.channels_last),
        torch.zeros(2, 2, 4, 4, device=meta).to(memory_format=torch.channels_last),
        torch.arange(5, device=meta),
    )
    assert y.device == meta and y.shape == (2, 5, 4, 4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"perm must have length .* = 5, got 4"):
        asx.cat_gather(
            torch.zeros(2, 3, device=meta),
            torch.zeros(2, 2, device=meta),
            torch.arange(4, device=meta),
        )
    with FakeTensorMode() as mode:
        a = mode.from_tensor(torch.randn(2, 5, 3))
        b = mode.from_tensor(torch.randn(2, 1, 3))
        assert asx.cat_gather(a, b, mode.from_tensor(torch.randperm(6))).shape == (2, 6, 3)


_ISA_CHECK = textwrap.dedent(
    """
    import torch
    import autoshuffle_ext  # noqa: F401
    op = torch.ops.autoshuffle_ext.cat_gather.default
    g = torch.Generator().manual_seed(0)
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.uint8, torch.complex128]
    for dtype in dtypes:
        for ca, cb, hw in [(58, 58, (3, 5)), (116, 116, (3, 3)), (1, 7, (2, 2)), (33, 17, (1, 9))]:
            for fmt, fixed in [(torch.contiguous_format, False), (torch.channels_last, False),
                               (torch.channels_last, ca == cb)]:
                x = torch.randn(2, 2 * ca, *hw, generator=g).to(dtype).contiguous(
                    memory_format=fmt)
                b = torch.randn(2, cb, *hw, generator=g).to(dtype).contiguous(memory_format=fmt)
                a = x[:, ca:]
                perm = torch.randperm(ca + cb, generator=g)
                if fixed:
                    perm = autoshuffle_ext.fixed_shuffle_perm(ca + cb, 2)
                assert torch.equal(op(a, b, perm), torch.cat([a, b], 1)[:, perm]), (dtype, ca)
    print("ok", torch.backends.cpu.get_cpu_capability())
    """
)


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_narrower_cpu_paths(capability):
    # The channels_last kernel picks AVX-512, AVX2 or scalar code at run time, capped by ATen's
    # capability: run the narrower paths too, in a fresh process.
    assert run_with_cpu_capability(_ISA_CHECK, capability).startswith("ok")


# ShuffleNet v2: exact shuffles (fixed, frozen learned, random) concat and shuffle in one op.


class _OpCounter(TorchDispatchMode):
    """Counts the ops that reach the dispatcher's Python mode, by overload name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _old_path(shuffle, a, b):
    # What a unit did before cat_shuffle: the concat, then the shuffle module.
    return shuffle(torch.cat((a, b), dim=1))


def _frozen_v2(shuffle: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = shufflenet_v2(0.5, num_classes=10, stem="cifar", shuffle=shuffle)
    if shuffle == "learned":
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for _, module in asx.structures(model, asx.LearnedShuffle):
                perm = torch.randperm(module.num_channels, generator=g)
                module.weight.copy_(asx.permutation_matrix(perm))
        model = asx.freeze(model)
    return model


@pytest.mark.parametrize("shuffle", ["fixed", "learned", "random"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_v2_units_use_the_op_and_match_the_old_path(shuffle, layout, monkeypatch):
    # The module, not the function of the same name that autoshuffle_ext.models exports.
    v2 = importlib.import_module("autoshuffle_ext.models.shufflenet_v2")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = _frozen_v2(shuffle).to(memory_format=fmt)
    units = [m for m in model.modules() if isinstance(m, v2.ShuffleNetV2Unit)]
    kind = asx.FixedShuffle if shuffle == "fixed" else asx.HardShuffle
    assert units and all(isinstance(u.shuffle, kind) for u in units)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=fmt)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        with _OpCounter() as counter:
            y = model(x)
        assert counter.counts.get("autoshuffle_ext.cat_gather.default") == len(units)
        assert "aten.cat.default" not in counter.counts
        assert "autoshuffle_ext.channel_gather.default" not in counter.counts
        grads = torch.autograd.grad(y.square().sum(), list(model.parameters()))
        with monkeypatch.context() as m:
            m.setattr(v2, "cat_shuffle", _old_path)
            y_old = model(x)
            grads_old = torch.autograd.grad(y_old.square().sum(), list(model.parameters()))
        assert torch.equal(y, y_old)
        assert all(torch.equal(g, h) for g, h in zip(grads, grads_old, strict=True))


@pytest.mark.parametrize("shuffle", ["learned", "sinkhorn", "none"])
def test_v2_soft_and_no_shuffle_keep_the_concat(shuffle):
    model = shufflenet_v2(0.5, num_classes=10, stem="cifar", shuffle=shuffle)
    with _OpCounter() as counter:
        model(torch.randn(2, 3, 32, 32))
    assert "autoshuffle_ext.cat_gather.default" not in counter.counts
    assert counter.counts["aten.cat.default"] >= 16


def test_forward_cat_checks_the_channel_count():
    for module in (asx.HardShuffle(torch.randperm(6)), asx.FixedShuffle(6, 2)):
        a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        assert torch.equal(module.forward_cat(a, b), module(torch.cat([a, b], 1)))
        with pytest.raises(
            ValueError,
            match=r"inputs a and b must have shapes \[N, Ca, \.\.\.\] and \[N, Cb, \.\.\.\] with "
            r"Ca \+ Cb = 6, got \(2, 3, 4, 4\) and \(2, 4, 4, 4\)",
        ):
            module.forward_cat(a, torch.randn(2, 4, 4, 4))


def test_fixed_shuffle_state_dict_is_unchanged():
    # The perm FixedShuffle keeps for forward_cat is not persistent: checkpoints stay as they were.
    module = asx.FixedShuffle(12, 3)
    assert module.state_dict() == {}
    assert torch.equal(module.perm, asx.fixed_shuffle_perm(12, 3))
