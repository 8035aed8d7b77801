"""What the benchmark files share to time a call: a device sync, and the inference and training-step
timings of a model (pytest-benchmark)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import autoshuffle_ext as asx


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


def benchmark_train_step(
    benchmark,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    penalty_scale: float = 1.0,
) -> None:
    """Times one training step: forward, cross-entropy + penalty_scale * the structures'
    penalty, backward, optimizer step (with any hooks it has, e.g. the projection), synced; one
    untimed step first allocates the optimizer state."""

    def step() -> None:
        loss = F.cross_entropy(model(x), y) + penalty_scale * asx.penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(x.device)

    step()
    benchmark(step)
