"""Whole-model helpers for training: every `LearnedStructure` of a model, their summed penalty,
and their projection after each optimizer step."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .soft import SoftShuffle
from .structure import LearnedStructure

__all__ = ["attach_projection", "learned_matrices", "penalty", "structures"]


def structures(
    model: nn.Module, kind: type[LearnedStructure] = LearnedStructure
) -> Iterator[tuple[str, LearnedStructure]]:
    """(qualified name, module) of every instance of `kind` in `model`, itself included."""
    for name, module in model.named_modules():
        if isinstance(module, kind):
            yield name, module


def penalty(model: nn.Module) -> torch.Tensor:
    """Sum of the weighted penalties of the model's learned structures (0-d; 0 if none).

    Add it to the task loss: `loss = criterion(model(x), y) + asx.penalty(model)`. Each
    structure weighs its own term (`penalty_weight`, lambda); a learned shuffle reuses the value
    its fused mixing op computed in the forward pass.
    """
    terms = [module.penalty() for _, module in structures(model)]
    if not terms:
        first = next(model.parameters(), None)
        device = first.device if first is not None else None
        return torch.zeros((), device=device)
    return torch.stack(terms).sum()


def learned_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every soft shuffle's mixing matrix M, by module name."""
    with torch.no_grad():
        return {name: m.matrix().detach().clone() for name, m in structures(model, SoftShuffle)}


def attach_projection(optimizer: torch.optim.Optimizer, model: nn.Module) -> RemovableHandle:
    """After every `optimizer.step()`, calls `project_` of each learned structure of `model`
    (a learned shuffle: threshold at 0, column/row scaling, then a short polish that brings the
    sums to within ~1e-6 of 1). Structures of one class are handed over together
    (`project_all_`), so that a class can batch its work.

    Returns the hook's handle (`handle.remove()` detaches it).

    Raises:
        ValueError: a structure parameter of `model` is not among the optimizer's parameters (a
            projection that could never see an update is a wiring mistake).
    """
    found = list(structures(model))
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [
        name for name, m in found if any(id(p) not in optimized for p in m.structure_parameters())
    ]
    if missing:
        raise ValueError(
            "optimizer must hold the structure parameters of every learned structure of "
            "model; missing: " + ", ".join(name or "<model>" for name in missing)
        )
    by_class: dict[type, list[LearnedStructure]] = {}
    for _, module in found:
        by_class.setdefault(type(module), []).append(module)

    @torch.no_grad()
    def project(_optimizer, _args, _kwargs) -> None:
        for cls, modules in by_class.items():
            cls.project_all_(modules)

    return optimizer.register_step_post_hook(project)
