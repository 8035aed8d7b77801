"""The l1-l2 penalty value + gradient: the fused op (norms saved in the forward, gradient in one
pass) vs autograd of the reference formula, for one matrix and for stacks.

Run: `python -m pytest bench/bench_penalty.py --benchmark-only`.
"""

import pytest
import torch

import autoshuffle_ext as asx
from tests.references import reference_penalty

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
SHAPES = [(116, 116), (240, 240), (480, 480), (1024, 1024), (16, 116, 116), (8, 464, 464)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_value_and_gradient(benchmark, impl, shape, device):
    benchmark.group = f"penalty value+grad {device} {shape}"
    g = torch.Generator().manual_seed(0)
    M = torch.rand(shape, generator=g).to(device).requires_grad_()
    penalty = asx.l1l2_penalty if impl == "fused" else reference_penalty

    def step():
        (grad,) = torch.autograd.grad(penalty(M).sum(), M)
        if device == "cuda":
            torch.cuda.synchronize()
        return grad

    benchmark(step)
