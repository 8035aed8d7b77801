"""From training to inference: every learned structure becomes its exact inference module; and
the report of all of them."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .collect import structures
from .soft import SoftShuffle
from .structure import Foldable, LearnedStructure

__all__ = ["freeze", "shuffle_report", "structure_report"]


def freeze(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replaces every `LearnedStructure` of `model` by its `to_inference()` module (a learned
    shuffle: the `HardShuffle` its matrix rounds to, by a maximum-weight assignment).

    Then every `Foldable` module (e.g. a ShuffleNet v1 unit, which merges its gathers) has its
    `fold_frozen_()` called, innermost first; a `Regularizer` becomes `nn.Identity`. When every
    relaxed structure sits on its constraint (every M a permutation matrix) the frozen model
    computes exactly what the trained one did.
    Returns a frozen copy, or `model` itself with `inplace=True`; the original keeps training.
    A bare structure returns its inference module (a new module either way; `inplace` changes
    nothing there).
    """
    if isinstance(model, LearnedStructure):
        return model.to_inference()
    target = model if inplace else copy.deepcopy(model)
    replaced: list[str] = []
    for name, module in list(structures(target)):
        if any(name.startswith(prefix + ".") for prefix in replaced):
            continue  # inside a structure already replaced
        parent_name, _, child = name.rpartition(".")
        setattr(target.get_submodule(parent_name), child, module.to_inference())
        replaced.append(name)
    for module in reversed(list(target.modules())):
        if isinstance(module, Foldable):
            module.fold_frozen_()
    return target


def structure_report(
    model: nn.Module, kind: type[LearnedStructure] = LearnedStructure
) -> list[dict]:
    """One row per learned structure (instance of `kind`) of `model`: name, kind (the class
    name), then the structure's own `report()` fields."""
    with torch.no_grad():
        return [
            {"name": name, "kind": type(module).__name__, **module.report()}
            for name, module in structures(model, kind)
        ]


def shuffle_report(model: nn.Module) -> list[dict]:
    """The rows of `structure_report` that are soft shuffles: name, kind, channels, penalty
    (P(M), unweighted), distance (to the rounded permutation), moved (channels whose rounded
    source differs from the fixed shuffle's; None when the module has no groups)."""
    return structure_report(model, SoftShuffle)
