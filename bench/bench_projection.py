"""The projection after each optimizer step: the paper's threshold + scaling alone (`polish=0`)
vs the default (scaling, then the dual polish), on the stacks `attach_projection` builds for
ShuffleNet v2 1x (4 x 116, 8 x 232 and 4 x 464 channels), v2 0.5x (48, 96, 192) and v1 g=3 1x
(bottlenecks of 60, 120 and 240 channels). Inputs are doubly stochastic matrices after an
SGD-like step: mostly zero (late training, where the polish matters) and dense (early training).
On the CPU the default runs twice: the compiled kernel (`default`) and its ATen form (`aten`,
the reference).

Run: `python -m pytest bench/bench_projection.py --benchmark-only`.
"""

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.doubly_stochastic import (
    DEFAULT_POLISH_ITERS,
    DEFAULT_SCALING_ITERS,
    project_aten_,
)

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
STACKS = [
    *[(4, 116, 116), (8, 232, 232), (4, 464, 464)],  # v2 1x
    *[(4, 60, 60), (8, 120, 120), (4, 240, 240)],  # v1 g3 1x
    *[(4, 48, 48), (8, 96, 96), (4, 192, 192)],  # v2 0.5x, the study's v2
]


def stepped_matrices(shape: tuple[int, int, int], sparse: bool, device: str) -> torch.Tensor:
    """Doubly stochastic matrices (near a permutation if `sparse`) plus a gradient-step kick."""
    g = torch.Generator().manual_seed(0)
    batch, n, _ = shape
    M = torch.rand(shape, generator=g)
    if sparse:
        perms = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
        M = 0.7 * asx.permutation_matrix(perms) + 0.3 * M * (torch.rand(shape, generator=g) < 0.05)
    asx.project_doubly_stochastic_(M, 50)
    return (M + 0.01 * torch.randn(shape, generator=g)).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("shape", STACKS, ids=str)
@pytest.mark.parametrize("variant", ["scaling_only", "default", "aten"])
def test_projection(benchmark, variant, shape, sparse, device):
    if variant == "aten" and device != "cpu":
        pytest.skip("elsewhere the ATen form is the default")
    benchmark.group = f"projection {device} {shape} {'sparse' if sparse else 'dense'}"
    M = stepped_matrices(shape, sparse, device)

    def project():
        if variant == "aten":
            out = project_aten_(M.clone(), DEFAULT_SCALING_ITERS, DEFAULT_POLISH_ITERS)
        else:
            polish = {"polish": 0} if variant == "scaling_only" else {}
            out = asx.project_doubly_stochastic_(M.clone(), **polish)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    out = benchmark(project)
    assert (out >= 0).all()
