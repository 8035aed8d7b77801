"""shuffle_mix forward + backward vs the plain formulations of the same product (einsum, a 1x1
convolution, each plus the reference penalty under autograd) and vs the fixed F.channel_shuffle,
on ShuffleNet shapes. On CUDA also the fused Triton forward vs the cuBLAS (torch.matmul) product.

Run: `python -m pytest bench/bench_mixing.py --benchmark-only` (add `-k cuda` for the GPU rows).
"""

import pytest
import torch
import torch.nn.functional as F

from autoshuffle_ext.ops.mixing import empty_mix_output, mix_aten, shuffle_mix
from bench.timing import sync
from tests.references import reference_penalty, reference_shuffle_mix, to_layout

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
# (shape, groups of the channel shuffle it replaces): ShuffleNet v2 1x stages, v1 g=3, one image.
SHAPES = [((64, 240, 16, 16), 2), ((32, 232, 14, 14), 2), ((1, 116, 28, 28), 2)]
LAM = 0.1


def _inputs(shape, layout, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = to_layout(torch.randn(shape, generator=g, dtype=dtype), layout).to(device)
    x = x.requires_grad_()
    M = (torch.rand(shape[1], shape[1], generator=g) + 0.05).to(device).requires_grad_()
    dy = to_layout(torch.randn(shape, generator=g, dtype=dtype), layout).to(device)
    return x, M, dy


def _fused(x, M):
    return shuffle_mix(x, M)


def _einsum(x, M):
    return reference_shuffle_mix(x, M)


def _conv1x1(x, M):
    return F.conv2d(x, M[:, :, None, None]), reference_penalty(M)


IMPLS = {"shuffle_mix": _fused, "einsum": _einsum, "conv1x1": _conv1x1}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("shape", "groups"), SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("impl", [*IMPLS, "channel_shuffle"])
def test_forward_backward(benchmark, impl, shape, groups, layout, device):
    benchmark.group = f"mix fwd+bwd {device} {shape} {layout}"
    x, M, dy = _inputs(shape, layout, device)
    lam = torch.tensor(LAM, device=device)

    def step():
        if impl == "channel_shuffle":
            torch.autograd.backward(F.channel_shuffle(x, groups), dy)
        else:
            y, p = IMPLS[impl](x, M)
            torch.autograd.backward((y, p), (dy, lam))
        sync(device)

    benchmark(step)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("shape", "groups"), SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("impl", ["triton", "cublas", "clone"])
def test_forward_kernel_cuda(benchmark, impl, dtype, shape, groups, layout):
    """The Triton forward (product + penalty, one launch) vs torch.matmul (product only) vs a
    clone of x (the memory-bound floor)."""
    from autoshuffle_ext.kernels.mixing import shuffle_mix_forward

    benchmark.group = f"mix forward kernel cuda {dtype} {shape} {layout}"
    x, M, _ = _inputs(shape, layout, "cuda", dtype)
    x, M = x.detach(), M.detach()
    y = empty_mix_output(x)
    run = {
        "triton": lambda: shuffle_mix_forward(x, M, y),
        "cublas": lambda: mix_aten(x, M),
        "clone": lambda: x.clone(),
    }[impl]

    def step():
        run()
        torch.cuda.synchronize()

    benchmark(step)
