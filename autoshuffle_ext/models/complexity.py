"""Model size and cost: parameters (network vs learned shuffle) and multiply-adds.

FLOPs follow the ShuffleNet papers' convention: multiply-adds of the convolutions and the fully
connected layer at inference. Learned structures report their own cost in training and at
inference (a learned shuffle costs nothing at inference, a gather, and its C x C mixing product
per pixel in training); what training adds is reported on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..modules import LearnedStructure, freeze, structures

__all__ = ["Complexity", "count_macs", "count_parameters", "input_resolution", "measure"]


@dataclass(frozen=True)
class Complexity:
    """Parameters and multiply-adds of one model at one input size."""

    params: int  # parameters of the inference form (frozen)
    shuffle_params: int  # structure parameters (C x C per learned shuffle), extra at training
    macs: int  # inference multiply-adds of convs and fc (and structures' inference forms)
    shuffle_macs: int  # multiply-adds that the learned structures add in training


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(network parameters, structure parameters) of `model`: the second counts what its learned
    structures train on top of the network (the parameters of their `param_groups()` hints)."""
    extra_ids = {id(p) for _, m in structures(model) for p in m.structure_parameters()}
    params = list(model.parameters())
    extra = sum(p.numel() for p in params if id(p) in extra_ids)
    return sum(p.numel() for p in params) - extra, extra


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, int]:
    """(inference multiply-adds, what training adds to them) for one input of `input_size`
    ([C, H, W]), by a forward pass with hooks (the model is left as it was).

    Convolutions and linear layers count `output elements x fan-in`; a learned structure
    counts itself (`LearnedStructure.macs`: its training and inference cost, e.g. a learned
    shuffle's C x C mixing in training and a free gather at inference), its children then
    not counted again; one that returns None has its children counted as usual."""
    layers: list[tuple[int, tuple[int, ...]]] = []  # (macs, enclosing structures' ids)
    own: dict[int, tuple[int, int]] = {}  # structure id -> (training, inference), summed
    enclosing: dict[int, tuple[int, ...]] = {}  # structure id -> the structures around it
    inside: list[int] = []

    def enter(module: nn.Module, _inputs) -> None:
        enclosing.setdefault(id(module), tuple(inside))
        inside.append(id(module))

    def structure_hook(module: LearnedStructure, inputs, output) -> None:
        inside.pop()
        cost = module.macs(inputs, output)
        if cost is not None:
            train, infer = own.get(id(module), (0, 0))
            own[id(module)] = (train + int(cost[0]), infer + int(cost[1]))

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        layers.append((output[0].numel() * per_output, tuple(inside)))

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        layers.append((output[0].numel() * module.in_features, tuple(inside)))

    handles = []
    for module in model.modules():
        if isinstance(module, LearnedStructure):
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(structure_hook))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    first = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, *input_size, dtype=first.dtype, device=first.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    inference = training = 0
    for key, (train, infer) in own.items():  # a structure inside one that counted itself: not
        if not any(outer in own for outer in enclosing[key]):
            inference += infer
            training += train
    for macs, around in layers:
        if not any(key in own for key in around):
            inference += macs
            training += macs
    return inference, training - inference


def input_resolution(stem: str) -> int:
    """The input side a stem is designed for: 224 (imagenet) or 32 (cifar)."""
    return 224 if stem == "imagenet" else 32


def measure(model: nn.Module, input_size: tuple[int, ...]) -> Complexity:
    """Parameters and multiply-adds of `model` for inputs of `input_size` ([C, H, W]): params
    and macs are those of its inference form (`freeze`: learned group counts as grouped convs),
    shuffle_params and shuffle_macs what its learned structures add in training."""
    params, _ = count_parameters(freeze(model))
    _, shuffle_params = count_parameters(model)
    macs, shuffle_macs = count_macs(model, input_size)
    return Complexity(params, shuffle_params, macs, shuffle_macs)
