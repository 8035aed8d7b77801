"""Deployment: eager against `torch.compile` (inductor) inference of ShuffleNet v2 1.0x, ImageNet
224x224, batch 1 and 32: the fixed shuffle (`F.channel_shuffle`), no shuffle at all (the floor:
the concat kept, nothing permuted), and the frozen learned model (random permutations, what
training typically rounds to).

Run: `python -m pytest bench/bench_compiled.py --benchmark-only` (each group puts the six
variants of one batch side by side; the first call of a compiled model, outside the timing,
compiles it).
"""

import pytest
import torch

from bench.bench_models import inference_model
from bench.timing import benchmark_inference

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
NAME = "shufflenet_v2_x1_0"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("shuffle", ["fixed", "none", "frozen_learned"])
def test_inference(benchmark, shuffle, mode, batch, device):
    benchmark.group = f"inference {NAME} 224x224 batch {batch} {device}"
    torch._dynamo.reset()
    model = inference_model(NAME, shuffle).to(device).eval()
    if mode == "compiled":
        model = torch.compile(model, fullgraph=True)
    x = torch.randn(batch, 3, 224, 224, device=device)
    benchmark_inference(benchmark, model, x)
