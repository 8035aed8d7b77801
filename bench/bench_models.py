"""ShuffleNet with fixed, learned and relaxed shuffles: one training step per variant, and the
inference latency of the frozen AutoShuffleNet next to the fixed-shuffle model.

Training step = forward, cross-entropy + lambda * penalty, backward, SGD step with the projection
hook (what `autoshuffle-train` does per batch), on CIFAR-sized inputs. Inference = eval mode,
no grad, ImageNet 224x224 inputs at batch 1 and 32, NCHW and channels_last; the frozen model's
shuffles are exact gathers of random permutations (what training typically rounds to), the fixed
model's ShuffleNet's own; "none" has no shuffle at all (v2: the concat alone), the floor of what
a shuffle can cost. ShuffleNet v2's fixed and frozen units concat and shuffle in one
`cat_gather`. Targets: frozen / fixed <= 1.0; frozen / none <= 1.01 (v2); learned step <= 1.35x
fixed.

Run: `python -m pytest bench/bench_models.py --benchmark-only` (groups put the variants of one
model side by side; `--benchmark-json` for the ratios).
"""

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.models import build_model
from bench.timing import benchmark_inference, benchmark_train_step

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
TRAIN_MODELS = ["shufflenet_v1_g3", "shufflenet_v2_x1_0", "shufflenet_v1_g3_x0_5"]
INFER_MODELS = ["shufflenet_v1_g3", "shufflenet_v2_x1_0"]
LAM = 0.5


LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [32])
@pytest.mark.parametrize("name", TRAIN_MODELS)
@pytest.mark.parametrize("shuffle", ["fixed", "learned", "sinkhorn"])
def test_train_step(benchmark, shuffle, name, batch, layout, device):
    benchmark.group = f"train step {name} cifar 32x32 batch {batch} {layout} {device}"
    torch.manual_seed(0)
    fmt = LAYOUTS[layout]  # what `autoshuffle-train --channels-last` does
    model = build_model(name, num_classes=10, stem="cifar", shuffle=shuffle)
    model = model.to(device, memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    asx.attach_projection(optimizer, model)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    benchmark_train_step(benchmark, model, optimizer, x, y, LAM)


def frozen_learned(name: str) -> torch.nn.Module:
    """A learned model whose matrices are random permutations, frozen into gathers."""
    torch.manual_seed(0)
    model = build_model(name, shuffle="learned")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, module in asx.structures(model, asx.LearnedShuffle):
            n = module.num_channels
            module.weight.copy_(asx.permutation_matrix(torch.randperm(n, generator=g)))
    return asx.freeze(model)


def frozen_near_fixed(name: str, moves: int = 3) -> torch.nn.Module:
    """A learned model whose matrices are the fixed shuffle with `moves` random slot swaps, frozen
    into gathers: where training from the fixed shuffle ends (bench/RESULTS.md: a few of 1,080
    slots moved)."""
    torch.manual_seed(0)
    model = build_model(name, shuffle="learned")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, module in asx.structures(model, asx.LearnedShuffle):
            perm = asx.fixed_shuffle_perm(module.num_channels, module.groups)
            for _ in range(moves):
                i, j = torch.randint(0, module.num_channels, (2,), generator=g).tolist()
                perm[[i, j]] = perm[[j, i]]
            module.weight.copy_(asx.permutation_matrix(perm))
    return asx.freeze(model)


def inference_model(name: str, variant: str) -> torch.nn.Module:
    """`name` with the shuffle `variant`: "fixed", "none", "frozen_learned" (random
    permutations) or "frozen_near_fixed"."""
    if variant in ("frozen_learned", "frozen_near_fixed"):
        model = frozen_learned(name) if variant == "frozen_learned" else frozen_near_fixed(name)
        assert not any(isinstance(m, asx.LearnedShuffle) for m in model.modules())
        return model
    torch.manual_seed(0)
    return build_model(name, shuffle=variant)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("name", INFER_MODELS)
@pytest.mark.parametrize("variant", ["fixed", "none", "frozen_learned", "frozen_near_fixed"])
def test_inference(benchmark, variant, name, batch, layout, device):
    benchmark.group = f"inference {name} 224x224 batch {batch} {layout} {device}"
    fmt = LAYOUTS[layout]
    model = inference_model(name, variant).to(device, memory_format=fmt).eval()
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=fmt)

    benchmark_inference(benchmark, model, x)
