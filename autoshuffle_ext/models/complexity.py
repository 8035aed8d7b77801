"""Model size and cost: parameters (network vs learned shuffle) and multiply-adds.

FLOPs follow the ShuffleNet papers' convention: multiply-adds of the convolutions and the fully
connected layer at inference. A learned shuffle costs nothing at inference (it is frozen into a
gather), so its training-time mixing product (C x C per pixel) is reported on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..modules import SoftShuffle, freeze, structures

__all__ = ["Complexity", "count_macs", "count_parameters", "input_resolution", "measure"]


@dataclass(frozen=True)
class Complexity:
    """Parameters and multiply-adds of one model at one input size."""

    params: int  # parameters of the inference form (frozen)
    shuffle_params: int  # structure parameters (C x C per learned shuffle), extra at training
    macs: int  # inference multiply-adds of convs and fc
    shuffle_macs: int  # training-time multiply-adds of the soft shuffles' mixing products


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(network parameters, structure parameters) of `model`: the second counts what its learned
    structures train on top of the network (`structure_parameters`)."""
    shuffle = {id(p) for _, m in structures(model) for p in m.structure_parameters()}
    params = list(model.parameters())
    extra = sum(p.numel() for p in params if id(p) in shuffle)
    return sum(p.numel() for p in params) - extra, extra


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, int]:
    """(conv + fc multiply-adds, soft shuffle mixing multiply-adds) for one input of
    `input_size` ([C, H, W]), by a forward pass with hooks (the model is left as it was)."""
    counts = {"net": 0, "mix": 0}

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        counts["net"] += output[0].numel() * per_output

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        counts["net"] += output[0].numel() * module.in_features

    def mix_hook(module: nn.Module, inputs, _output) -> None:
        x = inputs[0][0]
        counts["mix"] += x.numel() * module.num_channels

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, SoftShuffle):
            handles.append(module.register_forward_hook(mix_hook))
    was_training = model.training
    first = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, *input_size, dtype=first.dtype, device=first.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts["net"], counts["mix"]


def input_resolution(stem: str) -> int:
    """The input side a stem is designed for: 224 (imagenet) or 32 (cifar)."""
    return 224 if stem == "imagenet" else 32


def measure(model: nn.Module, input_size: tuple[int, ...]) -> Complexity:
    """Parameters and multiply-adds of `model` for inputs of `input_size` ([C, H, W]): params
    and macs are those of its inference form (`freeze`: learned group counts as grouped convs),
    shuffle_params and shuffle_macs what its learned structures add in training."""
    frozen = freeze(model)
    params, _ = count_parameters(frozen)
    _, shuffle_params = count_parameters(model)
    macs, _ = count_macs(frozen, input_size)
    _, shuffle_macs = count_macs(model, input_size)
    return Complexity(params, shuffle_params, macs, shuffle_macs)
