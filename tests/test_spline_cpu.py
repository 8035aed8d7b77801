"""The C++ CPU kernels of `spline_activation` (csrc/cpu/spline_activation.cpp): that they are the
ones that run, the coefficient gradient summed over per-thread buffers at several thread counts,
layouts the kernels walk without a copy and with one, half inputs, NaN, and the ATen fallback
when the compiled library is missing. The op's values, gradients and contract against the
reference are in test_spline_op.py (which runs these same kernels)."""

import subprocess
import sys
import textwrap

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.ops import spline_activation as op_module
from autoshuffle_ext.splines import linear_spline_reference, spline_activation
from tests.references import (
    BLOCK_COMPILED_LIBRARY,
    VECTOR_PATHS,
    check_vector_path,
    to_layout,
)

T = 0.1
OPS = ("spline_activation", "spline_activation_backward")

needs_library = pytest.mark.skipif(
    not asx.extension_available(), reason="the compiled library is not loaded"
)


def sample(shape, K, generator, dtype=torch.float64, spread=1.5):
    half_width = T * (K // 2)
    x = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * (spread * half_width + T)
    return x, torch.randn(shape[1], K, generator=generator, dtype=dtype)


def reference_grads(x, c, dy):
    x, c = x.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    (linear_spline_reference(x, c, T) * dy).sum().backward()
    return x.grad, c.grad


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@needs_library
@pytest.mark.parametrize("name", OPS)
def test_cpu_kernels_come_from_the_compiled_library(name):
    dump = torch._C._dispatch_dump(f"autoshuffle_ext::{name}")
    debug = [line for line in dump.splitlines() if line.startswith("debug:")]
    cpu = [line for line in dump.splitlines() if line.startswith("CPU:")]
    assert debug and "csrc/ops/spline_activation.cpp" in debug[0], dump  # the schema: C++
    assert cpu and "csrc/cpu/spline_activation.cpp" in cpu[0], dump
    # The CUDA kernel (Triton) and the fake kernel stay Python's.
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"autoshuffle_ext::{name}", "CUDA")


@needs_library
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("spread", [1.5, 0.02], ids=["wide", "concentrated"])
def test_coefficient_gradient_over_threads(layout, spread, restore_threads):
    """Enough elements for many parallel tasks (the grain is 32768 elements): each thread's
    buffer, its lanes and their sum must give the reference's gradient at every thread count.
    "concentrated" puts every input in the two middle segments (the lanes' case)."""
    g = torch.Generator().manual_seed(0)
    x, c = sample((6, 10, 48, 40), 21, g, spread=spread)
    x = to_layout(x, layout)
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    dx_ref, dc_ref = reference_grads(x, c, dy)
    results = []
    for threads in (1, 2, 3, 4, 7):
        torch.set_num_threads(threads)
        dx, dc = torch.ops.autoshuffle_ext.spline_activation_backward(dy, x, c, T, True, True)
        torch.testing.assert_close(dc, dc_ref, rtol=1e-11, atol=1e-10)
        torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
        assert dx.stride() == x.stride()
        results.append(dc)
        _, dc_only = torch.ops.autoshuffle_ext.spline_activation_backward(dy, x, c, T, False, True)
        torch.testing.assert_close(dc_only, dc, rtol=1e-13, atol=1e-12)
    for dc in results[1:]:  # thread counts change the summation order only
        torch.testing.assert_close(dc, results[0], rtol=1e-11, atol=1e-10)


@needs_library
def test_many_channels_without_lanes(restore_threads):
    # C * 4 lanes * K * 8 bytes over 1 MiB: one copy of the bins per thread.
    g = torch.Generator().manual_seed(1)
    x, c = sample((3, 700, 7, 7), 51, g)
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    dx_ref, dc_ref = reference_grads(x, c, dy)
    for threads in (1, 3):
        torch.set_num_threads(threads)
        dx, dc = torch.ops.autoshuffle_ext.spline_activation_backward(dy, x, c, T, True, True)
        torch.testing.assert_close(dc, dc_ref, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)


def _odd_dense(x):
    """x's values in a dense layout neither contiguous nor channels-last ([N, H, C, W] memory)."""
    return x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


@pytest.mark.parametrize("layout", ["odd_dense", "strided", "channels_last_3d", "2d", "3d"])
def test_layouts_and_grad_strides(layout):
    g = torch.Generator().manual_seed(2)
    shape = {"channels_last_3d": (2, 5, 3, 4, 3), "2d": (7, 9), "3d": (3, 6, 17)}
    x, c = sample(shape.get(layout, (3, 6, 5, 7)), 9, g)
    if layout == "odd_dense":
        x = _odd_dense(x)
    elif layout in ("strided", "channels_last_3d"):
        x = to_layout(x, "channels_last" if layout == "channels_last_3d" else layout)
    y = spline_activation(x, c, T)
    torch.testing.assert_close(y, linear_spline_reference(x, c, T), rtol=1e-12, atol=1e-12)
    expected = op_module.spline_output_like(x)
    assert y.stride() == expected.stride()
    # grad in another layout than x's
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    if x.dim() == 4:
        dy = dy.contiguous(memory_format=torch.channels_last)
    dx, dc = torch.ops.autoshuffle_ext.spline_activation_backward(dy, x, c, T, True, True)
    dx_ref, dc_ref = reference_grads(x, c, dy)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dc, dc_ref, rtol=1e-12, atol=1e-12)
    assert dx.stride() == expected.stride()


