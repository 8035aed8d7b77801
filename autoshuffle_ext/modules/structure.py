"""`LearnedStructure`: the protocol every learned structure of the package follows.

A learned structure is trained in a relaxed form with a penalty, is brought back onto its
constraint set after each optimizer step, and turns into an exact, cheap module for inference.
The whole-model helpers (`penalty`, `attach_projection`, `freeze`, `structure_report`) find every
instance of this base in a model, so a new structure (the package's or a user's) is one subclass.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

import torch
from torch import nn

__all__ = ["LearnedStructure"]


class LearnedStructure(nn.Module, abc.ABC):
    """Base class of the learned structures.

    Subclasses implement `to_inference`; they override `penalty`, `project_`, `report` and
    `structure_parameters` where they have something to say. `penalty_weight` (lambda) lives on
    the module: `penalty()` returns the weighted term, and a training schedule may only scale it.
    """

    penalty_weight: float = 0.0

    def penalty(self) -> torch.Tensor:
        """This module's weighted penalty (0-d, differentiable); zero when it has none."""
        first = next(self.parameters(), None)
        return torch.zeros((), device=None if first is None else first.device)

    def project_(self) -> None:
        """Brings the parameters back onto the structure's constraint set after a step."""

    @classmethod
    def project_all_(cls, modules: Iterable[LearnedStructure]) -> None:
        """`project_` of many modules of this class; a class may batch the work."""
        for module in modules:
            module.project_()

    @abc.abstractmethod
    def to_inference(self) -> nn.Module:
        """The exact module this structure becomes for inference (it computes what the trained
        structure computes once the relaxation has converged)."""

    def report(self) -> dict:
        """This module's fields in `structure_report` (the caller adds its name and kind).
        By convention "penalty" is the unweighted penalty value and "distance" how far the
        relaxed structure is from its exact form; the default has the weighted penalty only."""
        with torch.no_grad():
            return {"penalty": float(self.penalty())}

    def structure_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters that define the structure (trained without weight decay, at the
        structure learning rate, and counted apart from the network's); all by default."""
        return self.parameters()
