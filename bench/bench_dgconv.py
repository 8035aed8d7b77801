"""Learned group counts (DGConv2d) against the fixed group convs they replace.

- one pointwise layer, forward + backward (input, weight and gate gradients), [32, C, 16, 16]:
  `DGConv2d` (grouped forward and input gradient, dense weight gradient for the gates), the plain
  masked dense conv it equals (the reference of tests/test_dgconv.py), and `nn.Conv2d(groups=G)`
  (no gates: the floor);
- training step of ShuffleNet v1 0.5x (g = 3, CIFAR stem, batch 32): fixed group convs, learned
  ones (`pointwise="learned"`, started on g = 3, budget 1/3), and learned ones run as the masked
  dense conv (what the fast path saves);
- inference of the frozen learned model (`freeze`: grouped convs, each unit's permutations
  folded into at most three gathers) against a hand-written model with the same group counts
  (contiguous groups, ShuffleNet's shuffle), ImageNet 224x224, batch 1 and 32; on random gate
  patterns (strided groups: gathers stay around the convs) and on the fixed model's (contiguous:
  one gather per unit, after the depthwise conv, in place of the shuffle).

Run: `python -m pytest bench/bench_dgconv.py --benchmark-only` (groups put the variants side by
side; `--benchmark-json` for the ratios).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import shufflenet_v1
from bench.timing import benchmark_inference, benchmark_train_step, sync
from tests.test_dgconv import reference_dgconv2d

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
BUDGET = 1 / 3


def _use_reference(model: nn.Module) -> nn.Module:
    """Every DGConv2d of `model` computes by the plain masked dense conv instead."""
    for _, module in asx.structures(model, asx.DGConv2d):
        module.forward = functools.partial(reference_dgconv2d, module)
    return model


# (in, out, groups): ShuffleNet v1 g = 3 1.0x stage 2 compress and expand widths.
LAYERS = [(240, 60, 3), (60, 240, 3)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layer", LAYERS, ids=[f"{i}to{o}_g{g}" for i, o, g in LAYERS])
@pytest.mark.parametrize("variant", ["dgconv", "masked_dense", "conv_groups"])
def test_pointwise_layer_step(benchmark, variant, layer, device):
    cin, out, groups = layer
    benchmark.group = f"pointwise {cin}->{out} G={groups} [32, {cin}, 16, 16] fwd+bwd {device}"
    torch.manual_seed(0)
    if variant == "conv_groups":
        module = nn.Conv2d(cin, out, 1, groups=groups, bias=False)
    else:
        module = asx.DGConv2d(cin, out)  # factors ascending: G = 3 needs permutations
        module.set_groups_(groups)
        assert module.num_groups() == groups and module.plan().in_src is not None
        if variant == "masked_dense":
            module.forward = functools.partial(reference_dgconv2d, module)
    module = module.to(device)
    x = torch.randn(32, cin, 16, 16, device=device, requires_grad=True)
    grad_y = torch.randn(32, out, 16, 16, device=device)

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad_y)
        sync(device)

    step()
    benchmark(step)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", ["fixed", "learned", "learned_masked_dense"])
def test_train_step(benchmark, variant, layout, device):
    benchmark.group = f"train step shufflenet_v1_g3_x0_5 cifar batch 32 {layout} {device}"
    torch.manual_seed(0)
    if variant == "fixed":
        model = shufflenet_v1(3, 0.5, 10, "cifar")
    else:
        options = {"budget": BUDGET}
        model = shufflenet_v1(3, 0.5, 10, "cifar", pointwise="learned", pointwise_options=options)
        if variant == "learned_masked_dense":
            _use_reference(model)
    fmt = LAYOUTS[layout]
    model = model.to(device, memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    asx.attach_projection(optimizer, model)
    x = torch.randn(32, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (32,), device=device)

    benchmark_train_step(benchmark, model, optimizer, x, y)


def _learned(pattern: str) -> nn.Module:
    """ShuffleNet v1 0.5x with learned pointwise convs: random gate patterns ("random": most
    groups strided, so gathers stay around the convs) or the start ("leading": contiguous
    groups, the fixed model's)."""
    torch.manual_seed(0)
    model = shufflenet_v1(3, 0.5, pointwise="learned")
    g = torch.Generator().manual_seed(1)
    if pattern == "random":
        with torch.no_grad():
            for _, module in asx.structures(model, asx.DGConv2d):
                signs = torch.randint(0, 2, module.gates.shape, generator=g) * 2 - 1
                module.gates.copy_(signs.to(module.gates.dtype))
    return model


def _hand_written(model: nn.Module) -> nn.Module:
    """The model a user would write for the same group counts: each DGConv2d an
    `nn.Conv2d(groups=G)` with contiguous groups, ShuffleNet's shuffle, no gathers."""
    plain = copy.deepcopy(model)
    for name, module in list(asx.structures(plain, asx.DGConv2d)):
        parent, _, child = name.rpartition(".")
        conv = nn.Conv2d(module.in_channels, module.out_channels, 1, groups=module.num_groups())
        setattr(plain.get_submodule(parent), child, conv.requires_grad_(False))
    return plain


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("pattern", ["random", "leading"])
@pytest.mark.parametrize("variant", ["frozen_learned", "hand_written"])
def test_inference(benchmark, variant, pattern, batch, device):
    benchmark.group = (
        f"inference shufflenet_v1_g3_x0_5 learned groups ({pattern} gates) batch {batch} {device}"
    )
    learned = _learned(pattern)
    frozen = asx.freeze(learned)
    model = frozen if variant == "frozen_learned" else _hand_written(learned)

    def group_counts(m: nn.Module) -> list[int]:
        return sorted(c.groups for c in m.modules() if isinstance(c, nn.Conv2d))

    assert group_counts(model) == group_counts(frozen)
    gathers = sum(isinstance(c, asx.HardShuffle) for c in model.modules())
    benchmark.extra_info["gathers"] = gathers
    model = model.to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)

    benchmark_inference(benchmark, model, x)