@pytest.mark.parametrize(
    ("x_dtype", "c_dtype"),
    [(torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.bfloat16,) * 2],
    ids=["bf16-f32", "f16-f32", "bf16"],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_half_inputs_against_aten(x_dtype, c_dtype, layout):
    """Same float32 arithmetic as the ATen implementation: equal up to one rounding of the
    result (ATen's addcmul may fuse its multiply-add)."""
    g = torch.Generator().manual_seed(3)
    x, c = sample((2, 8, 9, 9), 15, g, torch.float32)
    x, c = to_layout(x.to(x_dtype), layout), c.to(c_dtype)
    dy = torch.randn(x.shape, generator=g).to(x_dtype)
    y = spline_activation(x, c, T)
    torch.testing.assert_close(y, op_module._forward_aten(x, c, T))
    dx, dc = torch.ops.autoshuffle_ext.spline_activation_backward(dy, x, c, T, True, True)
    dx_a, dc_a = op_module._backward_aten(dy, x, c, T, True, True)
    assert dx.dtype == x_dtype and dc.dtype == c_dtype and dx.stride() == x.stride()
    torch.testing.assert_close(dx, dx_a)
    torch.testing.assert_close(dc, dc_a, rtol=2e-2 if c_dtype == torch.bfloat16 else 1e-5,
                               atol=1e-4)  # fmt: skip


def test_nan_and_inf_in_backward():
    c = torch.randn(2, 7, dtype=torch.float64)
    x = torch.tensor([[float("nan"), 0.05], [float("inf"), -float("inf")]], dtype=torch.float64)
    dy = torch.ones_like(x)
    dx, dc = torch.ops.autoshuffle_ext.spline_activation_backward(dy, x, c, T, True, True)
    dx_a, dc_a = op_module._backward_aten(dy, x, c, T, True, True)
    torch.testing.assert_close(dx, dx_a, equal_nan=True)
    torch.testing.assert_close(dc, dc_a, equal_nan=True)
    assert torch.isnan(dc[0, 3]) and not torch.isnan(dc[0, :3]).any()  # NaN: the middle segment


def test_backward_op_is_not_differentiable():
    x, c = sample((2, 3, 4), 5, torch.Generator().manual_seed(4))
    x.requires_grad_()
    c.requires_grad_()
    y = spline_activation(x, c, T)
    (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(dx.sum(), c)


def test_backward_checks_its_arguments():
    x, c = sample((2, 3, 4), 5, torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="grad must have x's shape"):
        torch.ops.autoshuffle_ext.spline_activation_backward(x[:, :2], x, c, T, True, True)
    with pytest.raises(ValueError, match="spacing must be a finite"):
        torch.ops.autoshuffle_ext.spline_activation_backward(x, x, c, -1.0, True, True)


_WITHOUT_C = BLOCK_COMPILED_LIBRARY + textwrap.dedent(
    """
    import torch
    import autoshuffle_ext as asx
    from autoshuffle_ext.splines import linear_spline_reference

    assert not asx.extension_available()
    dump = torch._C._dispatch_dump("autoshuffle_ext::spline_activation_backward")
    assert "csrc" not in dump, dump
    g = torch.Generator().manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=g)
        x = x.contiguous(memory_format=fmt).requires_grad_()
        c = torch.randn(4, 9, dtype=torch.float64, generator=g, requires_grad=True)
        y = asx.spline_activation(x, c, 0.2)
        assert y.stride() == x.stride()
        assert torch.allclose(y, linear_spline_reference(x, c, 0.2))
        assert torch.autograd.gradcheck(lambda a, b: asx.spline_activation(a, b, 0.2), (x, c))
    print("spline fallback ok")
    """
)


def test_fallback_without_compiled_library():
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_C], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "spline fallback ok" in result.stdout


_ISA_CHECK = textwrap.dedent(
    """
    import torch
    from autoshuffle_ext.splines import linear_spline_reference
    g = torch.Generator().manual_seed(0)
    op = torch.ops.autoshuffle_ext
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
        for shape, K in [((2, 5, 7, 9), 9), ((3, 64, 6, 6), 21), ((70, 13), 5)]:
            for fmt in [torch.contiguous_format, torch.channels_last]:
                x = (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * 0.1 * K
                if x.dim() == 4:
                    x = x.contiguous(memory_format=fmt)
                c = torch.randn(shape[1], K, generator=g, dtype=dtype)
                dy = torch.randn(shape, generator=g, dtype=dtype)
                xr, cr = x.clone().requires_grad_(), c.clone().requires_grad_()
                yr = linear_spline_reference(xr, cr, 0.1)
                (yr * dy).sum().backward()
                y = op.spline_activation(x, c, 0.1)
                dx, dc = op.spline_activation_backward(dy, x, c, 0.1, True, True)
                for got, want in [(y, yr), (dx, xr.grad), (dc, cr.grad)]:
                    torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol)
    print("ok", torch.backends.cpu.get_cpu_capability())
    """
)


@needs_library
@pytest.mark.parametrize("capability", VECTOR_PATHS)
def test_every_vector_path(capability):
    # The loops run compiled for AVX-512, AVX2 or baseline x86-64: every copy this CPU runs.
    check_vector_path(_ISA_CHECK, capability)
