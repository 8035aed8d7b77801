"""spline_activation forward + backward vs the plain PyTorch reference (index arithmetic and
gathers under autograd), vs the paper's own DeepBSpline (deepsplines 1.0.0, its custom autograd
function; when installed) and vs ReLU (the activation a spline replaces), on ShuffleNet shapes
with 51 knots. The issue's goal: the fused op at least 3x faster than the reference, forward +
backward. On CUDA the fused op runs the Triton kernels, on the CPU the C++ kernels
(csrc/cpu/spline_activation.cpp).

Run: `python -m pytest bench/bench_spline.py --benchmark-only` (`-k cuda` for the GPU rows).
"""

import pytest
import torch

from autoshuffle_ext.splines import LinearSpline, linear_spline_reference
from bench.timing import sync
from tests.references import to_layout

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
# ShuffleNet v2 1x stage shapes (batch 64 and 32) and one image, 51 knots over [-4, 4].
SHAPES = [(64, 232, 14, 14), (32, 116, 28, 28), (1, 116, 28, 28)]
SIZE, RANGE = 51, 4.0


def _inputs(shape, layout, device):
    g = torch.Generator().manual_seed(0)
    x = to_layout(2 * torch.randn(shape, generator=g), layout).to(device).requires_grad_()
    dy = to_layout(torch.randn(shape, generator=g), layout).to(device)
    return x, dy


def _spline(C: int, device):
    module = LinearSpline(C, size=SIZE, range=RANGE).to(device)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained-looking spline: every knot moved
        module.coefficients.add_(
            0.05 * torch.randn(module.coefficients.shape, generator=g).to(device)
        )
    return module


def _deepsplines(module: LinearSpline, device):
    ds_modules = pytest.importorskip("deepsplines.ds_modules")
    theirs = ds_modules.DeepBSpline("conv", module.num_channels, size=SIZE, range_=RANGE)
    with torch.no_grad():
        theirs.coefficients_vect.copy_(module.coefficients.detach().reshape(-1).cpu())
    return theirs.to(device)


IMPLS = ["spline_activation", "reference", "deepsplines", "relu"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_backward(benchmark, impl, shape, layout, device):
    if impl == "deepsplines" and layout == "channels_last":
        pytest.skip("deepsplines' backward calls .view(-1) on channels-last tensors and fails")
    benchmark.group = f"spline fwd+bwd {device} {shape} {layout}"
    x, dy = _inputs(shape, layout, device)
    module = _spline(shape[1], device)
    c, T = module.coefficients, module.spacing
    fn = {
        "spline_activation": module,
        "reference": lambda x: linear_spline_reference(x, c, T),
        "relu": torch.relu,
    }.get(impl) or _deepsplines(module, device)

    def step():
        torch.autograd.backward(fn(x), dy)
        sync(device)

    benchmark(step)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
@pytest.mark.parametrize("impl", IMPLS)
def test_forward(benchmark, impl, shape, layout, device):
    benchmark.group = f"spline forward {device} {shape} {layout}"
    x, _ = _inputs(shape, layout, device)
    x = x.detach()
    module = _spline(shape[1], device)
    c, T = module.coefficients.detach(), module.spacing
    fn = {
        "spline_activation": module,
        "reference": lambda x: linear_spline_reference(x, c, T),
        "relu": torch.relu,
    }.get(impl) or _deepsplines(module, device)

    def step():
        with torch.no_grad():
            fn(x)
        sync(device)

    benchmark(step)
