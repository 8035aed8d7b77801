"""What the benchmark files share to time a call: a device sync, and the inference timing of a
model on one input (pytest-benchmark)."""

from __future__ import annotations

import torch
from torch import nn


def sync(device: str | torch.device) -> None:
    """Waits for the device's queued work (CUDA), so that a timed call includes it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def benchmark_inference(benchmark, model: nn.Module, x: torch.Tensor) -> None:
    """Times `model(x)` under inference mode, synced, after one warm-up call."""

    def infer() -> None:
        with torch.inference_mode():
            model(x)
        sync(x.device)

    infer()
    benchmark(infer)
